// Benchmark output: one JSON line per figure, with the reference measured in
// the same run so that a ratio can be read on a noisy machine.
import { performance } from 'node:perf_hooks';

/** One measured figure and the reference it should be read against. */
export interface Figure {
  readonly bench: string;
  readonly metric: string;
  readonly value: number;
  readonly unit: string;
  readonly reference?: { readonly name: string; readonly value: number; readonly unit: string };
  readonly [extra: string]: unknown;
}

/** Prints a figure as a JSON line, adding the ratio to its reference and the peak RSS. */
export function report(figure: Figure): void {
  const ratio = figure.reference ? round(figure.value / figure.reference.value) : undefined;
  const peakRssMiB = round(process.resourceUsage().maxRSS / 1024);
  const rounded = Object.fromEntries(
    Object.entries(figure).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v]),
  );
  const reference = figure.reference && { ...figure.reference, value: round(figure.reference.value) };
  console.log(JSON.stringify({ ...rounded, reference, ratio, peak_rss_mib: peakRssMiB }));
}

/** Rounds to 4 significant digits, enough for any figure we print. */
export function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(4)) : x;
}

/** Runs `fn` `iterations` times (after a warm-up) and returns nanoseconds per call. */
export function timePerCall(fn: () => unknown, iterations: number): number {
  for (let i = 0; i < Math.min(iterations, 10_000); i++) fn();
  const start = performance.now();
  for (let i = 0; i < iterations; i++) fn();
  return ((performance.now() - start) * 1e6) / iterations;
}

/** Percentile (0..100) of a list of samples, by nearest rank. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}
