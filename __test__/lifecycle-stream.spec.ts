import test from 'ava';
import { Subject, firstValueFrom, lastValueFrom, of, toArray } from 'rxjs';

import { InvalidTransitionError, LifecycleRequestError, createLifecycle } from '../ts/lifecycle/index.js';
import type {
  LifecycleAction,
  LifecycleEffect,
  LifecycleEvent,
  NotifierCallOf,
  RunState,
} from '../ts/lifecycle/index.js';

/** A lifecycle fed from a Subject, with everything it emits recorded. */
function harness(options: Parameters<typeof createLifecycle>[1] = {}) {
  const actions = new Subject<LifecycleAction>();
  const vm = createLifecycle(actions, options);
  const events: LifecycleEvent[] = [];
  const effects: LifecycleEffect[] = [];
  const states: RunState[] = [];
  const errors: Error[] = [];
  const calls: string[] = [];
  vm.events$.subscribe((e) => events.push(e));
  vm.effects$.subscribe((e) => effects.push(e));
  vm.runState$.subscribe((s) => states.push(s));
  vm.errors$.subscribe((e) => errors.push(e));
  return { actions, vm, events, effects, states, errors, calls, send: (a: LifecycleAction) => actions.next(a) };
}

test('requests in, states and events out, handlers called in priority order', (t) => {
  const h = harness();
  h.vm.addStateHandler((running, state) => h.calls.push(`net ${String(running)} ${state}`), 10);
  h.vm.addStateHandler((running, state) => h.calls.push(`clock ${String(running)} ${state}`), -5);
  h.vm.addStateHandler((running, state) => h.calls.push(`blk ${String(running)} ${state}`));
  h.vm.addNotifier('shutdown', (call) => h.calls.push(`shutdown notifier ${call.cause}`));
  h.vm.addNotifier('exit', () => h.calls.push('exit notifier'));
  let exitStatus: number | undefined;
  h.vm.exit$.subscribe((status) => (exitStatus = status));
  const connection = h.vm.connect();

  h.send({ type: 'start' });
  t.deepEqual(h.calls, ['clock true running', 'blk true running', 'net true running']);
  h.calls.length = 0;

  h.send({ type: 'vmstop', state: 'io-error' });
  t.deepEqual(h.calls, ['net false io-error', 'blk false io-error', 'clock false io-error']);
  h.calls.length = 0;

  h.send({ type: 'start' });
  h.send({ type: 'shutdown', cause: 'guest-shutdown' });
  t.deepEqual(h.calls, [
    'clock true running',
    'blk true running',
    'net true running',
    'shutdown notifier guest-shutdown',
    'net false shutdown',
    'blk false shutdown',
    'clock false shutdown',
    'exit notifier',
  ]);
  t.deepEqual(h.states, ['prelaunch', 'running', 'io-error', 'running', 'shutdown']);
  t.deepEqual(h.events, [
    { type: 'RESUME' },
    { type: 'STOP' },
    { type: 'RESUME' },
    { type: 'SHUTDOWN', guest: true, reason: 'guest-shutdown' },
  ]);
  t.is(exitStatus, 0);
  t.deepEqual(h.errors, []);
  t.true(connection.closed, 'the stream ends with the VM');
});

test('state$ replays the latest state to late subscribers', async (t) => {
  const h = harness();
  h.vm.connect();
  h.send({ type: 'start' });
  h.send({ type: 'debug' });
  const state = await firstValueFrom(h.vm.state$);
  t.is(state.runState, 'debug');
  t.is(state.pending.debug, false);
});

test('removed handlers are not called; using removes at the end of the scope', (t) => {
  const h = harness();
  const a = h.vm.addStateHandler(() => h.calls.push('a'), 1);
  {
    using b = h.vm.addStateHandler(() => h.calls.push('b'), 2);
    t.regex(b.id, /^state-handler-/);
    h.vm.connect();
    h.send({ type: 'start' });
  }
  t.deepEqual(h.calls, ['a', 'b']);
  a.remove();
  a.remove();
  h.send({ type: 'stop' });
  t.deepEqual(h.calls, ['a', 'b']);
  t.deepEqual(h.events, [{ type: 'RESUME' }, { type: 'STOP' }]);
});

test('registrations made before connect are in force after it, newest notifier first', (t) => {
  const h = harness();
  h.vm.addNotifier('powerdown', () => h.calls.push('old'));
  const gone = h.vm.addNotifier('powerdown', () => h.calls.push('gone'));
  h.vm.addNotifier('powerdown', () => h.calls.push('new'));
  gone.remove();
  h.vm.connect();
  h.send({ type: 'powerdown' });
  t.deepEqual(h.calls, ['new', 'old']);
  t.deepEqual(h.events, [{ type: 'POWERDOWN' }]);
});

test('suspend and wakeup reach their notifiers with the reason', (t) => {
  const h = harness({ runState: 'running' });
  const reasons: NotifierCallOf<'wakeup'>['reason'][] = [];
  h.vm.addNotifier('suspend', () => h.calls.push('suspend'));
  h.vm.addNotifier('wakeup', (call) => reasons.push(call.reason));
  h.vm.connect();
  h.send({ type: 'suspend' });
  h.send({ type: 'wakeup', reason: 'rtc' });
  t.deepEqual(h.calls, ['suspend']);
  t.deepEqual(reasons, ['rtc']);
  t.deepEqual(h.events, [{ type: 'SUSPEND' }, { type: 'WAKEUP' }]);
  t.deepEqual(h.states, ['running', 'suspended', 'running']);
  t.deepEqual(
    h.effects.filter((e) => e.kind === 'system-wakeup'),
    [{ kind: 'system-wakeup', reason: 'rtc' }],
  );
});

test('refused requests and invalid transitions are errors, and the stream goes on', (t) => {
  const h = harness();
  h.vm.connect();
  h.send({ type: 'wakeup', reason: 'rtc' });
  h.send({ type: 'set-state', state: 'shutdown' });
  h.send({ type: 'start' });
  t.is(h.errors.length, 2);
  t.true(h.errors[0] instanceof LifecycleRequestError);
  t.is((h.errors[0] as LifecycleRequestError).action, 'wakeup');
  t.is(h.errors[0]?.message, 'Unable to wake up: guest is not in suspended state');
  t.true(h.errors[1] instanceof InvalidTransitionError);
  t.deepEqual(h.states, ['prelaunch', 'running']);
});

test('a throwing handler is reported and the others still run', (t) => {
  const h = harness({ runState: 'running' });
  h.vm.addStateHandler(() => h.calls.push('low'), 0);
  h.vm.addStateHandler(() => {
    throw new Error('broken device');
  }, 5);
  h.vm.addStateHandler(() => {
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- plain JavaScript callbacks can throw anything
    throw 'not an error';
  }, 7);
  h.vm.connect();
  h.send({ type: 'stop' });
  t.deepEqual(h.calls, ['low']);
  t.deepEqual(
    h.errors.map((e) => e.message),
    ['a lifecycle callback threw a value that is not an Error', 'broken device'],
  );
  t.deepEqual(h.states, ['running', 'paused']);
});

test('a handler may send actions; they run after the current one completes', (t) => {
  const h = harness({ runState: 'paused' });
  h.vm.addStateHandler((running) => {
    h.calls.push(`handler ${String(running)}`);
    if (running) h.send({ type: 'stop', state: 'debug' });
  });
  h.vm.events$.subscribe((e) => h.calls.push(e.type));
  h.vm.connect();
  h.send({ type: 'start' });
  t.deepEqual(h.calls, ['handler true', 'RESUME', 'handler false', 'STOP']);
  t.deepEqual(h.states, ['paused', 'running', 'debug']);
});

test('a handler may remove another one during the same notification', (t) => {
  const h = harness({ runState: 'paused' });
  const later = h.vm.addStateHandler(() => h.calls.push('later'), 2);
  h.vm.addStateHandler(() => {
    h.calls.push('first');
    later.remove();
  }, 1);
  h.vm.connect();
  h.send({ type: 'start' });
  t.deepEqual(h.calls, ['first']);
});

test('a panic with exit-failure ends the streams with status 1', async (t) => {
  const actions: LifecycleAction[] = [
    { type: 'configure', config: { panicAction: 'exit-failure' } },
    { type: 'start' },
    { type: 'guest-panicked' },
    { type: 'powerdown' },
  ];
  const vm = createLifecycle(of(...actions));
  const events = lastValueFrom(vm.events$.pipe(toArray()));
  const status = firstValueFrom(vm.exit$);
  vm.connect();
  t.is(await status, 1);
  t.deepEqual(await events, [
    { type: 'RESUME' },
    { type: 'GUEST_PANICKED', action: 'poweroff' },
    { type: 'STOP' },
    { type: 'SHUTDOWN', guest: true, reason: 'guest-panic' },
  ]);
  const final = await lastValueFrom(vm.state$);
  t.is(final.exitStatus, 1);
  t.is(final.runState, 'guest-panicked');
});

test('a kill report comes out as an effect', (t) => {
  const h = harness({ runState: 'running' });
  h.vm.connect();
  h.send({ type: 'killed', signal: 15, pid: 77, processName: 'virsh' });
  t.deepEqual(
    h.effects.filter((e) => e.kind === 'report'),
    [{ kind: 'report', text: 'terminating on signal 15 from pid 77 (virsh)' }],
  );
  t.deepEqual(h.events, [{ type: 'SHUTDOWN', guest: false, reason: 'host-signal' }]);
});

test('without autoStep, requests wait for an explicit step', (t) => {
  const h = harness({ runState: 'running', autoStep: false });
  h.vm.connect();
  h.send({ type: 'suspend' });
  h.send({ type: 'debug' });
  t.deepEqual(h.events, []);
  h.send({ type: 'step' });
  t.deepEqual(h.events, [{ type: 'STOP' }, { type: 'SUSPEND' }]);
  // state$ shows the state after each action: the step passed through debug.
  t.deepEqual(h.states, ['running', 'suspended']);
});

test('connect is idempotent, and unsubscribing stops the lifecycle', (t) => {
  const h = harness();
  const first = h.vm.connect();
  t.is(h.vm.connect(), first);
  first.unsubscribe();
  t.false(h.actions.observed);
  h.send({ type: 'start' });
  t.deepEqual(h.states, ['prelaunch']);
  t.is(h.vm.connect(), first, 'a stopped lifecycle stays stopped');
  t.false(h.actions.observed);
});

test('a non-finite priority is refused at once', (t) => {
  const h = harness();
  t.throws(() => h.vm.addStateHandler(() => undefined, Number.POSITIVE_INFINITY), { instanceOf: RangeError });
});

test('each action: handlers, then events and effects, then the run state and the exit status', (t) => {
  const actions = new Subject<LifecycleAction>();
  const vm = createLifecycle(actions);
  const order: string[] = [];
  vm.addStateHandler((running, state) => order.push(`handler ${String(running)} ${state}`));
  vm.addNotifier('exit', () => order.push('exit notifier'));
  vm.exit$.subscribe((status) => order.push(`exit$ ${String(status)}`));
  vm.runState$.subscribe((state) => order.push(`runState$ ${state}`));
  vm.events$.subscribe((e) => order.push(`event ${e.type}`));
  vm.effects$.subscribe((e) => order.push(`effect ${e.kind}`));
  vm.connect();
  order.length = 0;
  actions.next({ type: 'start' });
  actions.next({ type: 'shutdown', cause: 'guest-shutdown' });
  const at = (entry: string): number => {
    const i = order.indexOf(entry);
    t.not(i, -1, `${entry} missing from ${order.join(', ')}`);
    return i;
  };
  t.true(at('handler true running') < at('event RESUME'));
  t.true(at('event RESUME') < at('runState$ running'));
  t.true(at('handler false shutdown') < at('event SHUTDOWN'));
  t.true(at('exit notifier') < at('event SHUTDOWN'));
  t.true(at('event SHUTDOWN') < at('runState$ shutdown'));
  t.true(at('runState$ shutdown') < at('exit$ 0'));
});
