import test from 'ava';

import {
  DEFAULT_CONFIG,
  EXIT_FAILURE,
  InvalidTransitionError,
  initialLifecycleState,
  isGuestCause,
  reduce,
} from '../ts/lifecycle/index.js';
import type {
  InitialLifecycle,
  LifecycleAction,
  LifecycleEffect,
  LifecycleEvent,
  LifecycleState,
} from '../ts/lifecycle/index.js';

interface Played {
  readonly state: LifecycleState;
  readonly events: LifecycleEvent[];
  readonly effects: LifecycleEffect[];
}

/** Applies the actions in turn, collecting what they produced. */
function play(state: LifecycleState, ...actions: LifecycleAction[]): Played {
  const events: LifecycleEvent[] = [];
  const effects: LifecycleEffect[] = [];
  let current = state;
  for (const action of actions) {
    const r = reduce(current, action);
    current = r.state;
    events.push(...r.events);
    effects.push(...r.effects);
  }
  return { state: current, events, effects };
}

/** A VM in `runState` with three state handlers (priorities 10, -5, 0) and two shutdown notifiers. */
function vm(init: InitialLifecycle = {}): LifecycleState {
  return play(
    initialLifecycleState({ runState: 'running', ...init }),
    { type: 'add-state-handler', id: 'net', priority: 10 },
    { type: 'add-state-handler', id: 'clock', priority: -5 },
    { type: 'add-state-handler', id: 'blk', priority: 0 },
    { type: 'add-notifier', list: 'shutdown', id: 'first' },
    { type: 'add-notifier', list: 'shutdown', id: 'second' },
    { type: 'add-notifier', list: 'exit', id: 'atexit' },
  ).state;
}

const STOP_ORDER = ['net', 'blk', 'clock'];
const START_ORDER = ['clock', 'blk', 'net'];

const types = (events: readonly LifecycleEvent[]): string[] => events.map((e) => e.type);
const ofKind = <K extends LifecycleEffect['kind']>(effects: readonly LifecycleEffect[], kind: K) =>
  effects.filter((e): e is Extract<LifecycleEffect, { kind: K }> => e.kind === kind);

test('a new lifecycle is in prelaunch with QEMU defaults and nothing pending', (t) => {
  const s = initialLifecycleState();
  t.is(s.runState, 'prelaunch');
  t.deepEqual(s.config, DEFAULT_CONFIG);
  t.deepEqual(s.config, {
    shutdownAction: 'poweroff',
    rebootAction: 'reset',
    panicAction: 'shutdown',
    cpusResettable: true,
  });
  t.deepEqual(s.wakeupEnabled, { none: false, rtc: true, pmtimer: true, other: true });
  t.is(s.exitStatus, null);
  t.is(reduce(s, { type: 'step' }).state, s, 'a step with nothing pending changes nothing');
});

test('causes from guest-shutdown on are the guest’s', (t) => {
  t.false(isGuestCause('host-signal'));
  t.false(isGuestCause('host-ui'));
  t.false(isGuestCause('host-qmp-system-reset'));
  t.true(isGuestCause('guest-shutdown'));
  t.true(isGuestCause('guest-reset'));
  t.true(isGuestCause('guest-panic'));
});

test('start: RESUME, running, handlers in ascending priority', (t) => {
  const r = play(vm({ runState: 'prelaunch' }), { type: 'start' });
  t.is(r.state.runState, 'running');
  t.deepEqual(types(r.events), ['RESUME']);
  t.deepEqual(ofKind(r.effects, 'state-handlers'), [
    { kind: 'state-handlers', running: true, state: 'running', order: START_ORDER },
  ]);
});

test('start on a running VM does nothing, unless a stop was queued: then STOP and RESUME', (t) => {
  const running = vm();
  const plain = reduce(running, { type: 'start' });
  t.is(plain.state, running);
  t.deepEqual(plain.events, []);
  const queued = play(running, { type: 'vmstop', state: 'io-error' }, { type: 'start' });
  t.deepEqual(types(queued.events), ['STOP', 'RESUME']);
  t.is(queued.state.runState, 'running');
  t.is(queued.state.pending.vmstop, null, 'the queued stop is consumed');
  t.deepEqual(ofKind(queued.effects, 'state-handlers'), []);
});

test('start drops a queued stop on a stopped VM too', (t) => {
  const r = play(vm(), { type: 'vmstop', state: 'io-error' }, { type: 'stop' }, { type: 'start' }, { type: 'step' });
  t.is(r.state.runState, 'running');
  t.deepEqual(types(r.events), ['STOP', 'RESUME']);
});

test('start from a state that needs a reset throws and changes nothing', (t) => {
  for (const runState of ['shutdown', 'internal-error'] as const) {
    const err = t.throws(() => reduce(vm({ runState }), { type: 'start' }), { instanceOf: InvalidTransitionError });
    t.is(err?.from, runState);
    t.is(err?.to, 'running');
  }
});

test('stop: STOP, handlers in descending priority; a stopped VM stays as it is', (t) => {
  const r = play(vm(), { type: 'stop' });
  t.is(r.state.runState, 'paused');
  t.deepEqual(types(r.events), ['STOP']);
  t.deepEqual(ofKind(r.effects, 'state-handlers'), [
    { kind: 'state-handlers', running: false, state: 'paused', order: STOP_ORDER },
  ]);
  const again = reduce(r.state, { type: 'stop', state: 'io-error' });
  t.is(again.state, r.state);
  t.deepEqual(again.events, []);
});

test('stop and vmstop refuse targets a running VM cannot stop into', (t) => {
  for (const target of ['prelaunch', 'inmigrate', 'postmigrate', 'running'] as const) {
    for (const type of ['stop', 'vmstop'] as const) {
      const before = vm();
      const r = reduce(before, { type, state: target });
      t.is(r.state, before);
      t.deepEqual(r.effects, [
        { kind: 'request-error', action: type, message: `a running VM cannot be stopped into '${target}'` },
      ]);
    }
  }
});

test('guest shutdown with poweroff: SHUTDOWN, notifiers, VM stopped silently, exit 0', (t) => {
  const r = play(vm(), { type: 'shutdown', cause: 'guest-shutdown' }, { type: 'powerdown' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'SHUTDOWN', guest: true, reason: 'guest-shutdown' }]);
  t.deepEqual(r.effects, [
    { kind: 'notifiers', list: 'shutdown', cause: 'guest-shutdown', order: ['second', 'first'] },
    { kind: 'state-handlers', running: false, state: 'shutdown', order: STOP_ORDER },
    { kind: 'notifiers', list: 'exit', order: ['atexit'] },
    { kind: 'exit', status: 0 },
  ]);
  t.is(r.state.runState, 'shutdown');
  t.is(r.state.exitStatus, 0);
  t.true(r.state.pending.powerdown, 'the loop ends before powerdown');
});

test('a host shutdown is reported as not the guest’s', (t) => {
  const r = play(vm(), { type: 'shutdown', cause: 'host-qmp-quit' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'SHUTDOWN', guest: false, reason: 'host-qmp-quit' }]);
  t.is(r.state.exitStatus, 0);
});

test('shutdown action pause: SHUTDOWN then STOP into shutdown, and the VM stays', (t) => {
  const r = play(
    vm({ config: { shutdownAction: 'pause' } }),
    { type: 'shutdown', cause: 'guest-shutdown' },
    { type: 'step' },
  );
  t.deepEqual(types(r.events), ['SHUTDOWN', 'STOP']);
  t.is(r.state.runState, 'shutdown');
  t.is(r.state.exitStatus, null);
  t.deepEqual(ofKind(r.effects, 'exit'), []);
  // From shutdown only a reset brings it back.
  const reset = play(r.state, { type: 'reset', cause: 'host-qmp-system-reset' }, { type: 'step' });
  t.is(reset.state.runState, 'prelaunch');
  t.deepEqual(reset.events, [{ type: 'RESET', guest: false, reason: 'host-qmp-system-reset' }]);
});

test('shutdown and reset requests need a real cause', (t) => {
  for (const type of ['shutdown', 'reset'] as const) {
    const before = vm();
    // A JavaScript caller can pass what the types forbid.
    const r = reduce(before, { type, cause: 'none' as never });
    t.is(r.state, before);
    t.deepEqual(r.effects, [
      { kind: 'request-error', action: type, message: `a ${type} request needs a cause other than 'none'` },
    ]);
  }
});

test('a later request of the same kind replaces an earlier one before the step', (t) => {
  const r = play(
    vm(),
    { type: 'shutdown', cause: 'host-ui' },
    { type: 'shutdown', cause: 'guest-shutdown' },
    { type: 'step' },
  );
  t.deepEqual(r.events, [{ type: 'SHUTDOWN', guest: true, reason: 'guest-shutdown' }]);
});

test('reset of a running VM: devices reset, RESET, still running', (t) => {
  const r = play(vm(), { type: 'reset', cause: 'guest-reset' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'RESET', guest: true, reason: 'guest-reset' }]);
  t.deepEqual(r.effects, [{ kind: 'system-reset', cause: 'guest-reset' }]);
  t.is(r.state.runState, 'running');
  t.is(r.state.pending.reset, 'none');
});

test('reset of a stopped VM returns it to prelaunch; migration states are kept', (t) => {
  for (const runState of ['paused', 'guest-panicked', 'suspended', 'shutdown', 'debug', 'colo', 'prelaunch'] as const) {
    const r = play(vm({ runState }), { type: 'reset', cause: 'host-qmp-system-reset' }, { type: 'step' });
    t.is(r.state.runState, 'prelaunch', runState);
  }
  for (const runState of ['inmigrate', 'finish-migrate'] as const) {
    const r = play(vm({ runState }), { type: 'reset', cause: 'host-qmp-system-reset' }, { type: 'step' });
    t.is(r.state.runState, runState);
    t.deepEqual(types(r.events), ['RESET']);
  }
});

test('subsystem and snapshot-load resets are not announced', (t) => {
  for (const cause of ['subsystem-reset', 'snapshot-load'] as const) {
    const r = play(vm(), { type: 'reset', cause }, { type: 'step' });
    t.deepEqual(r.events, []);
    t.deepEqual(r.effects, [{ kind: 'system-reset', cause }]);
  }
});

test('reboot action shutdown turns resets into shutdowns, except subsystem resets', (t) => {
  const config = { rebootAction: 'shutdown' } as const;
  const r = play(vm({ config }), { type: 'reset', cause: 'guest-reset' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'SHUTDOWN', guest: true, reason: 'guest-reset' }]);
  t.is(r.state.exitStatus, 0);
  const sub = play(vm({ config }), { type: 'reset', cause: 'subsystem-reset' }, { type: 'step' });
  t.deepEqual(sub.effects, [{ kind: 'system-reset', cause: 'subsystem-reset' }]);
  t.is(sub.state.exitStatus, null);
});

test('CPUs that cannot be reset: a reset request reports and shuts down instead', (t) => {
  const r = play(vm({ config: { cpusResettable: false } }), { type: 'reset', cause: 'subsystem-reset' });
  t.deepEqual(r.effects, [{ kind: 'report', text: 'cpus are not resettable, terminating' }]);
  t.is(r.state.pending.shutdown, 'subsystem-reset');
  t.is(r.state.pending.reset, 'none');
  const stepped = play(r.state, { type: 'step' });
  t.deepEqual(types(stepped.events), ['SHUTDOWN']);
  t.is(stepped.state.exitStatus, 0);
});

test('a reset waits while a snapshot is being saved', (t) => {
  const saving = play(
    vm(),
    { type: 'set-state', state: 'save-vm' },
    { type: 'reset', cause: 'guest-reset' },
    { type: 'step' },
  );
  t.is(saving.state.runState, 'save-vm');
  t.deepEqual(saving.events, []);
  t.is(saving.state.pending.reset, 'guest-reset');
  const saved = play(saving.state, { type: 'set-state', state: 'running' }, { type: 'step' });
  t.deepEqual(saved.events, [{ type: 'RESET', guest: true, reason: 'guest-reset' }]);
  t.is(saved.state.runState, 'running');
});

test('suspend: notifiers, suspended, SUSPEND; no handlers, no STOP', (t) => {
  const start = play(vm(), { type: 'add-notifier', list: 'suspend', id: 's3' }).state;
  const r = play(start, { type: 'suspend' }, { type: 'step' });
  t.is(r.state.runState, 'suspended');
  t.deepEqual(r.events, [{ type: 'SUSPEND' }]);
  t.deepEqual(r.effects, [{ kind: 'notifiers', list: 'suspend', order: ['s3'] }]);
  const again = reduce(r.state, { type: 'suspend' });
  t.is(again.state, r.state, 'suspending a suspended guest is ignored');
});

test('a suspend the VM can no longer take is dropped with a report', (t) => {
  const r = play(vm(), { type: 'suspend' }, { type: 'stop' }, { type: 'step' });
  t.is(r.state.runState, 'paused');
  t.false(r.state.pending.suspend);
  t.deepEqual(ofKind(r.effects, 'report'), [
    { kind: 'report', text: 'suspend request dropped: the VM cannot be suspended while paused' },
  ]);
  t.deepEqual(types(r.events), ['STOP']);
});

test('debug stops a running VM; with a suspend in the same step, it goes on to suspended', (t) => {
  const debug = play(vm(), { type: 'debug' }, { type: 'step' });
  t.is(debug.state.runState, 'debug');
  t.deepEqual(types(debug.events), ['STOP']);
  t.deepEqual(ofKind(debug.effects, 'state-handlers'), [
    { kind: 'state-handlers', running: false, state: 'debug', order: STOP_ORDER },
  ]);
  const both = play(vm(), { type: 'suspend' }, { type: 'debug' }, { type: 'step' });
  t.is(both.state.runState, 'suspended');
  t.deepEqual(types(both.events), ['STOP', 'SUSPEND']);
  const notRunning = play(vm({ runState: 'paused' }), { type: 'debug' }, { type: 'step' });
  t.is(notRunning.state.runState, 'paused');
  t.deepEqual(notRunning.events, []);
});

test('wakeup of a guest that is not suspended is an error', (t) => {
  const before = vm();
  const r = reduce(before, { type: 'wakeup', reason: 'rtc' });
  t.is(r.state, before);
  t.deepEqual(r.effects, [
    { kind: 'request-error', action: 'wakeup', message: 'Unable to wake up: guest is not in suspended state' },
  ]);
});

test('wakeup: running at once, then machine, notifiers and WAKEUP in the step', (t) => {
  const suspended = play(
    vm(),
    { type: 'add-notifier', list: 'wakeup', id: 'w' },
    { type: 'suspend' },
    { type: 'step' },
  ).state;
  const woken = reduce(suspended, { type: 'wakeup', reason: 'pmtimer' });
  t.is(woken.state.runState, 'running');
  t.deepEqual(woken.events, [], 'no RESUME: the VM was never stopped');
  t.deepEqual(woken.effects, []);
  const stepped = reduce(woken.state, { type: 'step' });
  t.deepEqual(stepped.events, [{ type: 'WAKEUP' }]);
  t.deepEqual(stepped.effects, [
    { kind: 'system-wakeup', reason: 'pmtimer' },
    { kind: 'notifiers', list: 'wakeup', reason: 'pmtimer', order: ['w'] },
  ]);
  t.is(stepped.state.pending.wakeup, 'none');
});

test('a wakeup reason that is not enabled is ignored without error', (t) => {
  const suspended = play(
    vm(),
    { type: 'suspend' },
    { type: 'step' },
    { type: 'wakeup-enable', reason: 'rtc', enabled: false },
  ).state;
  const masked = reduce(suspended, { type: 'wakeup', reason: 'rtc' });
  t.is(masked.state, suspended);
  t.deepEqual(masked.effects, []);
  t.is(reduce(suspended, { type: 'wakeup', reason: 'none' }).state, suspended, 'none is disabled by default');
  t.is(reduce(suspended, { type: 'wakeup', reason: 'other' }).state.runState, 'running');
  const reenabled = play(
    suspended,
    { type: 'wakeup-enable', reason: 'rtc', enabled: true },
    { type: 'wakeup', reason: 'rtc' },
  );
  t.is(reenabled.state.runState, 'running');
});

test('powerdown: POWERDOWN and the powerdown notifiers, nothing else', (t) => {
  const start = play(vm(), { type: 'add-notifier', list: 'powerdown', id: 'acpi' }).state;
  const r = play(start, { type: 'powerdown' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'POWERDOWN' }]);
  t.deepEqual(r.effects, [{ kind: 'notifiers', list: 'powerdown', order: ['acpi'] }]);
  t.is(r.state.runState, 'running');
});

test('vmstop is queued for the step, and the step does it last', (t) => {
  const queued = reduce(vm(), { type: 'vmstop', state: 'io-error' });
  t.is(queued.state.runState, 'running');
  t.is(queued.state.pending.vmstop, 'io-error');
  const r = play(queued.state, { type: 'powerdown' }, { type: 'step' });
  t.deepEqual(types(r.events), ['POWERDOWN', 'STOP']);
  t.is(r.state.runState, 'io-error');
  t.deepEqual(ofKind(r.effects, 'state-handlers'), [
    { kind: 'state-handlers', running: false, state: 'io-error', order: STOP_ORDER },
  ]);
});

test('one step acts in order: debug, suspend, shutdown, reset, powerdown, vmstop', (t) => {
  const r = play(
    vm({ config: { shutdownAction: 'pause' } }),
    { type: 'vmstop', state: 'paused' },
    { type: 'powerdown' },
    { type: 'reset', cause: 'host-qmp-system-reset' },
    { type: 'shutdown', cause: 'host-ui' },
    { type: 'suspend' },
    { type: 'debug' },
    { type: 'step' },
  );
  t.deepEqual(types(r.events), ['STOP', 'SUSPEND', 'SHUTDOWN', 'RESET', 'POWERDOWN']);
  t.is(r.state.runState, 'prelaunch');
  t.deepEqual(r.state.pending, initialLifecycleState().pending);
});

test('panic action pause: GUEST_PANICKED pause and the VM stops in guest-panicked', (t) => {
  const r = play(vm({ config: { panicAction: 'pause' } }), { type: 'guest-panicked' });
  t.deepEqual(r.events, [{ type: 'GUEST_PANICKED', action: 'pause' }, { type: 'STOP' }]);
  t.is(r.state.runState, 'guest-panicked');
  t.is(r.state.pending.shutdown, 'none');
  t.deepEqual(ofKind(r.effects, 'guest-log'), [{ kind: 'guest-log', text: 'Guest crashed' }]);
});

test('panic action shutdown: poweroff, stopped, then the step ends the VM with 0', (t) => {
  const r = play(vm(), { type: 'guest-panicked' });
  t.deepEqual(r.events, [{ type: 'GUEST_PANICKED', action: 'poweroff' }, { type: 'STOP' }]);
  t.is(r.state.runState, 'guest-panicked');
  t.is(r.state.pending.shutdown, 'guest-panic');
  const stepped = play(r.state, { type: 'step' });
  t.deepEqual(stepped.events, [{ type: 'SHUTDOWN', guest: true, reason: 'guest-panic' }]);
  t.is(stepped.state.exitStatus, 0);
  t.deepEqual(ofKind(stepped.effects, 'state-handlers'), [], 'already stopped');
});

test('panic action shutdown with shutdown action pause pauses instead', (t) => {
  const r = play(
    vm({ config: { panicAction: 'shutdown', shutdownAction: 'pause' } }),
    { type: 'guest-panicked' },
    { type: 'step' },
  );
  t.deepEqual(types(r.events), ['GUEST_PANICKED', 'STOP']);
  t.deepEqual(r.events[0], { type: 'GUEST_PANICKED', action: 'pause' });
  t.is(r.state.runState, 'guest-panicked');
});

test('panic action exit-failure: the VM ends with EXIT_FAILURE', (t) => {
  const r = play(vm({ config: { panicAction: 'exit-failure' } }), { type: 'guest-panicked' }, { type: 'step' });
  t.deepEqual(types(r.events), ['GUEST_PANICKED', 'STOP', 'SHUTDOWN']);
  t.deepEqual(r.events[0], { type: 'GUEST_PANICKED', action: 'poweroff' });
  t.is(EXIT_FAILURE, 1);
  t.is(r.state.exitStatus, 1);
  t.deepEqual(ofKind(r.effects, 'exit'), [{ kind: 'exit', status: 1 }]);
});

test('exit-failure applies only to panics: another shutdown exits with 0', (t) => {
  const r = play(
    vm({ config: { panicAction: 'exit-failure' } }),
    { type: 'shutdown', cause: 'guest-shutdown' },
    { type: 'step' },
  );
  t.is(r.state.exitStatus, 0);
});

test('panic action exit-failure with shutdown action pause announces poweroff but stays', (t) => {
  const r = play(
    vm({ config: { panicAction: 'exit-failure', shutdownAction: 'pause' } }),
    { type: 'guest-panicked' },
    { type: 'step' },
  );
  t.deepEqual(types(r.events), ['GUEST_PANICKED', 'STOP', 'SHUTDOWN']);
  t.is(r.state.runState, 'guest-panicked');
  t.is(r.state.exitStatus, null);
});

test('panic action none: GUEST_PANICKED run, and the guest keeps running', (t) => {
  const r = play(vm({ config: { panicAction: 'none' } }), { type: 'guest-panicked' }, { type: 'step' });
  t.deepEqual(r.events, [{ type: 'GUEST_PANICKED', action: 'run' }]);
  t.is(r.state.runState, 'running');
});

test('panic information is carried in the event and logged', (t) => {
  const hv = { type: 'hyper-v', arg1: 0x7fn, arg2: 0n, arg3: 0xffff_ffff_ffff_ffffn, arg4: 1n, arg5: 0x10n } as const;
  const r = play(vm({ config: { panicAction: 'pause' } }), { type: 'guest-panicked', info: hv });
  t.deepEqual(r.events[0], { type: 'GUEST_PANICKED', action: 'pause', info: hv });
  t.deepEqual(ofKind(r.effects, 'guest-log'), [
    { kind: 'guest-log', text: 'Guest crashed\nHV crash parameters: (0x7f 0 0xffffffffffffffff 0x1 0x10)' },
  ]);
  const s390 = {
    type: 's390',
    core: 2,
    pswMask: 0x0706_0000_8000_0000n,
    pswAddr: 0x1234n,
    reason: 'disabled-wait',
  } as const;
  const z = play(vm({ config: { panicAction: 'none' } }), { type: 'guest-panicked', info: s390 });
  t.deepEqual(ofKind(z.effects, 'guest-log'), [
    { kind: 'guest-log', text: 'Guest crashed on cpu 2: disabled-wait\nPSW: 0x0706000080000000 0x0000000000001234' },
  ]);
});

test('a panic of a VM that is not running announces it but stops nothing', (t) => {
  const r = play(vm({ runState: 'paused', config: { panicAction: 'pause' } }), { type: 'guest-panicked' });
  t.deepEqual(r.events, [{ type: 'GUEST_PANICKED', action: 'pause' }]);
  t.is(r.state.runState, 'paused');
});

test('crash-loaded: GUEST_CRASHLOADED run with the information, and a log line', (t) => {
  const info = { type: 'hyper-v', arg1: 1n, arg2: 2n, arg3: 3n, arg4: 4n, arg5: 5n } as const;
  const r = play(vm(), { type: 'guest-crashloaded', info });
  t.deepEqual(r.events, [{ type: 'GUEST_CRASHLOADED', action: 'run', info }]);
  t.deepEqual(r.effects, [{ kind: 'guest-log', text: 'Guest crash loaded' }]);
  t.is(r.state.runState, 'running');
  t.deepEqual(reduce(vm(), { type: 'guest-crashloaded' }).events, [{ type: 'GUEST_CRASHLOADED', action: 'run' }]);
});

test('killed by a signal from pid 0: a short report, host-signal shutdown, exit 0', (t) => {
  const r = play(vm(), { type: 'killed', signal: 2, pid: 0 }, { type: 'step' });
  t.deepEqual(ofKind(r.effects, 'report'), [{ kind: 'report', text: 'terminating on signal 2' }]);
  t.deepEqual(r.events, [{ type: 'SHUTDOWN', guest: false, reason: 'host-signal' }]);
  t.is(r.state.exitStatus, 0);
  t.is(r.state.pending.kill, null);
});

test('killed by another process: the report names its pid and process', (t) => {
  const named = play(vm(), { type: 'killed', signal: 15, pid: 4242, processName: 'libvirtd' }, { type: 'step' });
  t.deepEqual(ofKind(named.effects, 'report'), [
    { kind: 'report', text: 'terminating on signal 15 from pid 4242 (libvirtd)' },
  ]);
  const unnamed = play(vm(), { type: 'killed', signal: 15, pid: 4242 }, { type: 'step' });
  t.deepEqual(ofKind(unnamed.effects, 'report'), [
    { kind: 'report', text: 'terminating on signal 15 from pid 4242 ()' },
  ]);
});

test('a signal ends the VM even with shutdown action pause', (t) => {
  const r = play(vm({ config: { shutdownAction: 'pause' } }), { type: 'killed', signal: 15, pid: 1 }, { type: 'step' });
  t.is(r.state.config.shutdownAction, 'poweroff');
  t.is(r.state.exitStatus, 0);
});

test('after the end, actions are refused but registrations still work', (t) => {
  const ended = play(vm(), { type: 'shutdown', cause: 'guest-shutdown' }, { type: 'step' }).state;
  const r = reduce(ended, { type: 'start' });
  t.is(r.state, ended);
  t.deepEqual(r.effects, [{ kind: 'request-error', action: 'start', message: 'the VM has ended with status 0' }]);
  const removed = reduce(ended, { type: 'remove-state-handler', id: 'net' });
  t.deepEqual(removed.state.handlers.map((h) => h.id), ['clock', 'blk']);
});

test('handlers: ascending on start, descending on stop, equal priorities by registration', (t) => {
  const s = play(
    initialLifecycleState(),
    { type: 'add-state-handler', id: 'a0', priority: 0 },
    { type: 'add-state-handler', id: 'b5', priority: 5 },
    { type: 'add-state-handler', id: 'c0', priority: 0 },
    { type: 'add-state-handler', id: 'd-1', priority: -1 },
    { type: 'add-state-handler', id: 'e5', priority: 5 },
  ).state;
  const started = play(s, { type: 'start' });
  t.deepEqual(ofKind(started.effects, 'state-handlers')[0]?.order, ['d-1', 'a0', 'c0', 'b5', 'e5']);
  const stopped = play(started.state, { type: 'stop' });
  t.deepEqual(ofKind(stopped.effects, 'state-handlers')[0]?.order, ['e5', 'b5', 'c0', 'a0', 'd-1']);
});

test('removed handlers and notifiers are no longer called', (t) => {
  const r = play(
    vm(),
    { type: 'remove-state-handler', id: 'blk' },
    { type: 'remove-notifier', list: 'shutdown', id: 'second' },
    { type: 'remove-notifier', list: 'shutdown', id: 'unknown' },
    { type: 'shutdown', cause: 'guest-shutdown' },
    { type: 'step' },
  );
  t.deepEqual(ofKind(r.effects, 'state-handlers')[0]?.order, ['net', 'clock']);
  t.deepEqual(ofKind(r.effects, 'notifiers')[0]?.order, ['first']);
  const unchanged = vm();
  t.is(reduce(unchanged, { type: 'remove-state-handler', id: 'nope' }).state, unchanged);
});

test('a registration with a taken id or a bad priority is refused', (t) => {
  const s = vm();
  const dup = reduce(s, { type: 'add-state-handler', id: 'net', priority: 1 });
  t.is(dup.state, s);
  t.deepEqual(dup.effects, [
    { kind: 'request-error', action: 'add-state-handler', message: "state handler 'net' is already registered" },
  ]);
  const nan = reduce(s, { type: 'add-state-handler', id: 'x', priority: Number.NaN });
  t.is(nan.state, s);
  t.is(nan.effects[0]?.kind, 'request-error');
  const dupNotifier = reduce(s, { type: 'add-notifier', list: 'shutdown', id: 'first' });
  t.is(dupNotifier.state, s);
  t.is(dupNotifier.effects[0]?.kind, 'request-error');
  // The same id in another list is a different notifier.
  t.deepEqual(reduce(s, { type: 'add-notifier', list: 'exit', id: 'first' }).state.notifiers.exit, ['first', 'atexit']);
});

test('configure changes only the settings given', (t) => {
  const s = reduce(vm(), { type: 'configure', config: { panicAction: 'pause', shutdownAction: undefined } }).state;
  t.deepEqual(s.config, { ...DEFAULT_CONFIG, panicAction: 'pause' });
});

test('reduce leaves its input untouched', (t) => {
  const s = vm();
  const snapshot = JSON.stringify(s);
  play(
    s,
    { type: 'debug' },
    { type: 'suspend' },
    { type: 'step' },
    { type: 'reset', cause: 'guest-reset' },
    { type: 'step' },
  );
  t.is(JSON.stringify(s), snapshot);
});
