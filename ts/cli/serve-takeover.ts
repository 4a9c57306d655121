// A planned takeover of `xenrx serve` (an upgrade): the new process loads
// everything first, then asks the running one to hand its disks over
// (SIGUSR2: each queue stops without a word to its frontend and keeps its
// journal), waits for it to exit, and takes the disks over from the
// journals as after a crash. The guests only see the few milliseconds in
// between. The running process is found by the pid file in the state
// directory, written once it is ready to hand over.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** The signal that asks a running `xenrx serve` to hand over and exit. */
export const HAND_OVER_SIGNAL = 'SIGUSR2';

function pidFile(stateDir: string): string {
  return join(stateDir, 'serve.pid');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The `xenrx serve` serving from `stateDir` now, if one is. */
export function runningServe(stateDir: string): number | null {
  let text: string;
  try {
    text = readFileSync(pidFile(stateDir), 'utf8');
  } catch {
    return null;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 1 && pid !== process.pid && alive(pid) ? pid : null;
}

/**
 * Asks the running `xenrx serve` to hand over, and resolves once it has
 * exited (after `patienceMs`, default 60 s, it is killed: its journals
 * serve as after a crash). Returns its pid, or null if none ran.
 */
export async function takeOverFrom(stateDir: string, log: (line: string) => void, patienceMs = 60_000): Promise<number | null> {
  const pid = runningServe(stateDir);
  if (pid === null) {
    log('--takeover: no xenrx serve is running here; starting afresh');
    return null;
  }
  process.kill(pid, HAND_OVER_SIGNAL);
  for (let waited = 0; alive(pid); waited += 2) {
    if (waited >= patienceMs) {
      log(`--takeover: process ${String(pid)} did not hand over within ${String(patienceMs)} ms: killing it`);
      process.kill(pid, 'SIGKILL');
    }
    await delay(2);
  }
  log(`--takeover: process ${String(pid)} handed over`);
  return pid;
}

/** Says this process is the one serving from `stateDir` (call once ready to hand over). */
export function claimStateDir(stateDir: string): void {
  writeFileSync(pidFile(stateDir), `${String(process.pid)}\n`);
}

/** Gives `stateDir` up at a clean stop, unless another process claimed it since. */
export function releaseStateDir(stateDir: string): void {
  try {
    if (Number(readFileSync(pidFile(stateDir), 'utf8').trim()) === process.pid) rmSync(pidFile(stateDir), { force: true });
  } catch {
    // Nothing claimed, or already gone.
  }
}
