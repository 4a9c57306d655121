// Child processes for CLI tests: the xenrx CLI from its sources, and other programs.
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cliEntry = fileURLToPath(new URL('../../ts/cli/main.ts', import.meta.url));

export interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program to completion. */
export function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The node arguments that run the xenrx CLI from its sources with `args`. */
export function xenrxNodeArgs(args: readonly string[]): string[] {
  return ['--import', 'tsx', cliEntry, ...args];
}

/** Runs the xenrx CLI to completion. */
export function runXenrx(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Result> {
  return run(process.execPath, ['--import', 'tsx', cliEntry, ...args], env);
}

/** A long-running xenrx command, with its output so far. */
export interface Background {
  readonly child: ChildProcessWithoutNullStreams;
  output(): string;
  /** Resolves once the output matches `pattern`. */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
  /** Resolves with the exit code once the process has exited. */
  exited(): Promise<number | null>;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts the xenrx CLI in the background. */
export function startXenrx(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Background {
  return startProgram(process.execPath, ['--import', 'tsx', cliEntry, ...args], env);
}

/**
 * Starts the xenrx CLI on a terminal of its own (a pseudo-terminal made by
 * util-linux's `script`), as a user at a console runs it: what is written
 * to the child's stdin is typed there (`\x03` is Ctrl-C).
 */
export function startXenrxOnTerminal(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Background {
  const quote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;
  // exec: the CLI is the terminal's only foreground process, so Ctrl-C
  // reaches it alone (a shell waiting for it would exit 130 on its own).
  // A terminal 160 columns wide (script's has its parent's size, none here).
  const command = `stty cols 160 && exec ${[process.execPath, '--import', 'tsx', cliEntry, ...args].map(quote).join(' ')}`;
  // script runs the command with $SHELL -c: a shell that takes it.
  return startProgram('script', ['--quiet', '--flush', '--return', '--command', command, '/dev/null'], { ...env, SHELL: '/bin/sh' });
}

/**
 * Starts a program in the background. `waitFor`'s bound only keeps a broken
 * test from hanging: it is far beyond what any step takes.
 */
export function startProgram(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Background {
  const child = spawn(command, args, { env });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (c: string): void => {
    out += c;
    for (const l of listeners) l();
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    child,
    output: () => out,
    waitFor: (pattern, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (pattern.test(out)) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out waiting for ${String(pattern)}; output:\n${out}`));
        }, ms);
        listeners.add(check);
        check();
      }),
    exited: () => exited,
    stop: (signal = 'SIGTERM') => {
      child.kill(signal);
      return exited;
    },
  };
}
