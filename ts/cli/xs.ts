// `xenrx xs ...`: a small XenStore client, like Xen's xenstore-utils.
import type { Command } from 'commander';

import { formatPermission } from '../xenstore/perms.js';
import type { Permission } from '../xenstore/perms.js';
import type { XenStore } from '../xenstore/index.js';
import { integer } from './args.js';
import { untilStopped } from './signals.js';

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

function quote(value: string): string {
  return JSON.stringify(value);
}

async function printTree(xs: XenStore, path: string, depth: number): Promise<void> {
  for (const name of await xs.list(path)) {
    const child = path === '/' ? `/${name}` : `${path}/${name}`;
    const value = await xs.tryRead(child);
    const perms = await xs.getPerms(child).catch(() => [] as Permission[]);
    console.log(`${'  '.repeat(depth)}${name} = ${quote(value ?? '')}  (${perms.map(formatPermission).join(' ')})`);
    await printTree(xs, child, depth + 1);
  }
}

/** Adds the `xs` subcommand group. */
export function addXsCommand(program: Command): void {
  const xs = program
    .command('xs')
    .description('XenStore client: read, write, ls, rm, watch, chmod')
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

  xs.command('ls')
    .description("list a node's children; -r prints the subtree with values and permissions")
    .argument('[path]', 'node', '/')
    .option('-r, --recursive', 'the whole subtree', false)
    .action(async (path: string, opts: { recursive: boolean }, cmd: Command) => {
      await withClient(cmd, async (c) => {
        if (opts.recursive) await printTree(c, path, 0);
        else for (const name of await c.list(path)) console.log(name);
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
