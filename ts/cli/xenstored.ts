// `xenrx xenstored`: the embedded XenStore daemon in the foreground.
import type { Command } from 'commander';

import { inExistingDirectory, integer } from './args.js';
import { untilStopped } from './signals.js';

interface Options {
  socket: string;
  stateFile?: string;
  domainSocketDir?: string;
  fsync: boolean;
  maxDomainConnections: number;
  maxDomainOutput: number;
  quiet: boolean;
}

/** Adds the `xenstored` subcommand. */
export function addXenstoredCommand(program: Command): void {
  program
    .command('xenstored')
    .description('run a XenStore daemon until SIGINT or SIGTERM')
    .requiredOption('--socket <path>', 'privileged (dom0) socket, in an existing directory', inExistingDirectory('socket'))
    .option(
      '--state-file <file>',
      'persist the store here, in an existing directory: a snapshot plus a journal beside it (<file>.journal.N), locked against a second daemon',
      inExistingDirectory('state file'),
    )
    .option(
      '--no-fsync',
      'with --state-file: do not wait for the disk before replying. Faster writes, and an acknowledged change still survives the daemon being killed, but not a crash or power loss of the machine (C xenstored keeps its store in memory only)',
    )
    .option('--max-domain-connections <n>', 'connections one domain may open on its socket (0: unlimited)', integer('a connection count', 0, 65536), 8)
    .option(
      '--max-domain-output <bytes>',
      "output one domain's connections may leave unread before their oldest watch events are dropped (0: unlimited)",
      integer('a byte count', 0, 2 ** 31),
      1 << 20,
    )
    .option('--domain-socket-dir <dir>', 'per-domain sockets (default: <socket>.d), in an existing directory', inExistingDirectory('domain socket directory'))
    .option('--quiet', 'print nothing (not even "listening" or "stopped"): wait for the socket instead', false)
    .action(async (opts: Options) => {
      // Loaded here: --help must work without the native addon.
      const { Xenstored } = await import('../xenstore/index.js');
      const daemon = Xenstored.start({
        socket: opts.socket,
        stateFile: opts.stateFile,
        domainSocketDir: opts.domainSocketDir,
        fsync: opts.fsync,
        maxDomainConnections: opts.maxDomainConnections,
        maxDomainOutput: opts.maxDomainOutput,
        log: !opts.quiet,
      });
      const persisted = opts.stateFile ? `, state in ${opts.stateFile}${opts.fsync ? '' : ' (no fsync)'}` : ', in memory';
      // Listen for signals before saying we are ready for them.
      const stopped = untilStopped();
      const say = opts.quiet ? () => undefined : (line: string) => console.log(line);
      say(`xenstored: listening on ${daemon.socket}${persisted}`);
      const signal = await stopped;
      daemon.stop();
      say(`xenstored: stopped (${signal ?? 'aborted'})`);
    });
}
