// Logging with the reference's levels: 0 errors (stderr and the log),
// 1 informative, 2 noisy, 3 flood. Global and per-device levels; the sink is
// pluggable.
import type { LogLevel } from './types.js';

/** One log line. */
export interface LogEntry {
  readonly level: LogLevel;
  /** The device's name, or null for the registry itself. */
  readonly device: string | null;
  readonly message: string;
}

/** Where log lines go. */
export type Logger = (entry: LogEntry) => void;

/** The default sink: errors to stderr, the rest nowhere. */
export const stderrLogger: Logger = (e) => {
  if (e.level === 0) process.stderr.write(`xen be: ${e.device ?? 'core'}: ${e.message}\n`);
};

/** Decides which lines pass, by global and per-device levels. */
export class LogLevels {
  #global: LogLevel;
  readonly #perDevice = new Map<string, LogLevel>();

  constructor(global: LogLevel = 0) {
    this.#global = global;
  }

  /** Sets the level of one device, or of everything when `device` is omitted. */
  set(level: LogLevel, device?: string): void {
    if (device === undefined) this.#global = level;
    else this.#perDevice.set(device, level);
  }

  /** Whether a line of `level` about `device` is logged. */
  passes(level: LogLevel, device: string | null): boolean {
    const limit = device === null ? this.#global : (this.#perDevice.get(device) ?? this.#global);
    return level <= limit;
  }

  /** Forgets a device's own level (when it is removed). */
  forget(device: string): void {
    this.#perDevice.delete(device);
  }
}
