// Statistics as a stream: a snapshot of every device now and then.
import { map, timer } from 'rxjs';
import type { Observable } from 'rxjs';

import type { DeviceStats, StatsSnapshot, StatsSource } from './types.js';

/** Every device of `sources` at this moment. */
export function statsSnapshot(sources: readonly StatsSource[]): StatsSnapshot {
  return { at: Date.now(), devices: sources.flatMap((s) => s.deviceStats()) };
}

/** Options of {@link stats$}. */
export interface StatsStreamOptions {
  /** Milliseconds between snapshots (default 1000). */
  readonly periodMs?: number;
}

/**
 * A snapshot of every device of `sources` at once, then every `periodMs`.
 * Reading the counters costs the data path nothing (they are atomics the
 * queues add to); each snapshot is a few native calls per device.
 */
export function stats$(sources: readonly StatsSource[], options: StatsStreamOptions = {}): Observable<StatsSnapshot> {
  const period = options.periodMs ?? 1000;
  if (!(period > 0)) throw new RangeError(`periodMs must be positive, got ${String(period)}`);
  return timer(0, period).pipe(map(() => statsSnapshot(sources)));
}

/** One device's statistics (`<type>-<domid>-<devid>`) in each snapshot while it is there. */
export function deviceStats$(snapshots: Observable<StatsSnapshot>, name: string): Observable<DeviceStats | undefined> {
  return snapshots.pipe(map((s) => s.devices.find((d) => d.name === name)));
}
