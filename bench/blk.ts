// The block backend's data path on the simulated host: a guest's simulated
// blkfront (one thread per queue) drives block queues on dom0's event loop,
// served from a 1 GiB sparse MemDisk whose first 64 MiB are written first
// (so reads copy real pages, each checked against its stamp). 4 KiB random
// IOPS at depth 1 and 32, and sequential throughput with 128 KiB and 1 MiB
// indirect requests at depth 8, each on 1 queue and on 2 (each queue with
// its own frontend thread and half the region, all served by dom0's one
// event-loop thread); each with persistent grants (as Linux negotiates by
// default) and with a grant per page and grant copy. Each against memcpy
// of the same block size, page-aligned, measured in this run (both buffers
// in the CPU's caches);
// the sequential figures also against memcpy of the same blocks taken in
// turn from a region the size of the one they move (out of the caches, as
// the disk's data is): `ratio_from_memory`.
// The targets are read as ratios, not asserted: sequential >= 0.7 x memcpy,
// 4 KiB random read at depth 32 >= 0.5 x the 4 KiB memcpy rate (blocks/s).
// Then the same data path on a storage implemented in TypeScript
// (BlockStorage.custom: a sparse Map of 4 KiB Buffers, the region written
// through the rings first): 4 KiB random read and write at depth 32 and
// sequential 128 KiB read, persistent grants, each against the same
// workload on the Rust MemDisk measured just before it, so that the ratio
// (TS storage / Rust MemDisk) is the cost of serving storage across napi.
// And what the statistics cost: latency histograms on against off.
import { BlockStorage } from '../ts/backends/index.js';
import type { BlockStorageHandler } from '../ts/backends/index.js';
import { native } from '../ts/native.js';
import { report, round } from './report.js';

const MS = Number(process.env['XENRX_BENCH_MS'] ?? 1000);
/** The polling window of the polled lines (a common busy-poll budget, as Linux's net.core.busy_poll suggests). */
const POLL_US = 50;
const KIB = 1024;
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
/** Where each request's data is copied, in the simulator. */
function copies(persistent: boolean): string {
  return persistent
    ? 'storage (MemDisk chunk <-> guest page, mapped persistently: none in the backend) + frontend copy (guest page <-> caller buffer)'
    : 'storage (MemDisk chunk <-> backend page) + backend grant copy (backend page <-> guest page) + frontend copy (guest page <-> caller buffer)';
}
const GRANTS = (persistent: boolean): string => (persistent ? 'persistent grants' : 'grant copy');
/** The same, with the storage in TypeScript. */
function copiesTs(persistent: boolean): string {
  const page = persistent ? 'guest page' : 'backend page';
  return copies(persistent).replace(
    /MemDisk chunk <-> (guest|backend) page/,
    `${page} -> napi Buffer -> stored 4 KiB Buffers, or stored Buffers -> read Buffer -> ${page}`,
  );
}
/** `size` bytes as a block size: `128 KiB`, `1 MiB`. */
function blockLabel(size: number): string {
  return size >= MIB ? `${String(size / MIB)} MiB` : `${String(size / KIB)} KiB`;
}

/** The figure of a run: requests/s for random 4 KiB requests, MiB/s for the others. */
function perSecond(f: Figures, random: boolean): number {
  return random ? f.requestsPerSec : f.bytesPerSec / MIB;
}

/** A disk of `bytes` in TypeScript: a sparse Map of 4 KiB Buffers, as in the README. */
function sparseMemory(bytes: number): BlockStorageHandler {
  const page = 4 * KIB;
  const pages = new Map<number, Buffer>();
  return {
    sectors: bytes / 512,
    read(offset, length) {
      const out = Buffer.alloc(length);
      for (let at = 0; at < length; at += page) pages.get((offset + at) / page)?.copy(out, at);
      return out;
    },
    write(offset, data) {
      for (let at = 0; at < data.length; at += page) pages.set((offset + at) / page, Buffer.from(data.subarray(at, at + page)));
    },
  };
}

interface Figures {
  readonly requestsPerSec: number;
  readonly bytesPerSec: number;
  readonly requests: number;
  readonly seconds: number;
  readonly verified: number;
  readonly backendNotificationsPerRequest: number;
  readonly frontendNotificationsPerRequest: number;
  readonly frontendWaitsPerRequest: number;
  readonly cpuBusy: number;
}

/** The figure's own fields, after the value. */
function details(f: Figures, persistent: boolean): Record<string, number | string> {
  return {
    copies: copies(persistent),
    mib_per_s: f.bytesPerSec / MIB,
    requests: f.requests,
    seconds: f.seconds,
    verified: f.verified,
    backend_notifications_per_request: f.backendNotificationsPerRequest,
    frontend_notifications_per_request: f.frontendNotificationsPerRequest,
    frontend_waits_per_request: f.frontendWaitsPerRequest,
    cpu_busy: f.cpuBusy,
  };
}

/** Runs the benchmark and prints its figures. */
export async function run(): Promise<void> {
  const memcpy = new Map<number, number>();
  for (const size of [4 * KIB, 128 * KIB, MIB]) memcpy.set(size, native.benchMemcpyBlocks(size, MS));
  const fromMemory = new Map<number, number>();
  for (const size of [128 * KIB, MIB]) fromMemory.set(size, native.benchMemcpyFromRegion(size, MS));
  /** memcpy of requests of `segments` pages, in the unit of their figure (see `perSecond`). */
  const memcpyOf = (segments: number): { name: string; value: number; unit: string } => {
    const size = segments * 4 * KIB;
    const bytesPerSec = memcpy.get(size) ?? Number.NaN;
    const name = `memcpy of ${blockLabel(size)} blocks, page-aligned`;
    return segments === 1 ? { name, value: bytesPerSec / size, unit: 'blocks/s' } : { name, value: bytesPerSec / MIB, unit: 'MiB/s' };
  };

  for (const [queues, depth] of [
    [1, 1],
    [1, 32],
    [2, 1],
    [2, 32],
  ] as const) {
    for (const persistent of [true, false]) {
      for (const write of [false, true]) {
        const f: Figures = native.benchBlkWorkload({ queues, depth, segments: 1, write, random: true, persistent, millis: MS });
        report({
          bench: 'blk',
          metric: `4 KiB random ${write ? 'write' : 'read'} IOPS, depth ${String(depth)}, ${String(queues)} queue${queues > 1 ? 's' : ''}, ${GRANTS(persistent)}, MemDisk`,
          value: f.requestsPerSec,
          unit: 'IOPS',
          reference: memcpyOf(1),
          ...(!write && depth === 32 ? { target_ratio: 0.5 } : {}),
          ...details(f, persistent),
        });
      }
    }
  }

  for (const [queues, segments] of [
    [1, 32],
    [1, 256],
    [2, 32],
    [2, 256],
  ] as const) {
    const size = segments * 4 * KIB;
    const label = blockLabel(size);
    for (const persistent of [true, false]) {
      for (const write of [false, true]) {
        const f: Figures = native.benchBlkWorkload({ queues, depth: 8, segments, write, random: false, persistent, millis: MS });
        report({
          bench: 'blk',
          metric: `sequential ${write ? 'write' : 'read'}, ${label} requests (${String(segments)} indirect segments), depth 8, ${String(queues)} queue${queues > 1 ? 's' : ''}, ${GRANTS(persistent)}, MemDisk`,
          value: f.bytesPerSec / MIB,
          unit: 'MiB/s',
          reference: memcpyOf(segments),
          target_ratio: 0.7,
          reference_from_memory: {
            name: `memcpy of ${label} blocks out of a 64 MiB region, page-aligned`,
            value: round((fromMemory.get(size) ?? Number.NaN) / MIB),
            unit: 'MiB/s',
          },
          ratio_from_memory: f.bytesPerSec / (fromMemory.get(size) ?? Number.NaN),
          iops: f.requestsPerSec,
          ...details(f, persistent),
        });
      }
    }
  }
  // The same data path with the queue polling its ring for POLL_US after
  // taking requests (BlockOptions.pollMicros, serve --poll-us) instead of
  // sleeping until the frontend's next event: in pairs of runs, polled and
  // not, the order alternating; each figure is the median of its runs, and
  // the line also gives the run without polling and the ratio to it.
  for (const [segments, depth, write] of [
    [1, 1, false],
    [1, 32, false],
    [1, 32, true],
    [32, 8, false],
  ] as const) {
    const random = segments === 1;
    const workload = { queues: 1, depth, segments, write, random, persistent: true, millis: MS };
    const runs = new Map<boolean, Figures[]>([
      [false, []],
      [true, []],
    ]);
    for (let pair = 0; pair < 3; pair++) {
      for (const poll of pair % 2 === 0 ? [false, true] : [true, false]) {
        runs.get(poll)?.push(native.benchBlkWorkload({ ...workload, pollMicros: poll ? POLL_US : 0 }));
      }
    }
    const perSec = (g: Figures): number => perSecond(g, random);
    const median = (fs: Figures[]): Figures => {
      const sorted = [...fs].sort((a, b) => perSec(a) - perSec(b));
      const m = sorted[Math.floor(sorted.length / 2)];
      if (!m) throw new Error('no run');
      return m;
    };
    const polled = median(runs.get(true) ?? []);
    const plain = median(runs.get(false) ?? []);
    const size = segments * 4 * KIB;
    const unit = random ? 'IOPS' : 'MiB/s';
    const what = random
      ? `4 KiB random ${write ? 'write' : 'read'} IOPS, depth ${String(depth)}`
      : `sequential ${write ? 'write' : 'read'}, ${String(size / KIB)} KiB requests (${String(segments)} indirect segments), depth ${String(depth)}`;
    report({
      bench: 'blk',
      metric: `${what}, 1 queue, persistent grants, MemDisk, ring polled ${String(POLL_US)} us (median of 3)`,
      value: perSec(polled),
      unit,
      reference: memcpyOf(segments),
      ...(write ? {} : { target_ratio: random ? 0.5 : 0.7 }),
      without_polling: { name: 'the same, the queue waiting for events (median of 3, same pairs)', value: round(perSec(plain)), unit, cpu_busy: round(plain.cpuBusy) },
      ratio_to_without_polling: perSec(polled) / perSec(plain),
      ...details(polled, true),
    });
  }

  // What the statistics cost: the latency histograms on against off (the
  // plain counters are always kept), in pairs of runs of the same workload,
  // the order alternating from pair to pair; the ratio is the median of the
  // pairs' ratios, so that a drift of a noisy machine cancels out.
  for (const [segments, depth, random] of [
    [1, 32, true],
    [32, 8, false],
  ] as const) {
    const ratios: number[] = [];
    const on: number[] = [];
    const off: number[] = [];
    for (let pair = 0; pair < 7; pair++) {
      const order = pair % 2 === 0 ? [false, true] : [true, false];
      const got = new Map<boolean, number>();
      for (const timing of order) {
        const workload = { queues: 1, depth, segments, write: false, random, persistent: true, timing, millis: MS };
        got.set(timing, native.benchBlkWorkload(workload).requestsPerSec);
      }
      const a = got.get(true) ?? Number.NaN;
      const b = got.get(false) ?? Number.NaN;
      on.push(a);
      off.push(b);
      ratios.push(a / b);
    }
    const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
    const what = random ? `4 KiB random read IOPS, depth ${String(depth)}` : `sequential read, ${String(segments * 4)} KiB requests, depth ${String(depth)}`;
    report({
      bench: 'blk',
      metric: `${what}, 1 queue, persistent grants, MemDisk, with latency statistics (requests/s, median of 7 pairs)`,
      value: median(on),
      unit: 'requests/s',
      reference: { name: 'the same without latency statistics, in the same pairs', value: median(off), unit: 'requests/s' },
      ratio_is: 'statistics on / off (goal: within noise, over 0.98)',
      median_pair_ratio: median(ratios),
      pair_ratios: ratios.map((r) => Number(r.toFixed(3))),
    });
  }

  // One disk for the three (a storage in TypeScript lives as long as the process).
  const disk = BlockStorage.custom(sparseMemory(GIB));
  for (const [segments, write] of [
    [1, false],
    [1, true],
    [32, false],
  ] as const) {
    const random = segments === 1;
    const depth = random ? 32 : 8;
    const persistent = true;
    const workload = { queues: 1, depth, segments, write, random, persistent, millis: MS };
    const memDisk: Figures = native.benchBlkWorkload(workload);
    const f: Figures = await native.benchBlkJsStorage(disk.native, workload);
    const what = random
      ? `4 KiB random ${write ? 'write' : 'read'} IOPS, depth ${String(depth)}, 1 queue`
      : `sequential ${write ? 'write' : 'read'}, ${String(segments * 4)} KiB requests (${String(segments)} indirect segments), depth ${String(depth)}, 1 queue`;
    const perSec = (g: Figures): number => perSecond(g, random);
    const copy = memcpyOf(segments);
    report({
      bench: 'blk',
      metric: `${what}, ${GRANTS(persistent)}, TS storage (BlockStorage.custom, Map of 4 KiB Buffers)`,
      value: perSec(f),
      unit: random ? 'IOPS' : 'MiB/s',
      reference: { name: 'the same workload on the Rust MemDisk, this run', value: perSec(memDisk), unit: random ? 'IOPS' : 'MiB/s' },
      ratio_is: 'TS storage / Rust MemDisk',
      memcpy: { ...copy, value: round(copy.value) },
      ratio_to_memcpy: perSec(f) / copy.value,
      ...(random ? {} : { iops: f.requestsPerSec }),
      ...details(f, persistent),
      copies: copiesTs(persistent),
    });
  }
}
