// The one place the TypeScript layer touches the native addon.
//
// The addon is loaded on first use, not on import: without one, the parts
// of the package that need none (the reducers, the state machines, the
// path helpers) still work, and the first use of the native core throws
// one error saying what to install or run. It is looked for where napi-rs's
// generated loader (native/binding.js) looks, then in the user's cache:
//
// 1. `native/xenrx.<platform>.node` in the package (a local build);
// 2. the per-platform package `xenrx-<platform>` (the prebuilt binary,
//    an optional dependency);
// 3. the addon `xenrx build-native` keeps in the user's cache for this
//    package version, which survives a reinstall of the package.
//
// `NAPI_RS_NATIVE_LIBRARY_PATH`, as for napi's loader, names a file to
// load instead of the first two.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type * as Binding from '../native/binding.js';
import { nativeFileName, platformPackageName, platformTag } from './native-target.js';
import { packageInfo } from './package-info.js';

/** The native core's exports. */
export type NativeBinding = typeof Binding;

/** Where `xenrx build-native` keeps the addon it built for this package version. */
export function cachedAddonPath(version: string = packageInfo.version): string {
  const base = process.env['XENRX_CACHE_DIR'] || join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'xenrx');
  return join(base, version, nativeFileName());
}

/** The native addon could not be loaded: says what to install, or to build. */
export class NativeAddonMissing extends Error {
  override readonly name = 'NativeAddonMissing';
  readonly code = 'ERR_XENRX_NO_ADDON';

  /** `failed`: the file that was there and would not load, and why. */
  constructor(failed?: { readonly file: string; readonly error: unknown }) {
    const tag = platformTag();
    const pkg = `${platformPackageName(tag)}@${packageInfo.version}`;
    const why = failed
      ? `${failed.file} would not load: ${(failed.error instanceof Error ? failed.error.message : String(failed.error)).split('\n')[0] ?? ''}`
      : `neither native/${nativeFileName(tag)}, nor the package ${pkg}, nor a build in ${cachedAddonPath()} is there`;
    super(
      `xenrx: no native addon for ${tag}: ${why}. ` +
        `Install the prebuilt one (npm install ${pkg}), ` +
        `or build it from the sources in the package: npx xenrx build-native (needs Rust; --xen for real Xen).`,
      failed ? { cause: failed.error } : undefined,
    );
  }
}

const require = createRequire(import.meta.url);

/** The addon files to try, in order. */
function candidates(): string[] {
  const override = process.env['NAPI_RS_NATIVE_LIBRARY_PATH'];
  const found: string[] = [];
  if (override) {
    found.push(override);
  } else {
    found.push(fileURLToPath(new URL(`../native/${nativeFileName()}`, import.meta.url)));
    try {
      found.push(require.resolve(platformPackageName()));
    } catch {
      // Not installed: the next place, then.
    }
  }
  found.push(cachedAddonPath());
  return found;
}

let loaded: { readonly binding: NativeBinding; readonly file: string } | undefined;

/** Loads the addon (once); throws NativeAddonMissing if there is none. */
function loadAddon(): { readonly binding: NativeBinding; readonly file: string } {
  if (loaded) return loaded;
  for (const file of candidates()) {
    if (!existsSync(file)) continue;
    try {
      loaded = { binding: require(file) as NativeBinding, file };
    } catch (error) {
      // A file that is there but does not load (another libc, a truncated
      // copy) is reported as it is: looking further would hide it.
      throw new NativeAddonMissing({ file, error });
    }
    native = loaded.binding;
    return loaded;
  }
  throw new NativeAddonMissing();
}

/** How the addon was found, for `xenrx info`. */
export interface NativeLoad {
  /** The addon's file, if one loaded. */
  readonly file: string | undefined;
  /** Why none did. */
  readonly error: NativeAddonMissing | undefined;
}

/** Loads the addon if it is not yet, and says which file it is, or why there is none. */
export function nativeLoad(): NativeLoad {
  try {
    return { file: loadAddon().file, error: undefined };
  } catch (error) {
    if (error instanceof NativeAddonMissing) return { file: undefined, error };
    throw error;
  }
}

/**
 * The native core. Until its first use this is a stand-in that loads the
 * addon; the export is then the addon itself (ES modules' exports are live
 * bindings, so importers see it), and later uses cost nothing extra.
 */
export let native: NativeBinding = new Proxy({} as NativeBinding, {
  get(_target, key) {
    // Inspecting the stand-in (console.log, await) does not load anything.
    if (typeof key === 'symbol' || key === 'then') return undefined;
    return Reflect.get(loadAddon().binding, key) as unknown;
  },
});

/**
 * An object of the native core (an enum) read on first use, so that the
 * module exporting it loads without the addon.
 */
export function lazyNative<T extends object>(read: (binding: NativeBinding) => T): T {
  let real: T | undefined;
  const get = (): T => (real ??= read(loadAddon().binding));
  // Looking at the object (listing its keys, console.log) without an addon
  // finds it empty; reading a member says why there is none.
  const peek = (): object => {
    try {
      return get();
    } catch (err) {
      if (err instanceof NativeAddonMissing) return {};
      throw err;
    }
  };
  return new Proxy({} as T, {
    get: (_t, key) => (typeof key === 'symbol' ? Reflect.get(peek(), key) : Reflect.get(get(), key)) as unknown,
    has: (_t, key) => Reflect.has(peek(), key),
    ownKeys: () => Reflect.ownKeys(peek()),
    getOwnPropertyDescriptor: (_t, key) => {
      const d = Reflect.getOwnPropertyDescriptor(peek(), key);
      // Reported configurable: the (empty) target does not hold it.
      return d ? { ...d, configurable: true } : undefined;
    },
  });
}

export type {
  BlkGeometry,
  BlkQueueStats,
  ConsoleBackendStats,
  DomainInfoJs,
  NativeBlkQueue,
  NativeBlkStorage,
  NativeConsoleBackend,
  NativeConsoleFrontend,
  NativeEventChannel,
  NativeGrantDevice,
  NativeGrantMapping,
  NativeGuestGrantTable,
  NativeInfo,
  NativePlatform,
  NativeSimHost,
  NativeSimHypervisor,
  NativeXenstored,
  NativeXsClient,
  ShutdownReason,
  XenStoreErrno,
  XsWatchEvent,
} from '../native/binding.js';
export type { GntSt, NativeSimBlkFront, SimBlkFrontStats, SimBlkVerifyReport } from '../native/binding.js';
export type {
  NativeSimNetFront,
  NativeSwitch,
  NativeSwitchPort,
  NativeTapLink,
  NativeVifQueue,
  NetPacket,
  SimNetFrontStats,
  TapLinkStats,
  VifQueueOptions,
  VifQueueStats,
} from '../native/binding.js';
