// Requests: how the guest, devices and management ask the VM to change. Most
// only leave a note for the next main-loop step (as a device model would,
// from a vCPU that must not block); wakeups and panics act at once because
// their callers need the answer, or the VM stopped, right away.
import { isStopTarget, stopVm, unreachable } from './machine.js';
import type { Draft } from './machine.js';
import { SHUTDOWN_CAUSES, WAKEUP_REASONS } from './types.js';
import type { GuestPanicInformation, LifecycleRequest, RequestCause, WakeupReason } from './types.js';

function isRequestCause(cause: unknown): cause is RequestCause {
  return cause !== 'none' && (SHUTDOWN_CAUSES as readonly unknown[]).includes(cause);
}

/** Applies one request. Requests never throw: a bad one is refused. */
export function applyRequest(draft: Draft, request: LifecycleRequest): void {
  switch (request.type) {
    case 'shutdown':
      if (!isRequestCause(request.cause)) return refuseCause(draft, request.type, request.cause);
      draft.setPending({ shutdown: request.cause });
      return;
    case 'reset':
      if (!isRequestCause(request.cause)) return refuseCause(draft, request.type, request.cause);
      requestReset(draft, request.cause);
      return;
    case 'suspend':
      // Asking an already suspended guest to suspend is not an error: the
      // guest may simply repeat itself.
      if (draft.state.runState === 'suspended') return;
      draft.setPending({ suspend: true });
      return;
    case 'wakeup':
      requestWakeup(draft, request.reason);
      return;
    case 'powerdown':
      draft.setPending({ powerdown: true });
      return;
    case 'debug':
      draft.setPending({ debug: true });
      return;
    case 'vmstop':
      // Checked now rather than when the loop acts: the loop must never meet
      // a stop it cannot perform.
      if (!isStopTarget(request.state)) {
        draft.reject(request.type, `a running VM cannot be stopped into '${String(request.state)}'`);
        return;
      }
      draft.setPending({ vmstop: request.state });
      return;
    case 'guest-panicked':
      guestPanicked(draft, request.info);
      return;
    case 'guest-crashloaded':
      draft.effect({ kind: 'guest-log', text: 'Guest crash loaded' });
      draft.emit({ type: 'GUEST_CRASHLOADED', action: 'run', ...(request.info ? { info: request.info } : {}) });
      return;
    case 'killed': {
      const { signal, pid, processName } = request;
      draft.setPending({
        kill: { signal, pid, ...(processName !== undefined ? { processName } : {}) },
        shutdown: 'host-signal',
      });
      // A signal means the host wants the process gone: pausing instead, as
      // a `pause` shutdown action would, would leave it running.
      draft.patch({ config: { ...draft.state.config, shutdownAction: 'poweroff' } });
      return;
    }
    default:
      unreachable(request);
  }
}

function refuseCause(draft: Draft, type: 'shutdown' | 'reset', cause: unknown): void {
  draft.reject(type, `a ${type} request needs a cause other than '${String(cause)}'`);
}

/**
 * A reset becomes a shutdown when the configuration says reboots shut down
 * (except for a reset one subsystem asks for itself), or when the vCPUs cannot
 * be reset at all.
 */
function requestReset(draft: Draft, cause: RequestCause): void {
  const { rebootAction, cpusResettable } = draft.state.config;
  if (rebootAction === 'shutdown' && cause !== 'subsystem-reset') {
    draft.setPending({ shutdown: cause });
  } else if (!cpusResettable) {
    draft.effect({ kind: 'report', text: 'cpus are not resettable, terminating' });
    draft.setPending({ shutdown: cause });
  } else {
    draft.setPending({ reset: cause });
  }
}

/**
 * Only a suspended guest can be woken. A reason that is not enabled is
 * ignored without error, as with a wakeup source the guest did not arm.
 * The guest runs again at once; the loop then tells the machine and the
 * wakeup notifiers.
 */
function requestWakeup(draft: Draft, reason: WakeupReason): void {
  if (draft.state.runState !== 'suspended') {
    draft.reject('wakeup', 'Unable to wake up: guest is not in suspended state');
    return;
  }
  if (!(WAKEUP_REASONS as readonly unknown[]).includes(reason) || !draft.state.wakeupEnabled[reason]) return;
  draft.setRunState('running');
  draft.setPending({ wakeup: reason });
}

/**
 * A guest panic: announced with the action taken, then the VM is paused or
 * asked to power off, or left running. A `shutdown` panic action with a
 * `pause` shutdown action pauses: powering off would contradict the latter.
 */
function guestPanicked(draft: Draft, info: GuestPanicInformation | undefined): void {
  draft.effect({ kind: 'guest-log', text: `Guest crashed${info ? describePanic(info) : ''}` });
  const { panicAction, shutdownAction } = draft.state.config;
  const withInfo = info ? { info } : {};
  if (panicAction === 'pause' || (panicAction === 'shutdown' && shutdownAction === 'pause')) {
    draft.emit({ type: 'GUEST_PANICKED', action: 'pause', ...withInfo });
    stopVm(draft, 'guest-panicked');
  } else if (panicAction === 'shutdown' || panicAction === 'exit-failure') {
    draft.emit({ type: 'GUEST_PANICKED', action: 'poweroff', ...withInfo });
    stopVm(draft, 'guest-panicked');
    draft.setPending({ shutdown: 'guest-panic' });
  } else {
    draft.emit({ type: 'GUEST_PANICKED', action: 'run', ...withInfo });
  }
}

/** C's `%#x`: a `0x` prefix, except for zero. */
function alternateHex(value: bigint): string {
  const word = BigInt.asUintN(64, value);
  return word === 0n ? '0' : `0x${word.toString(16)}`;
}

/** A 64-bit register as 16 hex digits. */
function register(value: bigint): string {
  return `0x${BigInt.asUintN(64, value).toString(16).padStart(16, '0')}`;
}

/** The crash details a guest handed over, as QEMU logs them. */
export function describePanic(info: GuestPanicInformation): string {
  switch (info.type) {
    case 'hyper-v': {
      const args = [info.arg1, info.arg2, info.arg3, info.arg4, info.arg5].map(alternateHex);
      return `\nHV crash parameters: (${args.join(' ')})`;
    }
    case 's390':
      return ` on cpu ${String(info.core)}: ${info.reason}\nPSW: ${register(info.pswMask)} ${register(info.pswAddr)}`;
    default:
      return unreachable(info);
  }
}
