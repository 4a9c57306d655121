// `xenrx console <domid>`: attaches the terminal to a guest's console, as
// `xl console` does: it finds the console's pseudo-terminal in XenStore
// (`tty` of the console's frontend directory: console device 0 by default,
// or the guest's primary console when it has no console device 0), checks
// that the backend published it for a live console and that it is a
// pseudo-terminal (see backends/console-tty.ts), and copies both ways
// until Ctrl-] or until the console goes away.
import { closeSync, writeSync } from 'node:fs';
import { ReadStream } from 'node:tty';

import type { Command } from 'commander';

import { findConsoleTty, openConsoleTerminal } from '../backends/console-tty.js';
import { devid as devidArg, domid as domidArg } from './args.js';

/** The escape that detaches, as in xl console: Ctrl-]. */
const ESCAPE = 0x1d;

interface Options {
  socket?: string;
  devid: number;
}

/** Adds the `console` subcommand. */
export function addConsoleCommand(program: Command): void {
  program
    .command('console')
    .description("attach to a guest's console (Ctrl-] detaches)")
    .argument('<domid>', 'the guest', domidArg)
    .option('--socket <path>', 'XenStore socket (default: $XENSTORED_PATH, /run/xenstored/socket)')
    .option('--devid <n>', 'console device id (0: device 0, or the primary console if the guest has no device 0)', devidArg, 0)
    .action(async (domid: number, opts: Options) => {
      // Loaded here: --help must work without the native addon.
      const { XenStore } = await import('../xenstore/index.js');
      const xs = await XenStore.connect({ path: opts.socket, reconnect: false });
      let tty: string;
      try {
        tty = (await findConsoleTty(xs, domid, opts.devid)).path;
      } finally {
        xs.close();
      }
      // A pseudo-terminal is a tty: libuv polls it, no thread blocks on it.
      const fd = openConsoleTerminal(tty);
      const guest = new ReadStream(fd);
      const stdin = process.stdin;
      const raw = stdin.isTTY;
      if (raw) stdin.setRawMode(true);
      await new Promise<void>((resolve) => {
        let done = false;
        const finish = (): void => {
          if (done) return;
          done = true;
          if (raw) stdin.setRawMode(false);
          // Let go of both ends, so nothing keeps the process alive.
          stdin.destroy();
          guest.destroy();
          resolve();
        };
        guest.on('data', (chunk: Buffer) => process.stdout.write(chunk));
        guest.on('end', finish);
        guest.on('error', finish);
        stdin.on('data', (chunk: Buffer) => {
          const at = chunk.indexOf(ESCAPE);
          const data = at >= 0 ? chunk.subarray(0, at) : chunk;
          try {
            if (data.length > 0) writeSync(fd, data);
          } catch {
            finish();
          }
          if (at >= 0) finish();
        });
        stdin.on('end', finish);
      });
      try {
        closeSync(fd);
      } catch {
        // Already closed with the stream.
      }
    });
}
