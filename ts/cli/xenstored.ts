// `xenrx xenstored`: the embedded XenStore daemon in the foreground.
import type { Command } from 'commander';

import { inExistingDirectory } from './args.js';
import { untilStopped } from './signals.js';

interface Options {
  socket: string;
  stateFile?: string;
  domainSocketDir?: string;
  quiet: boolean;
}

/** Adds the `xenstored` subcommand. */
export function addXenstoredCommand(program: Command): void {
  program
    .command('xenstored')
    .description('run a XenStore daemon until SIGINT or SIGTERM')
    .requiredOption('--socket <path>', 'privileged (dom0) socket, in an existing directory', inExistingDirectory('socket'))
    .option('--state-file <file>', 'persist the store here (atomic writes), in an existing directory', inExistingDirectory('state file'))
    .option('--domain-socket-dir <dir>', 'per-domain sockets (default: <socket>.d), in an existing directory', inExistingDirectory('domain socket directory'))
    .option('--quiet', 'do not log', false)
    .action(async (opts: Options) => {
      // Loaded here: --help must work without the native addon.
      const { Xenstored } = await import('../xenstore/index.js');
      const daemon = Xenstored.start({
        socket: opts.socket,
        stateFile: opts.stateFile,
        domainSocketDir: opts.domainSocketDir,
        log: !opts.quiet,
      });
      const persisted = opts.stateFile ? `, state in ${opts.stateFile}` : ', in memory';
      // Listen for signals before saying we are ready for them.
      const stopped = untilStopped();
      console.log(`xenstored: listening on ${daemon.socket}${persisted}`);
      const signal = await stopped;
      daemon.stop();
      console.log(`xenstored: stopped (${signal ?? 'aborted'})`);
    });
}
