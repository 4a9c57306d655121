// The vbd device type: a guest's PV disk (blkif.h), served by the Rust data
// path on the platform's event loop. init opens the disk named by the
// toolstack's `params` and advertises it (size, sector sizes, read-only,
// flush, barrier, discard, indirect segments, persistent grants, multi-page
// rings, queues), as Linux blkback does before the frontend connects;
// connect reads the frontend's rings, ports, protocol and features and
// starts a data-path queue per ring.
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { native } from '../native.js';
import type { BlkGeometry, BlkQueueStats, NativeBlkQueue, NativeBlkStorage } from '../native.js';
import { PlatformError } from '../platform/errors.js';
import { customStorage } from './block-storage-js.js';
import type { BlockStorageHandler } from './block-storage-js.js';
import type { Platform } from '../platform/index.js';
import type { DeviceContext, DeviceKey, DeviceOps } from '../xenbus/index.js';
import { parseXenbusInt, xenbusStateName } from '../xenbus/state.js';
import { mergeLatency } from '../stats/histogram.js';
import type { BlockDeviceStats, StatsSource } from '../stats/types.js';
import { handOverQueues } from './hand-over.js';

/** The most ring pages a frontend may use: `max-ring-page-order` 4, as blkback. */
export const MAX_RING_PAGE_ORDER = 4;

/** `info` bits (blkif.h's VDISK_*). */
const VDISK_CDROM = 1;
const VDISK_REMOVABLE = 2;
const VDISK_READONLY = 4;

/** A disk's storage: a raw image or block device, or memory. */
export class BlockStorage {
  private constructor(
    readonly native: NativeBlkStorage,
    /** What holds the sectors. */
    readonly kind: 'file' | 'qcow2' | 'memory' | 'custom',
  ) {}

  /** A raw image file or a block device; `direct` bypasses the page cache (O_DIRECT). */
  static file(path: string, options: { readonly readOnly?: boolean; readonly direct?: boolean } = {}): BlockStorage {
    try {
      return new BlockStorage(native.NativeBlkStorage.file(path, options.readOnly, options.direct), 'file');
    } catch (err) {
      throw PlatformError.fromNative(err);
    }
  }

  /**
   * A qcow2 image (v2 or v3; its backing image and data file, if its
   * header names them, are opened too, as QEMU does: serve only images
   * from a trusted source). The disk's queues share one open image, locked
   * against a second user.
   */
  static qcow2(path: string, options: { readonly readOnly?: boolean } = {}): BlockStorage {
    try {
      return new BlockStorage(native.NativeBlkStorage.qcow2(path, options.readOnly), 'qcow2');
    } catch (err) {
      throw PlatformError.fromNative(err);
    }
  }

  /** An empty disk of `bytes` (a multiple of 512) in memory; sparse. */
  static memory(bytes: number, options: { readonly readOnly?: boolean } = {}): BlockStorage {
    if (!Number.isSafeInteger(bytes) || bytes < 512 || bytes % 512 !== 0) {
      throw new RangeError(`a memory disk is a positive multiple of 512 bytes, got ${String(bytes)}`);
    }
    return new BlockStorage(native.NativeBlkStorage.memory(bytes / 512, options.readOnly), 'memory');
  }

  /** A disk implemented in TypeScript: `handler` serves its requests (see {@link BlockStorageHandler}). */
  static custom(handler: BlockStorageHandler): BlockStorage {
    return new BlockStorage(customStorage(handler), 'custom');
  }

  /** Size and features, as the frontend is told. */
  get geometry(): BlkGeometry {
    return this.native.geometry;
  }

  /**
   * Lets a file or block device go now (its lock with it, once its queues
   * have stopped), rather than when the object is collected: the image can
   * be served again at once. No queue can be started on it afterwards.
   */
  close(): void {
    this.native.close();
  }

  /** Bytes of a memory disk, for tests and demos. */
  readMemory(offset: number, length: number): Buffer {
    return this.native.readMemory(offset, length);
  }
}

/** What the toolstack wrote for a disk: `params` (what to serve), `mode`, `type`. */
export interface DiskConfig {
  readonly key: DeviceKey;
  readonly params: string;
  /** `r` (read-only) or `w`. */
  readonly mode: string;
  readonly type: string | undefined;
  /** `device-type`: `disk` (the default) or `cdrom`. */
  readonly deviceType: string | undefined;
}

/** How disks are served. */
export interface BlockOptions {
  /** The backend domain's platform (simulated or Xen): the queues run on its event loop. */
  readonly platform: Platform;
  /**
   * The storage of a disk. Default: {@link defaultStorage}: `params` is a
   * path (raw image or block device), `qcow2:<path>` for a qcow2 image
   * (`raw:<path>` and `aio:<path>` name raw ones, as xl writes them for
   * qdisk), or `memory:<size>` (`64M`, `1G`...) for a disk in memory;
   * `mode` `r` makes it read-only.
   */
  readonly storage?: (disk: DiskConfig) => BlockStorage | Promise<BlockStorage>;
  /**
   * The most queues (rings) a frontend may use, `multi-queue-max-queues`
   * (default: the number of CPUs, as blkback). Each queue has its own
   * ring, port and storage handle; all run on the platform's event loop.
   */
  readonly maxQueues?: number;
  /**
   * Whether the queues keep latency histograms (default true): two clock
   * reads per request. The other counters are always kept.
   */
  readonly timing?: boolean;
  /**
   * How long each queue polls its ring after taking requests, in
   * microseconds, instead of sleeping until the guest's next event
   * (default 0: no polling, as blkback). While a queue polls, its ring asks
   * the guest for no event: a request then costs the guest no notification
   * and dom0 no wake-up, and the event loop's thread stays busy. Worth it
   * where a wake-up is dear beside the I/O (small requests at low depth,
   * a PV dom0); see the README for measured figures.
   */
  readonly pollMicros?: number;
  /**
   * How often, in milliseconds, the image files and block devices served
   * are measured again (default 1000; 0: never, and {@link
   * BlockService.refreshSizes}, which `xenrx serve` calls on SIGHUP, does
   * it): one its owner grew or shrank is resized live and its frontend
   * told, as blkback notices a device's new size by itself. Measuring is
   * one `fstat` or `BLKGETSIZE64` per disk, on the file it holds open
   * (nothing is opened). qcow2 images keep their size while served.
   */
  readonly sizeCheckMs?: number;
  /**
   * A directory (on tmpfs: `/run/xenrx`) for each queue's journal of the
   * requests it took. With it, a backend started after this one died
   * takes over the disks it finds Connected, without the guest
   * reconnecting (`reattach`); without it such disks are left alone.
   */
  readonly stateDir?: string;
}

/** The longest period of {@link BlockOptions.sizeCheckMs} (a day). */
const MAX_SIZE_CHECK_MS = 86_400_000;

/** The longest polling window, in microseconds (a minute; a window that long keeps a CPU busy to save nothing measurable). */
export const MAX_POLL_MICROS = 60_000_000;

/** The most queues a backend may offer (blkif.h sets no limit; this bounds XenStore reads). */
export const MAX_QUEUES = 64;

const SIZE = /^([0-9]+)([KMGT]?)$/;

/** The default choice of storage for a disk (see {@link BlockOptions.storage}). */
export function defaultStorage(disk: DiskConfig): BlockStorage {
  const readOnly = disk.mode.startsWith('r');
  if (disk.params.startsWith('memory:')) {
    const m = SIZE.exec(disk.params.slice('memory:'.length));
    if (!m) throw new Error(`bad memory disk size in params ${JSON.stringify(disk.params)}`);
    const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[m[2] ?? ''] ?? 0;
    return BlockStorage.memory(Number(m[1]) * 2 ** shift, { readOnly });
  }
  // The format is what params says, never guessed from the image: a guest
  // could write a qcow2 header into its raw disk, naming a host file as
  // its backing image.
  const m = /^(qcow2|raw|aio):(.*)$/.exec(disk.params);
  const format = m?.[1] ?? 'raw';
  const path = m?.[2] ?? disk.params;
  if (!path.startsWith('/')) {
    throw new Error(`params must name an absolute path ([qcow2:|raw:]/path) or memory:<size>, got ${JSON.stringify(disk.params)}`);
  }
  return format === 'qcow2' ? BlockStorage.qcow2(path, { readOnly }) : BlockStorage.file(path, { readOnly });
}

/** One disk, for as long as the device exists. */
interface DiskRecord {
  readonly ctx: DeviceContext;
  storage: BlockStorage | null;
  /** What `params` named, once read. */
  params: string | null;
  /** One per ring the frontend set up; empty while not connected. */
  queues: NativeBlkQueue[];
  /** Notices from the data path since the last connect. */
  notices: number;
  /** The last measurement of its size failed (said once, until one works). */
  measureFailed: boolean;
  /** The last announcement of a new size failed (said once, likewise). */
  announceFailed: boolean;
  /** The size in `sectors`, once written. */
  told: number | null;
}

/** The vbd device type. */
export class BlockService implements StatsSource {
  readonly #options: BlockOptions;
  readonly #maxQueues: number;
  readonly #pollMicros: number;
  readonly #disks = new Map<string, DiskRecord>();
  readonly #sizeCheckMs: number;
  /** Measures the disks again while any exists (see {@link BlockOptions.sizeCheckMs}). */
  #sizeTimer: ReturnType<typeof setInterval> | undefined;
  #measuring = false;
  /** The last resize or measurement (see `#oneAtATime`). */
  #sizing: Promise<unknown> = Promise.resolve();

  /** The device type's operations, for `registry.register('vbd', service.ops)`. */
  readonly ops: DeviceOps<DiskRecord>;

  constructor(options: BlockOptions) {
    this.#options = options;
    const max = options.maxQueues ?? Math.min(availableParallelism(), MAX_QUEUES);
    if (!Number.isInteger(max) || max < 1 || max > MAX_QUEUES) {
      throw new RangeError(`maxQueues must be a whole number from 1 to ${String(MAX_QUEUES)}, got ${String(max)}`);
    }
    this.#maxQueues = max;
    const poll = options.pollMicros ?? 0;
    if (!Number.isInteger(poll) || poll < 0 || poll > MAX_POLL_MICROS) {
      throw new RangeError(`pollMicros must be a whole number from 0 to ${String(MAX_POLL_MICROS)}, got ${String(poll)}`);
    }
    this.#pollMicros = poll;
    const check = options.sizeCheckMs ?? 1000;
    if (!Number.isInteger(check) || check < 0 || check > MAX_SIZE_CHECK_MS) {
      throw new RangeError(`sizeCheckMs must be a whole number from 0 to ${String(MAX_SIZE_CHECK_MS)}, got ${String(check)}`);
    }
    this.#sizeCheckMs = check;
    this.ops = {
      alloc: (ctx) => {
        const rec: DiskRecord = { ctx, storage: null, params: null, queues: [], notices: 0, measureFailed: false, announceFailed: false, told: null };
        this.#disks.set(ctx.name, rec);
        this.#watchSizes();
        return rec;
      },
      init: (ctx, rec) => this.#init(ctx, rec),
      connect: (ctx, rec) => this.#connect(ctx, rec, false),
      ...(this.#options.stateDir === undefined
        ? {}
        : {
            reattach: async (ctx: DeviceContext, rec: DiskRecord) => {
              await this.#openStorage(ctx, rec, true);
              // What the frontend was told by the backend before this one.
              const sectors = await ctx.readBackend('sectors');
              rec.told = sectors !== undefined && /^\d+$/.test(sectors) ? Number(sectors) : (rec.storage?.geometry.sectors ?? null);
              await this.#connect(ctx, rec, true);
              ctx.log(1, `disk taken over: ${String(rec.queues.length)} queue${rec.queues.length === 1 ? '' : 's'} served again from their journals`);
            },
          }),
      disconnect: (ctx, rec) => {
        stopQueues(rec);
        ctx.log(1, 'disk disconnected');
      },
      free: (ctx, rec) => {
        try {
          stopQueues(rec);
          // The image's lock goes now: the same image may be served again
          // at once (a rebooted guest's disk).
          rec.storage?.close();
        } finally {
          rec.storage = null;
          rec.params = null;
          this.#disks.delete(ctx.name);
          if (this.#disks.size === 0) {
            clearInterval(this.#sizeTimer);
            this.#sizeTimer = undefined;
          }
        }
      },
    };
  }

  /**
   * Hands every disk over to the process taking this one's place (`xenrx
   * serve --takeover`): each queue stops without a word to its frontend and
   * keeps its journal, which the next backend takes the ring over from.
   * Nothing is written to XenStore; call it just before exiting.
   */
  handOver(): number {
    return handOverQueues(this.#disks.values());
  }

  /** The counters of a connected disk (guest `domid`'s device `devid`), summed over its queues. */
  stats(domid: number, devid: number): BlkQueueStats | undefined {
    return sumQueueStats(this.queueStats(domid, devid));
  }

  /** Every connected disk's statistics (for {@link stats$} and the metrics endpoint). */
  deviceStats(): BlockDeviceStats[] {
    const out: BlockDeviceStats[] = [];
    for (const rec of this.#disks.values()) {
      const s = sumQueueStats(rec.queues.map((q) => q.stats()));
      if (!s) continue;
      out.push({
        type: 'vbd',
        name: rec.ctx.name,
        domid: rec.ctx.key.domid,
        devid: rec.ctx.key.devid,
        state: xenbusStateName(rec.ctx.state.beState),
        queues: rec.queues.length,
        counters: {
          requests: s.requests,
          responses: s.responses,
          reads: s.reads,
          writes: s.writes,
          flushRequests: s.flushRequests,
          discards: s.discards,
          sectorsRead: s.sectorsRead,
          sectorsWritten: s.sectorsWritten,
          fenceWaits: s.fenceWaits,
          errors: s.errors,
          notifications: s.notifications,
        },
        latency: { read: s.readLatency, write: s.writeLatency, flush: s.flushLatency, discard: s.discardLatency },
      });
    }
    return out;
  }

  /** The counters of each queue of a connected disk, in queue order. */
  queueStats(domid: number, devid: number): BlkQueueStats[] {
    return (this.#find(domid, devid)?.queues ?? []).map((q) => q.stats());
  }

  /**
   * The disk of guest `domid` numbered `devid`, whatever device type it
   * was registered under (`vbd`, or the name a toolstack uses for another
   * backend: the device number is the guest's, unique among its disks).
   */
  #find(domid: number, devid: number): DiskRecord | undefined {
    for (const rec of this.#disks.values()) {
      if (rec.ctx.key.domid === domid && rec.ctx.key.devid === devid) return rec;
    }
    return undefined;
  }

  /**
   * The disk of guest `domid` numbered `devid` changed size (an image or
   * volume grown by its owner): a file or block device is measured again;
   * a disk in memory or in TypeScript takes `sectors`. As blkback: the connected
   * queues take the new size for the requests that follow, `sectors` is
   * rewritten and the backend's state written again, which tells the
   * frontend to look. Returns the new size in 512-byte sectors.
   */
  async resize(domid: number, devid: number, sectors?: number): Promise<number> {
    return this.#oneAtATime(async () => {
      const rec = this.#find(domid, devid);
      const name = `disk ${String(devid)} of domain ${String(domid)}`;
      if (!rec?.storage) throw new PlatformError('ENODEV', `no ${name}`);
      let g: BlkGeometry;
      try {
        g = rec.storage.native.resize(sectors);
      } catch (err) {
        throw PlatformError.fromNative(err);
      }
      if (!(await this.#announce(rec, g))) throw new PlatformError('ENODEV', `${name} is going away`);
      return g.sectors;
    });
  }

  /**
   * Measures every file or block device served again and resizes those
   * whose size changed (see {@link resize}); what `xenrx serve` does on
   * SIGHUP, and the timer of {@link BlockOptions.sizeCheckMs}. A qcow2
   * image keeps its size while served. Returns the disks resized, with
   * their new size.
   */
  async refreshSizes(): Promise<{ readonly name: string; readonly sectors: number }[]> {
    return this.#oneAtATime(async () => {
      const resized: { name: string; sectors: number }[] = [];
      for (const [name, rec] of this.#disks) {
        const storage = rec.storage;
        if (!storage || storage.kind !== 'file' || rec.ctx.state.phase !== 'active') continue;
        let g: BlkGeometry;
        try {
          g = storage.native.resize();
        } catch (err) {
          if (!rec.measureFailed) rec.ctx.log(0, `cannot measure the disk again: ${(err as Error).message}`);
          rec.measureFailed = true;
          continue;
        }
        rec.measureFailed = false;
        // Not told its size yet (init writes it), or told this one.
        if (rec.told === null || g.sectors === rec.told) continue;
        try {
          if (!(await this.#announce(rec, g))) continue;
        } catch (err) {
          // Told next time; said once until then.
          if (!rec.announceFailed) rec.ctx.log(0, `cannot tell the frontend the disk's new size: ${(err as Error).message}`);
          rec.announceFailed = true;
          continue;
        }
        rec.announceFailed = false;
        resized.push({ name, sectors: g.sectors });
      }
      return resized;
    });
  }

  /**
   * Runs `work` once the resizes and measurements before it are done, so
   * that no two tell a frontend sizes out of order or the same change
   * twice.
   */
  #oneAtATime<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#sizing.then(work);
    this.#sizing = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Starts measuring the disks every `sizeCheckMs`, unless it is 0 or started. */
  #watchSizes(): void {
    if (this.#sizeCheckMs === 0 || this.#sizeTimer !== undefined) return;
    this.#sizeTimer = setInterval(() => {
      if (this.#measuring) return;
      this.#measuring = true;
      // Each disk's failure is logged and tried again next time
      // (refreshSizes).
      this.refreshSizes()
        .catch(() => undefined)
        .finally(() => {
          this.#measuring = false;
        });
    }, this.#sizeCheckMs);
    // It must not keep the process alive.
    this.#sizeTimer.unref();
  }

  /**
   * Tells the queues and the frontend a disk's new size; false if the
   * toolstack removed the backend's directory (it is not written again).
   */
  async #announce(rec: DiskRecord, g: BlkGeometry): Promise<boolean> {
    for (const q of rec.queues) q.resize(g.sectors);
    const { xs, backendPath } = rec.ctx;
    const told = await xs.transaction(async (tx) => {
      const state = await tx.tryRead(`${backendPath}/state`);
      if (state === undefined) return false;
      await tx.write(`${backendPath}/sectors`, String(g.sectors));
      // The same state again: the frontend's watch fires and it rereads.
      await tx.write(`${backendPath}/state`, state);
      return true;
    });
    if (!told) return false;
    rec.told = g.sectors;
    rec.ctx.log(1, `disk resized to ${String(g.sectors)} sectors`);
    return true;
  }

  /** The storage of a disk (guest `domid`'s device `devid`), once opened. */
  storage(domid: number, devid: number): BlockStorage | undefined {
    return this.#find(domid, devid)?.storage ?? undefined;
  }

  /** Opens the disk's storage as the toolstack configured it. */
  async #open(ctx: DeviceContext, rec: DiskRecord): Promise<{ storage: BlockStorage; params: string; deviceType: string | undefined }> {
    const params = (await ctx.readBackend('params')) ?? '';
    const mode = (await ctx.readBackend('mode')) ?? 'w';
    const type = await ctx.readBackend('type');
    const deviceType = await ctx.readBackend('device-type');
    const disk: DiskConfig = { key: ctx.key, params, mode, type, deviceType };
    rec.params = params;
    const storage = await (this.#options.storage ?? defaultStorage)(disk);
    rec.storage = storage;
    return { storage, params, deviceType };
  }

  /**
   * Opens a disk's storage, waiting while its image is locked by a disk of
   * this service being taken down (a rebooted guest's old disk), or, with
   * `afterDeath`, by a backend that died: the kernel keeps its open file
   * until its last write landed, and a replayed write must not be
   * overtaken by it. An image another live process holds is refused at
   * once. The wait is bounded (a minute), only against a hang.
   */
  async #openStorage(ctx: DeviceContext, rec: DiskRecord, afterDeath: boolean): Promise<{ storage: BlockStorage; params: string; deviceType: string | undefined }> {
    for (let waited = 0; ; waited += 20) {
      try {
        return await this.#open(ctx, rec);
      } catch (err) {
        const locked = err instanceof PlatformError && err.code === 'EAGAIN';
        // A disk of ours with the same image, on its way out.
        const ours = [...this.#disks.values()].some((o) => o !== rec && o.params !== null && o.params === rec.params && o.ctx.state.phase !== 'active');
        if (!locked || !(afterDeath || ours) || waited >= 60_000) throw err;
        if (waited === 0) ctx.log(1, `the image is still held (${ours ? 'a disk going away' : 'the I/O of the backend that died'}): waiting`);
        await delay(20);
      }
    }
  }

  async #init(ctx: DeviceContext, rec: DiskRecord): Promise<void> {
    const { storage, params, deviceType } = await this.#openStorage(ctx, rec, false);
    const g = storage.geometry;
    // What a frontend reads before it sets up its rings: all of it before
    // InitWait, in one transaction.
    const nodes: [string, string][] = [
      ['sectors', String(g.sectors)],
      ['sector-size', String(g.sectorSize)],
      ['physical-sector-size', String(g.physicalSectorSize)],
      ['info', String(diskInfo(g.readOnly, deviceType))],
      ['feature-flush-cache', g.flush ? '1' : '0'],
      ['feature-barrier', '1'],
      ['feature-discard', g.discard ? '1' : '0'],
      ['feature-max-indirect-segments', String(native.blkMaxIndirectSegments())],
      ['feature-persistent', '1'],
      ['max-ring-page-order', String(MAX_RING_PAGE_ORDER)],
      ['multi-queue-max-queues', String(this.#maxQueues)],
    ];
    if (g.discard) {
      nodes.push(['discard-granularity', String(g.discardGranularity)], ['discard-alignment', String(g.discardAlignment)], ['discard-secure', g.discardSecure ? '1' : '0']);
    }
    await ctx.xs.transaction(async (tx) => {
      for (const [node, value] of nodes) await tx.write(`${ctx.backendPath}/${node}`, value);
    });
    rec.told = g.sectors;
    ctx.log(1, `disk ${params}: ${String(g.sectors)} sectors${g.readOnly ? ', read-only' : ''}`);
  }

  async #connect(ctx: DeviceContext, rec: DiskRecord, resume: boolean): Promise<void> {
    const storage = rec.storage;
    if (!storage) throw new Error('the disk was not opened');
    // As blkback: no node is one queue, whose nodes sit in the device's
    // directory; N > 1 queues each have theirs under queue-<i>/.
    const queuesNode = await ctx.readFrontend('multi-queue-num-queues');
    const count = queuesNode === undefined ? 1 : parseXenbusInt(queuesNode);
    if (count === undefined || count < 1 || count > this.#maxQueues) {
      throw new Error(`bad multi-queue-num-queues ${JSON.stringify(queuesNode)} (1 to ${String(this.#maxQueues)} offered)`);
    }
    const orderNode = await ctx.readFrontend('ring-page-order');
    const order = orderNode === undefined ? 0 : parseXenbusInt(orderNode);
    if (order === undefined || order < 0 || order > MAX_RING_PAGE_ORDER) {
      throw new Error(`bad ring-page-order ${JSON.stringify(orderNode)} (at most ${String(MAX_RING_PAGE_ORDER)})`);
    }
    const names = orderNode === undefined ? ['ring-ref'] : Array.from({ length: 2 ** order }, (_, i) => `ring-ref${String(i)}`);
    const rings: { ringRefs: number[]; port: number }[] = [];
    for (let q = 0; q < count; q++) {
      const dir = count === 1 ? '' : `queue-${String(q)}/`;
      const ringRefs: number[] = [];
      for (const name of names) {
        const ref = parseXenbusInt(await ctx.readFrontend(dir + name));
        if (ref === undefined || ref < 0 || ref > 0xffff_ffff) throw new Error(`the frontend gave no valid ${dir}${name}`);
        ringRefs.push(ref);
      }
      const port = parseXenbusInt(await ctx.readFrontend(`${dir}event-channel`));
      if (port === undefined || port <= 0) throw new Error(`the frontend gave no valid ${dir}event-channel`);
      rings.push({ ringRefs, port });
    }
    // Both ends offer persistent grants: the frontend's pages stay mapped.
    const persistent = (parseXenbusInt(await ctx.readFrontend('feature-persistent')) ?? 0) !== 0;
    rec.notices = 0;
    stopQueues(rec);
    // The journals' directory, made on first use.
    const stateDir = this.#options.stateDir;
    if (stateDir !== undefined) mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    try {
      rings.forEach(({ ringRefs, port }, q) => {
        const prefix = count === 1 ? '' : `queue ${String(q)}: `;
        const journal = stateDir === undefined ? {} : { journal: join(stateDir, `${ctx.name}-q${String(q)}`), resume };
        rec.queues.push(
          native.NativeBlkQueue.start(
            this.#options.platform.native,
            storage.native,
            { frontendDomid: ctx.key.domid, ringRefs, remotePort: port, persistent, ...(ctx.protocol !== null ? { protocol: ctx.protocol } : {}), ...journal },
            (notice) => {
              // A hostile guest could repeat this forever: the first is an
              // error, the rest noise.
              ctx.log(rec.notices++ === 0 ? 0 : 2, prefix + notice);
            },
          ),
        );
      });
      if (this.#options.timing === false) for (const q of rec.queues) q.setTiming(false);
      if (this.#pollMicros > 0) for (const q of rec.queues) q.setPoll(this.#pollMicros);
    } catch (err) {
      // All queues or none.
      stopQueues(rec);
      throw PlatformError.fromNative(err);
    }
    const ports = rings.map((r) => String(r.port)).join(', ');
    ctx.log(
      1,
      `disk connected (${String(count)} queue(s) of ${String(names.length)} ring page(s), port(s) ${ports}, ${ctx.protocol ?? 'native'} layout${persistent ? ', persistent grants' : ''})`,
    );
  }
}

/**
 * The `info` bits: read-only as the storage is; a `cdrom` is a CD drive,
 * whose medium is removable (as QEMU's xen-block and blkback report it).
 */
function diskInfo(readOnly: boolean, deviceType: string | undefined): number {
  let info = readOnly ? VDISK_READONLY : 0;
  if (deviceType === 'cdrom') info |= VDISK_CDROM | VDISK_REMOVABLE;
  return info;
}

function stopQueues(rec: DiskRecord): void {
  for (const q of rec.queues) q.stop();
  rec.queues = [];
}

/** Queues' counters added up (latency histograms merged); `undefined` for none. */
function sumQueueStats(all: readonly BlkQueueStats[]): BlkQueueStats | undefined {
  const [first, ...rest] = all;
  if (!first) return undefined;
  const sum = { ...first };
  for (const s of rest) {
    for (const k of Object.keys(sum) as (keyof BlkQueueStats)[]) {
      const a = sum[k];
      const b = s[k];
      if (typeof a === 'number' && typeof b === 'number') (sum as Record<string, unknown>)[k] = a + b;
    }
    sum.readLatency = mergeLatency(sum.readLatency, s.readLatency);
    sum.writeLatency = mergeLatency(sum.writeLatency, s.writeLatency);
    sum.flushLatency = mergeLatency(sum.flushLatency, s.flushLatency);
    sum.discardLatency = mergeLatency(sum.discardLatency, s.discardLatency);
  }
  return sum;
}
