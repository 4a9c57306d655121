// Public entry point of the xenrx package.
import { native } from './native.js';
import type { NativeInfo } from './native.js';
import { packageInfo } from './package-info.js';

export type { NativeInfo, NativeLoad } from './native.js';
export { NativeAddonMissing, cachedAddonPath, nativeLoad } from './native.js';

/** Version of the xenrx package. */
export const version: string = packageInfo.version;

/** Describes the loaded native core: version, target, optional parts. */
export function nativeInfo(): NativeInfo {
  return native.nativeInfo();
}

export * from './xenstore/index.js';
export * from './platform/index.js';
export * from './lifecycle/index.js';
export * from './xenbus/index.js';
export * from './simhost/index.js';
export * from './backends/index.js';
export * from './stats/index.js';
