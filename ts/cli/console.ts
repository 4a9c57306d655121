// `xenrx console <domid>`: attaches the terminal to a guest's console, as
// `xl console` does: it finds the console's pseudo-terminal in XenStore
// (`tty` of the console's frontend directory) and copies both ways until
// Ctrl-] or until the console goes away.
import { closeSync, openSync, writeSync } from 'node:fs';
import { ReadStream } from 'node:tty';

import type { Command } from 'commander';

import type { XenStore } from '../xenstore/index.js';

/** The escape that detaches, as in xl console: Ctrl-]. */
const ESCAPE = 0x1d;

interface Options {
  socket?: string;
  devid: string;
}

/** Where the console's pseudo-terminal is: a xenbus console device, or the primary console. */
export async function findConsoleTty(xs: XenStore, domid: number, devid: number): Promise<string> {
  const home = `/local/domain/${String(domid)}`;
  const candidates = [`${home}/device/console/${String(devid)}/tty`, ...(devid === 0 ? [`${home}/console/tty`] : [])];
  for (const node of candidates) {
    const tty = await xs.tryRead(node);
    if (tty) return tty;
  }
  throw new Error(`domain ${String(domid)} has no console ${String(devid)} with a terminal (looked at ${candidates.join(', ')})`);
}

/** Adds the `console` subcommand. */
export function addConsoleCommand(program: Command): void {
  program
    .command('console')
    .description("attach to a guest's console (Ctrl-] detaches)")
    .argument('<domid>', 'the guest')
    .option('--socket <path>', 'XenStore socket (default: $XENSTORED_PATH, /run/xenstored/socket)')
    .option('--devid <n>', 'console device id', '0')
    .action(async (domidArg: string, opts: Options) => {
      const domid = Number.parseInt(domidArg, 10);
      if (!Number.isInteger(domid) || domid < 0) throw new Error(`bad domain id ${domidArg}`);
      // Loaded here: --help must work without the native addon.
      const { XenStore } = await import('../xenstore/index.js');
      const xs = await XenStore.connect({ path: opts.socket, reconnect: false });
      let tty: string;
      try {
        tty = await findConsoleTty(xs, domid, Number.parseInt(opts.devid, 10));
      } finally {
        xs.close();
      }
      // A pseudo-terminal is a tty: libuv polls it, no thread blocks on it.
      const fd = openSync(tty, 'r+');
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
