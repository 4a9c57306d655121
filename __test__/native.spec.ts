import { readFileSync } from 'node:fs';

import test from 'ava';

import { nativeInfo, version } from '../ts/index.js';
import { nativeFileName, platformPackageName, platformTag } from '../ts/native-target.js';

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
