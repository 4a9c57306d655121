// A console's latest output, kept for late readers, and optionally in a
// file so that a restarted backend starts with what the last one kept.
//
// The file is the console's raw output, nothing else, so that it reads as
// xenconsoled's guest logs do (`cat`, `tail -f`). It is named after the
// domain id and the guest's name: a file left by another guest that had
// the same id is not mistaken for this one's, and is removed. Each batch
// of output is appended with one write before it is handed on, so a
// backend killed at any point loses at most the batch it was reading;
// what the guest had not yet written stays in its ring for the next
// backend. The file grows to twice the history's size and is then
// rewritten (to a new file renamed over it, so a crash leaves either).
import { closeSync, fstatSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Chunks held in a history before they are joined into one. */
const HISTORY_CHUNKS = 256;

/** The last `limit` bytes of a console's output. */
export class ConsoleHistory {
  #chunks: Buffer[] = [];
  #size = 0;
  #trimmed = false;

  constructor(readonly limit: number) {}

  /** Bytes kept now. */
  get size(): number {
    return this.#size;
  }

  push(data: Buffer): void {
    if (this.limit === 0 || data.length === 0) return;
    this.#chunks.push(data);
    this.#size += data.length;
    while (this.#size > this.limit) {
      const first = this.#chunks[0];
      if (first === undefined) break;
      const over = this.#size - this.limit;
      if (first.length <= over) {
        this.#chunks.shift();
        this.#size -= first.length;
      } else {
        this.#chunks[0] = first.subarray(over);
        this.#size -= over;
      }
      this.#trimmed = true;
    }
    // Many small chunks (a guest writing byte by byte) are joined, so that
    // trimming stays cheap and the array stays small.
    if (this.#chunks.length > HISTORY_CHUNKS) this.#chunks = [Buffer.concat(this.#chunks, this.#size)];
  }

  /** Marks the history as cut from a longer output (one read back from a file). */
  markTrimmed(): void {
    this.#trimmed = true;
  }

  /** A copy of what is kept. Once trimmed, it starts at a character: UTF-8 continuation bytes cut from their start are dropped. */
  snapshot(): Buffer {
    const all = Buffer.concat(this.#chunks, this.#size);
    let at = 0;
    if (this.#trimmed) {
      while (at < 3 && at < all.length && ((all[at] ?? 0) & 0xc0) === 0x80) at++;
    }
    return all.subarray(at);
  }
}

/** The file name of a guest's console history: `console-<domid>-<name>.log`, the name made safe for a file name. */
export function historyFileName(domid: number, name: string): string {
  return `console-${String(domid)}-${encodeURIComponent(name)}.log`;
}

const HISTORY_FILE = /^console-(0|[1-9][0-9]*)-[^/]*\.log$/;

/** The domain id a history file belongs to, or null for a file that is no history. */
export function historyFileDomid(file: string): number | null {
  const m = HISTORY_FILE.exec(file);
  return m ? Number(m[1]) : null;
}

/**
 * Removes the history files in `dir` of domains `keep` says no (those that
 * died while no backend ran), and, for a domain it says yes to, every
 * file but `keep`'s named one. Returns the files removed.
 */
export function pruneHistoryFiles(dir: string, keep: (domid: number, file: string) => boolean): string[] {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const file of files) {
    const domid = historyFileDomid(file);
    if (domid === null || keep(domid, file)) continue;
    rmSync(join(dir, file), { force: true });
    removed.push(file);
  }
  return removed;
}

/** A history written through to a file. */
export class ConsoleHistoryFile {
  #fd: number | null;
  #written: number;
  readonly #onError: (err: unknown) => void;

  private constructor(
    readonly path: string,
    readonly history: ConsoleHistory,
    fd: number,
    written: number,
    onError: (err: unknown) => void,
  ) {
    this.#fd = fd;
    this.#written = written;
    this.#onError = onError;
  }

  /**
   * Opens (or creates) the file at `path` and reads what it holds into
   * `history`: the latest output of the backend that ran before. A write
   * that fails later (a full disk) is reported to `onError` and the file
   * is no longer written; the history in memory goes on.
   */
  static open(path: string, history: ConsoleHistory, onError: (err: unknown) => void): ConsoleHistoryFile {
    let kept: Buffer;
    try {
      kept = readFileSync(path);
    } catch {
      kept = Buffer.alloc(0);
    }
    if (kept.length > 0) {
      history.push(kept);
      if (kept.length > history.limit) history.markTrimmed();
    }
    const fd = openSync(path, 'a', 0o600);
    return new ConsoleHistoryFile(path, history, fd, fstatSync(fd).size, onError);
  }

  /** Keeps a batch of output: appended to the file, then to the history. */
  push(data: Buffer): void {
    if (data.length === 0) return;
    this.history.push(data);
    if (this.#fd === null) return;
    try {
      for (let at = 0; at < data.length; ) at += writeSync(this.#fd, data, at);
      this.#written += data.length;
      if (this.#written > 2 * this.history.limit) this.#rewrite();
    } catch (err) {
      this.close(false);
      this.#onError(err);
    }
  }

  /** Writes the file anew with just what the history keeps. */
  #rewrite(): void {
    const kept = this.history.snapshot();
    const next = `${this.path}.new`;
    writeFileSync(next, kept, { mode: 0o600 });
    renameSync(next, this.path);
    const old = this.#fd;
    this.#fd = null;
    if (old !== null) closeSync(old);
    this.#fd = openSync(this.path, 'a', 0o600);
    this.#written = kept.length;
  }

  /** Stops writing; with `remove`, the file goes too (its domain died). */
  close(remove: boolean): void {
    const fd = this.#fd;
    this.#fd = null;
    if (fd !== null) closeSync(fd);
    if (remove) rmSync(this.path, { force: true });
  }
}
