// The simulated hypervisor: domains with memfd memory and v1 grant tables,
// event channels over eventfds, usable in one process or, through the
// control socket, across processes.
import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type {
  DomainInfoJs,
  ShutdownReason,
  NativeEventChannel,
  NativeGrantDevice,
  NativeGrantMapping,
  NativeGuestGrantTable,
  NativeSimHost,
  NativeSimHypervisor,
} from '../native.js';
import { platformCall, platformCallAsync } from './errors.js';

/** Why a domain shut down (`SHUTDOWN_*` in Xen's sched.h), as the native core defines them. */
export type { ShutdownReason };

/** A domain's state as the hypervisor reports it (XEN_DOMINF_* flags). */
export interface DomainInfo {
  readonly domid: number;
  readonly running: boolean;
  readonly paused: boolean;
  readonly blocked: boolean;
  readonly dying: boolean;
  /** Set once the domain shut down; unknown codes read `code-<n>`. */
  readonly shutdown?: ShutdownReason | `code-${number}`;
}

/** A domain's state as the native layer reports it, typed. */
export function toDomainInfo(i: DomainInfoJs): DomainInfo {
  return {
    domid: i.domid,
    running: i.running,
    paused: i.paused,
    blocked: i.blocked,
    dying: i.dying,
    ...(i.shutdown ? { shutdown: i.shutdown as DomainInfo['shutdown'] } : {}),
  };
}

/** How to create a simulated domain. */
export interface DomainOptions {
  readonly domid: number;
  /** Create it paused, as a toolstack builds a domain before starting it. */
  readonly paused?: boolean;
  /** Pages of memory (default 1024, 4 MiB). */
  readonly pages?: number;
  /** Grant-table frames at the start of memory (default 4: 2048 entries). */
  readonly grantFrames?: number;
  /** Event-channel ports (default 1024). */
  readonly maxPorts?: number;
}

/** The simulated hypervisor. */
export class SimHypervisor {
  readonly #native: NativeSimHypervisor = new native.NativeSimHypervisor();
  readonly #changes = new Subject<number>();

  /** Domain ids whose state changed (created, paused, shut down, destroyed...), as they change. */
  readonly changes$: Observable<number> = this.#changes.asObservable();

  /** Creates a domain (running unless `paused`). */
  createDomain(options: DomainOptions): void {
    platformCall(() => this.#native.createDomain(options));
    if (options.paused) this.#native.setPaused(options.domid, true);
    this.#changes.next(options.domid);
  }

  /** Destroys a domain (its channels close; mapping it fails from now on). */
  destroyDomain(domid: number): boolean {
    const done = this.#native.destroyDomain(domid);
    if (done) this.#changes.next(domid);
    return done;
  }

  /** Pauses a domain. */
  pauseDomain(domid: number): boolean {
    return this.#change(domid, this.#native.setPaused(domid, true));
  }

  /** Unpauses (starts) a domain. */
  unpauseDomain(domid: number): boolean {
    return this.#change(domid, this.#native.setPaused(domid, false));
  }

  /** The guest shuts down for `reason` (a reboot or crash is a shutdown with that reason, as on Xen). */
  shutdownDomain(domid: number, reason: ShutdownReason): boolean {
    return this.#change(domid, platformCall(() => this.#native.setShutdown(domid, reason)));
  }

  /** Clears a shutdown (a suspended domain resumed). */
  resumeDomain(domid: number): boolean {
    return this.#change(domid, platformCall(() => this.#native.setShutdown(domid, null)));
  }

  /** Every domain's state. */
  domainInfo(): DomainInfo[] {
    return this.#native.domainInfo().map(toDomainInfo);
  }

  #change(domid: number, done: boolean): boolean {
    if (done) this.#changes.next(domid);
    return done;
  }

  /** Ids of the domains. */
  domains(): number[] {
    return this.#native.domains();
  }

  /** Serves the control socket for clients in other processes. */
  serve(socket: string): void {
    platformCall(() => this.#native.serve(socket));
  }

  /** Stops serving the control socket. */
  stopServing(): void {
    this.#native.stopServing();
  }

  /** A client in this process. */
  host(): SimHost {
    return new SimHost(this.#native.host());
  }
}

/** A client of the simulated hypervisor: where domains get their handles. */
export class SimHost {
  /** @internal */
  constructor(readonly native: NativeSimHost) {}

  /** Connects to a hypervisor's control socket (from another process). */
  static connect(socket: string): SimHost {
    return new SimHost(platformCall(() => native.NativeSimHost.connect(socket)));
  }

  /** Event channels of `domid`. */
  evtchn(domid: number): EventChannel {
    return new EventChannel(platformCall(() => this.native.evtchn(domid)));
  }

  /** The gntdev of a backend running in `domid`. */
  gntdev(domid: number): GrantDevice {
    return new GrantDevice(platformCall(() => this.native.gntdev(domid)));
  }

  /** The grant table and memory of guest `domid` (one per guest). */
  gnttab(domid: number): GuestGrantTable {
    return new GuestGrantTable(platformCall(() => this.native.gnttab(domid)));
  }
}

/** Event channels of one domain: ports bound through it are delivered through it. */
export class EventChannel {
  /** @internal */
  constructor(readonly native: NativeEventChannel) {}

  /** Binds a new local port to `remotePort` of `remote` (ESRCH, EINVAL). */
  bindInterdomain(remote: number, remotePort: number): number {
    return platformCall(() => this.native.bindInterdomain(remote, remotePort));
  }

  /** Allocates a port `remote` may bind to. */
  allocUnbound(remote: number): number {
    return platformCall(() => this.native.allocUnbound(remote));
  }

  /** Closes a port (ENOTCONN if not ours). */
  unbind(port: number): void {
    platformCall(() => this.native.unbind(port));
  }

  /** Signals the other end (ENOTCONN if not ours; dropped if unbound). */
  notify(port: number): void {
    platformCall(() => this.native.notify(port));
  }

  /** Pending ports, now; each stays masked until unmasked. */
  pending(): number[] {
    return platformCall(() => this.native.pending());
  }

  /** Waits up to `timeoutMs` for pending ports. */
  waitPending(timeoutMs: number): Promise<number[]> {
    return platformCallAsync(() => this.native.waitPending(timeoutMs));
  }

  /** Re-enables delivery for a port. */
  unmask(port: number): void {
    platformCall(() => this.native.unmask(port));
  }
}

/** One grant span for a copy. */
export interface GrantSpan {
  readonly domid: number;
  readonly gref: number;
  readonly offset: number;
}

/** The backend side: maps and copies what other domains granted. */
export class GrantDevice {
  /** @internal */
  constructor(readonly native: NativeGrantDevice) {}

  /** Maps a batch of grants into one contiguous mapping (all or nothing). */
  map(domid: number, refs: readonly number[], writable: boolean): GrantMapping {
    return new GrantMapping(platformCall(() => this.native.map(domid, [...refs], writable)));
  }

  /** Copies buffers into grants; returns a GNTST status per segment. */
  copyIn(segments: readonly (GrantSpan & { readonly data: Buffer })[]): number[] {
    return platformCall(() => this.native.copyIn(segments.map((s) => ({ ...s }))));
  }

  /** Copies out of grants; each segment gets a status and, if okay, the bytes. */
  copyOut(segments: readonly (GrantSpan & { readonly length: number })[]): { status: number; data?: Buffer }[] {
    return platformCall(() => this.native.copyOut(segments.map((s) => ({ ...s })))).map((r) => ({
      status: r.status,
      ...(r.data ? { data: r.data } : {}),
    }));
  }
}

/** Frames of another domain mapped here. */
export class GrantMapping {
  /** @internal */
  constructor(private readonly native: NativeGrantMapping) {}

  get length(): number {
    return platformCall(() => this.native.length);
  }

  get writable(): boolean {
    return platformCall(() => this.native.writable);
  }

  read(offset: number, length: number): Buffer {
    return platformCall(() => this.native.read(offset, length));
  }

  write(offset: number, data: Buffer): void {
    platformCall(() => this.native.write(offset, data));
  }

  /** Unmaps; the guest's in-use flags clear. */
  unmap(): void {
    this.native.unmap();
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}

/** A guest's grant table and memory (the frontend side). */
export class GuestGrantTable {
  /** @internal */
  constructor(private readonly native: NativeGuestGrantTable) {}

  /** A free, zeroed frame of guest memory. */
  allocPage(): number {
    return platformCall(() => this.native.allocPage());
  }

  freePage(frame: number): void {
    this.native.freePage(frame);
  }

  readPage(frame: number, offset: number, length: number): Buffer {
    return platformCall(() => this.native.readPage(frame, offset, length));
  }

  writePage(frame: number, offset: number, data: Buffer): void {
    platformCall(() => this.native.writePage(frame, offset, data));
  }

  /** Grants a frame to `to`; returns the grant reference. */
  grant(to: number, frame: number, readonly: boolean): number {
    return platformCall(() => this.native.grant(to, frame, readonly));
  }

  /** Ends a grant; EBUSY while the grantee maps it. */
  endAccess(gref: number): void {
    platformCall(() => this.native.endAccess(gref));
  }

  /** An entry's flags (GTF_reading 8, GTF_writing 16 while in use). */
  entryFlags(gref: number): number | undefined {
    return this.native.entryFlags(gref) ?? undefined;
  }

  /** Writes an entry directly, as a hostile guest could. */
  writeEntry(gref: number, flags: number, to: number, frame: number): boolean {
    return platformCall(() => this.native.writeEntry(gref, flags, to, frame));
  }
}
