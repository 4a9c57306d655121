// XenStore over the embedded daemon, through the public TypeScript API:
// read and write throughput with 1 and 4 clients, watch-event latency, and
// transaction commits under conflict. Each figure carries a reference
// measured in the same run.
import { mkdtempSync, rmSync } from 'node:fs';
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

/** Runs the benchmark and prints its figures. */
export async function run(): Promise<void> {
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
  } catch (err) {
    if (isXenStoreError(err)) console.error(`bench xenstore: ${err.message}`);
    throw err;
  } finally {
    for (const c of clients) c.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
