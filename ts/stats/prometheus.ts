// The statistics in Prometheus's text format, through prom-client: each
// scrape reads every device's counters once and reports them as counters,
// gauges and histograms with the device's labels, beside prom-client's
// process metrics. The latency histograms are the data path's own buckets
// (powers of two of microseconds), reported as they are.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MetricObjectWithValues, MetricType, MetricValueWithName } from 'prom-client';

import { latencyBoundUs, latencyCount } from './histogram.js';
import type { LatencyHistogram } from './histogram.js';
import { statsSnapshot } from './snapshots.js';
import type { BlockDeviceStats, ConsoleDeviceStats, NetDeviceStats, DeviceStats, StatsSnapshot, StatsSource } from './types.js';

const DEVICE_LABELS = ['type', 'domid', 'devid', 'device', 'guest'] as const;
type DeviceLabel = (typeof DEVICE_LABELS)[number];
type Labels<L extends string> = Partial<Record<L, string | number>>;

/** Options of {@link PrometheusMetrics}. */
export interface PrometheusOptions {
  /**
   * Guests' names for the `guest` label, looked up at each scrape (default:
   * none, the label is empty); see {@link xenstoreGuestNames}.
   */
  readonly guestNames?: (domids: readonly number[]) => Promise<ReadonlyMap<number, string>>;
  /** Devices that failed (counted in `xenrx_devices_failed`), if known. */
  readonly failedDevices?: () => number;
  /** Also report prom-client's process metrics (CPU, memory, event loop lag; default true). */
  readonly processMetrics?: boolean;
}

/**
 * A latency histogram already bucketed by the data path: prom-client's
 * registry prints whatever a metric's `get` returns, so this one returns
 * the buckets as they are (cumulative, with `le` in seconds) instead of
 * counting observations itself.
 */
class BucketedHistogram extends Histogram<DeviceLabel | 'op'> {
  readonly #name: string;
  readonly #help: string;
  readonly #read: () => { labels: Labels<DeviceLabel | 'op'>; h: LatencyHistogram }[];

  constructor(name: string, help: string, read: () => { labels: Labels<DeviceLabel | 'op'>; h: LatencyHistogram }[]) {
    super({ name, help, labelNames: [...DEVICE_LABELS, 'op'], registers: [] });
    this.#name = name;
    this.#help = help;
    this.#read = read;
  }

  /** What the registry prints (prom-client's own histogram prints through this). */
  getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<DeviceLabel | 'op'>>> {
    return this.get();
  }

  override get(): Promise<MetricObjectWithValues<MetricValueWithName<DeviceLabel | 'op'>>> {
    const values: MetricValueWithName<DeviceLabel | 'op'>[] = [];
    for (const { labels, h } of this.#read()) {
      const n = h.buckets.length;
      let cumulative = 0;
      for (let i = 0; i < n; i++) {
        cumulative += h.buckets[i] ?? 0;
        const bound = latencyBoundUs(i, n);
        const le = bound === Infinity ? '+Inf' : String(bound / 1e6);
        values.push({ metricName: `${this.#name}_bucket`, labels: { ...labels, le } as Labels<DeviceLabel | 'op'>, value: cumulative });
      }
      values.push({ metricName: `${this.#name}_sum`, labels, value: h.sumUs / 1e6 });
      values.push({ metricName: `${this.#name}_count`, labels, value: latencyCount(h) });
    }
    return Promise.resolve({
      name: this.#name,
      help: this.#help,
      // prom-client's typings name the types as an enum; the registry prints the string.
      type: 'histogram' as unknown as MetricType,
      aggregator: 'sum',
      values,
      collect: () => undefined,
    });
  }
}

/** The devices of some sources as a Prometheus registry, read afresh at each scrape. */
export class PrometheusMetrics {
  /** The prom-client registry (add your own metrics to it if you like). */
  readonly registry = new Registry();
  readonly #sources: readonly StatsSource[];
  readonly #options: PrometheusOptions;
  #now: StatsSnapshot = { at: 0, devices: [] };
  #names: ReadonlyMap<number, string> = new Map();

  constructor(sources: readonly StatsSource[], options: PrometheusOptions = {}) {
    this.#sources = sources;
    this.#options = options;
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.#define();
  }

  /** The content type of {@link scrape}'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The last snapshot a scrape read. */
  get snapshot(): StatsSnapshot {
    return this.#now;
  }

  /** Reads every device now (and its guest's name): the snapshot the next exposition reports. */
  async read(): Promise<StatsSnapshot> {
    const now = statsSnapshot(this.#sources);
    const lookup = this.#options.guestNames;
    this.#names = lookup ? await lookup([...new Set(now.devices.map((d) => d.domid))]) : new Map();
    this.#now = now;
    return now;
  }

  /** The name of guest `domid` as last read, or `''`. */
  guestName(domid: number): string {
    return this.#names.get(domid) ?? '';
  }

  /** Reads every device now and returns the exposition text. */
  async scrape(): Promise<string> {
    await this.read();
    return this.registry.metrics();
  }

  #labels(d: DeviceStats): Labels<DeviceLabel> {
    return { type: d.type, domid: d.domid, devid: d.devid, device: d.name, guest: this.guestName(d.domid) };
  }

  #blocks(): BlockDeviceStats[] {
    return this.#now.devices.filter((d): d is BlockDeviceStats => d.type === 'vbd');
  }

  #consoles(): ConsoleDeviceStats[] {
    return this.#now.devices.filter((d): d is ConsoleDeviceStats => d.type === 'console');
  }

  #define(): void {
    const registers = [this.registry];
    const labels = (d: DeviceStats): Labels<DeviceLabel> => this.#labels(d);
    const blocks = (): BlockDeviceStats[] => this.#blocks();
    const consoles = (): ConsoleDeviceStats[] => this.#consoles();
    const devices = (): readonly DeviceStats[] => this.#now.devices;
    const failed = this.#options.failedDevices;

    new Gauge({
      name: 'xenrx_devices',
      help: 'Devices served, by type and backend xenbus state',
      labelNames: ['type', 'state'],
      registers,
      collect() {
        this.reset();
        for (const d of devices()) this.inc({ type: d.type, state: d.state });
      },
    });
    if (failed) {
      new Gauge({
        name: 'xenrx_devices_failed',
        help: 'Devices whose backend failed (bad input from their guest, storage that cannot open)',
        registers,
        collect() {
          this.set(failed());
        },
      });
    }
    // A counter per device (and per `extra` label value), read at each scrape.
    const counter = <D extends DeviceStats, L extends string>(
      name: string,
      help: string,
      extra: readonly L[],
      of: () => readonly D[],
      values: (d: D) => [Labels<L>, number][],
    ): void => {
      new Counter<DeviceLabel | L>({
        name,
        help,
        labelNames: [...DEVICE_LABELS, ...extra],
        registers,
        collect() {
          this.reset();
          for (const d of of()) for (const [more, v] of values(d)) this.inc({ ...labels(d), ...more } as Labels<DeviceLabel | L>, v);
        },
      });
    };
    const blockCounter = (name: string, help: string, values: (d: BlockDeviceStats) => [Labels<'op'>, number][]): void =>
      counter(name, help, ['op'], blocks, values);
    blockCounter('xenrx_vbd_requests_total', 'Requests handed to storage, by operation (blkback: rd_req, wr_req, f_req, ds_req)', (d) => [
      [{ op: 'read' }, d.counters.reads],
      [{ op: 'write' }, d.counters.writes],
      [{ op: 'flush' }, d.counters.flushRequests],
      [{ op: 'discard' }, d.counters.discards],
    ]);
    blockCounter('xenrx_vbd_sectors_total', 'Sectors of 512 bytes transferred (blkback: rd_sect, wr_sect)', (d) => [
      [{ op: 'read' }, d.counters.sectorsRead],
      [{ op: 'write' }, d.counters.sectorsWritten],
    ]);
    blockCounter('xenrx_vbd_errors_total', 'Requests answered with an error', (d) => [[{}, d.counters.errors]]);
    blockCounter('xenrx_vbd_fence_waits_total', 'Times taking requests stopped for a barrier or flush to wait for earlier requests', (d) => [[{}, d.counters.fenceWaits]]);
    blockCounter('xenrx_vbd_notifications_total', 'Event channel notifications sent to the guest', (d) => [[{}, d.counters.notifications]]);
    new Gauge({
      name: 'xenrx_vbd_queues',
      help: 'Queues (rings) a disk is served on',
      labelNames: [...DEVICE_LABELS],
      registers,
      collect() {
        this.reset();
        for (const d of blocks()) this.set(labels(d), d.queues);
      },
    });
    this.registry.registerMetric(
      new BucketedHistogram('xenrx_vbd_request_duration_seconds', 'Time from a request taken off the ring to its answer, by operation', () =>
        blocks().flatMap((d) =>
          (['read', 'write', 'flush', 'discard'] as const).map((op) => ({ labels: { ...labels(d), op }, h: d.latency[op] })),
        ),
      ),
    );
    const consoleCounter = (name: string, help: string, values: (d: ConsoleDeviceStats) => [Labels<'direction'>, number][]): void =>
      counter(name, help, ['direction'], consoles, values);
    consoleCounter('xenrx_console_bytes_total', 'Console bytes: out is the guest output read, in the input written to the guest', (d) => [
      [{ direction: 'out' }, d.counters.bytesOut],
      [{ direction: 'in' }, d.counters.bytesIn],
    ]);
    consoleCounter('xenrx_console_rate_limited_total', 'Console events held back by the rate limit', (d) => [[{}, d.counters.rateLimited]]);
    consoleCounter('xenrx_console_bad_indexes_total', 'Console passes that found ring indexes no correct guest writes', (d) => [[{}, d.counters.clamped]]);
    const vifs = (): NetDeviceStats[] => this.#now.devices.filter((d): d is NetDeviceStats => d.type === 'vif');
    const vifCounter = (name: string, help: string, values: (d: NetDeviceStats) => [Labels<'direction'>, number][]): void =>
      counter(name, help, ['direction'], vifs, values);
    vifCounter('xenrx_vif_packets_total', 'Packets: tx is what the guest sent, rx what was put into its buffers (the guest\'s view, as netback counts)', (d) => [
      [{ direction: 'tx' }, d.counters.txPackets],
      [{ direction: 'rx' }, d.counters.rxPackets],
    ]);
    vifCounter('xenrx_vif_bytes_total', 'Bytes of those packets', (d) => [
      [{ direction: 'tx' }, d.counters.txBytes],
      [{ direction: 'rx' }, d.counters.rxBytes],
    ]);
    vifCounter('xenrx_vif_errors_total', 'Packets of the guest answered with an error', (d) => [[{}, d.counters.txErrors]]);
    vifCounter('xenrx_vif_rx_dropped_total', 'Packets for the guest dropped (no buffers posted for too long, too large for it)', (d) => [[{}, d.counters.rxDropped]]);
  }
}

/**
 * Guests' names as XenStore has them (`/local/domain/<domid>/name`, as the
 * toolstack writes it); a guest without one is left out.
 */
export function xenstoreGuestNames(xs: { tryRead(path: string): Promise<string | undefined> }): (domids: readonly number[]) => Promise<ReadonlyMap<number, string>> {
  return async (domids) => {
    const names = await Promise.all(domids.map(async (d) => [d, await xs.tryRead(`/local/domain/${String(d)}/name`).catch(() => undefined)] as const));
    return new Map(names.filter((e): e is readonly [number, string] => e[1] !== undefined));
  };
}
