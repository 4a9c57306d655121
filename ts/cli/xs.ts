// `xenrx xs ...`: a small XenStore client, like Xen's xenstore-utils.
import type { Command } from 'commander';

import type { XenStore } from '../xenstore/index.js';
import { integer } from './args.js';
import { untilStopped } from './signals.js';
import { lsLayout, printLs } from './xs-ls.js';

interface Global {
  socket?: string;
}

async function withClient<T>(cmd: Command, run: (xs: XenStore) => Promise<T>): Promise<T> {
  const { socket } = cmd.optsWithGlobals<Global>();
  // Loaded here: --help must work without the native addon.
  const { XenStore } = await import('../xenstore/index.js');
  const xs = await XenStore.connect({ path: socket, reconnect: false });
  try {
    return await run(xs);
  } finally {
    xs.close();
  }
}

/** Adds the `xs` subcommand group. */
export function addXsCommand(program: Command): void {
  const xs = program
    .command('xs')
    .description('a XenStore client, as xenstore-utils')
    .option('--socket <path>', 'daemon socket (default: $XENSTORED_PATH, /run/xenstored/socket, /dev/xen/xenbus)');

  xs.command('read')
    .description('print the values of nodes, one per line')
    .argument('<path...>')
    .action(async (paths: string[], _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const p of paths) console.log(await c.read(p));
      });
    });

  xs.command('write')
    .description('write values: <path> <value> [<path> <value>...]')
    .argument('<path-value...>')
    .action(async (args: string[], _opts: unknown, cmd: Command) => {
      if (args.length % 2 !== 0) throw new Error('xs write takes pairs of <path> <value>');
      await withClient(cmd, async (c) => {
        for (let i = 0; i < args.length; i += 2) await c.write(args[i] ?? '', args[i + 1] ?? '');
      });
    });

  xs.command('exists')
    .description('exit 0 if every node exists, 1 otherwise (prints nothing), like xenstore-exists')
    .argument('<path...>')
    .action(async (paths: string[], _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const p of paths) {
          if (!(await c.exists(p))) {
            process.exitCode = 1;
            return;
          }
        }
      });
    });

  xs.command('list')
    .description("print a node's children, one name per line, like xenstore-list")
    .argument('<path...>')
    .option('-p, --prefix', 'print each name after its parent\'s path and a slash', false)
    .action(async (paths: string[], opts: { prefix: boolean }, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const p of paths) for (const name of await c.list(p)) console.log(opts.prefix ? `${p}/${name}` : name);
      });
    });

  xs.command('ls')
    .description('print the subtree below a node with its values, as xenstore-ls does')
    .argument('[path...]', 'nodes', ['/'])
    .option('-f, --full', 'full paths, lines not cut to the terminal', false)
    .option('-p, --perms', 'each node\'s permissions, written as Xen writes them: (n0,r1)', false)
    .action(async (paths: string[], opts: { full: boolean; perms: boolean }, cmd: Command) => {
      const layout = lsLayout(opts, process.stdout.isTTY ? process.stdout.columns : undefined);
      await withClient(cmd, async (c) => {
        for (const p of paths) await printLs(c, p, layout, (line) => process.stdout.write(`${line}\n`));
      });
    });

  xs.command('mkdir')
    .description('create nodes with empty values (and any missing parents); existing ones are left alone')
    .argument('<path...>')
    .action(async (paths: string[], _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const p of paths) await c.mkdir(p);
      });
    });

  xs.command('rm')
    .description('remove nodes and their subtrees')
    .argument('<path...>')
    .action(async (paths: string[], _opts: unknown, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const p of paths) await c.rm(p);
      });
    });

  xs.command('chmod')
    .description('set permissions, e.g. `chmod /p n0 r5` (owner first)')
    .argument('<path>')
    .argument('<perm...>')
    .action(async (path: string, perms: string[], _opts: unknown, cmd: Command) => {
      await withClient(cmd, (c) => c.setPerms(path, perms));
    });

  xs.command('watch')
    .description('print changed paths at or below a node until Ctrl-C')
    .argument('<path>')
    .option('-n, --count <n>', 'exit after this many events', integer('the count', 1, Number.MAX_SAFE_INTEGER))
    .action(async (path: string, opts: { count?: number }, cmd: Command) => {
      await withClient(cmd, async (c) => {
        let seen = 0;
        const done = new AbortController();
        await new Promise<void>((resolve, reject) => {
          const sub = c.watch$(path).subscribe({
            next: (p) => {
              console.log(p);
              if (opts.count !== undefined && ++seen >= opts.count) done.abort();
            },
            error: (err: unknown) => {
              done.abort();
              reject(err instanceof Error ? err : new Error(String(err)));
            },
          });
          void untilStopped(done.signal).then(() => {
            sub.unsubscribe();
            resolve();
          });
        });
      });
    });
}
