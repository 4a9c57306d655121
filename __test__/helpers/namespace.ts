// A small tmpfs in a private mount namespace, for running a program against
// a full disk without touching the machine's mounts, as root or as a normal
// user (the namespace maps the caller to root inside a user namespace).
//
// One long-lived process holds the namespace (`sleep infinity`), so the
// tmpfs outlives each program run in it: a daemon can be stopped and
// started again on what it left there.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ExecutionContext } from 'ava';

import { startProgram } from './process.js';
import type { Background } from './process.js';

const cliEntry = fileURLToPath(new URL('../../ts/cli/main.ts', import.meta.url));

/** Arguments that run the xenrx CLI from its sources with node. */
export function xenrxArgs(args: readonly string[]): string[] {
  return ['--import', 'tsx', cliEntry, ...args];
}

/**
 * Resolves `true` once the output matches `pattern`, or `false` once the
 * process has exited without that. The bound only keeps a broken test from
 * hanging: then it rejects.
 */
export function readyOrExited(bg: Background, pattern: RegExp, ms = 60_000): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (ready: boolean | Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      bg.child.stdout.off('data', check);
      bg.child.stderr.off('data', check);
      if (ready instanceof Error) reject(ready);
      else resolve(ready);
    };
    // Registered after the Background's own listeners: its output is up to date here.
    const check = (): void => {
      if (pattern.test(bg.output())) finish(true);
    };
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${String(pattern)}; output:\n${bg.output()}`)), ms);
    bg.child.stdout.on('data', check);
    bg.child.stderr.on('data', check);
    void bg.exited().then(() => finish(pattern.test(bg.output())));
    check();
  });
}

/** A tmpfs mounted at `dir` in a private mount namespace. */
export interface TmpfsNamespace {
  /** The mount point: an empty directory outside the namespace. */
  readonly dir: string;
  /** The process holding the namespace. */
  readonly pid: number;
  /** `path` (absolute, under `dir`) as seen from outside, through the holder's root. */
  inside(path: string): string;
  /** Starts `command` inside the namespace; it runs as root there, in this process's working directory. */
  start(command: string, args: readonly string[]): Background;
}

/**
 * Mounts a `sizeKiB` tmpfs in a new private mount namespace, runs `setup`
 * (a shell command, with the mount point as `$0`) in it, and keeps the
 * namespace until the test ends.
 */
export async function tmpfsNamespace(t: ExecutionContext, sizeKiB: number, setup = 'true'): Promise<TmpfsNamespace> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-tmpfs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = `mount -t tmpfs -o size=${String(sizeKiB)}k tmpfs "$0" && ${setup} && echo namespace-ready && exec sleep infinity`;
  const holder = startProgram('unshare', ['--mount', '--map-root-user', '--propagation', 'private', 'sh', '-c', script, dir]);
  t.teardown(() => {
    if (holder.child.exitCode === null && holder.child.signalCode === null) holder.child.kill('SIGKILL');
  });
  if (!(await readyOrExited(holder, /namespace-ready/))) {
    throw new Error(`cannot make a tmpfs in a private mount namespace (unshare exited ${String(holder.child.exitCode)}):\n${holder.output()}`);
  }
  const pid = holder.child.pid;
  if (pid === undefined) throw new Error('the namespace holder has no pid');
  return {
    dir,
    pid,
    inside: (path) => `/proc/${String(pid)}/root${path}`,
    start: (command, args) =>
      // nsenter execs the command (no new pid namespace): its pid is the command's.
      startProgram('nsenter', ['--target', String(pid), '--mount', '--user', '--preserve-credentials', `--wd=${process.cwd()}`, command, ...args]),
  };
}
