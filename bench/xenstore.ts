// XenStore over the embedded daemon, through the public TypeScript API:
// read and write throughput with 1 and 4 clients, watch-event latency, and
// transaction commits under conflict (in memory); then, with a state file,
// the cost of a write as the store grows, and dom0 read latency while a
// guest rewrites a node in a loop. Each figure carries a reference measured
// in the same run.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';

import { XenStore, Xenstored, isXenStoreError } from '../ts/index.js';
import { percentile, report } from './report.js';

const DURATION_MS = Number(process.env['XENRX_BENCH_MS'] ?? 2000);

async function opsPerSecond(clients: XenStore[], op: (c: XenStore, i: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + DURATION_MS;
  let done = 0;
  await Promise.all(
    clients.map(async (c, k) => {
      for (let i = 0; performance.now() < end; i++) {
        await op(c, k * 1_000_000 + i);
        done++;
      }
    }),
  );
  return done / (DURATION_MS / 1000);
}

/** Throughput, watch latency and transactions of an in-memory daemon. */
async function clientFigures(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-bench-'));
  const daemon = Xenstored.start({ socket: join(dir, 'xs.sock'), log: false });
  const clients = await Promise.all([0, 1, 2, 3].map(() => XenStore.connect({ path: daemon.socket })));
  try {
    const [first] = clients;
    if (!first) throw new Error('no client');
    for (let i = 0; i < 100; i++) await first.write(`/bench/node${String(i)}`, 'value-of-some-length');

    for (const n of [1, 4]) {
      const set = clients.slice(0, n);
      // Reference: a request that touches no node, over the same path.
      const floor = await opsPerSecond(set, (c, i) => c.getDomainPath(i % 1000));
      const reads = await opsPerSecond(set, (c, i) => c.read(`/bench/node${String(i % 100)}`));
      const writes = await opsPerSecond(set, (c, i) => c.write(`/bench/w${String(i % 1000)}`, 'x'));
      const reference = { name: `GET_DOMAIN_PATH round trips, ${String(n)} client(s)`, value: floor, unit: 'ops/s' };
      report({ bench: 'xenstore', metric: `read, ${String(n)} client(s)`, value: reads, unit: 'ops/s', reference });
      report({ bench: 'xenstore', metric: `write, ${String(n)} client(s)`, value: writes, unit: 'ops/s', reference });
    }

    // Watch latency: write in one client, event in another.
    const [watcher, writer] = clients;
    if (!watcher || !writer) throw new Error('no clients');
    const pending = new Map<string, number>();
    const latencies: number[] = [];
    const sub = watcher.watch$('/lat').subscribe((path) => {
      const start = pending.get(path);
      if (start !== undefined) {
        latencies.push(performance.now() - start);
        pending.delete(path);
      }
    });
    await delay(50);
    const rtt: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const path = `/lat/n${String(i % 50)}`;
      const t0 = performance.now();
      pending.set(path, t0);
      await writer.write(path, String(i));
      rtt.push(performance.now() - t0);
      while (pending.has(path)) await new Promise((r) => setImmediate(r));
    }
    sub.unsubscribe();
    const refP50 = percentile(rtt, 50) * 1000;
    report({
      bench: 'xenstore',
      metric: 'watch event latency p50 (write call to event)',
      value: percentile(latencies, 50) * 1000,
      unit: 'us',
      reference: { name: 'write round trip p50', value: refP50, unit: 'us' },
      samples: latencies.length,
    });
    report({
      bench: 'xenstore',
      metric: 'watch event latency p99',
      value: percentile(latencies, 99) * 1000,
      unit: 'us',
      reference: { name: 'write round trip p99', value: percentile(rtt, 99) * 1000, unit: 'us' },
    });

    // Transactions: 4 clients incrementing one counter (conflicts) versus
    // each its own counter (no conflicts).
    const commitRate = async (shared: boolean): Promise<{ rate: number; retries: number }> => {
      let retries = 0;
      const rate = await opsPerSecond(clients, (c, i) => {
        const key = shared ? '/txb/shared' : `/txb/own${String(Math.floor(i / 1_000_000))}`;
        let attempt = 0;
        return c.transaction(
          async (tx) => {
            if (attempt++ > 0) retries++;
            const v = Number((await tx.tryRead(key)) ?? '0');
            await tx.write(key, String(v + 1));
          },
          { maxAttempts: 1000 },
        );
      });
      return { rate, retries };
    };
    const free = await commitRate(false);
    const contended = await commitRate(true);
    report({
      bench: 'xenstore',
      metric: 'transaction commits, 4 clients, one shared counter',
      value: contended.rate,
      unit: 'commits/s',
      reference: { name: 'same, one counter per client (no conflicts)', value: free.rate, unit: 'commits/s' },
      retries_per_commit: contended.retries / (contended.rate * (DURATION_MS / 1000)),
    });
    const total = Number(await first.read('/txb/shared'));
    if (!Number.isFinite(total) || total <= 0) throw new Error('no commit landed');
  } finally {
    for (const c of clients) c.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Persistent daemon: helpers.

const MiB = 1024 * 1024;

function rssMiB(): number {
  return process.memoryUsage().rss / MiB;
}

/** Apparent and allocated bytes of the regular files under `dir`. */
function filesBytes(dir: string): { bytes: number; allocated: number; files: number } {
  const total = { bytes: 0, allocated: 0, files: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      const sub = filesBytes(path);
      total.bytes += sub.bytes;
      total.allocated += sub.allocated;
      total.files += sub.files;
    } else if (e.isFile()) {
      const st = statSync(path);
      total.bytes += st.size;
      total.allocated += st.blocks * 512;
      total.files++;
    }
  }
  return total;
}

/**
 * A daemon with its state file alone in `<dir>/state/` (so that whatever
 * files persistence keeps there are counted), sockets beside it.
 */
function startPersistent(dir: string): { daemon: Xenstored; stateDir: string } {
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  const daemon = Xenstored.start({ socket: join(dir, 'xs.sock'), stateFile: join(stateDir, 'xenstore.state'), log: false });
  return { daemon, stateDir };
}

/** Nodes in the store, from the daemon's `memreport`. */
async function nodeCount(dom0: XenStore): Promise<number> {
  const m = /nodes (\d+)/.exec(await dom0.control('memreport'));
  return m?.[1] !== undefined ? Number(m[1]) : Number.NaN;
}

/** Runs `op(0..count-1)` with at most `window` calls in flight. */
async function pipelined(count: number, window: number, op: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await op(next++);
  };
  await Promise.all(Array.from({ length: Math.min(window, count) }, worker));
}

/** Calls `op` back to back (one in flight) for `ms`; each call's latency in us. */
async function timedLoop(
  ms: number,
  op: (i: number) => Promise<unknown>,
): Promise<{ count: number; seconds: number; latencies: number[] }> {
  const latencies: number[] = [];
  const start = performance.now();
  const end = start + ms;
  let now = start;
  for (let i = 0; now < end; i++) {
    const t0 = performance.now();
    await op(i);
    now = performance.now();
    latencies.push((now - t0) * 1000);
  }
  return { count: latencies.length, seconds: (now - start) / 1000, latencies };
}

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function max(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY);
}

// ---------------------------------------------------------------------------
// Write cost against store size.

const STORE_SIZES = [1_000, 10_000, 100_000];
/** Leaves per directory when filling: `/bench/size/d<k>/n<j>`. */
const FANOUT = 100;
/** Leaves per fill transaction, and writes in flight within it. */
const FILL_TX_NODES = 10_000;
const FILL_WINDOW = 512;
const SMALL_VALUE_LENGTH = 48;

function smallValue(i: number): string {
  return `value-${String(i)}-`.padEnd(SMALL_VALUE_LENGTH, 'x');
}

function leafPath(i: number): string {
  return `/bench/size/d${String(Math.floor(i / FANOUT))}/n${String(i % FANOUT)}`;
}

interface SizeResult {
  readonly writes: number;
  readonly meanUs: number;
  readonly fillRate: number;
}

/**
 * One store size: a fresh persistent daemon filled with `size` leaves by
 * dom0 in transactions of pipelined writes (one persist per commit), then
 * single-node overwrites of random leaves from one client, one in flight.
 */
async function writeCostAt(size: number, ref: SizeResult | undefined): Promise<SizeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-bench-size-'));
  const rssBefore = rssMiB();
  const { daemon, stateDir } = startPersistent(dir);
  const dom0 = await XenStore.connect({ path: daemon.socket });
  const writer = await XenStore.connect({ path: daemon.socket });
  try {
    const fillStart = performance.now();
    for (let base = 0; base < size; base += FILL_TX_NODES) {
      const n = Math.min(FILL_TX_NODES, size - base);
      await dom0.transaction((tx) => pipelined(n, FILL_WINDOW, (i) => tx.write(leafPath(base + i), smallValue(base + i))));
    }
    const fillSeconds = (performance.now() - fillStart) / 1000;
    const nodes = await nodeCount(dom0);
    if (!(nodes >= size)) throw new Error(`store of ${String(size)} leaves has ${String(nodes)} nodes`);
    let payload = 0;
    for (let i = 0; i < size; i++) payload += leafPath(i).length + smallValue(i).length;

    // Overwrites of existing leaves keep the store at its size.
    const overwrite = (i: number): Promise<void> => {
      const leaf = Math.floor(Math.random() * size);
      return writer.write(leafPath(leaf), smallValue(i + size));
    };
    await timedLoop(DURATION_MS / 10, overwrite);
    const persistsBefore = daemon.stats().persists;
    const w = await timedLoop(DURATION_MS, overwrite);
    const persists = daemon.stats().persists - persistsBefore;
    const files = filesBytes(stateDir);
    const rss = rssMiB();

    const result: SizeResult = {
      writes: w.count / w.seconds,
      meanUs: mean(w.latencies),
      fillRate: size / fillSeconds,
    };
    const r = ref ?? result;
    const label = `store of ${String(size)} nodes, persistent`;
    const refLabel = 'same, store of 1000 nodes';
    report({
      bench: 'xenstore',
      metric: `single-node write, 1 client, ${label}`,
      value: result.writes,
      unit: 'ops/s',
      reference: { name: refLabel, value: r.writes, unit: 'ops/s' },
      nodes,
      samples: w.count,
      persists_per_write: persists / w.count,
      rss_mib: rss,
    });
    report({
      bench: 'xenstore',
      metric: `single-node write latency mean, ${label}`,
      value: result.meanUs,
      unit: 'us',
      reference: { name: refLabel, value: r.meanUs, unit: 'us' },
      p99_us: percentile(w.latencies, 99),
      max_us: max(w.latencies),
    });
    report({
      bench: 'xenstore',
      metric: `state file size, ${label}`,
      value: files.bytes / 1024,
      unit: 'KiB',
      reference: { name: 'node paths and values written', value: payload / 1024, unit: 'KiB' },
      allocated_kib: files.allocated / 1024,
      files: files.files,
    });
    report({
      bench: 'xenstore',
      metric: `RSS, ${label}`,
      value: rss,
      unit: 'MiB',
      reference: { name: 'RSS before this daemon started', value: rssBefore, unit: 'MiB' },
    });
    report({
      bench: 'xenstore',
      metric: `fill rate (dom0, transactions of ${String(FILL_TX_NODES)} pipelined writes), ${label}`,
      value: result.fillRate,
      unit: 'nodes/s',
      reference: { name: 'same, store of 1000 nodes', value: r.fillRate, unit: 'nodes/s' },
      fill_s: fillSeconds,
    });
    return result;
  } finally {
    dom0.close();
    writer.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function writeCostBySize(): Promise<void> {
  let ref: SizeResult | undefined;
  for (const size of STORE_SIZES) {
    const r = await writeCostAt(size, ref);
    ref ??= r;
  }
}

// ---------------------------------------------------------------------------
// dom0 reads while a guest rewrites a node.

const GUESTS = 8;
/** Per guest: `<home>/d<k>/n<j>`, 10 directories of 95 leaves (961 nodes of the 1000 quota). */
const GUEST_DIRS = 10;
const GUEST_LEAVES_PER_DIR = 95;
/** Under the 2048-byte node-size quota (value + 8 bytes per permission). */
const GUEST_VALUE_LENGTH = 2000;
/** Directories per guest fill transaction (under the 1024 transaction-nodes quota). */
const GUEST_DIRS_PER_TX = 5;

function guestValue(tag: string): string {
  return tag.padEnd(GUEST_VALUE_LENGTH, '.');
}

function guestLeaf(k: number, j: number): string {
  return `d${String(k)}/n${String(j)}`;
}

async function readsUnderGuestLoop(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-bench-guests-'));
  const rssBefore = rssMiB();
  const { daemon, stateDir } = startPersistent(dir);
  const dom0 = await XenStore.connect({ path: daemon.socket });
  const guests: XenStore[] = [];
  try {
    // Homes owned by their guests, then INTRODUCE, then each guest connects
    // on its own domain socket.
    for (let domid = 1; domid <= GUESTS; domid++) {
      const home = `/local/domain/${String(domid)}`;
      await dom0.mkdir(home);
      await dom0.setPerms(home, [{ domid, access: 'none' }]);
      await dom0.introduce(domid);
      guests.push(await XenStore.connect({ path: daemon.domainSocket(domid), reconnect: false }));
    }

    // Each guest fills its home close to its quotas, in a few transactions
    // (one persist per commit); the guests fill at the same time.
    const fillStart = performance.now();
    await Promise.all(
      guests.map(async (g, gi) => {
        for (let k0 = 0; k0 < GUEST_DIRS; k0 += GUEST_DIRS_PER_TX) {
          await g.transaction((tx) =>
            pipelined(GUEST_DIRS_PER_TX * GUEST_LEAVES_PER_DIR, 20, (i) => {
              const k = k0 + Math.floor(i / GUEST_LEAVES_PER_DIR);
              const j = i % GUEST_LEAVES_PER_DIR;
              return tx.write(guestLeaf(k, j), guestValue(`g${String(gi + 1)}-${String(k)}-${String(j)}`));
            }),
          );
        }
      }),
    );
    const fillSeconds = (performance.now() - fillStart) / 1000;
    const nodes = await nodeCount(dom0);
    const expected = GUESTS * (1 + GUEST_DIRS * (1 + GUEST_LEAVES_PER_DIR));
    if (!(nodes >= expected)) throw new Error(`guest fill left ${String(nodes)} nodes, expected ${String(expected)}+`);

    const paths: string[] = [];
    for (let domid = 1; domid <= GUESTS; domid++) {
      for (let k = 0; k < GUEST_DIRS; k++) {
        for (let j = 0; j < GUEST_LEAVES_PER_DIR; j++) paths.push(`/local/domain/${String(domid)}/${guestLeaf(k, j)}`);
      }
    }
    const readRandom = (): Promise<string> => dom0.read(paths[Math.floor(Math.random() * paths.length)] ?? '/');

    await timedLoop(DURATION_MS / 10, readRandom);
    const idle = await timedLoop(DURATION_MS, readRandom);

    // Guest 1 rewrites one of its nodes as fast as it can, one request in flight.
    const [guest] = guests;
    if (!guest) throw new Error('no guest');
    let stop = false;
    let failure: { readonly error: unknown } | undefined;
    let rewrites = 0;
    const rewriteLatencies: number[] = [];
    const values = [guestValue('rewrite-a'), guestValue('rewrite-b')];
    const loop = (async () => {
      try {
        for (let i = 0; !stop; i++) {
          const t0 = performance.now();
          await guest.write(guestLeaf(0, 0), values[i & 1] ?? '');
          rewriteLatencies.push((performance.now() - t0) * 1000);
          rewrites++;
        }
      } catch (error) {
        failure = { error };
        stop = true;
      }
    })();
    let busy: Awaited<ReturnType<typeof timedLoop>>;
    let rewritesDuring: number;
    let persists: number;
    try {
      // Let the loop get going before measuring.
      while (rewrites < 2 && !stop) await delay(1);
      const rewritesBefore = rewrites;
      const persistsBefore = daemon.stats().persists;
      busy = await timedLoop(DURATION_MS, readRandom);
      rewritesDuring = rewrites - rewritesBefore;
      persists = daemon.stats().persists - persistsBefore;
    } finally {
      stop = true;
      await loop;
    }
    if (failure) throw failure.error;
    const files = filesBytes(stateDir);
    const rss = rssMiB();

    const label = `${String(GUESTS)} full guests, guest 1 rewriting one node, persistent`;
    const idleName = `same, idle (${String(GUESTS)} full guests)`;
    report({
      bench: 'xenstore',
      metric: `dom0 read latency p50, ${label}`,
      value: percentile(busy.latencies, 50),
      unit: 'us',
      reference: { name: idleName, value: percentile(idle.latencies, 50), unit: 'us' },
      samples: busy.count,
      idle_samples: idle.count,
    });
    report({
      bench: 'xenstore',
      metric: `dom0 read latency p99, ${label}`,
      value: percentile(busy.latencies, 99),
      unit: 'us',
      reference: { name: idleName, value: percentile(idle.latencies, 99), unit: 'us' },
    });
    report({
      bench: 'xenstore',
      metric: `dom0 read latency max, ${label}`,
      value: max(busy.latencies),
      unit: 'us',
      reference: { name: idleName, value: max(idle.latencies), unit: 'us' },
    });
    report({
      bench: 'xenstore',
      metric: `guest 1 rewrite rate (one in flight) during the dom0 reads, ${GUESTS} full guests, persistent`,
      value: rewritesDuring / busy.seconds,
      unit: 'writes/s',
      reference: { name: 'dom0 reads/s, idle (one in flight)', value: idle.count / idle.seconds, unit: 'ops/s' },
      rewrite_latency_mean_us: mean(rewriteLatencies),
      persists_per_rewrite: persists / rewritesDuring,
      dom0_reads_per_s: busy.count / busy.seconds,
      nodes,
      state_file_kib: files.bytes / 1024,
      fill_s: fillSeconds,
    });
    report({
      bench: 'xenstore',
      metric: `RSS, ${String(GUESTS)} full guests, persistent`,
      value: rss,
      unit: 'MiB',
      reference: { name: 'RSS before this daemon started', value: rssBefore, unit: 'MiB' },
    });
  } finally {
    for (const g of guests) g.close();
    dom0.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the benchmark and prints its figures. */
export async function run(): Promise<void> {
  try {
    await clientFigures();
    await writeCostBySize();
    await readsUnderGuestLoop();
  } catch (err) {
    if (isXenStoreError(err)) console.error(`bench xenstore: ${err.message}`);
    throw err;
  }
}
