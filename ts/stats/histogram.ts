// Latency histograms as the data path keeps them: requests per bucket,
// bucket i holding those that took at most 2^i microseconds (and more than
// bucket i-1's bound), the last bucket anything slower. Merging is adding;
// a quantile is read the way Prometheus's histogram_quantile reads one.

/** A latency histogram (not cumulative), and the sum of what it counts. */
export interface LatencyHistogram {
  /** Requests per bucket; see {@link latencyBoundUs}. */
  readonly buckets: readonly number[];
  /** The sum of the latencies, in microseconds. */
  readonly sumUs: number;
}

/** The upper bound of bucket `i` of `n` in microseconds (`Infinity` for the last). */
export function latencyBoundUs(i: number, n: number): number {
  return i < n - 1 ? 2 ** i : Infinity;
}

/** How many requests a histogram counts. */
export function latencyCount(h: LatencyHistogram): number {
  return h.buckets.reduce((a, b) => a + b, 0);
}

/** Two histograms as one (the buckets added). */
export function mergeLatency(a: LatencyHistogram, b: LatencyHistogram): { buckets: number[]; sumUs: number } {
  const n = Math.max(a.buckets.length, b.buckets.length);
  return {
    buckets: Array.from({ length: n }, (_, i) => (a.buckets[i] ?? 0) + (b.buckets[i] ?? 0)),
    sumUs: a.sumUs + b.sumUs,
  };
}

/** What `later` counted since `earlier` (for rates and recent quantiles). */
export function latencySince(later: LatencyHistogram, earlier: LatencyHistogram | undefined): LatencyHistogram {
  if (!earlier) return later;
  return {
    buckets: later.buckets.map((n, i) => Math.max(0, n - (earlier.buckets[i] ?? 0))),
    sumUs: Math.max(0, later.sumUs - earlier.sumUs),
  };
}

/**
 * The `q` quantile (0..1) in microseconds, interpolated linearly inside its
 * bucket (from the bucket below's bound); `undefined` for an empty
 * histogram. A quantile in the last, unbounded bucket is given as the
 * bound below it, as Prometheus does.
 */
export function latencyQuantileUs(h: LatencyHistogram, q: number): number | undefined {
  const total = latencyCount(h);
  if (total === 0) return undefined;
  const n = h.buckets.length;
  const rank = Math.min(Math.max(q, 0), 1) * total;
  let seen = 0;
  for (let i = 0; i < n; i++) {
    const inBucket = h.buckets[i] ?? 0;
    if (inBucket > 0 && seen + inBucket >= rank) {
      const upper = latencyBoundUs(i, n);
      const lower = i === 0 ? 0 : latencyBoundUs(i - 1, n);
      if (upper === Infinity) return lower;
      return lower + (upper - lower) * ((rank - seen) / inBucket);
    }
    seen += inBucket;
  }
  return latencyBoundUs(n - 2, n);
}
