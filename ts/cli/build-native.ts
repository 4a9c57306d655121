// `xenrx build-native`: compile the addon from the Rust sources shipped in the
// package, for platforms without a prebuilt binary (npm does not run install
// scripts of dependencies, so this is an explicit step for the user).
import { spawn } from 'node:child_process';
import { copyFile, mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';

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

/** Compiles the addon and installs it where the loader looks first. Returns its path. */
export async function buildNative(options: BuildNativeOptions): Promise<string> {
  const root = options.root ?? packageRoot;
  const targetDir = process.env['CARGO_TARGET_DIR'] ?? join(root, 'target');
  const args = ['build', '--locked', '--lib', '--manifest-path', join(root, 'crates', 'xen-core', 'Cargo.toml')];
  if (!options.debug) args.push('--release');
  if (options.xen) args.push('--features', 'xen');
  await run('cargo', args, { ...process.env, CARGO_TARGET_DIR: targetDir });

  const built = join(targetDir, options.debug ? 'debug' : 'release', 'libxen_core.so');
  const destination = join(root, 'native', nativeFileName());
  await mkdir(join(root, 'native'), { recursive: true });
  // Copy then rename, so a process loading the addon never sees half a file.
  const partial = `${destination}.partial`;
  await copyFile(built, partial);
  await rename(partial, destination);
  return destination;
}
