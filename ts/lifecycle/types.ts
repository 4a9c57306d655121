// The vocabulary of the VM lifecycle: what it is asked (actions), what it
// announces (events, shaped like QEMU's QMP events), what it asks its host to
// do (effects) and what it remembers between main-loop steps (state).
import type { RunState } from './run-state.js';

/**
 * Why the VM shut down or reset (QAPI `ShutdownCause`). The order matters:
 * every cause from `guest-shutdown` on is reported as guest-initiated.
 */
export const SHUTDOWN_CAUSES = [
  'none',
  'host-error',
  'host-qmp-quit',
  'host-qmp-system-reset',
  'host-signal',
  'host-ui',
  'guest-shutdown',
  'guest-reset',
  'guest-panic',
  'subsystem-reset',
  'snapshot-load',
] as const;

/** Why the VM shut down or reset; `none` means "nothing requested". */
export type ShutdownCause = (typeof SHUTDOWN_CAUSES)[number];

/** A cause a request can carry: asking with `none` would ask for nothing. */
export type RequestCause = Exclude<ShutdownCause, 'none'>;

/** Whether QMP reports `cause` with `guest: true`. */
export function isGuestCause(cause: ShutdownCause): boolean {
  return SHUTDOWN_CAUSES.indexOf(cause) >= SHUTDOWN_CAUSES.indexOf('guest-shutdown');
}

/** What woke a suspended guest; `none` means "no wakeup pending". */
export const WAKEUP_REASONS = ['none', 'rtc', 'pmtimer', 'other'] as const;

/** What woke a suspended guest. */
export type WakeupReason = (typeof WAKEUP_REASONS)[number];

/** What a guest shutdown does: end the VM, or keep it stopped in `shutdown`. */
export type ShutdownAction = 'poweroff' | 'pause';

/** What a reset request does: reset the VM, or shut it down instead. */
export type RebootAction = 'reset' | 'shutdown';

/** What a guest panic does. `exit-failure` ends the VM with status 1. */
export type PanicAction = 'pause' | 'shutdown' | 'exit-failure' | 'none';

/** The action a GUEST_PANICKED or GUEST_CRASHLOADED event reports. */
export type GuestPanicAction = 'pause' | 'poweroff' | 'run';

/** Why an s390 guest stopped (QAPI `S390CrashReason`). */
export type S390CrashReason = 'unknown' | 'disabled-wait' | 'extint-loop' | 'pgmint-loop' | 'opint-loop';

/**
 * What a guest told about its crash (QAPI `GuestPanicInformation`). 64-bit
 * registers are bigints: a Number would silently round them.
 */
export type GuestPanicInformation =
  | {
      readonly type: 'hyper-v';
      readonly arg1: bigint;
      readonly arg2: bigint;
      readonly arg3: bigint;
      readonly arg4: bigint;
      readonly arg5: bigint;
    }
  | {
      readonly type: 's390';
      readonly core: number;
      readonly pswMask: bigint;
      readonly pswAddr: bigint;
      readonly reason: S390CrashReason;
    };

/** The lists of notifiers the lifecycle calls, one per kind of moment. */
export const NOTIFIER_LISTS = ['exit', 'powerdown', 'suspend', 'wakeup', 'shutdown'] as const;

/** A list of notifiers. */
export type NotifierList = (typeof NOTIFIER_LISTS)[number];

/** How the VM responds to shutdowns, resets and panics (QMP `set-action`). */
export interface LifecycleConfig {
  readonly shutdownAction: ShutdownAction;
  readonly rebootAction: RebootAction;
  readonly panicAction: PanicAction;
  /**
   * Whether the vCPUs can be reset. When they cannot, a reset request ends
   * the VM as a shutdown would, since a half-reset VM cannot run.
   */
  readonly cpusResettable: boolean;
}

/** QEMU's defaults: power off on shutdown, reset on reboot, shut down on panic. */
export const DEFAULT_CONFIG: LifecycleConfig = {
  shutdownAction: 'poweroff',
  rebootAction: 'reset',
  panicAction: 'shutdown',
  cpusResettable: true,
};

/** The signal that ended the VM, kept until the main loop reports it. */
export interface KillInfo {
  readonly signal: number;
  readonly pid: number;
  /** The sender's process name, when the caller could find it. */
  readonly processName?: string;
}

/**
 * Requests waiting for the next main-loop step. Each is a single slot, as in
 * QEMU: a second request of the same kind before the step replaces the first.
 */
export interface PendingRequests {
  readonly debug: boolean;
  readonly suspend: boolean;
  readonly shutdown: ShutdownCause;
  readonly reset: ShutdownCause;
  readonly wakeup: WakeupReason;
  readonly powerdown: boolean;
  readonly vmstop: RunState | null;
  readonly kill: KillInfo | null;
}

/** A registered state-change handler. */
export interface StateHandlerEntry {
  readonly id: string;
  readonly priority: number;
}

/** Everything the lifecycle knows. Plain, immutable data. */
export interface LifecycleState {
  readonly runState: RunState;
  readonly config: LifecycleConfig;
  /** The wakeup reasons that may wake the guest. */
  readonly wakeupEnabled: Readonly<Record<WakeupReason, boolean>>;
  readonly pending: PendingRequests;
  /** State-change handlers in ascending priority; equal priorities in registration order. */
  readonly handlers: readonly StateHandlerEntry[];
  /** Notifier ids per list, in call order (the newest first). */
  readonly notifiers: Readonly<Record<NotifierList, readonly string[]>>;
  /** The exit status once the main loop has decided to end the VM, else null. */
  readonly exitStatus: number | null;
}

// ---------------------------------------------------------------- actions

/** Requests: asked by the guest, by devices or by the host's management. */
export type LifecycleRequest =
  | { readonly type: 'shutdown'; readonly cause: RequestCause }
  | { readonly type: 'reset'; readonly cause: RequestCause }
  | { readonly type: 'suspend' }
  | { readonly type: 'wakeup'; readonly reason: WakeupReason }
  | { readonly type: 'powerdown' }
  | { readonly type: 'debug' }
  | { readonly type: 'vmstop'; readonly state: RunState }
  | { readonly type: 'guest-panicked'; readonly info?: GuestPanicInformation }
  | { readonly type: 'guest-crashloaded'; readonly info?: GuestPanicInformation }
  | { readonly type: 'killed'; readonly signal: number; readonly pid: number; readonly processName?: string };

/** Commands acting at once rather than through the main loop. */
export type LifecycleCommand =
  /** One iteration of the main loop: act on the pending requests. */
  | { readonly type: 'step' }
  /** Start or continue the VM (QMP `cont`). */
  | { readonly type: 'start' }
  /** Stop a running VM now, into `state` (default `paused`; QMP `stop`). */
  | { readonly type: 'stop'; readonly state?: RunState }
  /** Set the run state directly, as migration and snapshot code do. */
  | { readonly type: 'set-state'; readonly state: RunState }
  /** Change what shutdowns, reboots and panics do. */
  | { readonly type: 'configure'; readonly config: Partial<LifecycleConfig> }
  /** Allow or refuse one wakeup reason. */
  | { readonly type: 'wakeup-enable'; readonly reason: WakeupReason; readonly enabled: boolean };

/** Registrations of handlers and notifiers, by caller-chosen ids. */
export type RegistryAction =
  | { readonly type: 'add-state-handler'; readonly id: string; readonly priority: number }
  | { readonly type: 'remove-state-handler'; readonly id: string }
  | { readonly type: 'add-notifier'; readonly list: NotifierList; readonly id: string }
  | { readonly type: 'remove-notifier'; readonly list: NotifierList; readonly id: string };

/** Anything the reducer accepts. */
export type LifecycleAction = LifecycleRequest | LifecycleCommand | RegistryAction;

// ----------------------------------------------------------------- events

/** Events with the names and data of QEMU's QMP events. */
export type LifecycleEvent =
  | { readonly type: 'SHUTDOWN'; readonly guest: boolean; readonly reason: ShutdownCause }
  | { readonly type: 'RESET'; readonly guest: boolean; readonly reason: ShutdownCause }
  | { readonly type: 'STOP' }
  | { readonly type: 'RESUME' }
  | { readonly type: 'SUSPEND' }
  | { readonly type: 'WAKEUP' }
  | { readonly type: 'POWERDOWN' }
  | { readonly type: 'GUEST_PANICKED'; readonly action: GuestPanicAction; readonly info?: GuestPanicInformation }
  | { readonly type: 'GUEST_CRASHLOADED'; readonly action: GuestPanicAction; readonly info?: GuestPanicInformation };

// ---------------------------------------------------------------- effects

/** What the notifiers of a list are given. */
export type NotifierCall =
  | { readonly list: 'shutdown'; readonly cause: ShutdownCause }
  | { readonly list: 'wakeup'; readonly reason: WakeupReason }
  | { readonly list: 'exit' }
  | { readonly list: 'powerdown' }
  | { readonly list: 'suspend' };

/** What the notifiers of list `L` are given. */
export type NotifierCallOf<L extends NotifierList> = Extract<NotifierCall, { readonly list: L }>;

/** Work for the host of the reducer, in the order listed. */
export type LifecycleEffect =
  /** Call these state-change handlers, in this order. */
  | {
      readonly kind: 'state-handlers';
      readonly running: boolean;
      readonly state: RunState;
      readonly order: readonly string[];
    }
  /** Call these notifiers, in this order. */
  | ({ readonly kind: 'notifiers'; readonly order: readonly string[] } & NotifierCall)
  /** Reset the machine's devices. */
  | { readonly kind: 'system-reset'; readonly cause: ShutdownCause }
  /** Tell the machine its guest is waking up. */
  | { readonly kind: 'system-wakeup'; readonly reason: WakeupReason }
  /** A message for the operator (QEMU prints these on stderr). */
  | { readonly kind: 'report'; readonly text: string }
  /** A guest misbehaviour worth logging (QEMU's guest-error log). */
  | { readonly kind: 'guest-log'; readonly text: string }
  /** The action was refused; `message` says why. Nothing else changed. */
  | { readonly kind: 'request-error'; readonly action: LifecycleAction['type']; readonly message: string }
  /** The VM has ended; the process hosting it should exit with `status`. */
  | { readonly kind: 'exit'; readonly status: number };

/** What one action did. */
export interface Reduction {
  readonly state: LifecycleState;
  readonly events: readonly LifecycleEvent[];
  readonly effects: readonly LifecycleEffect[];
}
