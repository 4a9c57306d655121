// The demo's disk workload, run in a simulated guest on its vbd: write a
// pattern derived from each word's offset in 1 MiB chunks, read it all back
// and compare byte for byte (and, for a disk in memory, what dom0's storage
// holds too), with a progress bar and throughput on a terminal, a few plain
// progress lines otherwise, and a summary line at the end.
import type { BlockStorage } from '../backends/index.js';
import type { BlkQueueStats } from '../native.js';
import type { SimBlockFrontend } from '../simhost/index.js';

const MiB = 2 ** 20;

/** What to run, where, and how to report it. */
export interface DiskWorkloadOptions {
  readonly disk: SimBlockFrontend;
  /** The disk's name in the guest, for the output (`xvda`). */
  readonly name: string;
  /** Prints a line of the demo's output. */
  readonly say: (line: string) => void;
  /**
   * Shows a status line in place, or removes it (`null`): given (on a
   * terminal), progress is a bar redrawn there; else a line at each quarter.
   */
  readonly status?: (text: string | null) => void;
  /** Stops the workload between chunks: what is in flight finishes, nothing more starts. */
  readonly signal: AbortSignal;
  /** Bytes to write, then verify (default 64 MiB; at most the disk's size). */
  readonly bytes?: number;
  /** Bytes per request (default 1 MiB; a multiple of 512). */
  readonly chunkBytes?: number;
  /** Operations queued at the frontend at once (default 4). */
  readonly depth?: number;
  /** Stop writing after this long, then verify what was written (default: no limit). */
  readonly writeBudgetMs?: number;
  /** The backend's counters for the disk. */
  readonly backendStats: () => BlkQueueStats | undefined;
  /** The backend's storage of the disk: if it is in memory, its bytes are checked too. */
  readonly backendStorage?: () => BlockStorage | undefined;
}

/** How the workload ended. */
export type DiskWorkloadOutcome = 'verified' | 'mismatch' | 'stopped' | 'failed';

export interface DiskWorkloadResult {
  readonly outcome: DiskWorkloadOutcome;
  /** Bytes meant to be written. */
  readonly planned: number;
  /** Bytes written (from the start of the disk). */
  readonly written: number;
  /** Bytes read back and compared. */
  readonly verified: number;
  readonly writeMs: number;
  readonly readMs: number;
  /** Chunks whose read-back differed from what was written. */
  readonly mismatches: number;
  /** The first byte that differed (in the guest's read-back or in dom0's storage). */
  readonly firstMismatch: number | undefined;
  /** Whether dom0's storage was compared too. */
  readonly storageChecked: boolean;
  readonly error: Error | undefined;
  /** The backend's counters at the end. */
  readonly backend: BlkQueueStats | undefined;
  /** The summary line printed. */
  readonly summary: string;
}

/**
 * The bytes the workload writes at byte `offset` of the disk: each 32-bit
 * word a different function of its own position, so that data written to,
 * or read from, the wrong place does not compare equal.
 */
export function diskPattern(offset: number, length: number): Buffer {
  const words = new Uint32Array(length / 4);
  const first = offset / 4;
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(first + i + 1, 0x9e3779b1);
  return Buffer.from(words.buffer, 0, length);
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function mib(bytes: number): string {
  const m = bytes / MiB;
  return Number.isInteger(m) ? String(m) : m.toFixed(1);
}

function rate(bytes: number, ms: number): string {
  return ms > 0 ? `${(bytes / MiB / (ms / 1000)).toFixed(1)} MiB/s` : '- MiB/s';
}

function amount(bytes: number, ms: number): string {
  return bytes === 0 ? '0 MiB' : `${mib(bytes)} MiB at ${rate(bytes, ms)}`;
}

/**
 * Runs `op(0..count-1)` in order with up to `depth` of them started at
 * once, stopping (after those started) once `stop()` says so or one fails.
 * `completed` counts the operations done, in order, before any failure.
 */
async function pipelined(
  count: number,
  depth: number,
  stop: () => boolean,
  op: (i: number) => Promise<void>,
  progress: (completed: number) => void,
): Promise<{ completed: number; error: Error | undefined }> {
  // Each result is caught at once: one failing while an earlier one is
  // awaited must not be an unhandled rejection.
  const started: Promise<Error | undefined>[] = [];
  let next = 0;
  let completed = 0;
  let error: Error | undefined;
  for (;;) {
    while (error === undefined && next < count && started.length < depth && !stop()) {
      started.push(op(next++).then(() => undefined, toError));
    }
    const oldest = started.shift();
    if (oldest === undefined) return { completed, error };
    const failed = await oldest;
    if (failed) error ??= failed;
    else if (error === undefined) progress(++completed);
  }
}

/** One phase's progress: a bar redrawn on a terminal, else a line at each quarter. */
class Progress {
  readonly #started = performance.now();
  #drawn = 0;
  #quarter = 1;
  /** When the last chunk completed, relative to the start. */
  #lastMs = 0;

  constructor(
    readonly options: DiskWorkloadOptions,
    readonly label: string,
    readonly total: number,
  ) {}

  get elapsedMs(): number {
    return performance.now() - this.#started;
  }

  update(done: number): void {
    this.#lastMs = this.elapsedMs;
    const { status, say } = this.options;
    if (status) {
      const now = performance.now();
      if (done < this.total && now - this.#drawn < 50) return;
      this.#drawn = now;
      status(this.#bar(done));
      return;
    }
    // One line when a quarter (or more) is passed.
    if (this.#quarter > 4 || done * 4 < this.total * this.#quarter) return;
    while (this.#quarter <= 4 && done * 4 >= this.total * this.#quarter) this.#quarter++;
    say(`${this.label} ${this.#percent(done)} (${mib(done)}/${mib(this.total)} MiB, ${rate(done, this.elapsedMs)})`);
  }

  /** Ends the phase; returns how long it took, up to its last chunk. */
  finish(done: number): number {
    const ms = this.#lastMs;
    const { status, say } = this.options;
    if (status) {
      status(null);
      if (done > 0) say(this.#bar(done, ms));
    }
    return ms;
  }

  #percent(done: number): string {
    return `${String(this.total > 0 ? Math.floor((done / this.total) * 100) : 100).padStart(3)}%`;
  }

  #bar(done: number, ms = this.#lastMs): string {
    const width = 24;
    const fraction = this.total > 0 ? done / this.total : 1;
    const full = Math.round(fraction * width);
    const bar = `[${'#'.repeat(full)}${'-'.repeat(width - full)}]`;
    return `${this.label} ${bar} ${this.#percent(done)} ${mib(done).padStart(mib(this.total).length)}/${mib(this.total)} MiB  ${rate(done, ms)}`;
  }
}

/**
 * Writes a pattern over the start of the disk and reads it back to verify
 * it, reporting progress, then prints and returns a summary. Stops between
 * chunks once `signal` aborts; never rejects.
 */
export async function runDiskWorkload(options: DiskWorkloadOptions): Promise<DiskWorkloadResult> {
  const { disk, name, say, signal } = options;
  const chunk = options.chunkBytes ?? MiB;
  const depth = options.depth ?? 4;
  const diskBytes = Math.floor((disk.sectors * 512) / chunk) * chunk;
  const planned = Math.min(Math.floor((options.bytes ?? 64 * MiB) / chunk) * chunk, diskBytes);
  const chunks = planned / chunk;
  const started = performance.now();
  const budget = options.writeBudgetMs;
  say(
    `disk ${name}: writing ${mib(planned)} MiB in ${mib(chunk)} MiB chunks (up to ${String(depth)} queued)` +
      `${budget === undefined ? '' : `, for ${(budget / 1000).toFixed(1)} s at most`}, then reading it back to verify`,
  );

  // Write.
  const writing = new Progress(options, `disk ${name}: writing  `, planned);
  const stopWriting = (): boolean => signal.aborted || (budget !== undefined && performance.now() - started >= budget);
  const w = await pipelined(
    chunks,
    depth,
    stopWriting,
    (i) => disk.write((i * chunk) / 512, diskPattern(i * chunk, chunk)),
    (done) => writing.update(done * chunk),
  );
  let error = w.error;
  if (error === undefined && !signal.aborted && disk.features?.flushCache === true) {
    // A write is done once flushed: the flush counts in the write's time.
    await disk.flush().then(
      () => writing.update(w.completed * chunk),
      (err: unknown) => (error = toError(err)),
    );
  }
  const writeMs = writing.finish(w.completed * chunk);
  const written = w.completed * chunk;
  if (error === undefined && !signal.aborted && written < planned) {
    say(`disk ${name}: time is up for writing after ${mib(written)} of ${mib(planned)} MiB: verifying what was written`);
  }

  // Read back and verify.
  let mismatches = 0;
  let firstMismatch: number | undefined;
  const storage = options.backendStorage?.();
  let storageChecked = storage !== undefined;
  const mismatch = (offset: number): void => {
    firstMismatch = Math.min(firstMismatch ?? offset, offset);
  };
  const verifying = new Progress(options, `disk ${name}: verifying`, written);
  let verified = 0;
  if (error === undefined && !signal.aborted && written > 0) {
    const r = await pipelined(
      written / chunk,
      depth,
      () => signal.aborted,
      async (i) => {
        const offset = i * chunk;
        const got = await disk.read(offset / 512, chunk);
        const want = diskPattern(offset, chunk);
        let bad = got.equals(want) ? undefined : firstDifference(got, want);
        if (storage !== undefined && storageChecked) {
          let stored: Buffer | undefined;
          try {
            stored = storage.readMemory(offset, chunk);
          } catch {
            storageChecked = false; // not a disk in memory
          }
          if (stored !== undefined && !stored.equals(want)) bad = Math.min(bad ?? chunk, firstDifference(stored, want));
        }
        if (bad !== undefined) {
          mismatches++;
          mismatch(offset + bad);
        }
      },
      (done) => verifying.update(done * chunk),
    );
    error = r.error;
    verified = r.completed * chunk;
  }
  const readMs = verifying.finish(verified);

  const outcome: DiskWorkloadOutcome =
    error !== undefined ? 'failed' : mismatches > 0 ? 'mismatch' : written > 0 && verified === written ? 'verified' : 'stopped';
  const backend = options.backendStats();
  const verdict = {
    verified: `data verified byte for byte (read back in the guest${storageChecked ? " and in dom0's storage" : ''})`,
    mismatch: `DATA MISMATCH in ${String(mismatches)} chunk(s), first at byte ${String(firstMismatch)}`,
    stopped:
      verified === 0
        ? 'stopped by the shutdown before any of it was verified'
        : `stopped by the shutdown; the ${mib(verified)} MiB read back so far verified byte for byte`,
    failed: `failed: ${error?.message ?? ''}`,
  }[outcome];
  const counters =
    backend === undefined
      ? 'backend: no counters (not connected)'
      : `backend: ${String(backend.requests)} requests, ${String(backend.responses)} responses, ${String(backend.errors)} errors`;
  const summary = `disk ${name}: wrote ${amount(written, writeMs)}, read back ${amount(verified, readMs)}; ${verdict}; ${counters}`;
  say(summary);
  return { outcome, planned, written, verified, writeMs, readMs, mismatches, firstMismatch, storageChecked, error, backend, summary };
}
