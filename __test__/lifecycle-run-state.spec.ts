import test from 'ava';

import {
  InvalidTransitionError,
  RUN_STATES,
  RUN_STATE_TRANSITIONS,
  canTransition,
  initialLifecycleState,
  isRunState,
  reduce,
  runStateNeedsReset,
} from '../ts/lifecycle/index.js';
import type { RunState } from '../ts/lifecycle/index.js';

// The allowed transitions, transcribed from QEMU's table on their own, one
// pair a line in the table's order (including its one repeated pair), so
// that a slip in the implementation's table and a slip here cannot agree.
const REFERENCE_PAIRS = `
prelaunch inmigrate
debug running
debug finish-migrate
debug prelaunch
inmigrate internal-error
inmigrate io-error
inmigrate paused
inmigrate running
inmigrate shutdown
inmigrate suspended
inmigrate watchdog
inmigrate guest-panicked
inmigrate finish-migrate
inmigrate prelaunch
inmigrate postmigrate
inmigrate colo
internal-error paused
internal-error finish-migrate
internal-error prelaunch
io-error running
io-error finish-migrate
io-error prelaunch
paused running
paused finish-migrate
paused postmigrate
paused prelaunch
paused colo
postmigrate running
postmigrate finish-migrate
postmigrate prelaunch
prelaunch running
prelaunch finish-migrate
prelaunch inmigrate
finish-migrate running
finish-migrate paused
finish-migrate postmigrate
finish-migrate prelaunch
finish-migrate colo
restore-vm running
restore-vm prelaunch
colo running
colo prelaunch
colo shutdown
running debug
running internal-error
running io-error
running paused
running finish-migrate
running restore-vm
running save-vm
running shutdown
running watchdog
running guest-panicked
running colo
save-vm running
shutdown paused
shutdown finish-migrate
shutdown prelaunch
shutdown colo
debug suspended
running suspended
suspended running
suspended finish-migrate
suspended prelaunch
suspended colo
watchdog running
watchdog finish-migrate
watchdog prelaunch
watchdog colo
guest-panicked running
guest-panicked finish-migrate
guest-panicked prelaunch
`;

const referenceLines = REFERENCE_PAIRS.trim().split('\n');
const allowed = new Set(referenceLines.map((line) => line.trim()));

const QAPI_ORDER = [
  'debug',
  'inmigrate',
  'internal-error',
  'io-error',
  'paused',
  'postmigrate',
  'prelaunch',
  'finish-migrate',
  'restore-vm',
  'running',
  'save-vm',
  'shutdown',
  'suspended',
  'watchdog',
  'guest-panicked',
  'colo',
];

test('the sixteen run states, in QAPI order', (t) => {
  t.deepEqual([...RUN_STATES], QAPI_ORDER);
  t.true(isRunState('guest-panicked'));
  t.false(isRunState('crashed'));
  t.false(isRunState(3));
});

test('the transcribed table has 72 lines and 71 distinct pairs', (t) => {
  t.is(referenceLines.length, 72);
  t.is(allowed.size, 71);
  for (const line of allowed) {
    const [from, to, extra] = line.split(' ');
    t.true(isRunState(from), line);
    t.true(isRunState(to), line);
    t.is(extra, undefined, line);
  }
});

test('canTransition matches the reference for all 16 x 16 pairs', (t) => {
  let checked = 0;
  let permitted = 0;
  for (const from of RUN_STATES) {
    for (const to of RUN_STATES) {
      const expected = allowed.has(`${from} ${to}`);
      t.is(canTransition(from, to), expected, `${from} -> ${to}`);
      checked += 1;
      if (expected) permitted += 1;
    }
  }
  t.is(checked, 256);
  t.is(permitted, 71);
});

test('the exported table lists each allowed target once and nothing else', (t) => {
  let entries = 0;
  for (const from of RUN_STATES) {
    const targets = RUN_STATE_TRANSITIONS[from];
    t.is(new Set(targets).size, targets.length, `no repeats from ${from}`);
    for (const to of targets) t.true(allowed.has(`${from} ${to}`), `${from} -> ${to}`);
    entries += targets.length;
  }
  t.is(entries, 71);
});

test('no state lists itself, so staying put is never a transition', (t) => {
  for (const s of RUN_STATES) t.false(canTransition(s, s), s);
});

test('setting the current state again is a no-op', (t) => {
  for (const s of RUN_STATES) {
    const state = initialLifecycleState({ runState: s });
    const result = reduce(state, { type: 'set-state', state: s });
    t.is(result.state, state, s);
    t.deepEqual(result.events, []);
    t.deepEqual(result.effects, []);
  }
});

test('every allowed transition is accepted by set-state, every other one throws', (t) => {
  for (const from of RUN_STATES) {
    for (const to of RUN_STATES) {
      if (from === to) continue;
      const state = initialLifecycleState({ runState: from });
      if (allowed.has(`${from} ${to}`)) {
        t.is(reduce(state, { type: 'set-state', state: to }).state.runState, to);
      } else {
        const err = t.throws(() => reduce(state, { type: 'set-state', state: to }), {
          instanceOf: InvalidTransitionError,
        });
        t.is(err?.from, from);
        t.is(err?.to, to);
        t.is(err?.name, 'InvalidTransitionError');
        t.true(err?.message.includes(`'${from}'`) && err.message.includes(`'${to}'`));
      }
    }
  }
});

test('only internal-error and shutdown need a reset', (t) => {
  const needing: RunState[] = RUN_STATES.filter((s) => runStateNeedsReset(s));
  t.deepEqual(needing, ['internal-error', 'shutdown']);
  // They are exactly the states that cannot go back to running.
  t.deepEqual(
    RUN_STATES.filter((s) => s !== 'running' && !canTransition(s, 'running')),
    ['internal-error', 'shutdown'],
  );
});
