// `--metrics` of `xenrx serve` and `xenrx demo`: the statistics endpoint
// over the services a process runs.
import type { Platform } from '../platform/index.js';
import type { MetricsServer, StatsSource } from '../stats/index.js';
import type { DeviceInfo } from '../xenbus/index.js';
import type { XenStore } from '../xenstore/index.js';
import type { Observable } from 'rxjs';

/** What the endpoint reports on. */
export interface ServeMetricsParts {
  /** `--metrics`'s value: an address, or `true` for the default one. */
  readonly address: string | true;
  readonly xs: XenStore;
  readonly platform: Platform;
  readonly sources: readonly StatsSource[];
  readonly devices$: Observable<DeviceInfo>;
}

/** Starts the endpoint; closing it also stops counting failed devices. */
export async function startServeMetrics(parts: ServeMetricsParts): Promise<MetricsServer> {
  const { DEFAULT_METRICS_ADDRESS, PrometheusMetrics, failedDeviceCount, healthProbe, serveMetrics, xenstoreGuestNames } = await import('../stats/index.js');
  const failed = failedDeviceCount(parts.devices$);
  const metrics = new PrometheusMetrics(parts.sources, { guestNames: xenstoreGuestNames(parts.xs), failedDevices: failed.count });
  try {
    const server = await serveMetrics({
      address: parts.address === true ? DEFAULT_METRICS_ADDRESS : parts.address,
      metrics,
      health: healthProbe({ xs: parts.xs, platform: parts.platform, failedDevices: failed.count }),
    });
    return {
      url: server.url,
      close: async () => {
        failed.subscription.unsubscribe();
        await server.close();
      },
    };
  } catch (err) {
    failed.subscription.unsubscribe();
    throw err;
  }
}
