export { addDevice, createDomainHome, devicePaths, removeDevice, removeDomainDevices, setOnline } from './toolstack.js';
export type { DevicePaths, DeviceSpec } from './toolstack.js';
export { SimFrontend } from './frontend.js';
export type { FrontendHooks } from './frontend.js';
export { SimConsoleFrontend } from './console-frontend.js';
export { SimulatedHost } from './host.js';
export type { Guest, SimulatedHostOptions } from './host.js';
