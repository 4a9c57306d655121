export { latencyBoundUs, latencyCount, latencyQuantileUs, latencySince, mergeLatency } from './histogram.js';
export type { LatencyHistogram } from './histogram.js';
export { deviceStats$, stats$, statsSnapshot } from './snapshots.js';
export type { StatsStreamOptions } from './snapshots.js';
export { PrometheusMetrics, xenstoreGuestNames } from './prometheus.js';
export type { PrometheusOptions } from './prometheus.js';
export { failedDeviceCount, healthProbe } from './health.js';
export type { HealthCheck, HealthOptions, HealthReport } from './health.js';
export { DEFAULT_METRICS_ADDRESS, parseListenAddress, serveMetrics } from './server.js';
export type { MetricsServer, MetricsServerOptions, StatsDocument } from './server.js';
export type {
  BlockCounters,
  BlockDeviceStats,
  BlockLatencies,
  ConsoleCounters,
  ConsoleDeviceStats,
  DeviceStats,
  StatsSnapshot,
  StatsSource,
} from './types.js';
