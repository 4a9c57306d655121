// The platform, chosen once: the backend domain's event channels and grant
// mapper, simulated or real Xen, with the one event loop (a Rust thread)
// that waits on them. Backends take a Platform; Rust data paths run on its
// loop without crossing into JavaScript, and ports whose data path is in
// TypeScript get their events here, in batches.
import { existsSync } from 'node:fs';

import { native } from '../native.js';
import type { NativePlatform } from '../native.js';
import { PlatformError, platformCall } from './errors.js';
import { GrantDevice } from './sim.js';
import type { SimHost } from './sim.js';

/** Which hypervisor a platform talks to. */
export type PlatformKind = 'simulated' | 'xen';

/** Where Linux's Xen event-channel device is, in a domain running on Xen. */
export const XEN_EVTCHN_DEVICE = '/dev/xen/evtchn';

/** How {@link Platform.open} chooses. */
export interface PlatformOptions {
  /** The simulated hypervisor to use where there is no Xen. */
  readonly host?: SimHost;
  /** The backend domain (default 0, dom0). */
  readonly domid?: number;
  /** Use the simulated host even on Xen (default false). */
  readonly simulated?: boolean;
}

/** An event channel whose events a TypeScript data path handles. */
export interface EventChannelBinding {
  /** Our end. */
  readonly port: number;
  /** Signals the other end. */
  notify(): void;
  /** Closes our end; no more events arrive. */
  unbind(): void;
}

type Handler = () => void | Promise<void>;

interface Bound {
  readonly handler: Handler;
  readonly onError: (err: unknown) => void;
}

/** The backend domain's hypervisor interfaces and event loop. */
export class Platform {
  readonly #bound = new Map<number, Bound>();
  #grants: GrantDevice | null = null;
  #stopped = false;

  private constructor(
    /** @internal */
    readonly native: NativePlatform,
  ) {
    // One function for every port of the platform; it does not keep the
    // process alive.
    native.listen(() => this.#deliver());
  }

  /** Backend domain `domid` (default 0) of a simulated hypervisor. */
  static simulated(host: SimHost, domid = 0): Platform {
    return new Platform(platformCall(() => native.NativePlatform.simulated(host.native, domid)));
  }

  /**
   * Xen, through `/dev/xen/evtchn` and `/dev/xen/gntdev`, for the domain
   * this process runs in (default 0, dom0). ENODEV where there is no Xen, or
   * in builds without real-hypervisor support.
   */
  static xen(domid = 0): Platform {
    return new Platform(platformCall(() => native.NativePlatform.xen(domid)));
  }

  /**
   * Xen when this domain runs on it (`/dev/xen/evtchn` exists), otherwise
   * the simulated host given; an error when there is neither.
   */
  static open(options: PlatformOptions = {}): Platform {
    const domid = options.domid ?? 0;
    if (!options.simulated && existsSync(XEN_EVTCHN_DEVICE)) return Platform.xen(domid);
    if (options.host) return Platform.simulated(options.host, domid);
    throw new PlatformError(
      'ENODEV',
      `no Xen here (${XEN_EVTCHN_DEVICE} does not exist) and no simulated host given`,
    );
  }

  /** Which hypervisor. */
  get kind(): PlatformKind {
    return this.native.kind as PlatformKind;
  }

  /**
   * How the event loop waits: `'io_uring'` on Xen (reading and unmasking
   * event channels in the same system call as the wait), `'epoll'`
   * otherwise or with `XENRX_EVENT_WAIT=epoll`.
   */
  get eventWait(): 'io_uring' | 'epoll' {
    return this.native.eventWait === 'io_uring' ? 'io_uring' : 'epoll';
  }

  /** The backend domain. */
  get domid(): number {
    return this.native.domid;
  }

  /** Maps and copies what other domains granted to the backend domain. */
  get grants(): GrantDevice {
    this.#grants ??= new GrantDevice(this.native.grantDevice());
    return this.#grants;
  }

  /**
   * Binds an event channel to `remotePort` of `remoteDomid` whose events
   * call `handler` (one at a time: the port stays masked until the handler
   * returns or its promise settles, and an event that came meanwhile is
   * delivered then). A handler that throws reports to `onError`.
   */
  bindEventChannel(
    remoteDomid: number,
    remotePort: number,
    handler: Handler,
    onError: (err: unknown) => void = () => undefined,
  ): EventChannelBinding {
    if (this.#stopped) throw new PlatformError('ENODEV', 'the platform was stopped');
    const port = platformCall(() => this.native.bindForJs(remoteDomid, remotePort));
    this.#bound.set(port, { handler, onError });
    let open = true;
    return {
      port,
      notify: () => {
        if (!open) throw new PlatformError('ENOTCONN', `port ${String(port)} was unbound`);
        platformCall(() => this.native.notify(port));
      },
      unbind: () => {
        if (!open) return;
        open = false;
        this.#bound.delete(port);
        if (!this.#stopped) platformCall(() => this.native.unbind(port));
      },
    };
  }

  /** Runs the handlers of the ports that fired, each unmasked once done. */
  #deliver(): void {
    for (const port of this.native.takeEvents()) {
      const bound = this.#bound.get(port);
      if (!bound) continue;
      void Promise.resolve()
        .then(bound.handler)
        .catch((err: unknown) => bound.onError(err))
        .finally(() => {
          if (this.#bound.get(port) !== bound || this.#stopped) return;
          try {
            this.native.unmask(port);
          } catch (err) {
            bound.onError(PlatformError.fromNative(err));
          }
        });
    }
  }

  /**
   * Whether the event loop still runs the data paths (for a health check):
   * resolves to false if it did not answer within `timeoutMs` (default
   * 2000) or was stopped. The JavaScript thread is never held.
   */
  eventLoopResponds(timeoutMs = 2000): Promise<boolean> {
    if (this.#stopped) return Promise.resolve(false);
    return this.native.eventLoopResponds(Math.max(0, Math.min(Math.round(timeoutMs), 2 ** 31)));
  }

  /** Closes the ports bound here and stops the event loop. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#bound.clear();
    this.native.stop();
  }

  [Symbol.dispose](): void {
    this.stop();
  }
}
