export { ConsoleService, MAX_CONSOLE_LINE, splitLines } from './console.js';
export type { ConsoleOptions, ConsoleOutput } from './console.js';
export { DEFAULT_CONSOLE_HISTORY, PrimaryConsoleService } from './primary-console.js';
export type {
  PrimaryConsoleDomains,
  PrimaryConsoleLogEntry,
  PrimaryConsoleOptions,
  PrimaryConsoleOutput,
  PrimaryConsoleReadOptions,
} from './primary-console.js';
export { findConsoleTty, openConsoleTerminal } from './console-tty.js';
export type { ConsoleTty } from './console-tty.js';
export { BlockService, BlockStorage, MAX_RING_PAGE_ORDER, defaultStorage } from './block.js';
export type { BlockOptions, DiskConfig } from './block.js';
export type { BlockStorageHandler } from './block-storage-js.js';
export { MAX_NET_QUEUES, NetService } from './net.js';
export type { NetOptions, Packet, VifConfig, VifPackets, VifPath, VifStats } from './net.js';
export { formatMac, frameFlow, isGroupDestination, parseMac } from './net-frames.js';
export { learningSwitch } from './net-switch.js';
