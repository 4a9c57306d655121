import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import test from 'ava';

import { XENSTORE_ERRNOS, nativeInfo, version } from '../ts/index.js';
import { native } from '../ts/native.js';
import { nativeFileName, platformPackageName, platformTag } from '../ts/native-target.js';
import { run, runXenrx } from './helpers/process.js';
import type { Result } from './helpers/process.js';
import { tempDir } from './helpers/xenstore.js';

const cargoVersion = /^version = "([^"]+)"/m.exec(
  readFileSync(new URL('../crates/xen-core/Cargo.toml', import.meta.url), 'utf8'),
)?.[1];
const rustArch: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64' };

test('the native core loads and has the package version', (t) => {
  const info = nativeInfo();
  t.is(info.version, version);
  t.is(cargoVersion, version, 'crates/xen-core/Cargo.toml and package.json versions differ');
});

test('the native core was built for this machine', (t) => {
  const info = nativeInfo();
  t.true(info.target.startsWith(`${rustArch[process.arch] ?? process.arch}-linux-`), info.target);
});

test('a default build leaves the real-hypervisor platform out', (t) => {
  // `npm ci` builds without the cargo feature `xen`; XENRX_CARGO_FEATURES=xen is set
  // by the CI job that builds with it.
  t.is(nativeInfo().xenPlatform, (process.env['XENRX_CARGO_FEATURES'] ?? '').split(/[ ,]+/).includes('xen'));
});

test('platform names follow napi-rs conventions', (t) => {
  t.is(platformTag('linux', 'x64', 'gnu'), 'linux-x64-gnu');
  t.is(platformTag('linux', 'arm64', 'musl'), 'linux-arm64-musl');
  t.is(platformTag('darwin', 'arm64'), 'darwin-arm64');
  t.is(nativeFileName('linux-arm64-gnu'), 'xenrx.linux-arm64-gnu.node');
  t.is(platformPackageName('linux-x64-gnu'), 'xenrx-linux-x64-gnu');
});

test('the per-platform packages under npm/ match the napi targets', (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    napi: { targets: string[] };
  };
  for (const [triple, tag] of [
    ['x86_64-unknown-linux-gnu', 'linux-x64-gnu'],
    ['aarch64-unknown-linux-gnu', 'linux-arm64-gnu'],
  ] as const) {
    t.true(pkg.napi.targets.includes(triple), triple);
    const sub = JSON.parse(readFileSync(new URL(`../npm/${tag}/package.json`, import.meta.url), 'utf8')) as {
      name: string;
      version: string;
      main: string;
    };
    t.is(sub.name, platformPackageName(tag));
    t.is(sub.version, version);
    t.is(sub.main, nativeFileName(tag));
  }
});

test('the XenStore error table written out in TypeScript is the native core\'s', (t) => {
  t.deepEqual([...XENSTORE_ERRNOS], native.xenstoreErrnos());
});

/** Runs `code` (ES module) in a child whose addon cannot be found, with `cacheDir` as the user's cache. */
function withoutAddon(code: string, cacheDir: string): Promise<Result> {
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: join(cacheDir, 'no-such-addon.node'), XENRX_CACHE_DIR: cacheDir };
  return run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], env);
}

const root = fileURLToPath(new URL('..', import.meta.url));
const entry = pathToFileURL(join(root, 'ts', 'index.ts')).href;

test('without an addon the package imports, its pure parts work, and the native core says what to do', async (t) => {
  const cache = tempDir(t);
  const r = await withoutAddon(
    `import { inspect } from 'node:util';
     import { canTransition, nativeInfo, nativeLoad, XenStore } from '${entry}';
     console.log('inspected', inspect(await import('${entry}')).length > 0);
     console.log('pure', canTransition('running', 'paused'));
     const load = nativeLoad(); console.log('load', load.file === undefined, load.error?.name);
     try { nativeInfo(); } catch (e) { console.log('native', e.name, e.code, e.message); }
     await XenStore.connect({ path: '/nonexistent' }).catch((e) => console.log('connect', e.name));`,
    cache,
  );
  t.is(r.code, 0, r.stderr);
  // Looking at the whole module (console.log of it) loads nothing and throws nothing.
  t.regex(r.stdout, /^inspected true$/m);
  t.regex(r.stdout, /^pure true$/m);
  t.regex(r.stdout, /^load true NativeAddonMissing$/m);
  t.regex(r.stdout, /^native NativeAddonMissing ERR_XENRX_NO_ADDON xenrx: no native addon for \S+: .*npx xenrx build-native/m);
  t.regex(r.stdout, /^connect NativeAddonMissing$/m);
  // The command line: --help works, info fails with the same advice.
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: join(cache, 'no-such-addon.node'), XENRX_CACHE_DIR: cache };
  t.is((await runXenrx(['--help'], env)).code, 0);
  const info = await runXenrx(['info'], env);
  t.is(info.code, 1);
  t.regex(info.stderr, /^xenrx: no native addon for \S+: .*npx xenrx build-native/);
});

test('an addon that build-native left in the cache is found after the package lost its own', async (t) => {
  const cache = tempDir(t);
  // What build-native installs beside the package, it also keeps here.
  const cached = join(cache, version, nativeFileName());
  mkdirSync(dirname(cached), { recursive: true });
  copyFileSync(join(root, 'native', nativeFileName()), cached);
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: join(cache, 'no-such-addon.node'), XENRX_CACHE_DIR: cache };
  const info = await runXenrx(['info'], env);
  t.is(info.code, 0, info.stderr);
  const parsed = JSON.parse(info.stdout) as { addon: string; version: string; xen: string };
  t.is(parsed.addon, cached);
  t.is(parsed.version, version);
  t.regex(parsed.xen, /^(found|not found) /);
});
