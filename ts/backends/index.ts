export { ConsoleService } from './console.js';
export type { ConsoleOptions, ConsoleOutput } from './console.js';
