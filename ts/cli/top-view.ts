// What `xenrx top` shows: one row per device, rates over the last
// interval, sorted by a column. Pure: two `/stats` documents in, text out.
import { latencyQuantileUs, latencySince, mergeLatency } from '../stats/histogram.js';
import type { LatencyHistogram } from '../stats/histogram.js';
import type { StatsDocument } from '../stats/server.js';

/** Columns, in order; each can be sorted by. */
export const TOP_COLUMNS = ['guest', 'domid', 'device', 'state', 'ops/s', 'rd/s', 'wr/s', 'p50', 'p99', 'errors'] as const;
export type TopColumn = (typeof TOP_COLUMNS)[number];

/** One device's row: rates over the interval, latency quantiles of that interval. */
export interface TopRow {
  readonly guest: string;
  readonly domid: number;
  readonly device: string;
  readonly state: string;
  /** Requests (vbd) or events (console) per second. */
  readonly opsPerSec: number;
  /** Bytes per second read from the disk, or console output. */
  readonly readPerSec: number;
  /** Bytes per second written to the disk, or console input. */
  readonly writePerSec: number;
  /** Microseconds; undefined when no request finished in the interval. */
  readonly p50Us: number | undefined;
  readonly p99Us: number | undefined;
  /** Errors (vbd) or rate-limited events (console), in total. */
  readonly errors: number;
}

type Device = StatsDocument['devices'][number];

function totals(d: Device): { ops: number; read: number; write: number; errors: number; latency?: LatencyHistogram } {
  if (d.type === 'vbd') {
    const c = d.counters;
    const l = d.latency;
    return {
      ops: c.reads + c.writes + c.flushRequests + c.discards,
      read: c.sectorsRead * 512,
      write: c.sectorsWritten * 512,
      errors: c.errors,
      latency: mergeLatency(mergeLatency(l.read, l.write), mergeLatency(l.flush, l.discard)),
    };
  }
  if (d.type === 'vif') {
    const c = d.counters;
    // Read: what reached the guest; written: what it sent.
    return { ops: c.txPackets + c.rxPackets, read: c.rxBytes, write: c.txBytes, errors: c.txErrors + c.rxDropped };
  }
  const c = d.counters;
  return { ops: c.events, read: c.bytesOut, write: c.bytesIn, errors: c.rateLimited };
}

/** Rows from the latest document, with rates against the one before (if any). */
export function topRows(now: StatsDocument, before: StatsDocument | undefined): TopRow[] {
  const seconds = before ? Math.max((now.at - before.at) / 1000, 1e-3) : 0;
  return now.devices.map((d) => {
    const t = totals(d);
    const prior = before?.devices.find((p) => p.name === d.name && p.type === d.type);
    const p = prior ? totals(prior) : undefined;
    const rate = (x: number, y: number | undefined): number => (p && seconds > 0 ? Math.max(0, x - (y ?? 0)) / seconds : 0);
    const recent = t.latency ? latencySince(t.latency, p?.latency) : undefined;
    return {
      guest: d.guest,
      domid: d.domid,
      device: d.name,
      state: d.state,
      opsPerSec: rate(t.ops, p?.ops),
      readPerSec: rate(t.read, p?.read),
      writePerSec: rate(t.write, p?.write),
      p50Us: recent && latencyQuantileUs(recent, 0.5),
      p99Us: recent && latencyQuantileUs(recent, 0.99),
      errors: t.errors,
    };
  });
}

function key(row: TopRow, column: TopColumn): string | number {
  switch (column) {
    case 'guest':
      return row.guest;
    case 'domid':
      return row.domid;
    case 'device':
      return row.device;
    case 'state':
      return row.state;
    case 'ops/s':
      return row.opsPerSec;
    case 'rd/s':
      return row.readPerSec;
    case 'wr/s':
      return row.writePerSec;
    case 'p50':
      return row.p50Us ?? -1;
    case 'p99':
      return row.p99Us ?? -1;
    case 'errors':
      return row.errors;
  }
}

/** Rows sorted by a column: numbers biggest first, text in order; `reverse` flips it. Ties go by device name. */
export function sortRows(rows: readonly TopRow[], column: TopColumn, reverse = false): TopRow[] {
  return [...rows].sort((a, b) => {
    const x = key(a, column);
    const y = key(b, column);
    let c = typeof x === 'number' && typeof y === 'number' ? y - x : String(x).localeCompare(String(y));
    if (reverse) c = -c;
    return c !== 0 ? c : a.device.localeCompare(b.device);
  });
}

function bytes(n: number): string {
  if (n < 1024) return `${n.toFixed(0)}B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(2)}G`;
}

function micros(us: number | undefined): string {
  if (us === undefined) return '-';
  if (us < 1000) return `${us.toFixed(0)}us`;
  if (us < 1e6) return `${(us / 1000).toFixed(1)}ms`;
  return `${(us / 1e6).toFixed(2)}s`;
}

function cells(row: TopRow): string[] {
  return [
    row.guest || '-',
    String(row.domid),
    row.device,
    row.state,
    row.opsPerSec.toFixed(row.opsPerSec < 10 ? 1 : 0),
    bytes(row.readPerSec),
    bytes(row.writePerSec),
    micros(row.p50Us),
    micros(row.p99Us),
    String(row.errors),
  ];
}

/** The table: a header and one line per row, columns aligned (numbers to the right). */
export function renderTable(rows: readonly TopRow[], sortedBy: TopColumn, reverse: boolean): string {
  const header = TOP_COLUMNS.map((c) => (c === sortedBy ? `${c}${reverse ? '^' : '*'}` : c).toUpperCase());
  const body = rows.map(cells);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (i >= 4 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...body.map(line)].join('\n');
}
