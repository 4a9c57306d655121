// What a device type's operations get to work with.
import type { XenStore } from '../xenstore/index.js';
import type { DeviceInfo, DeviceKey, LogLevel } from './types.js';

/** A device, as its type's operations see it. */
export interface DeviceContext {
  readonly key: DeviceKey;
  /** `<type>-<domid>-<devid>`. */
  readonly name: string;
  readonly backendPath: string;
  /** The frontend's directory, once read. */
  readonly frontendPath: string | null;
  /** The frontend's ring protocol (`x86_32-abi`...), if it wrote one. */
  readonly protocol: string | null;
  /** The whole device state, as of now. */
  readonly state: DeviceInfo;
  /** The XenStore connection of the backend domain. */
  readonly xs: XenStore;
  /** Reads a node of the backend directory. */
  readBackend(node: string): Promise<string | undefined>;
  /** Writes a node of the backend directory. */
  writeBackend(node: string, value: string): Promise<void>;
  /** Reads a node of the frontend directory. */
  readFrontend(node: string): Promise<string | undefined>;
  /** Logs at a level (0 errors ... 3 flood). */
  log(level: LogLevel, message: string): void;
  /**
   * Binds the device's event channel to the frontend's `remotePort`; each
   * event then calls the type's `event` operation, and the channel is
   * unbound when the connection ends. Returns the local port.
   */
  bindEventChannel(remotePort: number): Promise<number>;
  /** Notifies the frontend through the bound event channel. */
  notify(): void;
}

/** A device directory not (yet) served, as `DeviceOps.claim` sees it. */
export interface DeviceDirectory {
  readonly key: DeviceKey;
  readonly backendPath: string;
  /** XenStore, as the backend domain. */
  readonly xs: XenStore;
}

/**
 * A device type's operations, all optional, sync or async. `alloc` returns
 * the device's private data, which the others receive. A thrown exception or
 * a rejected promise fails that device only.
 */
export interface DeviceOps<T = undefined> {
  /**
   * Whether this backend serves a device that appeared (default: yes). A
   * toolstack can write devices of a type for another daemon: libxl writes
   * the primary console as device `console` 0 with the frontend's `type`
   * `xenconsoled`. A declined device is left untouched (nothing written, no
   * state machine) until its directory is removed and written anew.
   */
  claim?(dir: DeviceDirectory): boolean | Promise<boolean>;
  /** A device appeared; returns its private data. */
  alloc?(ctx: DeviceContext): T | Promise<T>;
  /** Prepare what can be done without the frontend (before InitWait). */
  init?(ctx: DeviceContext, data: T): void | Promise<void>;
  /** The frontend is ready: map rings, bind event channels (before Connected). */
  connect?(ctx: DeviceContext, data: T): void | Promise<void>;
  /**
   * The device was found Connected when the registry started: a backend
   * that served it died (or handed it over). Take its rings over as they
   * are, without the frontend noticing (after `alloc`, instead of `init`
   * and `connect`; nothing is written). A type without it leaves such a
   * device alone, as QEMU does; one that throws fails the device.
   */
  reattach?(ctx: DeviceContext, data: T): void | Promise<void>;
  /** An event arrived on the device's event channel (devices whose data path is in TypeScript). */
  event?(ctx: DeviceContext, data: T): void | Promise<void>;
  /** Tear down the connection (once per connection). */
  disconnect?(ctx: DeviceContext, data: T): void | Promise<void>;
  /** The device is going away. */
  free?(ctx: DeviceContext, data: T): void | Promise<void>;
  /** A node of the backend directory changed. */
  backendChanged?(ctx: DeviceContext, data: T, node: string): void | Promise<void>;
  /** A node of the frontend directory changed. */
  frontendChanged?(ctx: DeviceContext, data: T, node: string): void | Promise<void>;
}
