// The pure parts of the statistics: histogram arithmetic, the listening
// address, and what xenrx top computes and draws from two /stats documents.
import test from 'ava';

import { topRows, renderTable, sortRows } from '../ts/cli/top-view.js';
import { latencyBoundUs, latencyCount, latencyQuantileUs, latencySince, mergeLatency, parseListenAddress } from '../ts/index.js';
import type { BlockDeviceStats, LatencyHistogram, StatsDocument } from '../ts/index.js';

const N = 26;
function histogram(entries: Readonly<Record<number, number>>, sumUs = 0): LatencyHistogram {
  return { buckets: Array.from({ length: N }, (_, i) => entries[i] ?? 0), sumUs };
}

test('latency buckets: bounds, counts, merging, differences and quantiles', (t) => {
  t.is(latencyBoundUs(0, N), 1);
  t.is(latencyBoundUs(10, N), 1024);
  t.is(latencyBoundUs(N - 1, N), Infinity);
  const h = histogram({ 3: 10, 4: 10 }, 200); // 10 in (4, 8] µs, 10 in (8, 16] µs
  t.is(latencyCount(h), 20);
  t.is(latencyQuantileUs(h, 0.5), 8);
  t.is(latencyQuantileUs(h, 0.25), 6);
  t.is(latencyQuantileUs(h, 1), 16);
  t.is(latencyQuantileUs(histogram({}), 0.5), undefined);
  // Beyond the last bound: the bound below it, as Prometheus does.
  t.is(latencyQuantileUs(histogram({ [N - 1]: 3 }), 0.99), 2 ** (N - 2));
  const m = mergeLatency(h, histogram({ 4: 5 }, 50));
  t.deepEqual([m.buckets[3], m.buckets[4], m.sumUs], [10, 15, 250]);
  const d = latencySince(m, h);
  t.deepEqual([latencyCount(d), d.buckets[4], d.sumUs], [5, 5, 50]);
  t.is(latencySince(h, undefined), h);
});

test('listening addresses: host and port, IPv6 in brackets, or a bare port on the loopback', (t) => {
  t.deepEqual(parseListenAddress('127.0.0.1:9469'), { host: '127.0.0.1', port: 9469 });
  t.deepEqual(parseListenAddress('[::1]:0'), { host: '::1', port: 0 });
  t.deepEqual(parseListenAddress('9100'), { host: '127.0.0.1', port: 9100 });
  t.deepEqual(parseListenAddress('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
  for (const bad of ['', 'host', 'host:', ':80', '1.2.3.4:70000', 'a:b:c']) t.throws(() => parseListenAddress(bad), { instanceOf: RangeError }, bad);
});

function disk(name: string, domid: number, reads: number, sectorsRead: number, read: LatencyHistogram, errors = 0): BlockDeviceStats & { guest: string } {
  const zero = histogram({});
  return {
    type: 'vbd',
    name,
    domid,
    devid: 51712,
    state: 'Connected',
    guest: `g${String(domid)}`,
    queues: 1,
    counters: { requests: reads, responses: reads, reads, writes: 0, flushRequests: 0, discards: 0, sectorsRead, sectorsWritten: 0, fenceWaits: 0, errors, notifications: 0 },
    latency: { read, write: zero, flush: zero, discard: zero },
  };
}

test('top: rates and latency over the interval, sorting, and an aligned table', (t) => {
  const before: StatsDocument = { at: 10_000, devices: [disk('vbd-1-51712', 1, 100, 800, histogram({ 10: 100 })), disk('vbd-2-51712', 2, 0, 0, histogram({}))] };
  const now: StatsDocument = {
    at: 12_000,
    devices: [disk('vbd-1-51712', 1, 300, 2400, histogram({ 10: 100, 4: 200 }), 1), disk('vbd-2-51712', 2, 10, 80, histogram({ 6: 10 })), disk('vbd-3-51712', 3, 5, 5, histogram({ 0: 5 }))],
  };
  const rows = topRows(now, before);
  const one = rows.find((r) => r.device === 'vbd-1-51712');
  // 200 reads and 1600 sectors in 2 s; only the 200 recent ones (8..16 µs) count for latency.
  t.is(one?.opsPerSec, 100);
  t.is(one?.readPerSec, (1600 * 512) / 2);
  t.is(one?.p50Us, 12);
  t.is(one?.errors, 1);
  // A device new since the last reading has no rate yet.
  t.is(rows.find((r) => r.device === 'vbd-3-51712')?.opsPerSec, 0);
  t.deepEqual(
    sortRows(rows, 'ops/s').map((r) => r.domid),
    [1, 2, 3],
  );
  t.deepEqual(
    sortRows(rows, 'ops/s', true).map((r) => r.domid),
    [3, 2, 1],
  );
  t.deepEqual(
    sortRows(rows, 'guest').map((r) => r.guest),
    ['g1', 'g2', 'g3'],
  );
  const table = renderTable(sortRows(rows, 'p50'), 'p50', false).split('\n');
  t.regex(table[0] ?? '', /^GUEST\s+DOMID\s+DEVICE\s+STATE\s+OPS\/S\s+RD\/S\s+WR\/S\s+P50\*\s+P99\s+ERRORS$/);
  t.is(table.length, 4);
  // Numbers are right-aligned under their heading.
  const end = (table[0] ?? '').indexOf('ERRORS') + 'ERRORS'.length;
  for (const line of table.slice(1)) t.is(line.length, end, line);
  // Slowest first: g2's reads took 32..64 µs.
  t.regex(table[1] ?? '', /^g2\s/);
  t.regex(table.find((l) => l.startsWith('g1')) ?? '', /^g1\s+1\s+vbd-1-51712\s+Connected\s+100\s+400\.0K\s+0B\s+12us\s+\d+us\s+1$/);
});
