// One iteration of the main loop: act on the requests left pending, in a
// fixed order. The order is part of the behaviour: a debug stop comes before a
// suspend (so a guest can be suspended from the debugger), a shutdown before
// a reset (a VM that ends is not reset first), and a queued stop last.
//
// The loop never throws. Every move it makes is either one the table allows
// from the state it is in, or it is skipped as described at that move.
import { exitVm, stopVm } from './machine.js';
import type { Draft } from './machine.js';
import { canTransition } from './run-state.js';
import { isGuestCause } from './types.js';
import type { KillInfo, ShutdownCause } from './types.js';

/** The exit status of a VM that ended because its guest panicked with `exit-failure`. */
export const EXIT_FAILURE = 1;

/** The exit status of a VM that ended any other way. */
export const EXIT_SUCCESS = 0;

/** Runs one main-loop iteration. */
export function mainLoopStep(draft: Draft): void {
  if (draft.state.pending.debug) {
    draft.setPending({ debug: false });
    stopVm(draft, 'debug');
  }
  if (draft.state.pending.suspend) {
    draft.setPending({ suspend: false });
    suspend(draft);
  }
  // A shutdown that ends the VM ends this iteration too: nothing after it
  // may act on a VM that is gone.
  if (shutdown(draft)) return;
  reset(draft);
  wakeup(draft);
  if (draft.state.pending.powerdown) {
    draft.setPending({ powerdown: false });
    draft.emit({ type: 'POWERDOWN' });
    draft.notify({ list: 'powerdown' });
  }
  const stopInto = draft.state.pending.vmstop;
  if (stopInto !== null) {
    draft.setPending({ vmstop: null });
    stopVm(draft, stopInto);
  }
}

/**
 * Suspends the guest. Only a running guest (or one held in the debugger, or
 * arriving by migration) can be suspended; a VM that was stopped some other
 * way between the request and this step drops the request and says so.
 */
function suspend(draft: Draft): void {
  const from = draft.state.runState;
  if (from !== 'suspended' && !canTransition(from, 'suspended')) {
    draft.effect({ kind: 'report', text: `suspend request dropped: the VM cannot be suspended while ${from}` });
    return;
  }
  draft.notify({ list: 'suspend' });
  draft.setRunState('suspended');
  draft.emit({ type: 'SUSPEND' });
}

/** Acts on a pending shutdown; returns whether the VM has ended. */
function shutdown(draft: Draft): boolean {
  const cause = draft.state.pending.shutdown;
  if (cause === 'none') return false;
  draft.setPending({ shutdown: 'none' });
  const kill = draft.state.pending.kill;
  if (kill !== null) {
    // Signal 0 is no signal: there is nothing to report.
    if (kill.signal !== 0) draft.effect({ kind: 'report', text: killReport(kill) });
    draft.setPending({ kill: null });
  }
  draft.emit({ type: 'SHUTDOWN', guest: isGuestCause(cause), reason: cause });
  draft.notify({ list: 'shutdown', cause });
  if (draft.state.config.shutdownAction === 'pause') {
    stopVm(draft, 'shutdown');
    return false;
  }
  exitVm(draft, exitStatusFor(cause, draft));
  return true;
}

function exitStatusFor(cause: ShutdownCause, draft: Draft): number {
  return cause === 'guest-panic' && draft.state.config.panicAction === 'exit-failure' ? EXIT_FAILURE : EXIT_SUCCESS;
}

/**
 * The operator's line about the signal that ended the VM. Signal from pid 0
 * comes from the kernel on the process's own terminal (Ctrl-C): naming pid 0
 * would only puzzle the reader.
 */
export function killReport(kill: KillInfo): string {
  if (kill.pid === 0) return `terminating on signal ${String(kill.signal)}`;
  return `terminating on signal ${String(kill.signal)} from pid ${String(kill.pid)} (${kill.processName ?? ''})`;
}

/** Resets whose cause is internal: devices reset, management is not told. */
const SILENT_RESETS: readonly ShutdownCause[] = ['none', 'subsystem-reset', 'snapshot-load'];

/**
 * Resets the machine. A VM that is not running, migrating in or finishing a
 * migration goes back to `prelaunch`. From `save-vm` it cannot, and resetting
 * devices under a snapshot being written would corrupt it, so the reset waits
 * for the snapshot to finish.
 */
function reset(draft: Draft): void {
  const cause = draft.state.pending.reset;
  if (cause === 'none') return;
  const from = draft.state.runState;
  const keepsState = from === 'running' || from === 'inmigrate' || from === 'finish-migrate';
  if (!keepsState && from !== 'prelaunch' && !canTransition(from, 'prelaunch')) return;
  draft.setPending({ reset: 'none' });
  draft.effect({ kind: 'system-reset', cause });
  if (!SILENT_RESETS.includes(cause)) draft.emit({ type: 'RESET', guest: isGuestCause(cause), reason: cause });
  if (!keepsState) draft.setRunState('prelaunch');
}

/** Completes a wakeup: the guest already runs, the machine and notifiers are told. */
function wakeup(draft: Draft): void {
  const reason = draft.state.pending.wakeup;
  if (reason === 'none') return;
  draft.effect({ kind: 'system-wakeup', reason });
  draft.notify({ list: 'wakeup', reason });
  draft.setPending({ wakeup: 'none' });
  draft.emit({ type: 'WAKEUP' });
}
