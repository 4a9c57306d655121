// A simulated frontend's side of the xenbus handshake: it follows the
// backend's state as a Linux frontend driver does, writing its own nodes and
// state. Device-specific setup (rings, ports) comes from a callback.
import { BehaviorSubject, filter, firstValueFrom, timeout } from 'rxjs';
import type { Observable, Subscription } from 'rxjs';

import { XenbusState, parseXenbusInt } from '../xenbus/state.js';
import type { XenStore } from '../xenstore/index.js';

/** What the frontend does at each step. */
export interface FrontendHooks {
  /** The backend waits (InitWait): publish rings and ports; returns nodes to write before Initialised. */
  prepare?(): Promise<Readonly<Record<string, string>>> | Readonly<Record<string, string>>;
  /** The backend is Connected, and so is the frontend now. */
  connected?(): void | Promise<void>;
  /** The connection closed. */
  closed?(): void | Promise<void>;
  /**
   * The backend wrote its state again while both ends are Connected, as
   * blkback does to say the disk changed (a resize): look again.
   */
  changed?(): void | Promise<void>;
}

/** A simulated frontend of one device. */
export class SimFrontend {
  readonly #state = new BehaviorSubject<number>(XenbusState.Initialising);
  readonly #backendState = new BehaviorSubject<number>(XenbusState.Unknown);
  #watch: Subscription | null = null;
  #busy: Promise<void> = Promise.resolve();

  /** Our state, as written. */
  readonly state$: Observable<number> = this.#state.asObservable();
  /** The backend's state, as read. */
  readonly backendState$: Observable<number> = this.#backendState.asObservable();

  private constructor(
    readonly xs: XenStore,
    readonly frontendPath: string,
    readonly backendPath: string,
    private readonly hooks: FrontendHooks,
  ) {}

  /** Starts following the backend of the device at `frontendPath`. */
  static async attach(xs: XenStore, frontendPath: string, hooks: FrontendHooks = {}): Promise<SimFrontend> {
    const backendPath = await xs.read(`${frontendPath}/backend`);
    const fe = new SimFrontend(xs, frontendPath, backendPath, hooks);
    fe.#watch = xs.watch$(`${backendPath}/state`).subscribe(() => {
      fe.#busy = fe.#busy.then(() => fe.#follow()).catch(() => undefined);
    });
    return fe;
  }

  get state(): number {
    return this.#state.value;
  }

  async #setState(state: number): Promise<void> {
    await this.xs.write(`${this.frontendPath}/state`, String(state));
    this.#state.next(state);
  }

  async #follow(): Promise<void> {
    const be = parseXenbusInt(await this.xs.tryRead(`${this.backendPath}/state`)) ?? XenbusState.Unknown;
    this.#backendState.next(be);
    const me = this.#state.value;
    if (be === XenbusState.InitWait && me === XenbusState.Initialising) {
      const nodes = (await this.hooks.prepare?.()) ?? {};
      await this.xs.transaction(async (tx) => {
        for (const [k, v] of Object.entries(nodes)) await tx.write(`${this.frontendPath}/${k}`, v);
        await tx.write(`${this.frontendPath}/state`, String(XenbusState.Initialised));
      });
      this.#state.next(XenbusState.Initialised);
    } else if (be === XenbusState.Connected && me === XenbusState.Initialised) {
      await this.#setState(XenbusState.Connected);
      await this.hooks.connected?.();
    } else if (be === XenbusState.Connected && me === XenbusState.Connected) {
      await this.hooks.changed?.();
    } else if (be === XenbusState.Closing && me !== XenbusState.Closed) {
      // The backend wants to close (hot-unplug): follow it down.
      await this.#setState(XenbusState.Closing);
      await this.#setState(XenbusState.Closed);
      await this.hooks.closed?.();
    }
  }

  /** Closes the device from the frontend side: Closing, then Closed. */
  async close(): Promise<void> {
    await this.#busy;
    await this.#setState(XenbusState.Closing);
    await this.#setState(XenbusState.Closed);
    await this.hooks.closed?.();
  }

  /** Starts over after a close, as a rebooted or reloaded driver does. */
  async reconnect(): Promise<void> {
    await this.#busy;
    await this.#setState(XenbusState.Initialising);
  }

  /** Writes any state, e.g. garbage, as a hostile guest could. */
  async writeRawState(value: string): Promise<void> {
    await this.xs.write(`${this.frontendPath}/state`, value);
  }

  /** Resolves when the backend reaches `state` (or rejects after `ms`). */
  waitBackend(state: number, ms = 60_000): Promise<number> {
    return firstValueFrom(this.#backendState.pipe(filter((s) => s === state), timeout(ms)));
  }

  /** Resolves when our state is `state`. */
  waitState(state: number, ms = 60_000): Promise<number> {
    return firstValueFrom(this.#state.pipe(filter((s) => s === state), timeout(ms)));
  }

  /** Stops following the backend. */
  detach(): void {
    this.#watch?.unsubscribe();
    this.#watch = null;
  }
}
