// The VM lifecycle as a pure reducer: (state, action) -> { state, events,
// effects }. No I/O, clock or randomness: the same inputs give the same
// outputs, which is what lets tests replay any sequence of requests.
import { applyRegistry } from './handlers.js';
import { Draft, isStopTarget, startVm, stopVm, unreachable } from './machine.js';
import { mainLoopStep } from './main-loop.js';
import { applyRequest } from './requests.js';
import type { RunState } from './run-state.js';
import { DEFAULT_CONFIG } from './types.js';
import type {
  LifecycleAction,
  LifecycleCommand,
  LifecycleConfig,
  LifecycleState,
  Reduction,
  RegistryAction,
} from './types.js';

/** Where a new lifecycle starts. */
export interface InitialLifecycle {
  /** The first run state; `prelaunch` unless the VM arrives some other way. */
  readonly runState?: RunState;
  readonly config?: Partial<LifecycleConfig>;
}

/** Copies only the settings that are present, so `undefined` never overrides one. */
function mergeConfig(base: LifecycleConfig, changes: Partial<LifecycleConfig>): LifecycleConfig {
  const present = Object.entries(changes).filter(([, value]) => value !== undefined);
  return { ...base, ...(Object.fromEntries(present) as Partial<LifecycleConfig>) };
}

/** A lifecycle with nothing pending and nothing registered. */
export function initialLifecycleState(init: InitialLifecycle = {}): LifecycleState {
  return {
    runState: init.runState ?? 'prelaunch',
    config: mergeConfig(DEFAULT_CONFIG, init.config ?? {}),
    // Every reason may wake the guest except `none`, which is no reason at all.
    wakeupEnabled: { none: false, rtc: true, pmtimer: true, other: true },
    pending: {
      debug: false,
      suspend: false,
      shutdown: 'none',
      reset: 'none',
      wakeup: 'none',
      powerdown: false,
      vmstop: null,
      kill: null,
    },
    handlers: [],
    notifiers: { exit: [], powerdown: [], suspend: [], wakeup: [], shutdown: [] },
    exitStatus: null,
  };
}

/** Whether `action` only registers or removes a handler or notifier. */
export function isRegistryAction(action: LifecycleAction): action is RegistryAction {
  return (
    action.type === 'add-state-handler' ||
    action.type === 'remove-state-handler' ||
    action.type === 'add-notifier' ||
    action.type === 'remove-notifier'
  );
}

/**
 * Applies one action. Throws InvalidTransitionError only for `set-state` and
 * `start` aimed at a state the table forbids; requests and main-loop steps
 * never throw, they refuse (a `request-error` effect) or wait instead.
 */
export function reduce(state: LifecycleState, action: LifecycleAction): Reduction {
  const draft = new Draft(state);
  if (isRegistryAction(action)) {
    // Registrations stay possible after the end, so that owners can still
    // remove what they added.
    applyRegistry(draft, action);
    return draft.done();
  }
  if (state.exitStatus !== null) {
    draft.reject(action.type, `the VM has ended with status ${String(state.exitStatus)}`);
    return draft.done();
  }
  switch (action.type) {
    case 'shutdown':
    case 'reset':
    case 'suspend':
    case 'wakeup':
    case 'powerdown':
    case 'debug':
    case 'vmstop':
    case 'guest-panicked':
    case 'guest-crashloaded':
    case 'killed':
      applyRequest(draft, action);
      break;
    case 'step':
    case 'start':
    case 'stop':
    case 'set-state':
    case 'configure':
    case 'wakeup-enable':
      applyCommand(draft, action);
      break;
    default:
      unreachable(action);
  }
  return draft.done();
}

function applyCommand(draft: Draft, command: LifecycleCommand): void {
  switch (command.type) {
    case 'step':
      mainLoopStep(draft);
      return;
    case 'start':
      startVm(draft);
      return;
    case 'stop': {
      const target = command.state ?? 'paused';
      if (!isStopTarget(target)) {
        draft.reject(command.type, `a running VM cannot be stopped into '${String(target)}'`);
        return;
      }
      stopVm(draft, target);
      return;
    }
    case 'set-state':
      draft.setRunState(command.state);
      return;
    case 'configure':
      draft.patch({ config: mergeConfig(draft.state.config, command.config) });
      return;
    case 'wakeup-enable':
      if (draft.state.wakeupEnabled[command.reason] === command.enabled) return;
      draft.patch({ wakeupEnabled: { ...draft.state.wakeupEnabled, [command.reason]: command.enabled } });
      return;
    default:
      unreachable(command);
  }
}
