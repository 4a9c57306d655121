// The building blocks every lifecycle action is made of: a draft that
// collects one reduction (new state, events, effects) and the primitive VM
// operations shared by requests, commands and the main loop.
import { canTransition, runStateAfter } from './run-state.js';
import type { RunState } from './run-state.js';
import type {
  LifecycleAction,
  LifecycleEffect,
  LifecycleEvent,
  LifecycleState,
  NotifierCall,
  PendingRequests,
  Reduction,
} from './types.js';

/**
 * One reduction being built. It is mutable only while the reducer runs and
 * never escapes it, so `reduce` stays pure: if anything throws, the draft is
 * dropped and the caller keeps the state it had.
 */
export class Draft {
  state: LifecycleState;
  readonly events: LifecycleEvent[] = [];
  readonly effects: LifecycleEffect[] = [];

  constructor(state: LifecycleState) {
    this.state = state;
  }

  patch(changes: Partial<LifecycleState>): void {
    this.state = { ...this.state, ...changes };
  }

  setPending(changes: Partial<PendingRequests>): void {
    this.patch({ pending: { ...this.state.pending, ...changes } });
  }

  /** Sets the run state: a no-op when unchanged, InvalidTransitionError when refused. */
  setRunState(to: RunState): void {
    const next = runStateAfter(this.state.runState, to);
    if (next !== this.state.runState) this.patch({ runState: next });
  }

  emit(event: LifecycleEvent): void {
    this.events.push(event);
  }

  effect(effect: LifecycleEffect): void {
    this.effects.push(effect);
  }

  /**
   * Calls the notifiers of a list, newest first. The effect is there even
   * when the list is empty: it also tells effects$ that the moment came.
   */
  notify(call: NotifierCall): void {
    this.effect({ kind: 'notifiers', order: this.state.notifiers[call.list], ...call });
  }

  /**
   * Calls the state-change handlers: lowest priority first when the VM starts
   * running, highest first when it stops, so that what starts last stops first.
   */
  notifyStateHandlers(running: boolean, state: RunState): void {
    const ascending = this.state.handlers.map((h) => h.id);
    this.effect({ kind: 'state-handlers', running, state, order: running ? ascending : ascending.reverse() });
  }

  /** Refuses the action, leaving the state as it is. */
  reject(action: LifecycleAction['type'], message: string): void {
    this.effect({ kind: 'request-error', action, message });
  }

  done(): Reduction {
    return { state: this.state, events: this.events, effects: this.effects };
  }
}

/** The states a running VM may be stopped into. */
export function isStopTarget(state: RunState): boolean {
  return canTransition('running', state);
}

/**
 * Stops the VM into `target` if it is running; otherwise nothing changes,
 * since a VM that is not running has nothing to stop. `announce` is false only
 * on the way out, where QEMU stops the VM without a STOP event.
 */
export function stopVm(draft: Draft, target: RunState, announce = true): void {
  if (draft.state.runState !== 'running') return;
  draft.setRunState(target);
  draft.notifyStateHandlers(false, target);
  if (announce) draft.emit({ type: 'STOP' });
}

/**
 * Starts or continues the VM. A stop request still waiting for the main loop
 * is dropped; if the VM was running anyway, STOP and RESUME are both sent so
 * that an event promising a STOP (an I/O error, say) still gets one.
 */
export function startVm(draft: Draft): void {
  const stopWasPending = draft.state.pending.vmstop !== null;
  if (stopWasPending) draft.setPending({ vmstop: null });
  if (draft.state.runState === 'running') {
    if (stopWasPending) {
      draft.emit({ type: 'STOP' });
      draft.emit({ type: 'RESUME' });
    }
    return;
  }
  draft.emit({ type: 'RESUME' });
  draft.setRunState('running');
  draft.notifyStateHandlers(true, 'running');
}

/**
 * Ends the VM with `status`: a running VM is stopped into `shutdown` (its
 * handlers hear of it, management already had SHUTDOWN), then the exit
 * notifiers run and the host is told to exit.
 */
export function exitVm(draft: Draft, status: number): void {
  stopVm(draft, 'shutdown', false);
  draft.notify({ list: 'exit' });
  draft.patch({ exitStatus: status });
  draft.effect({ kind: 'exit', status });
}

/** Reports a value no branch handled; TypeScript proves it unreachable. */
export function unreachable(value: never): never {
  // Only reachable from JavaScript callers that bypass the types.
  const tagged = value as { type?: unknown; kind?: unknown; list?: unknown };
  throw new TypeError(`unhandled lifecycle value: ${String(tagged.type ?? tagged.kind ?? tagged.list)}`);
}
