// Temporary directories that must not outlive the process: removed when it
// exits, and when a signal ends it. A simulated host's directory holds its
// XenStore sockets; a script stopped with Ctrl-C before `host.stop()` would
// otherwise leave one behind in /tmp at every run.
//
// Only a signal that would end the process is handled, and only while a
// directory is registered: if the program listens for the signal itself,
// it decides (its own handler runs, and `stop()` removes the directory);
// otherwise the directories go and the signal is raised again, so the
// process still ends as that signal ends it.
import { rmSync } from 'node:fs';

const dirs = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function removeAll(): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  // Ours is the only listener: nobody else handles this signal.
  if (process.listenerCount(signal) > 1) return;
  removeAll();
  unhook();
  process.kill(process.pid, signal);
}

function hook(): void {
  process.on('exit', removeAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function unhook(): void {
  process.off('exit', removeAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Removes `dir` when the process exits or a signal ends it, until `forget`. */
export function removeAtExit(dir: string): void {
  if (dirs.size === 0) hook();
  dirs.add(dir);
}

/** `dir` was removed (or kept) by its owner: no more to do at exit. */
export function forget(dir: string): void {
  if (!dirs.delete(dir)) return;
  if (dirs.size === 0) unhook();
}
