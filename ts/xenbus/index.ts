export { XenbusState, parseXenbusInt, xenbusStateName } from './state.js';
export { newDevice, reduce as reduceDevice } from './machine.js';
export type { MachineOptions } from './machine.js';
export type { Busy, Device, DeviceEffect, DeviceEvent, DeviceKey, LogLevel, OpName, Phase, Removal, Side, Transition } from './types.js';
export type { DeviceContext, DeviceDirectory, DeviceOps } from './context.js';
export { LogLevels, stderrLogger } from './log.js';
export type { LogEntry, Logger } from './log.js';
export { XenbusRegistry } from './registry.js';
export type { DomainLiveness, RegisterOptions, RegistryOptions } from './registry.js';
