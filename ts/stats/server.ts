// The statistics over HTTP: `/metrics` for Prometheus, `/healthz` for a
// supervisor or load balancer, and `/stats` (JSON) for `xenrx top`. Bound
// to the loopback address unless told otherwise: the counters name guests.
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import type { HealthReport } from './health.js';
import type { PrometheusMetrics } from './prometheus.js';
import type { DeviceStats } from './types.js';

/** The address `xenrx serve --metrics` and `xenrx top` use by default. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9469';

/** `/stats`: a snapshot, each device with its guest's name. */
export interface StatsDocument {
  readonly at: number;
  readonly devices: readonly (DeviceStats & { readonly guest: string })[];
}

/** Options of {@link serveMetrics}. */
export interface MetricsServerOptions {
  /** `host:port`, `[v6]:port` or a bare port (on 127.0.0.1); port 0 takes a free one. Default {@link DEFAULT_METRICS_ADDRESS}. */
  readonly address?: string;
  readonly metrics: PrometheusMetrics;
  /** `/healthz`'s checks (without one, `/healthz` says healthy while the server runs). */
  readonly health?: () => Promise<HealthReport>;
}

/** A running endpoint. */
export interface MetricsServer {
  /** `http://host:port`, the port the one bound. */
  readonly url: string;
  close(): Promise<void>;
}

/** Parses a listening address: `host:port`, `[v6]:port` or `port`. */
export function parseListenAddress(address: string): { readonly host: string; readonly port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(address) ?? /^()()(\d+)$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new RangeError(`not a listening address: ${JSON.stringify(address)} (want host:port, [v6]:port or a port)`);
  }
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function answer(req: IncomingMessage, res: ServerResponse, options: MetricsServerOptions): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', 'only GET\n');
    return;
  }
  switch (path) {
    case '/metrics':
      send(res, 200, options.metrics.contentType, await options.metrics.scrape());
      return;
    case '/healthz': {
      const report = options.health ? await options.health() : { healthy: true, checks: {} };
      send(res, report.healthy ? 200 : 503, 'application/json', `${JSON.stringify(report)}\n`);
      return;
    }
    case '/stats': {
      const snap = await options.metrics.read();
      const doc: StatsDocument = { at: snap.at, devices: snap.devices.map((d) => ({ ...d, guest: options.metrics.guestName(d.domid) })) };
      send(res, 200, 'application/json', `${JSON.stringify(doc)}\n`);
      return;
    }
    default:
      send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /stats\n');
  }
}

/** Starts the endpoint; resolves once it listens. */
export async function serveMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(options.address ?? DEFAULT_METRICS_ADDRESS);
  const server = createServer((req, res) => {
    answer(req, res, options).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `${err instanceof Error ? err.message : String(err)}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${shown}:${String(bound.port)}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
