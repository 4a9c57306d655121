import test from 'ava';
import fc from 'fast-check';

import {
  InvalidTransitionError,
  NOTIFIER_LISTS,
  RUN_STATES,
  SHUTDOWN_CAUSES,
  WAKEUP_REASONS,
  canTransition,
  initialLifecycleState,
  reduce,
} from '../ts/lifecycle/index.js';
import type {
  GuestPanicInformation,
  LifecycleAction,
  LifecycleState,
  NotifierList,
  PanicAction,
  RebootAction,
  RequestCause,
  S390CrashReason,
  ShutdownAction,
} from '../ts/lifecycle/index.js';

const runState = fc.constantFrom(...RUN_STATES);
const cause = fc.constantFrom(...SHUTDOWN_CAUSES.filter((c): c is RequestCause => c !== 'none'));
const reason = fc.constantFrom(...WAKEUP_REASONS);
const list = fc.constantFrom(...NOTIFIER_LISTS);
const id = fc.constantFrom('a', 'b', 'c', 'd', 'e');
const word = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const panicInfo: fc.Arbitrary<GuestPanicInformation> = fc.oneof(
  fc.record({ type: fc.constant('hyper-v' as const), arg1: word, arg2: word, arg3: word, arg4: word, arg5: word }),
  fc.record({
    type: fc.constant('s390' as const),
    core: fc.nat(255),
    pswMask: word,
    pswAddr: word,
    reason: fc.constantFrom<S390CrashReason[]>('unknown', 'disabled-wait', 'extint-loop', 'pgmint-loop', 'opint-loop'),
  }),
);

/**
 * Everything the guest, devices and management can ask for. Requests that
 * usually end the VM are rarer, so that runs go on long enough to explore.
 */
const request: fc.Arbitrary<LifecycleAction> = fc.oneof(
  { weight: 1, arbitrary: cause.map((c) => ({ type: 'shutdown', cause: c }) as const) },
  { weight: 3, arbitrary: cause.map((c) => ({ type: 'reset', cause: c }) as const) },
  { weight: 3, arbitrary: fc.constant({ type: 'suspend' } as const) },
  { weight: 3, arbitrary: reason.map((r) => ({ type: 'wakeup', reason: r }) as const) },
  { weight: 2, arbitrary: fc.constant({ type: 'powerdown' } as const) },
  { weight: 2, arbitrary: fc.constant({ type: 'debug' } as const) },
  { weight: 3, arbitrary: runState.map((s) => ({ type: 'vmstop', state: s }) as const) },
  {
    weight: 2,
    arbitrary: fc
      .option(panicInfo, { nil: undefined })
      .map((info): LifecycleAction => (info ? { type: 'guest-panicked', info } : { type: 'guest-panicked' })),
  },
  {
    weight: 1,
    arbitrary: fc
      .option(panicInfo, { nil: undefined })
      .map((info): LifecycleAction => (info ? { type: 'guest-crashloaded', info } : { type: 'guest-crashloaded' })),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ signal: fc.nat(64), pid: fc.nat(5), processName: fc.option(fc.string(), { nil: undefined }) })
      .map(
        ({ signal, pid, processName }): LifecycleAction =>
          processName === undefined ? { type: 'killed', signal, pid } : { type: 'killed', signal, pid, processName },
      ),
  },
);

/** Actions that cannot be aimed at a forbidden state, and so must never throw. */
const safe: fc.Arbitrary<LifecycleAction> = fc.oneof(
  { weight: 6, arbitrary: request },
  { weight: 4, arbitrary: fc.constant({ type: 'step' } as const) },
  {
    weight: 1,
    arbitrary: fc
      .option(runState, { nil: undefined })
      .map((s): LifecycleAction => (s ? { type: 'stop', state: s } : { type: 'stop' })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record(
        {
          shutdownAction: fc.constantFrom<ShutdownAction[]>('poweroff', 'pause'),
          rebootAction: fc.constantFrom<RebootAction[]>('reset', 'shutdown'),
          panicAction: fc.constantFrom<PanicAction[]>('pause', 'shutdown', 'exit-failure', 'none'),
          cpusResettable: fc.boolean(),
        },
        { requiredKeys: [] },
      )
      .map((config) => ({ type: 'configure', config }) as const),
  },
  {
    weight: 1,
    arbitrary: fc.record({ reason, enabled: fc.boolean() }).map((r) => ({ type: 'wakeup-enable', ...r }) as const),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({ id, priority: fc.integer({ min: -3, max: 3 }) })
      .map((r) => ({ type: 'add-state-handler', ...r }) as const),
  },
  { weight: 1, arbitrary: id.map((i) => ({ type: 'remove-state-handler', id: i }) as const) },
  { weight: 1, arbitrary: fc.record({ list, id }).map((r) => ({ type: 'add-notifier', ...r }) as const) },
  { weight: 1, arbitrary: fc.record({ list, id }).map((r) => ({ type: 'remove-notifier', ...r }) as const) },
);

/** Safe actions plus direct state changes, which may be refused by throwing. */
const any: fc.Arbitrary<LifecycleAction> = fc.oneof(
  { weight: 8, arbitrary: safe },
  { weight: 2, arbitrary: fc.constant({ type: 'start' } as const) },
  { weight: 2, arbitrary: runState.map((s) => ({ type: 'set-state', state: s }) as const) },
);

/**
 * An independent model of the registrations: handlers kept as (priority,
 * registration number), sorted when asked; notifiers as a newest-first list.
 */
class Model {
  handlers = new Map<string, { priority: number; seq: number }>();
  notifiers = new Map<NotifierList, string[]>(NOTIFIER_LISTS.map((l) => [l, []]));
  seq = 0;

  apply(action: LifecycleAction): void {
    switch (action.type) {
      case 'add-state-handler':
        if (!this.handlers.has(action.id)) this.handlers.set(action.id, { priority: action.priority, seq: this.seq++ });
        break;
      case 'remove-state-handler':
        this.handlers.delete(action.id);
        break;
      case 'add-notifier': {
        const ids = this.notifiers.get(action.list) ?? [];
        if (!ids.includes(action.id)) this.notifiers.set(action.list, [action.id, ...ids]);
        break;
      }
      case 'remove-notifier':
        this.notifiers.set(action.list, (this.notifiers.get(action.list) ?? []).filter((i) => i !== action.id));
        break;
      default:
        break;
    }
  }

  startOrder(): string[] {
    return [...this.handlers.entries()]
      .sort(([, x], [, y]) => x.priority - y.priority || x.seq - y.seq)
      .map(([handlerId]) => handlerId);
  }
}

interface Run {
  readonly initial: LifecycleState;
  readonly actions: readonly LifecycleAction[];
}

const runs = (actions: fc.Arbitrary<LifecycleAction>): fc.Arbitrary<Run> =>
  fc
    .record({ start: runState, actions: fc.array(actions, { maxLength: 80, size: 'max' }) })
    .map(({ start, actions: list }) => ({ initial: initialLifecycleState({ runState: start }), actions: list }));

test('requests and main-loop steps never throw, from any state', (t) => {
  fc.assert(
    fc.property(runs(safe), ({ initial, actions }) => {
      let state = initial;
      for (const action of actions) state = reduce(state, action).state;
      t.pass();
    }),
    { numRuns: 500 },
  );
});

test('only start and set-state throw, only for forbidden transitions, and change nothing', (t) => {
  fc.assert(
    fc.property(runs(any), ({ initial, actions }) => {
      let state = initial;
      for (const action of actions) {
        try {
          state = reduce(state, action).state;
        } catch (err) {
          if (!(err instanceof InvalidTransitionError)) throw err;
          if (action.type !== 'start' && action.type !== 'set-state') throw err;
          if (err.from !== state.runState || canTransition(err.from, err.to) || err.from === err.to) throw err;
        }
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('handlers are always called ascending on start and descending on stop; notifiers newest first', (t) => {
  fc.assert(
    fc.property(runs(any), ({ initial, actions }) => {
      const model = new Model();
      let state = initial;
      for (const action of actions) {
        let result;
        try {
          result = reduce(state, action);
        } catch (err) {
          if (err instanceof InvalidTransitionError) continue;
          throw err;
        }
        model.apply(action);
        state = result.state;
        for (const effect of result.effects) {
          if (effect.kind === 'state-handlers') {
            const expected = effect.running ? model.startOrder() : model.startOrder().reverse();
            if (JSON.stringify(effect.order) !== JSON.stringify(expected)) {
              throw new Error(`order ${JSON.stringify(effect.order)}, expected ${JSON.stringify(expected)}`);
            }
            // Handlers hear of starts only into running, and of stops out of it.
            if (effect.running !== (effect.state === 'running')) throw new Error('running flag mismatch');
          }
          if (effect.kind === 'notifiers') {
            const expected = model.notifiers.get(effect.list) ?? [];
            if (JSON.stringify(effect.order) !== JSON.stringify(expected)) {
              throw new Error(`${effect.list} notifier order`);
            }
          }
        }
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('a VM that ended stays ended with status 0 or 1, and only a panic gives 1', (t) => {
  fc.assert(
    fc.property(runs(safe), ({ initial, actions }) => {
      let state = initial;
      for (const action of actions) {
        const before = state;
        const result = reduce(state, action);
        state = result.state;
        const exits = result.effects.filter((e) => e.kind === 'exit');
        if (before.exitStatus !== null) {
          if (exits.length > 0 || result.events.length > 0) throw new Error('an ended VM acted');
          if (state.exitStatus !== before.exitStatus || state.runState !== before.runState) {
            throw new Error('an ended VM changed');
          }
          continue;
        }
        if (exits.length > 1) throw new Error('exited twice');
        const exit = exits[0];
        if (exit) {
          if (state.exitStatus !== exit.status) throw new Error('exit status not kept');
          if (exit.status !== 0 && exit.status !== 1) throw new Error(`exit status ${String(exit.status)}`);
          if (state.runState === 'running') throw new Error('an ended VM still runs');
          const shutdown = result.events.find((e) => e.type === 'SHUTDOWN');
          const panicExit = shutdown?.reason === 'guest-panic' && state.config.panicAction === 'exit-failure';
          if (exit.status === 1 && !panicExit) {
            throw new Error('status 1 without an exit-failure panic');
          }
        } else if (state.exitStatus !== null) {
          throw new Error('ended without an exit effect');
        }
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test('without a start there is no RESUME, and at most one STOP, only from a running VM', (t) => {
  fc.assert(
    fc.property(runs(safe), ({ initial, actions }) => {
      let state = initial;
      for (const action of actions) {
        const result = reduce(state, action);
        const stops = result.events.filter((e) => e.type === 'STOP').length;
        const resumes = result.events.filter((e) => e.type === 'RESUME').length;
        // Safe actions never start the VM; STOP comes only from a running VM.
        if (resumes > 0) throw new Error('RESUME without start');
        if (stops > 1) throw new Error('more than one STOP in one action');
        if (stops === 1 && state.runState !== 'running') throw new Error('STOP of a VM that was not running');
        state = result.state;
      }
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('the generated runs reach every path of the loop', (t) => {
  // A fixed seed keeps this check deterministic; it guards the generators
  // above against drifting away from the paths the properties are about.
  const seen = new Set<string>();
  fc.assert(
    fc.property(runs(any), ({ initial, actions }) => {
      let state = initial;
      for (const action of actions) {
        let result;
        try {
          result = reduce(state, action);
        } catch {
          seen.add('invalid transition');
          continue;
        }
        for (const e of result.events) seen.add(e.type === 'GUEST_PANICKED' ? `${e.type}:${e.action}` : e.type);
        for (const e of result.effects) {
          if (e.kind === 'exit') seen.add(`exit ${String(e.status)}`);
          if (e.kind === 'report') seen.add(`report:${e.text.split(' ')[0] ?? ''}`);
          if (e.kind === 'request-error') seen.add(`refused ${e.action}`);
        }
        if (action.type === 'step' && result.state.runState === 'save-vm' && result.state.pending.reset !== 'none') {
          seen.add('reset waits');
        }
        state = result.state;
      }
    }),
    { numRuns: 500, seed: 20240601 },
  );
  for (const path of [
    'STOP',
    'RESUME',
    'SUSPEND',
    'WAKEUP',
    'POWERDOWN',
    'SHUTDOWN',
    'RESET',
    'GUEST_PANICKED:pause',
    'GUEST_PANICKED:poweroff',
    'GUEST_PANICKED:run',
    'GUEST_CRASHLOADED',
    'exit 0',
    'exit 1',
    'report:terminating',
    'report:cpus',
    'report:suspend',
    'refused wakeup',
    'refused vmstop',
    'reset waits',
    'invalid transition',
  ]) {
    t.true(seen.has(path), path);
  }
});
