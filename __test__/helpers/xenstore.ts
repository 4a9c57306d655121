// Embedded daemons in temporary directories, one per test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';
import type { Observable } from 'rxjs';

import { XenStore, Xenstored } from '../../ts/index.js';

export interface DaemonFixture {
  readonly dir: string;
  readonly daemon: Xenstored;
  readonly dom0: XenStore;
}

/** A temporary directory removed when the test ends. */
export function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts a quiet daemon and a dom0 client over its socket; both stop with the test. */
export async function startDaemon(t: ExecutionContext, stateFile = false): Promise<DaemonFixture> {
  const dir = tempDir(t);
  const daemon = Xenstored.start({
    socket: join(dir, 'xenstored.sock'),
    stateFile: stateFile ? join(dir, 'state') : undefined,
    log: false,
  });
  const dom0 = await XenStore.connect({ path: daemon.socket });
  t.teardown(() => {
    dom0.close();
    daemon.stop();
  });
  return { dir, daemon, dom0 };
}

/** What a watch collected, and when it started. */
export interface Collected<T> {
  /** Resolves with the first value: for `watch$`, once the watch is set. */
  readonly started: Promise<void>;
  /** Resolves once `count` values arrived. */
  readonly values: Promise<T[]>;
}

/**
 * Collects what an Observable emits until `count` values arrived. The
 * bound only keeps a broken test from hanging.
 */
export function take<T>(source: Observable<T>, count: number, ms = 60_000): Collected<T> {
  let started!: () => void;
  const first = new Promise<void>((resolve) => (started = resolve));
  const values = new Promise<T[]>((resolve, reject) => {
    const got: T[] = [];
    const timer = setTimeout(() => {
      sub.unsubscribe();
      reject(new Error(`timed out with ${String(got.length)}/${String(count)}: ${JSON.stringify(got)}`));
    }, ms);
    const sub = source.subscribe({
      next: (v) => {
        got.push(v);
        if (got.length === 1) started();
        if (got.length === count) {
          clearTimeout(timer);
          sub.unsubscribe();
          resolve(got);
        }
      },
      error: (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    });
  });
  return { started: first, values };
}
