// `xenrx build-native`: compile the addon from the Rust sources shipped in the
// package, for platforms without a prebuilt binary (npm does not run install
// scripts of dependencies, so this is an explicit step for the user).
import { spawn } from 'node:child_process';
import { copyFile, mkdir, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { cachedAddonPath } from '../native.js';
import { nativeFileName } from '../native-target.js';
import { packageRoot } from '../package-info.js';

/** Options of a native build. */
export interface BuildNativeOptions {
  /** Compile in the real-hypervisor platform (cargo feature `xen`). */
  readonly xen: boolean;
  /** Build without optimisations (faster to compile, slower to run). */
  readonly debug: boolean;
  /** Package root holding Cargo.toml and native/; defaults to this package. */
  readonly root?: string;
}

function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: 'inherit', env });
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ENOENT'
          ? new Error(`${command} was not found on PATH: install Rust (https://rustup.rs) to build the native addon`)
          : err,
      );
    });
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} failed (${signal ?? `exit code ${String(code)}`})`));
    });
  });
}

/** Copies a file into place whole: a process loading it never sees half a file. */
async function install(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  const partial = `${to}.partial`;
  await copyFile(from, partial);
  await rename(partial, to);
}

/**
 * Compiles the addon and installs it where the loader looks first, and in
 * the user's cache (for this package version), where the loader looks last:
 * a reinstall of the package, which empties its directory, still finds it.
 * Cargo's build directory is kept in the cache too (`CARGO_TARGET_DIR`
 * overrides it), out of the package, so it neither weighs on the install
 * nor is lost with it. Returns the path of the installed addon.
 */
export async function buildNative(options: BuildNativeOptions): Promise<string> {
  const root = options.root ?? packageRoot;
  const cached = cachedAddonPath();
  const targetDir = process.env['CARGO_TARGET_DIR'] ?? join(dirname(dirname(cached)), 'target');
  const args = ['build', '--locked', '--lib', '--manifest-path', join(root, 'crates', 'xen-core', 'Cargo.toml')];
  if (!options.debug) args.push('--release');
  if (options.xen) args.push('--features', 'xen');
  await run('cargo', args, { ...process.env, CARGO_TARGET_DIR: targetDir });

  const built = join(targetDir, options.debug ? 'debug' : 'release', 'libxen_core.so');
  const destination = join(root, 'native', nativeFileName());
  await install(built, destination);
  await install(built, cached);
  return destination;
}
