// The lifecycle reducer on RxJS: actions in; states, events and effects out.
// The reducer says which handlers and notifiers to call and in which order;
// this module owns the callbacks and calls them.
import {
  ReplaySubject,
  Subject,
  concat,
  concatMap,
  connectable,
  defer,
  distinctUntilChanged,
  finalize,
  from,
  map,
  merge,
  observeOn,
  queueScheduler,
  scan,
  shareReplay,
  startWith,
  takeWhile,
  tap,
} from 'rxjs';
import type { Observable, Subscription } from 'rxjs';

import { unreachable } from './machine.js';
import { initialLifecycleState, isRegistryAction, reduce } from './reducer.js';
import type { InitialLifecycle } from './reducer.js';
import { InvalidTransitionError } from './run-state.js';
import type { RunState } from './run-state.js';
import type {
  LifecycleAction,
  LifecycleEffect,
  LifecycleEvent,
  LifecycleState,
  NotifierCall,
  NotifierCallOf,
  NotifierList,
  Reduction,
  RegistryAction,
} from './types.js';

/** Called when the VM starts running (`running` true) or stops into `state`. */
export type StateHandler = (running: boolean, state: RunState) => void;

/** Called with what happened, for one list of notifiers. */
export type Notifier<L extends NotifierList> = (call: NotifierCallOf<L>) => void;

/** A registration; removing it twice is harmless. `using` removes it too. */
export interface LifecycleHandle extends Disposable {
  readonly id: string;
  remove(): void;
}

/** An action the lifecycle refused (a wakeup of a guest that is not suspended, say). */
export class LifecycleRequestError extends Error {
  override readonly name = 'LifecycleRequestError';

  constructor(
    /** The type of the refused action. */
    readonly action: LifecycleAction['type'],
    message: string,
  ) {
    super(message);
  }
}

/** How a lifecycle starts and runs. */
export interface LifecycleOptions extends InitialLifecycle {
  /**
   * Run a main-loop step after every request and command, as the main loop
   * wakes whenever something is asked of it (default true). Set false to
   * send `step` actions yourself, e.g. to have one step see several requests.
   */
  readonly autoStep?: boolean;
}

/**
 * A running lifecycle. Nothing flows until `connect()`.
 *
 * It models a VM's run state from what it is told (QEMU's run-state
 * machine); it observes a VM and does not control one: in dom0 the
 * toolstack and the hypervisor do, and `DomainWatcher` feeds what they did
 * in as actions. Each action is reduced whole, then, in this order: the
 * state handlers and notifiers it names are called; `events$` and
 * `effects$` emit; `state$`, `runState$` and, when the VM has ended,
 * `exit$` emit. So a SHUTDOWN event arrives before the run state
 * `shutdown` and before the exit status. An action a callback sends waits
 * until all of that is done.
 */
export interface Lifecycle {
  /** The current state, replayed to late subscribers. */
  readonly state$: Observable<LifecycleState>;
  /** The run state, on change only. */
  readonly runState$: Observable<RunState>;
  /** QMP-like events, as they happen. */
  readonly events$: Observable<LifecycleEvent>;
  /** Every effect, after the handlers and notifiers it names were called. */
  readonly effects$: Observable<LifecycleEffect>;
  /** Refused actions, invalid transitions and exceptions thrown by callbacks. */
  readonly errors$: Observable<Error>;
  /** The exit status, once, when the VM ends; state$ and events$ then complete. */
  readonly exit$: Observable<number>;
  /** Registers a state-change handler; lower priorities run first on start, last on stop. */
  addStateHandler(handler: StateHandler, priority?: number): LifecycleHandle;
  /** Registers a notifier; the newest of a list is called first. */
  addNotifier<L extends NotifierList>(list: L, notifier: Notifier<L>): LifecycleHandle;
  /** Starts consuming actions; later calls return the same subscription. Unsubscribe to stop for good. */
  connect(): Subscription;
}

interface Step extends Reduction {
  readonly failure: InvalidTransitionError | null;
}

const STEP: LifecycleAction = { type: 'step' };

/** Whether the main loop runs after `action`: registrations ask nothing of it. */
function wakesMainLoop(action: LifecycleAction): boolean {
  return action.type !== 'step' && !isRegistryAction(action);
}

/**
 * Reduces, turning a refused transition into a failed step that keeps the
 * state: one bad `set-state` must not end the stream every device watches.
 * Any other exception is a bug and propagates.
 */
function reduceStep(state: LifecycleState, action: LifecycleAction): Step {
  try {
    return { ...reduce(state, action), failure: null };
  } catch (err) {
    if (err instanceof InvalidTransitionError) return { state, events: [], effects: [], failure: err };
    throw err;
  }
}

function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error('a lifecycle callback threw a value that is not an Error', { cause: err });
}

/** The callbacks behind the reducer's handler and notifier ids. */
class CallbackRegistry {
  readonly #stateHandlers = new Map<string, StateHandler>();
  readonly #notifiers = new Map<string, (call: NotifierCall) => void>();
  // The registrations in force, so a lifecycle connected later learns of them.
  readonly #registered = new Map<string, RegistryAction>();
  readonly #changes = new Subject<RegistryAction>();
  #sequence = 0;

  /** The registrations in force, then each later change. */
  readonly actions$: Observable<RegistryAction> = defer(() =>
    concat(from([...this.#registered.values()]), this.#changes),
  );

  addStateHandler(handler: StateHandler, priority: number): LifecycleHandle {
    if (!Number.isFinite(priority)) {
      throw new RangeError(`state handler priority must be finite, got ${String(priority)}`);
    }
    const id = `state-handler-${String(++this.#sequence)}`;
    this.#stateHandlers.set(id, handler);
    return this.#register(
      { type: 'add-state-handler', id, priority },
      { type: 'remove-state-handler', id },
      () => this.#stateHandlers.delete(id),
    );
  }

  addNotifier<L extends NotifierList>(list: L, notifier: Notifier<L>): LifecycleHandle {
    const id = `${list}-notifier-${String(++this.#sequence)}`;
    // The reducer only names this id in effects for `list`, so the call
    // always has the shape this notifier expects.
    this.#notifiers.set(id, (call) => notifier(call as NotifierCallOf<L>));
    return this.#register({ type: 'add-notifier', list, id }, { type: 'remove-notifier', list, id }, () =>
      this.#notifiers.delete(id),
    );
  }

  #register(add: RegistryAction, removal: RegistryAction, forget: () => void): LifecycleHandle {
    this.#registered.set(add.id, add);
    this.#changes.next(add);
    let active = true;
    const remove = (): void => {
      if (!active) return;
      active = false;
      forget();
      this.#registered.delete(add.id);
      this.#changes.next(removal);
    };
    return { id: add.id, remove, [Symbol.dispose]: remove };
  }

  /**
   * Performs the effects in order. Callbacks are looked up when called, so
   * one removed by an earlier callback of the same effect is skipped. A
   * callback that throws is reported and the others still run: one broken
   * device must not keep the rest from hearing that the VM stopped.
   */
  perform(effects: readonly LifecycleEffect[], report: (err: Error) => void): void {
    const call = (fn: (() => void) | undefined): void => {
      try {
        fn?.();
      } catch (err) {
        report(asError(err));
      }
    };
    for (const effect of effects) {
      switch (effect.kind) {
        case 'state-handlers':
          for (const id of effect.order) {
            const handler = this.#stateHandlers.get(id);
            call(handler && (() => handler(effect.running, effect.state)));
          }
          break;
        case 'notifiers': {
          const data = notifierCall(effect);
          for (const id of effect.order) {
            const notifier = this.#notifiers.get(id);
            call(notifier && (() => notifier(data)));
          }
          break;
        }
        case 'request-error':
          report(new LifecycleRequestError(effect.action, effect.message));
          break;
        case 'system-reset':
        case 'system-wakeup':
        case 'report':
        case 'guest-log':
        case 'exit':
          // Nothing to call here: these are for the subscribers of effects$.
          break;
        default:
          unreachable(effect);
      }
    }
  }
}

/** The notifier call an effect carries, without the effect's own fields. */
function notifierCall(effect: Extract<LifecycleEffect, { kind: 'notifiers' }>): NotifierCall {
  switch (effect.list) {
    case 'shutdown':
      return { list: effect.list, cause: effect.cause };
    case 'wakeup':
      return { list: effect.list, reason: effect.reason };
    case 'exit':
    case 'powerdown':
    case 'suspend':
      return { list: effect.list };
    default:
      return unreachable(effect);
  }
}

/**
 * Runs a VM lifecycle over `actions$`. The returned streams are hot once
 * connected: subscribe to events$ before connect() to see every event;
 * state$ always replays the latest state.
 */
export function createLifecycle(actions$: Observable<LifecycleAction>, options: LifecycleOptions = {}): Lifecycle {
  const initial = initialLifecycleState(options);
  const autoStep = options.autoStep ?? true;
  const registry = new CallbackRegistry();
  const errors = new Subject<Error>();
  const report = (err: Error): void => errors.next(err);
  // A step's events and effects go out before its state does, so that
  // whoever watches both sees why (SHUTDOWN) before what (shutdown, exit).
  const events = new Subject<LifecycleEvent>();
  const effects = new Subject<LifecycleEffect>();
  // Told after every subscriber of state$ (see connect), replayed to late ones.
  const exit = new ReplaySubject<number>(1);
  const seed: Step = { state: initial, events: [], effects: [], failure: null };

  const steps$ = merge(registry.actions$, actions$).pipe(
    // A callback may send actions while it runs; the queue holds them until
    // the current action and its step are fully done, keeping reductions
    // whole and in order.
    observeOn(queueScheduler),
    concatMap((action) => (autoStep && wakesMainLoop(action) ? [action, STEP] : [action])),
    scan((previous: Step, action: LifecycleAction) => reduceStep(previous.state, action), seed),
    tap((step) => {
      if (step.failure) report(step.failure);
      registry.perform(step.effects, report);
      for (const event of step.events) events.next(event);
      for (const effect of step.effects) effects.next(effect);
    }),
    // The VM has ended: nothing further can happen to it.
    takeWhile((step) => step.state.exitStatus === null, true),
    finalize(() => {
      events.complete();
      effects.complete();
      errors.complete();
    }),
  );
  const shared = connectable(steps$, { connector: () => new Subject<Step>(), resetOnDisconnect: false });

  const state$ = shared.pipe(
    map((step) => step.state),
    startWith(initial),
    distinctUntilChanged(),
    shareReplay({ bufferSize: 1, refCount: false }),
  );
  let connection: Subscription | undefined;

  return {
    state$,
    runState$: state$.pipe(
      map((state) => state.runState),
      distinctUntilChanged(),
    ),
    events$: events.asObservable(),
    effects$: effects.asObservable(),
    errors$: errors.asObservable(),
    exit$: exit.asObservable(),
    addStateHandler: (handler, priority = 0) => registry.addStateHandler(handler, priority),
    addNotifier: (list, notifier) => registry.addNotifier(list, notifier),
    connect: () => {
      // Once only: connecting again after a stop would restart the reducer
      // from the initial state, a second VM that nobody asked for.
      if (connection) return connection;
      // state$ is subscribed first so its replayed value is never behind,
      // and the exit status is told after it, to whoever watches both.
      connection = state$.subscribe();
      connection.add(
        shared.subscribe((step) => {
          if (step.state.exitStatus === null) return;
          exit.next(step.state.exitStatus);
          exit.complete();
        }),
      );
      connection.add(shared.connect());
      return connection;
    },
  };
}
