// The backend registry: per device type, scans and watches
// <backend-domain-path>/backend/<type>/<domid>/<devid> for every guest
// domain, creates a device per entry and drives each through the state
// machine: a pipeline per device (events -> scan(reduce) -> effects, whose
// results are events again). Lookups are maps; watch tokens are structured
// strings (XenStore.watch$ makes them).
import { BehaviorSubject, Subject, catchError, scan } from 'rxjs';
import type { Observable, Subscription } from 'rxjs';

import type { EventChannelBinding, Platform } from '../platform/index.js';
import { isXenStoreError } from '../xenstore/index.js';
import type { XenStore } from '../xenstore/index.js';
import type { DeviceContext, DeviceOps } from './context.js';
import { LogLevels, stderrLogger } from './log.js';
import { XenbusState } from './state.js';
import type { LogEntry, Logger } from './log.js';
import { newDevice, reduce } from './machine.js';
import type { MachineOptions } from './machine.js';
import type { Device, DeviceEffect, DeviceEvent, DeviceInfo, DeviceKey, LogLevel, Transition } from './types.js';

/** How the registry runs. */
export interface RegistryOptions {
  /** The domain serving the backends (default 0). */
  readonly backendDomid?: number;
  /** Where log lines go (default: errors to stderr). */
  readonly logger?: Logger;
  /** Global log level (default 0). */
  readonly debug?: LogLevel;
  /**
   * Which domains exist (the lifecycle's `DomainWatcher` is one): a device
   * of a domain that is gone, or goes, is torn down. Without it the
   * registry learns of deaths from XenStore's `@releaseDomain`, for the
   * domains it saw introduced.
   */
  readonly domains?: DomainLiveness;
  /**
   * The backend domain's platform, for device types whose data path is in
   * TypeScript and use `ctx.bindEventChannel()`.
   */
  readonly platform?: Platform;
}

/** What the registry needs to know of domains. */
export interface DomainLiveness {
  /** Domains that died (dying or gone), as they die. */
  readonly deaths$: Observable<number>;
  /** Whether a domain exists now and is not dying. */
  exists(domid: number): boolean | Promise<boolean>;
}

/** How a device type is served. */
export interface RegisterOptions extends MachineOptions {
  /** Log level of this type's devices (default: the global one). */
  readonly debug?: LogLevel;
}

interface Runtime {
  device: Device;
  /** The device's event channel, when its type bound one. */
  channel: EventChannelBinding | null;
  readonly events: Subject<DeviceEvent>;
  readonly state$: BehaviorSubject<Device>;
  readonly ctx: DeviceContext;
  data: unknown;
  frontendWatch: Subscription | null;
  pipeline: Subscription | null;
  /** The toolstack made the device anew while this one was going: look again once it is gone. */
  recreate: boolean;
}

interface DeviceType {
  readonly type: string;
  readonly ops: DeviceOps<unknown>;
  readonly options: RegisterOptions;
  readonly base: string;
  watch: Subscription | null;
}

function keyOf(type: string, domid: number, devid: number): string {
  return `${type}/${String(domid)}/${String(devid)}`;
}

function errorText(err: unknown): string {
  if (isXenStoreError(err)) return err.code;
  return err instanceof Error ? err.message : String(err);
}

const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;

/** Serves xenbus backends of one backend domain. */
/** Whether two states of a device hold the same values. */
function sameDevice(a: Device, b: Device): boolean {
  if (a === b) return true;
  return (Object.keys(a) as (keyof Device)[]).every((k) => {
    const x: unknown = a[k];
    const y: unknown = b[k];
    // The nested values (key, busy, reads) are small plain data.
    return x === y || (typeof x === 'object' && typeof y === 'object' && JSON.stringify(x) === JSON.stringify(y));
  });
}

export class XenbusRegistry {
  readonly #xs: XenStore;
  readonly #backendDomainPath: string;
  readonly #types = new Map<string, DeviceType>();
  readonly #devices = new Map<string, Runtime>();
  readonly #byDomain = new Map<number, Set<string>>();
  readonly #introduced = new Set<number>();
  /** Domains seen released through XenStore and not introduced since. */
  readonly #released = new Set<number>();
  /**
   * Devices removed while their backend directory stayed (frontend gone,
   * domain dead): not served again until the toolstack writes the device
   * anew (backend state Initialising) or removes the directory.
   */
  readonly #retired = new Set<string>();
  // Devices their type's `claim` declined, until their directory goes.
  readonly #declined = new Set<string>();
  readonly #domains: DomainLiveness | undefined;
  readonly #levels: LogLevels;
  readonly #logger: Logger;
  /** No logger was given: the default one, quiet while `log$` is watched. */
  readonly #defaultLogger: boolean;
  readonly #devices$ = new Subject<Device>();
  readonly #log$ = new Subject<LogEntry>();
  readonly #subscriptions: Subscription[] = [];
  readonly #platform: Platform | undefined;
  #closed = false;

  /** Every device's state changes, each change once. */
  readonly devices$: Observable<DeviceInfo> = this.#devices$.asObservable();
  /**
   * Every log line that passes the levels. While it has a subscriber, the
   * default logger (errors to stderr) keeps quiet: the subscriber is the
   * log. A logger given in the options always gets every line.
   */
  readonly log$: Observable<LogEntry> = this.#log$.asObservable();

  private constructor(xs: XenStore, backendDomainPath: string, options: RegistryOptions) {
    this.#xs = xs;
    this.#backendDomainPath = backendDomainPath;
    this.#levels = new LogLevels(options.debug ?? 0);
    this.#logger = options.logger ?? stderrLogger;
    this.#defaultLogger = options.logger === undefined;
    this.#platform = options.platform;
    this.#domains = options.domains;
    if (options.domains) this.#subscriptions.push(options.domains.deaths$.subscribe((d) => this.#domainDied(d)));
    // A released domain's devices go with it. Only domains seen introduced
    // count, so devices of domains never introduced are left alone.
    this.#subscriptions.push(
      xs.watch$('@releaseDomain').subscribe({
        next: () => void this.#checkReleased(),
        error: (err: unknown) => this.#log(0, null, `watching @releaseDomain failed: ${errorText(err)}`),
      }),
    );
  }

  /** A registry for the backends of `backendDomid` (default: the platform's domain, or dom0). */
  static async create(xs: XenStore, options: RegistryOptions = {}): Promise<XenbusRegistry> {
    const path = await xs.getDomainPath(options.backendDomid ?? options.platform?.domid ?? 0);
    return new XenbusRegistry(xs, path, options);
  }

  /** Serves a device type: scans its existing devices and watches for more. */
  async register<T>(type: string, ops: DeviceOps<T>, options: RegisterOptions = {}): Promise<void> {
    if (this.#types.has(type)) throw new Error(`device type ${type} is already registered`);
    if (!/^[A-Za-z0-9_-]+$/.test(type)) throw new Error(`invalid device type name ${JSON.stringify(type)}`);
    const dt: DeviceType = {
      type,
      ops,
      options: { ...options, adopt: ops.reattach !== undefined },
      base: `${this.#backendDomainPath}/backend/${type}`,
      watch: null,
    };
    this.#types.set(type, dt);
    if (options.debug !== undefined) this.#log(1, null, `device type ${type}: debug level ${String(options.debug)}`);
    await new Promise<void>((resolve, reject) => {
      let first = true;
      dt.watch = this.#xs.watch$(dt.base).subscribe({
        next: (path) => {
          if (first) {
            first = false;
            resolve();
          }
          void this.#backendEvent(dt, path);
        },
        error: (err: unknown) => {
          this.#log(0, null, `watching ${dt.base} failed: ${errorText(err)}`);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      });
    });
  }

  /** The device, if the registry has it. */
  device(type: string, domid: number, devid: number): DeviceInfo | undefined {
    return this.#devices.get(keyOf(type, domid, devid))?.device;
  }

  /** Devices the registry has now. */
  list(): DeviceInfo[] {
    return [...this.#devices.values()].map((r) => r.device);
  }

  /** One device's states: the current one, then each change; completes when it is removed. */
  state$(type: string, domid: number, devid: number): Observable<DeviceInfo> | undefined {
    return this.#devices.get(keyOf(type, domid, devid))?.state$.asObservable();
  }

  /** Sets the log level globally, or of one device (by name). */
  setDebug(level: LogLevel, device?: string): void {
    this.#levels.set(level, device);
  }

  /** Stops serving: tears every device down (disconnect, free) and stops watching. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const dt of this.#types.values()) dt.watch?.unsubscribe();
    for (const s of this.#subscriptions) s.unsubscribe();
    const gone = [...this.#devices.values()].map(
      (rt) =>
        new Promise<void>((resolve) => {
          rt.state$.subscribe({ complete: resolve });
          rt.events.next({ type: 'removed' });
        }),
    );
    await Promise.all(gone);
  }

  #log(level: LogLevel, device: string | null, message: string): void {
    if (!this.#levels.passes(level, device)) return;
    const entry = { level, device, message };
    if (!(this.#defaultLogger && this.#log$.observed)) this.#logger(entry);
    this.#log$.next(entry);
  }

  async #backendEvent(dt: DeviceType, path: string): Promise<void> {
    if (this.#closed) return;
    const rest = path === dt.base ? '' : path.startsWith(`${dt.base}/`) ? path.slice(dt.base.length + 1) : null;
    if (rest === null) return;
    const [domPart, devPart, ...node] = rest === '' ? [] : rest.split('/');
    try {
      if (domPart === undefined) return await this.#rescan(dt);
      if (!DECIMAL.test(domPart)) return this.#log(2, null, `ignoring ${path}: not a domain id`);
      const domid = Number(domPart);
      if (devPart === undefined) return await this.#rescanDomain(dt, domid);
      if (!DECIMAL.test(devPart)) return this.#log(2, null, `ignoring ${path}: not a device id`);
      const devid = Number(devPart);
      const rt = this.#devices.get(keyOf(dt.type, domid, devid));
      // A device on its way out does not take changes of a directory the
      // toolstack may already have written anew.
      const serving = rt !== undefined && rt.device.phase !== 'removing' && rt.device.phase !== 'removed';
      if (node.length === 0) {
        // The device directory itself changed: created, or removed.
        const exists = await this.#xs.exists(`${dt.base}/${domPart}/${devPart}`);
        if (!exists) {
          this.#retired.delete(keyOf(dt.type, domid, devid));
          this.#declined.delete(keyOf(dt.type, domid, devid));
          rt?.events.next({ type: 'removed' });
        } else if (serving) rt.events.next({ type: 'backend-changed', node: '' });
        else await this.#consider(dt, domid, devid, true);
        return;
      }
      if (serving) rt.events.next({ type: 'backend-changed', node: node.join('/') });
      else await this.#consider(dt, domid, devid);
    } catch (err) {
      this.#log(0, null, `handling ${path} failed: ${errorText(err)}`);
    }
  }

  /** Finds the devices of a type: new ones are created, vanished ones removed. */
  async #rescan(dt: DeviceType): Promise<void> {
    const domains = (await this.#xs.list(dt.base).catch(() => [])).filter((d) => DECIMAL.test(d)).map(Number);
    const present = new Set(domains);
    for (const rt of this.#devices.values()) {
      if (rt.device.key.type === dt.type && !present.has(rt.device.key.domid)) rt.events.next({ type: 'removed' });
    }
    await Promise.all(domains.map((d) => this.#rescanDomain(dt, d)));
  }

  async #rescanDomain(dt: DeviceType, domid: number): Promise<void> {
    const ids = (await this.#xs.list(`${dt.base}/${String(domid)}`).catch(() => []))
      .filter((d) => DECIMAL.test(d))
      .map(Number);
    const present = new Set(ids);
    for (const key of this.#byDomain.get(domid) ?? []) {
      const rt = this.#devices.get(key);
      if (rt && rt.device.key.type === dt.type && !present.has(rt.device.key.devid)) rt.events.next({ type: 'removed' });
    }
    for (const set of [this.#retired, this.#declined]) {
      for (const id of [...set]) {
        const [type, d, n] = id.split('/');
        if (type === dt.type && Number(d) === domid && !present.has(Number(n))) set.delete(id);
      }
    }
    await Promise.all(ids.map((devid) => this.#consider(dt, domid, devid, true)));
  }

  /**
   * A device directory the registry does not serve: serve it if it exists
   * (`seen`: the caller just saw it), unless it is one the registry retired
   * and the toolstack has not written anew.
   */
  async #consider(dt: DeviceType, domid: number, devid: number, seen = false): Promise<void> {
    const id = keyOf(dt.type, domid, devid);
    const rt = this.#devices.get(id);
    if (rt) {
      // Still going away: look again once it is gone.
      if (rt.device.phase === 'removing' || rt.device.phase === 'removed') rt.recreate = true;
      return;
    }
    const dir = `${dt.base}/${String(domid)}/${String(devid)}`;
    if (this.#retired.has(id)) {
      const state = await this.#xs.tryRead(`${dir}/state`);
      if (state !== String(XenbusState.Initialising) || this.#devices.has(id)) return;
      this.#retired.delete(id);
      this.#log(1, null, `${dir}: written anew by the toolstack`);
    } else if (!seen && !(await this.#xs.exists(dir))) {
      return;
    }
    if (this.#declined.has(id)) return;
    if (dt.ops.claim) {
      const key: DeviceKey = { type: dt.type, domid, devid };
      let mine: boolean;
      try {
        mine = await dt.ops.claim({ key, backendPath: dir, xs: this.#xs });
      } catch (err) {
        this.#log(0, null, `${dir}: claim() failed, leaving it alone: ${errorText(err)}`);
        mine = false;
      }
      if (!mine) {
        this.#declined.add(id);
        this.#log(1, null, `${dir}: not for this backend, left alone`);
        return;
      }
    }
    // Another event's claim may have created it meanwhile: #create checks.
    this.#create(dt, domid, devid);
  }

  #create(dt: DeviceType, domid: number, devid: number): void {
    if (this.#closed) return;
    const key: DeviceKey = { type: dt.type, domid, devid };
    const id = keyOf(dt.type, domid, devid);
    if (this.#devices.has(id)) return;
    const device = newDevice(key, `${dt.base}/${String(domid)}/${String(devid)}`);
    if (dt.options.debug !== undefined) this.#levels.set(dt.options.debug, device.name);
    const events = new Subject<DeviceEvent>();
    const state$ = new BehaviorSubject(device);
    const xs = this.#xs;
    // The context is built before the runtime it reads from; `rt` is set below.
    let rtRef: Runtime | null = null;
    const ctx: DeviceContext = {
      key,
      name: device.name,
      backendPath: device.backendPath,
      get frontendPath() {
        return rtRef?.device.frontendPath ?? null;
      },
      get protocol() {
        return rtRef?.device.protocol ?? null;
      },
      get state() {
        return rtRef?.device ?? device;
      },
      xs,
      readBackend: (node) => xs.tryRead(`${device.backendPath}/${node}`),
      writeBackend: async (node, value) => {
        const err = await this.#guardedWrite(device.backendPath, node, value);
        if (err) throw new Error(`writing ${node} failed: ${err}`);
      },
      readFrontend: async (node) => {
        const fe = rtRef?.device.frontendPath;
        return fe ? xs.tryRead(`${fe}/${node}`) : undefined;
      },
      log: (level, message) => this.#log(level, device.name, message),
      bindEventChannel: (remotePort) =>
        Promise.resolve().then(() => {
          if (!rtRef) throw new Error('device not ready');
          return this.#bindEventChannel(dt, rtRef, remotePort);
        }),
      notify: () => {
        const c = rtRef?.channel;
        if (!c) throw new Error(`${device.name} has no event channel bound`);
        c.notify();
      },
    };
    const rt: Runtime = {
      device,
      events,
      state$,
      ctx,
      data: undefined,
      frontendWatch: null,
      pipeline: null,
      channel: null,
      recreate: false,
    };
    rtRef = rt;
    this.#devices.set(id, rt);
    let domainDevices = this.#byDomain.get(domid);
    if (!domainDevices) this.#byDomain.set(domid, (domainDevices = new Set()));
    domainDevices.add(id);
    this.#noteIntroduced(domid);

    const initial: Transition = { device, effects: [] };
    rt.pipeline = events
      .pipe(
        scan((t: Transition, ev: DeviceEvent) => reduce(t.device, ev, dt.options), initial),
        catchError((err: unknown) => {
          this.#log(0, device.name, `state machine failed: ${errorText(err)}`);
          return [];
        }),
      )
      .subscribe((t) => {
        // An event that changed nothing is no change to tell.
        if (!sameDevice(t.device, rt.device)) {
          rt.device = t.device;
          state$.next(t.device);
          this.#devices$.next(t.device);
        }
        for (const e of t.effects) this.#perform(dt, rt, e);
      });
    this.#log(1, device.name, 'new device');
    events.next({ type: 'start' });
    void this.#checkAlive(rt);
  }

  /** A device of a domain that is already gone is torn down, not left waiting for it. */
  async #checkAlive(rt: Runtime): Promise<void> {
    const { domid } = rt.device.key;
    let alive: boolean;
    try {
      if (this.#domains) alive = await this.#domains.exists(domid);
      else if (this.#released.has(domid)) alive = await this.#xs.isDomainIntroduced(domid);
      else return;
    } catch (err) {
      this.#log(2, rt.device.name, `cannot tell whether domain ${String(domid)} exists: ${errorText(err)}`);
      return;
    }
    if (alive) this.#released.delete(domid);
    else rt.events.next({ type: 'domain-dead' });
  }

  /** Performs an effect; its result comes back later as an event. */
  #perform(dt: DeviceType, rt: Runtime, e: DeviceEffect): void {
    const { events, device } = rt;
    const name = rt.device.name;
    switch (e.kind) {
      case 'log':
        this.#log(e.level, name, e.message);
        return;
      case 'read': {
        const dir = e.side === 'backend' ? device.backendPath : rt.device.frontendPath;
        const read = dir === null ? Promise.resolve(undefined) : this.#xs.tryRead(`${dir}/${e.node}`);
        read.then(
          (value) => events.next({ type: 'read', side: e.side, node: e.node, value: value ?? null }),
          (err: unknown) => {
            this.#log(2, name, `reading ${e.side} ${e.node} failed: ${errorText(err)}`);
            events.next({ type: 'read', side: e.side, node: e.node, value: null });
          },
        );
        return;
      }
      case 'write':
        void this.#guardedWrite(device.backendPath, e.node, e.value).then((error) =>
          events.next({ type: 'written', node: e.node, ...(error ? { error } : {}) }),
        );
        return;
      case 'write-quiet':
        void this.#guardedWrite(device.backendPath, e.node, e.value);
        return;
      case 'watch-frontend': {
        const fe = e.path;
        let first = true;
        rt.frontendWatch?.unsubscribe();
        rt.frontendWatch = this.#xs.watch$(fe).subscribe({
          next: (p) => {
            if (first) {
              // The watch fires once when set: it is in place.
              first = false;
              events.next({ type: 'watched' });
              return;
            }
            if (p === fe) events.next({ type: 'frontend-changed', node: '' });
            else if (p.startsWith(`${fe}/`)) events.next({ type: 'frontend-changed', node: p.slice(fe.length + 1) });
          },
          error: (err: unknown) => {
            if (first) events.next({ type: 'watched', error: errorText(err) });
            else this.#log(0, name, `frontend watch failed: ${errorText(err)}`);
          },
        });
        return;
      }
      case 'unwatch-frontend':
        rt.frontendWatch?.unsubscribe();
        rt.frontendWatch = null;
        return;
      case 'op': {
        const { ops } = dt;
        const { ctx, data } = rt;
        const call = (): unknown => {
          switch (e.op) {
            case 'alloc':
              return ops.alloc?.(ctx);
            case 'init':
              return ops.init?.(ctx, data);
            case 'connect':
              return ops.connect?.(ctx, data);
            case 'reattach':
              return ops.reattach?.(ctx, data);
            case 'disconnect':
              return ops.disconnect?.(ctx, data);
            case 'free':
              return ops.free?.(ctx, data);
            default: {
              const never: never = e.op;
              return never;
            }
          }
        };
        Promise.resolve()
          .then(call)
          .then(
            (result) => {
              if (e.op === 'alloc') rt.data = result;
              // A connection's event channel ends with it.
              if (e.op === 'disconnect' || e.op === 'free') this.#unbindEventChannel(rt);
              events.next({ type: 'op-done', op: e.op });
            },
            (err: unknown) => events.next({ type: 'op-done', op: e.op, error: errorText(err) }),
          );
        return;
      }
      case 'changed': {
        const { ops } = dt;
        Promise.resolve()
          .then(() =>
            e.callback === 'backendChanged'
              ? ops.backendChanged?.(rt.ctx, rt.data, e.node)
              : ops.frontendChanged?.(rt.ctx, rt.data, e.node),
          )
          .catch((err: unknown) => events.next({ type: 'callback-failed', callback: e.callback, error: errorText(err) }));
        return;
      }
      case 'forget':
        this.#forget(rt);
        return;
      default: {
        const never: never = e;
        return never;
      }
    }
  }

  /**
   * Writes a node of a backend directory only if the directory still
   * exists, atomically: a device removed by the toolstack is never
   * re-created by a late write. Returns the error code, if any.
   */
  async #guardedWrite(dir: string, node: string, value: string): Promise<string | undefined> {
    try {
      const written = await this.#xs.transaction(async (tx) => {
        if (!(await tx.exists(dir))) return false;
        await tx.write(`${dir}/${node}`, value);
        return true;
      });
      return written ? undefined : 'ENOENT';
    } catch (err) {
      return errorText(err);
    }
  }

  /**
   * Binds a device's event channel (as the reference's bind_evtchn) on the
   * platform's event loop; each event calls its type's `event`, one at a
   * time, the port unmasked after each call.
   */
  #bindEventChannel(dt: DeviceType, rt: Runtime, remotePort: number): number {
    if (rt.channel) return rt.channel.port;
    if (!this.#platform) throw new Error('no platform: give the registry a platform to bind event channels');
    const channel = this.#platform.bindEventChannel(
      rt.device.key.domid,
      remotePort,
      () => dt.ops.event?.(rt.ctx, rt.data),
      (err: unknown) => rt.events.next({ type: 'callback-failed', callback: 'event', error: errorText(err) }),
    );
    rt.channel = channel;
    this.#log(2, rt.device.name, `bind evtchn port ${String(channel.port)}`);
    return channel.port;
  }

  #unbindEventChannel(rt: Runtime): void {
    const c = rt.channel;
    if (!c) return;
    rt.channel = null;
    try {
      c.unbind();
    } catch {
      // Already closed on the other side's death.
    }
    this.#log(2, rt.device.name, `unbind evtchn port ${String(c.port)}`);
  }

  #forget(rt: Runtime): void {
    this.#unbindEventChannel(rt);
    const { key, name } = rt.device;
    const id = keyOf(key.type, key.domid, key.devid);
    if (this.#devices.get(id) !== rt) return;
    this.#devices.delete(id);
    if (rt.device.removal !== 'backend-removed' && !this.#closed) this.#retired.add(id);
    const dt = this.#types.get(key.type);
    if (rt.recreate && dt && !this.#closed) {
      this.#consider(dt, key.domid, key.devid).catch((err: unknown) => {
        this.#log(0, name, `looking at the device again failed: ${errorText(err)}`);
      });
    }
    const domainDevices = this.#byDomain.get(key.domid);
    domainDevices?.delete(id);
    if (domainDevices?.size === 0) this.#byDomain.delete(key.domid);
    this.#levels.forget(name);
    rt.frontendWatch?.unsubscribe();
    queueMicrotask(() => {
      rt.pipeline?.unsubscribe();
      rt.state$.complete();
    });
  }

  #noteIntroduced(domid: number): void {
    if (this.#introduced.has(domid)) return;
    this.#xs.isDomainIntroduced(domid).then(
      (yes) => {
        if (!yes) return;
        this.#introduced.add(domid);
        this.#released.delete(domid);
      },
      () => undefined,
    );
  }

  async #checkReleased(): Promise<void> {
    for (const domid of [...this.#introduced]) {
      const still = await this.#xs.isDomainIntroduced(domid).catch(() => true);
      if (!still) {
        this.#released.add(domid);
        this.#domainDied(domid);
      }
    }
  }

  #domainDied(domid: number): void {
    this.#introduced.delete(domid);
    for (const id of this.#byDomain.get(domid) ?? []) this.#devices.get(id)?.events.next({ type: 'domain-dead' });
  }
}
