export { addDevice, createDomainHome, devicePaths, removeDevice, removeDomainDevices, setOnline } from './toolstack.js';
export type { DevicePaths, DeviceSpec } from './toolstack.js';
export { SimFrontend } from './frontend.js';
export type { FrontendHooks } from './frontend.js';
export { SimConsoleFrontend } from './console-frontend.js';
export { SimPrimaryConsoleFrontend, writePrimaryConsoleNodes } from './primary-console-frontend.js';
export type { PrimaryConsoleNodes } from './primary-console-frontend.js';
export { SimulatedHost } from './host.js';
export type { CustomDeviceSpec, DiskSpec, Guest, NicSpec, SimulatedHostOptions } from './host.js';
export { SimNetFrontend } from './net-frontend.js';
export type { SimNetFrontendOptions } from './net-frontend.js';
export { SimBlockFrontend } from './block-frontend.js';
export type {
  BlkifProtocolName,
  NativeSimBlkFront,
  SimBlockFeatures,
  SimBlockFrontendOptions,
  SimBlockFrontendStats,
  SimBlockVerifyOptions,
  SimBlockVerifyRun,
} from './block-frontend.js';
export type { SimBlkVerifyReport, SimNetFrontStats } from '../native.js';
