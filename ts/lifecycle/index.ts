export {
  InvalidTransitionError,
  RUN_STATES,
  RUN_STATE_TRANSITIONS,
  canTransition,
  isRunState,
  runStateNeedsReset,
} from './run-state.js';
export type { RunState } from './run-state.js';
export { DEFAULT_CONFIG, NOTIFIER_LISTS, SHUTDOWN_CAUSES, WAKEUP_REASONS, isGuestCause } from './types.js';
export type {
  GuestPanicAction,
  GuestPanicInformation,
  KillInfo,
  LifecycleAction,
  LifecycleCommand,
  LifecycleConfig,
  LifecycleEffect,
  LifecycleEvent,
  LifecycleRequest,
  LifecycleState,
  NotifierCall,
  NotifierCallOf,
  NotifierList,
  PanicAction,
  PendingRequests,
  RebootAction,
  Reduction,
  RegistryAction,
  RequestCause,
  S390CrashReason,
  ShutdownAction,
  ShutdownCause,
  StateHandlerEntry,
  WakeupReason,
} from './types.js';
export { initialLifecycleState, reduce } from './reducer.js';
export type { InitialLifecycle } from './reducer.js';
export { EXIT_FAILURE, EXIT_SUCCESS, killReport } from './main-loop.js';
export { describePanic } from './requests.js';
export { LifecycleRequestError, createLifecycle } from './stream.js';
export type { Lifecycle, LifecycleHandle, LifecycleOptions, Notifier, StateHandler } from './stream.js';
export {
  DEFAULT_DOMAIN_POLL_MS,
  DomainWatcher,
  actionsForChange,
  diffDomains,
  pollingDomainSource,
  simDomainSource,
  xenDomainSource,
} from './domains.js';
export type { DomainChange, DomainInfoSource, XenDomainSourceOptions } from './domains.js';
