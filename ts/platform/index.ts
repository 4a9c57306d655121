export { GntSt, PlatformError, gntstName } from './errors.js';
export { Platform, XEN_EVTCHN_DEVICE } from './platform.js';
export type { EventChannelBinding, PlatformKind, PlatformOptions } from './platform.js';
export { EventChannel, GrantDevice, GrantMapping, GuestGrantTable, SimHost, SimHypervisor } from './sim.js';
export type { DomainInfo, DomainOptions, GrantSpan, ShutdownReason } from './sim.js';
