#!/usr/bin/env node
// The xenrx command line. Each subcommand loads what it needs lazily, so that
// `--help` and `build-native` work even when no native addon is installed yet.
import { Command } from 'commander';

import { packageInfo } from '../package-info.js';
import { seconds } from './args.js';
import { addConsoleCommand } from './console.js';
import { addServeCommand } from './serve.js';
import { addXenstoredCommand } from './xenstored.js';
import { addXsCommand } from './xs.js';

const program = new Command();
// One prefix for every error, commander's own (a bad option) included.
program.configureOutput({
  outputError: (text, write) => {
    write(text.replace(/^error: /, 'xenrx: '));
  },
});

program
  .name('xenrx')
  .description('Xen paravirtual device backends in TypeScript, on a Rust core, with an embedded simulated host')
  .version(packageInfo.version);

program
  .command('demo')
  .description('run the demo on the embedded simulated host')
  .option('--duration <seconds>', 'stop after this long (default: until Ctrl-C on a terminal, 12 s otherwise)', seconds)
  .action(async (opts: { duration?: number }) => {
    const { runDemo } = await import('./demo.js');
    const duration = opts.duration ?? (process.stdin.isTTY ? undefined : 12);
    await runDemo({ duration });
  });

program
  .command('info')
  .description('show the loaded native core and its build')
  .action(async () => {
    const { nativeInfo } = await import('../index.js');
    const info = nativeInfo();
    console.log(JSON.stringify({ package: packageInfo.version, ...info }));
  });

program
  .command('build-native')
  .description('compile the native addon from source (needs Rust)')
  .option('--xen', 'compile in the real-hypervisor platform (needs libxen-dev)', false)
  .option('--debug', 'build without optimisations', false)
  .action(async (opts: { xen: boolean; debug: boolean }) => {
    const { buildNative } = await import('./build-native.js');
    const path = await buildNative(opts);
    console.log(`xenrx: native addon installed at ${path}`);
  });

addServeCommand(program);
addXenstoredCommand(program);
addXsCommand(program);
addConsoleCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`xenrx: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
