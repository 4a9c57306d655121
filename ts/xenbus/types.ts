// The xenbus device state machine's data: the device as the reducer sees it,
// the events it reacts to and the effects it asks for.
import type { XenbusState } from './state.js';

/** Which device: its type, frontend domain and device id. */
export interface DeviceKey {
  readonly type: string;
  readonly domid: number;
  readonly devid: number;
}

/** Device-type operations the machine calls, in their order of use. */
export type OpName = 'alloc' | 'init' | 'connect' | 'reattach' | 'disconnect' | 'free';

/** Callbacks told of a changed node. */
export type ChangedName = 'backendChanged' | 'frontendChanged';

/** Which XenStore directory a node is in. */
export type Side = 'backend' | 'frontend';

/** The blocking step in flight (one at a time, as the reference's synchronous calls). */
export type Busy =
  | { readonly step: 'setup-state' }
  | { readonly step: 'setup-frontend' }
  | { readonly step: 'setup-watch' }
  | { readonly step: 'setup-facts'; readonly awaiting: number }
  | { readonly step: 'op'; readonly op: OpName }
  | { readonly step: 'write'; readonly node: string; readonly then: XenbusState | null };

/** Where the device is in its life. */
export type Phase = 'active' | 'failed' | 'removing' | 'removed';

/**
 * Why a device is being removed: its backend directory is gone (the
 * toolstack removed it), its domain died, or its frontend vanished (the
 * frontend's state can no longer be read, as when the guest deleted its
 * directory). In the last two cases the backend directory is still there
 * and the device ends by writing Closed to it, as Linux's backends do.
 */
export type Removal = 'backend-removed' | 'domain-dead' | 'frontend-gone';

/** A device as the state machine sees it. Plain data. */
export interface Device {
  readonly key: DeviceKey;
  /** `<type>-<domid>-<devid>`, for logs. */
  readonly name: string;
  readonly backendPath: string;
  readonly frontendPath: string | null;
  /** The backend state as last written (be_state). */
  readonly beState: XenbusState;
  /** The frontend state as last read; any number (invalid ones are named INVALID). */
  readonly feState: number;
  readonly online: boolean;
  readonly protocol: string | null;
  /** The frontend watch is set and the first reads are done. */
  readonly setUp: boolean;
  /** alloc ran and free has not. */
  readonly allocated: boolean;
  /** init ran and disconnect has not: disconnect runs once per connection. */
  readonly opened: boolean;
  /**
   * Found Connected when the registry started (a backend that served it
   * died): taken over without a reconnect, if the type can reattach.
   */
  readonly adopting: boolean;
  readonly phase: Phase;
  /** Why the device is being removed, once it is. */
  readonly removal: Removal | null;
  readonly failure: string | null;
  readonly busy: Busy | null;
  /** Reads in flight, by `side:node`; `true` when another read is wanted after it (coalescing). */
  readonly reads: Readonly<Record<string, boolean>>;
  /** The machine should look for progress once the busy step ends. */
  readonly recheck: boolean;
}

/**
 * A device as its registry shows it: the machine's state without its own
 * bookkeeping (the step in flight, reads in flight, rechecks).
 */
export type DeviceInfo = Omit<Device, 'busy' | 'reads' | 'recheck'>;

/** What the device reacts to. */
export type DeviceEvent =
  | { readonly type: 'start' }
  | { readonly type: 'backend-changed'; readonly node: string }
  | { readonly type: 'frontend-changed'; readonly node: string }
  | { readonly type: 'read'; readonly side: Side; readonly node: string; readonly value: string | null }
  | { readonly type: 'written'; readonly node: string; readonly error?: string }
  | { readonly type: 'watched'; readonly error?: string }
  | { readonly type: 'op-done'; readonly op: OpName; readonly error?: string }
  /** A callback outside the state machine's steps threw (changed notifications, events). */
  | { readonly type: 'callback-failed'; readonly callback: ChangedName | 'event'; readonly error: string }
  | { readonly type: 'removed' }
  | { readonly type: 'domain-dead' };

/** Log levels: 0 errors (also stderr), 1 informative, 2 noisy, 3 flood. */
export type LogLevel = 0 | 1 | 2 | 3;

/** The log levels by name: `ctx.log(LogLevel.info, ...)`, `{ debug: LogLevel.trace }`. */
export const LogLevel = {
  /** Failures (also written to stderr by the default logger). */
  error: 0,
  /** State changes, one line each. */
  info: 1,
  /** XenStore updates. */
  debug: 2,
  /** Everything. */
  trace: 3,
} as const satisfies Readonly<Record<string, LogLevel>>;

/** What the device asks the pipeline to do; results come back as events. */
export type DeviceEffect =
  | { readonly kind: 'read'; readonly side: Side; readonly node: string }
  | { readonly kind: 'write'; readonly node: string; readonly value: string }
  /** A write whose result does not matter (failure reports). */
  | { readonly kind: 'write-quiet'; readonly node: string; readonly value: string }
  | { readonly kind: 'watch-frontend'; readonly path: string }
  | { readonly kind: 'unwatch-frontend' }
  | { readonly kind: 'op'; readonly op: OpName }
  | { readonly kind: 'changed'; readonly callback: ChangedName; readonly node: string }
  | { readonly kind: 'log'; readonly level: LogLevel; readonly message: string }
  | { readonly kind: 'forget' };

/** A step of the machine. */
export interface Transition {
  readonly device: Device;
  readonly effects: readonly DeviceEffect[];
}
