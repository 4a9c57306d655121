// The run states of a VM, as QMP names them (QAPI enum RunState), and the
// transitions QEMU allows between them. The table is data, not logic: every
// other part of the lifecycle asks `canTransition` before it moves the VM.

/** Every run state, by its QAPI name, in QAPI declaration order. */
export const RUN_STATES = [
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
] as const;

/** A run state of the VM (QAPI `RunState`). */
export type RunState = (typeof RUN_STATES)[number];

/** Whether `value` names a run state. */
export function isRunState(value: unknown): value is RunState {
  return typeof value === 'string' && (RUN_STATES as readonly string[]).includes(value);
}

/**
 * The states each state may move to, and no others. A Record forces a row for
 * every state, so a state added to RUN_STATES cannot be forgotten here.
 * Moving to the current state is not a transition and needs no entry.
 */
export const RUN_STATE_TRANSITIONS: Readonly<Record<RunState, readonly RunState[]>> = {
  debug: ['running', 'finish-migrate', 'prelaunch', 'suspended'],
  inmigrate: [
    'internal-error',
    'io-error',
    'paused',
    'running',
    'shutdown',
    'suspended',
    'watchdog',
    'guest-panicked',
    'finish-migrate',
    'prelaunch',
    'postmigrate',
    'colo',
  ],
  'internal-error': ['paused', 'finish-migrate', 'prelaunch'],
  'io-error': ['running', 'finish-migrate', 'prelaunch'],
  paused: ['running', 'finish-migrate', 'postmigrate', 'prelaunch', 'colo'],
  postmigrate: ['running', 'finish-migrate', 'prelaunch'],
  prelaunch: ['inmigrate', 'running', 'finish-migrate'],
  'finish-migrate': ['running', 'paused', 'postmigrate', 'prelaunch', 'colo'],
  'restore-vm': ['running', 'prelaunch'],
  running: [
    'debug',
    'internal-error',
    'io-error',
    'paused',
    'finish-migrate',
    'restore-vm',
    'save-vm',
    'shutdown',
    'watchdog',
    'guest-panicked',
    'colo',
    'suspended',
  ],
  'save-vm': ['running'],
  shutdown: ['paused', 'finish-migrate', 'prelaunch', 'colo'],
  suspended: ['running', 'finish-migrate', 'prelaunch', 'colo'],
  watchdog: ['running', 'finish-migrate', 'prelaunch', 'colo'],
  'guest-panicked': ['running', 'finish-migrate', 'prelaunch'],
  colo: ['running', 'prelaunch', 'shutdown'],
};

/**
 * Whether the table lets the VM move from `from` to `to`. Staying put is not
 * a move and is answered `false`; setting the current state again is a no-op
 * that `runStateAfter` accepts without asking.
 */
export function canTransition(from: RunState, to: RunState): boolean {
  const targets = RUN_STATE_TRANSITIONS[from] as readonly RunState[] | undefined;
  return targets !== undefined && targets.includes(to);
}

/** The states after which the VM must be reset before it can run again. */
export function runStateNeedsReset(state: RunState): boolean {
  return state === 'internal-error' || state === 'shutdown';
}

/**
 * A move between two run states that the table does not allow. QEMU treats
 * this as a bug and aborts the process; a library throws instead, so the
 * caller keeps its process and the VM keeps its previous state.
 */
export class InvalidTransitionError extends Error {
  override readonly name = 'InvalidTransitionError';

  constructor(
    /** The state the VM is in (and stays in). */
    readonly from: RunState,
    /** The state that was refused. */
    readonly to: RunState,
  ) {
    super(`invalid run state transition: '${from}' -> '${to}'`);
  }
}

/**
 * The state to move to when setting `to` from `from`: the same state is a
 * no-op, an allowed move returns `to`, anything else throws.
 */
export function runStateAfter(from: RunState, to: RunState): RunState {
  if (from === to) return from;
  if (!canTransition(from, to)) throw new InvalidTransitionError(from, to);
  return to;
}
