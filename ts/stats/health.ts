// Whether `xenrx serve` is well: XenStore answers, the event loop runs the
// data paths, and how many devices failed. A guest's failed device is
// reported but does not make the process unhealthy: restarting the
// process would not mend a guest's bad input.
import type { Observable, Subscription } from 'rxjs';

import type { Platform } from '../platform/index.js';
import type { DeviceInfo } from '../xenbus/index.js';
import type { XenStore } from '../xenstore/index.js';

/** One check's result. */
export interface HealthCheck {
  readonly ok: boolean;
  readonly detail: string;
}

/** What `/healthz` answers (HTTP 200 when `healthy`, else 503). */
export interface HealthReport {
  readonly healthy: boolean;
  readonly checks: Readonly<Record<string, HealthCheck>>;
}

/** What to check. */
export interface HealthOptions {
  readonly xs?: XenStore;
  readonly platform?: Platform;
  /** How many devices failed now. */
  readonly failedDevices?: () => number;
  /** How long XenStore and the event loop get to answer (default 2000 ms). */
  readonly timeoutMs?: number;
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A probe that runs the checks each time it is called. */
export function healthProbe(options: HealthOptions): () => Promise<HealthReport> {
  const timeout = options.timeoutMs ?? 2000;
  return async () => {
    const checks: Record<string, HealthCheck> = {};
    let healthy = true;
    if (options.xs) {
      const xs = options.xs;
      const answer = await within(
        xs.getDomainPath(0).then(
          () => null,
          (err: unknown) => (err instanceof Error ? err.message : String(err)),
        ),
        timeout,
      );
      const ok = answer === null;
      checks.xenstore = { ok, detail: ok ? 'answers' : answer === 'timeout' ? `no answer within ${String(timeout)} ms` : answer };
      healthy &&= ok;
    }
    if (options.platform) {
      const ok = await options.platform.eventLoopResponds(timeout);
      checks.eventLoop = { ok, detail: ok ? 'runs' : `did not run a probe within ${String(timeout)} ms` };
      healthy &&= ok;
    }
    if (options.failedDevices) {
      const n = options.failedDevices();
      checks.devices = { ok: n === 0, detail: `${String(n)} failed` };
    }
    return { healthy, checks };
  };
}

/** Counts the devices of a registry's `devices$` whose phase is `failed` now. */
export function failedDeviceCount(devices$: Observable<DeviceInfo>): { readonly count: () => number; readonly subscription: Subscription } {
  const failed = new Set<string>();
  const subscription = devices$.subscribe((d) => {
    if (d.phase === 'failed') failed.add(d.name);
    else failed.delete(d.name);
  });
  return { count: () => failed.size, subscription };
}
