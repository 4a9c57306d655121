export { GNTST, PlatformError, gntstName } from './errors.js';
export { EventChannel, GrantDevice, GrantMapping, GuestGrantTable, SimHost, SimHypervisor } from './sim.js';
export type { DomainInfo, DomainOptions, GrantSpan, ShutdownReason } from './sim.js';
