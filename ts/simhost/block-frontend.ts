// A simulated guest's block device: the rings and port from the Rust side
// (NativeSimBlkFront), the xenbus handshake from SimFrontend, negotiated as
// Linux's xen-blkfront does: the ring size from the backend's
// `max-ring-page-order` at InitWait, the disk's geometry and features once
// the backend is Connected.
import { setTimeout as delay } from 'node:timers/promises';

import { BehaviorSubject, Subject, filter, firstValueFrom, map, timeout } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeSimBlkFront as NativeSimBlkFrontClass, SimBlkFrontStats, SimBlkVerifyReport } from '../native.js';
import { PlatformError, platformCall, platformCallAsync } from '../platform/errors.js';
import type { SimHost } from '../platform/index.js';
import { parseXenbusInt } from '../xenbus/state.js';
import type { XenStore } from '../xenstore/index.js';
import { SimFrontend } from './frontend.js';

/** A blkif slot layout, as the frontend's `protocol` node names it. */
export type BlkifProtocolName = 'x86_64-abi' | 'x86_32-abi';

/** The native frontend (one per connection). */
export type NativeSimBlkFront = NativeSimBlkFrontClass;

/** Counters of a simulated block frontend. */
export type SimBlockFrontendStats = SimBlkFrontStats;

/** How the simulated guest sets up its block device. */
export interface SimBlockFrontendOptions {
  /**
   * The largest ring the guest wants, as 2^order pages (0 to 4; default 0,
   * as Linux's `xen_blkfront.max_ring_page_order`). The ring used is the
   * smaller of this and the backend's `max-ring-page-order`.
   */
  readonly ringPageOrder?: number;
  /** The slot layout (default: the native one). */
  readonly protocol?: BlkifProtocolName;
  /** Requests in flight at most (default: as many as the ring has slots). */
  readonly queueDepth?: number;
  /** The domain serving the device (default: the frontend's `backend-id`, else 0). */
  readonly backendDomid?: number;
  /**
   * The most segments the guest puts in one indirect request (Linux's
   * `xen_blkfront.max_indirect_segments`); default: whatever the backend
   * offers, up to 4096.
   */
  readonly maxIndirectSegments?: number;
  /** How long one operation waits for the backend before `ETIMEDOUT` (default 30000). */
  readonly timeoutMs?: number;
  /**
   * The most queues the guest wants (Linux's `xen_blkfront.max_queues`;
   * default 1). The queues used are the smaller of this and the backend's
   * `multi-queue-max-queues`; operations are spread over them in turn.
   */
  readonly queues?: number;
  /**
   * Offer persistent grants (`feature-persistent`; default true, as
   * Linux's `xen_blkfront.feature_persistent`): used when the backend
   * offers them too.
   */
  readonly persistent?: boolean;
}

/** What the backend offers, read once it is Connected. */
export interface SimBlockFeatures {
  /** `feature-flush-cache`: flush requests are served. */
  readonly flushCache: boolean;
  /** `feature-barrier`. */
  readonly barrier: boolean;
  /** `feature-discard`: discard requests are served. */
  readonly discard: boolean;
  /** `discard-secure`: secure discard is served. */
  readonly discardSecure: boolean;
  /** `discard-granularity` in bytes (0 if not given). */
  readonly discardGranularity: number;
  /** `discard-alignment` in bytes (0 if not given). */
  readonly discardAlignment: number;
  /** Segments per indirect request in use (from `feature-max-indirect-segments`); undefined: none. */
  readonly maxIndirectSegments: number | undefined;
  /** The ring in use spans 2^ringPageOrder pages. */
  readonly ringPageOrder: number;
  /** Queues (rings) in use. */
  readonly queues: number;
  /** Persistent grants in use (both ends offer `feature-persistent`). */
  readonly persistent: boolean;
}

/** A verifying workload (see {@link SimBlockFrontend.startVerify}). */
export interface SimBlockVerifyOptions {
  /** 4 KiB blocks used, split between the queues. */
  readonly blocks: number;
  /** The first block (default 0). */
  readonly firstBlock?: number;
  /** Requests in flight per queue (default 32). */
  readonly depth?: number;
  /** Seeds the choices (default 1). */
  readonly seed?: number;
  /** A flush after this many writes (default 32). */
  readonly flushEvery?: number;
}

/** A running verifying workload. */
export interface SimBlockVerifyRun {
  /** Requests completed so far, all queues. */
  progress(): number;
  /** Stops it: what is in flight finishes; one report per queue. */
  stop(): Promise<SimBlkVerifyReport[]>;
}

/** `info` bits (blkif.h / vdisk). */
const VDISK_CDROM = 1;
const VDISK_REMOVABLE = 2;
const VDISK_READONLY = 4;
/** The largest `ring-page-order` (XENBUS_MAX_RING_GRANT_ORDER). */
const MAX_RING_PAGE_ORDER = 4;
/** Segments one indirect request can carry (8 indirect pages of 512). */
const MAX_INDIRECT_SEGMENTS = 4096;
/** The most queues a guest asks for (bounds its XenStore writes). */
const MAX_QUEUES = 64;

/**
 * An unsigned node as C's `sscanf("%u")`-style readers take it (blanks, an
 * optional `+`, digits up to the first non-digit); anything else, or a
 * missing node, is `undefined`.
 */
function parseUnsigned(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^\s*\+?(\d+)/.exec(text);
  if (!m?.[1]) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

type Phase =
  | { readonly kind: 'waiting' }
  | { readonly kind: 'connected' }
  | { readonly kind: 'failed'; readonly error: Error }
  | { readonly kind: 'closed' };

/** A guest's block device (vbd), guest side. */
export class SimBlockFrontend {
  readonly #phase = new BehaviorSubject<Phase>({ kind: 'waiting' });
  /** One per queue of the current connection (set up at InitWait). */
  #natives: NativeSimBlkFront[] = [];
  /** The current native frontends' grants ended and ports closed. */
  #released = false;
  /** The queue the next operation goes to. */
  #next = 0;
  #order = 0;
  #indirect: number | undefined = undefined;
  #persistent = false;
  readonly #resized = new Subject<number>();
  #sectors = 0;
  #sectorSize = 0;
  #info = 0;
  #features: SimBlockFeatures | null = null;
  #closed = false;

  private constructor(
    readonly host: SimHost,
    readonly xs: XenStore,
    readonly domid: number,
    readonly frontendPath: string,
    readonly options: SimBlockFrontendOptions,
    readonly handshake: SimFrontend,
  ) {}

  /**
   * Starts the vbd at `frontendPath` of guest `domid`: when the backend
   * waits (InitWait), reads what it offers, sets up the rings and port and
   * publishes them (state Initialised); when it is Connected, reads the
   * disk's size and features.
   */
  static async attach(
    host: SimHost,
    xs: XenStore,
    domid: number,
    frontendPath: string,
    options: SimBlockFrontendOptions = {},
  ): Promise<SimBlockFrontend> {
    const wanted = options.ringPageOrder ?? 0;
    if (!Number.isInteger(wanted) || wanted < 0 || wanted > MAX_RING_PAGE_ORDER) {
      throw new PlatformError('EINVAL', `ring page order ${String(wanted)} not in 0..${String(MAX_RING_PAGE_ORDER)}`);
    }
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) {
      throw new PlatformError('EINVAL', `queues ${String(queues)} not in 1..${String(MAX_QUEUES)}`);
    }
    // The hooks run from backend state changes, which arrive once the
    // handshake is attached; they wait for the object itself.
    let resolve: (fe: SimBlockFrontend) => void = () => undefined;
    const self = new Promise<SimBlockFrontend>((r) => {
      resolve = r;
    });
    const handshake = await SimFrontend.attach(xs, frontendPath, {
      prepare: async () => (await self).#prepare(),
      connected: async () => (await self).#connected(),
      changed: async () => (await self).#changed(),
      closed: async () => (await self).#disconnected(),
    });
    const fe = new SimBlockFrontend(host, xs, domid, frontendPath, options, handshake);
    resolve(fe);
    return fe;
  }

  /** The native frontend of the current connection's first queue (set up at InitWait). */
  get native(): NativeSimBlkFront | null {
    return this.#natives[0] ?? null;
  }

  /** The native frontends of the current connection, one per queue. */
  get natives(): readonly NativeSimBlkFront[] {
    return this.#natives;
  }

  /** The disk's size (`sectors`), in 512-byte sectors as Linux's blkfront reads it. */
  get sectors(): number {
    return this.#sectors;
  }

  /** The backend's `sector-size` in bytes (blkif requests always count 512-byte sectors). */
  get sectorSize(): number {
    return this.#sectorSize;
  }

  /** The backend's `info` bits. */
  get info(): number {
    return this.#info;
  }

  /** `info` has VDISK_READONLY: the disk is read-only. */
  get readOnly(): boolean {
    return (this.#info & VDISK_READONLY) !== 0;
  }

  /** `info` has VDISK_CDROM. */
  get cdrom(): boolean {
    return (this.#info & VDISK_CDROM) !== 0;
  }

  /** `info` has VDISK_REMOVABLE. */
  get removable(): boolean {
    return (this.#info & VDISK_REMOVABLE) !== 0;
  }

  /** What the backend offers (null until Connected). */
  get features(): SimBlockFeatures | null {
    return this.#features;
  }

  /** Whether the disk is connected and usable. */
  get connected(): boolean {
    return this.#phase.value.kind === 'connected';
  }

  /** Why the connection failed (unreadable backend nodes, no guest memory...), if it did. */
  get failure(): Error | undefined {
    const p = this.#phase.value;
    return p.kind === 'failed' ? p.error : undefined;
  }

  /**
   * Resolves once the backend is Connected and the disk's size and
   * features are read; rejects if that failed, the device closed, or after
   * `ms`.
   */
  waitConnected(ms = 60_000): Promise<void> {
    return firstValueFrom(
      this.#phase.pipe(
        filter((p) => p.kind !== 'waiting'),
        timeout(ms),
        map((p) => {
          if (p.kind === 'failed') throw p.error;
          if (p.kind === 'closed') throw new PlatformError('ESHUTDOWN', 'the block device closed');
        }),
      ),
    );
  }

  async #backendNode(node: string): Promise<string | undefined> {
    return this.xs.tryRead(`${this.handshake.backendPath}/${node}`);
  }

  /** The backend waits: negotiate, set up the rings, and return the nodes to publish. */
  async #prepare(): Promise<Record<string, string>> {
    try {
      this.#closeNative();
      this.#phase.next({ kind: 'waiting' });
      const offeredOrder = parseUnsigned(await this.#backendNode('max-ring-page-order')) ?? 0;
      const order = Math.min(this.options.ringPageOrder ?? 0, offeredOrder, MAX_RING_PAGE_ORDER);
      const offered = parseUnsigned(await this.#backendNode('feature-max-indirect-segments'));
      let indirect = offered === undefined || offered === 0 ? undefined : Math.min(offered, MAX_INDIRECT_SEGMENTS);
      if (indirect !== undefined && this.options.maxIndirectSegments !== undefined) {
        indirect = Math.min(indirect, this.options.maxIndirectSegments);
      }
      const backendDomid =
        this.options.backendDomid ?? parseXenbusInt(await this.xs.tryRead(`${this.frontendPath}/backend-id`)) ?? 0;
      // Requests carry the virtual device number, as blkfront's handle.
      const devid = parseUnsigned(this.frontendPath.slice(this.frontendPath.lastIndexOf('/') + 1)) ?? 0;
      const offeredQueues = parseUnsigned(await this.#backendNode('multi-queue-max-queues')) ?? 1;
      const wantPersistent = this.options.persistent ?? true;
      const persistent = wantPersistent && (parseUnsigned(await this.#backendNode('feature-persistent')) ?? 0) !== 0;
      const queues = Math.max(1, Math.min(this.options.queues ?? 1, offeredQueues, MAX_QUEUES));
      const natives: NativeSimBlkFront[] = [];
      try {
        for (let q = 0; q < queues; q++) {
          natives.push(
            platformCall(() =>
              native.NativeSimBlkFront.create(this.host.native, this.domid, backendDomid, {
                ringPageOrder: order,
                ...(this.options.protocol === undefined ? {} : { protocol: this.options.protocol }),
                ...(indirect === undefined ? {} : { maxIndirectSegments: indirect }),
                ...(this.options.queueDepth === undefined ? {} : { queueDepth: this.options.queueDepth }),
                ...(this.options.timeoutMs === undefined ? {} : { timeoutMs: this.options.timeoutMs }),
                handle: devid & 0xffff,
                persistent,
              }),
            ),
          );
        }
      } catch (err) {
        for (const fe of natives) fe.close();
        throw err;
      }
      this.#natives = natives;
      this.#released = false;
      this.#next = 0;
      this.#order = order;
      this.#indirect = indirect;
      this.#persistent = persistent;
      // As blkfront: one queue keeps its nodes in the device's directory;
      // more each get a queue-<i>/ directory, announced by
      // multi-queue-num-queues.
      const nodes: Record<string, string> = {};
      if (order !== 0) nodes['ring-page-order'] = String(order);
      if (queues > 1) nodes['multi-queue-num-queues'] = String(queues);
      natives.forEach((fe, q) => {
        const dir = queues === 1 ? '' : `queue-${String(q)}/`;
        if (order === 0) {
          nodes[`${dir}ring-ref`] = String(fe.ringRefs[0]);
        } else {
          fe.ringRefs.forEach((ref, i) => {
            nodes[`${dir}ring-ref${String(i)}`] = String(ref);
          });
        }
        nodes[`${dir}event-channel`] = String(fe.port);
      });
      nodes.protocol = natives[0]?.protocol ?? 'x86_64-abi';
      nodes['feature-persistent'] = wantPersistent ? '1' : '0';
      await this.#removeStaleRingNodes(nodes);
      return nodes;
    } catch (err) {
      this.#fail(err);
      throw err;
    }
  }

  /** Removes ring nodes of an earlier connection that this one does not write (a larger ring's `ring-ref3`, queue directories...). */
  async #removeStaleRingNodes(nodes: Readonly<Record<string, string>>): Promise<void> {
    const children = await this.xs.list(this.frontendPath).catch(() => []);
    for (const name of children) {
      const stale = /^(ring-ref\d*|ring-page-order|multi-queue-num-queues)$/.test(name) && !(name in nodes);
      const queueDir = /^queue-\d+$/.test(name);
      if (stale || queueDir) await this.xs.rm(`${this.frontendPath}/${name}`).catch(() => undefined);
    }
  }

  /** The backend is Connected: read the disk's size and features. */
  async #connected(): Promise<void> {
    try {
      const sectors = parseUnsigned(await this.#backendNode('sectors'));
      const info = parseUnsigned(await this.#backendNode('info'));
      const sectorSize = parseUnsigned(await this.#backendNode('sector-size'));
      if (sectors === undefined || info === undefined || sectorSize === undefined) {
        throw new PlatformError(
          'EPROTO',
          `reading backend fields at ${this.handshake.backendPath}: sectors, info and sector-size are required`,
        );
      }
      const flag = async (node: string): Promise<boolean> => (parseUnsigned(await this.#backendNode(node)) ?? 0) !== 0;
      const discard = await flag('feature-discard');
      this.#features = {
        flushCache: await flag('feature-flush-cache'),
        barrier: await flag('feature-barrier'),
        discard,
        discardSecure: discard && (await flag('discard-secure')),
        discardGranularity: discard ? (parseUnsigned(await this.#backendNode('discard-granularity')) ?? 0) : 0,
        discardAlignment: discard ? (parseUnsigned(await this.#backendNode('discard-alignment')) ?? 0) : 0,
        maxIndirectSegments: this.#indirect,
        ringPageOrder: this.#order,
        queues: this.#natives.length,
        persistent: this.#persistent,
      };
      this.#sectors = sectors;
      this.#sectorSize = sectorSize;
      this.#info = info;
      this.#phase.next({ kind: 'connected' });
    } catch (err) {
      this.#fail(err);
    }
  }

  /** The backend said the disk changed: read its size again, as blkfront does on a resize. */
  async #changed(): Promise<void> {
    if (this.#phase.value.kind !== 'connected') return;
    const sectors = parseUnsigned(await this.#backendNode('sectors'));
    if (sectors !== undefined && sectors !== this.#sectors) {
      this.#sectors = sectors;
      this.#resized.next(sectors);
    }
  }

  /** The disk's size in 512-byte sectors, now and after each resize the backend announces. */
  get sectors$(): Observable<number> {
    return this.#resized.asObservable();
  }

  #fail(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.#phase.next({ kind: 'failed', error });
  }

  /** The connection closed (the backend's doing or ours): let go of the rings. */
  async #disconnected(): Promise<void> {
    this.#phase.next({ kind: 'closed' });
    if (this.#natives.length === 0 || this.#released) return;
    // The backend unmaps the rings once it sees Closed; until then close is
    // EBUSY (as it is while an operation still waits for its response).
    const open = new Set(this.#natives);
    for (let i = 0; i < 300 && open.size > 0; i++) {
      for (const fe of [...open]) {
        try {
          fe.close();
          open.delete(fe);
        } catch {
          // Still mapped: try again.
        }
      }
      if (open.size > 0) await delay(10);
    }
    this.#released = open.size === 0;
  }

  #closeNative(): void {
    const natives = this.#natives;
    const released = this.#released;
    this.#natives = [];
    if (released) return;
    for (const fe of natives) {
      try {
        fe.close();
      } catch {
        // Still mapped by the backend: its pages stay granted until dropped.
      }
    }
  }

  /** The queue for the next operation (in turn), if the disk is usable. */
  #usable(): NativeSimBlkFront {
    const fe = this.#natives[this.#next % Math.max(1, this.#natives.length)];
    if (this.#closed || this.#phase.value.kind === 'closed') {
      throw new PlatformError('ESHUTDOWN', 'the block device is closed');
    }
    if (!fe || this.#phase.value.kind !== 'connected') {
      throw new PlatformError('ENOTCONN', 'the block device is not connected');
    }
    this.#next = (this.#next + 1) % this.#natives.length;
    return fe;
  }

  /** Reads `length` bytes (whole 512-byte sectors) from 512-byte sector `sector`. */
  async read(sector: number, length: number): Promise<Buffer> {
    const fe = this.#usable();
    return platformCallAsync(() => fe.read(sector, length));
  }

  /** Writes `data` (whole 512-byte sectors) at 512-byte sector `sector`. */
  async write(sector: number, data: Buffer): Promise<void> {
    const fe = this.#usable();
    return platformCallAsync(() => fe.write(sector, data));
  }

  /** Flushes the backend's write cache. */
  async flush(): Promise<void> {
    const fe = this.#usable();
    return platformCallAsync(() => fe.flush());
  }

  /** Discards `sectors` 512-byte sectors from `sector` (securely if `secure`). */
  async discard(sector: number, sectors: number, secure = false): Promise<void> {
    const fe = this.#usable();
    return platformCallAsync(() => fe.discard(sector, sectors, secure));
  }

  /**
   * Starts a verifying workload on every queue, as a guest's fio with
   * `verify` would run: random 4 KiB reads and writes `depth` deep per
   * queue over `blocks` blocks from `firstBlock` (split between the
   * queues), a flush every `flushEvery` writes, each read checked against
   * the last write acknowledged there. Other operations wait until it is
   * stopped. The reports say which writes flushes made durable.
   */
  startVerify(options: SimBlockVerifyOptions): SimBlockVerifyRun {
    const natives = [...this.#natives];
    if (natives.length === 0 || this.#phase.value.kind !== 'connected') throw new PlatformError('ENOTCONN', 'the block device is not connected');
    const per = Math.floor(options.blocks / natives.length);
    if (per < 1) throw new PlatformError('EINVAL', `${String(options.blocks)} blocks for ${String(natives.length)} queues`);
    const runs = natives.map((fe, q) =>
      platformCallAsync(() =>
        fe.verify({
          firstBlock: (options.firstBlock ?? 0) + q * per,
          blocks: per,
          depth: options.depth ?? 32,
          seed: (options.seed ?? 1) + q,
          flushEvery: options.flushEvery ?? 32,
        }),
      ),
    );
    // Reported by stop(); never an unhandled rejection meanwhile.
    for (const r of runs) r.catch(() => undefined);
    return {
      progress: () => natives.reduce((n, fe) => n + fe.verifyProgress(), 0),
      stop: async () => {
        for (const fe of natives) fe.stopVerify();
        return Promise.all(runs);
      },
    };
  }

  /** The native frontends' counters, summed over the queues (zeros before InitWait). */
  stats(): SimBlockFrontendStats {
    const sum = { requests: 0, responses: 0, notifications: 0, waits: 0 };
    for (const fe of this.#natives) {
      const s = fe.stats();
      sum.requests += s.requests;
      sum.responses += s.responses;
      sum.notifications += s.notifications;
      sum.waits += s.waits;
    }
    return sum;
  }

  /** Stops following the backend, without the close handshake (the guest died); the rings are left as they are. */
  detach(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.handshake.detach();
    this.#phase.next({ kind: 'closed' });
    this.#phase.complete();
  }

  /** Closes the device (Closing, Closed), then ends the rings' grants once the backend unmapped them. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.handshake.close();
    } finally {
      this.handshake.detach();
      await this.#disconnected();
      this.#phase.complete();
    }
  }
}
