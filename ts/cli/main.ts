#!/usr/bin/env node
// The xenrx command line. Each subcommand loads what it needs lazily, so that
// `--help` and `build-native` work even when no native addon is installed yet.
import { Command } from 'commander';

import { packageInfo } from '../package-info.js';
import { seconds } from './args.js';
import { addConsoleCommand } from './console.js';
import { addServeCommand } from './serve.js';
import { addTopCommand } from './top.js';
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
  .option('--metrics [address]', 'serve statistics for xenrx top and Prometheus on host:port (default 127.0.0.1:9469)')
  .action(async (opts: { duration?: number; metrics?: string | true }) => {
    const { runDemo } = await import('./demo.js');
    const duration = opts.duration ?? (process.stdin.isTTY ? undefined : 12);
    await runDemo({ duration, ...(opts.metrics !== undefined ? { metrics: opts.metrics } : {}) });
  });

program
  .command('info')
  .description('show the native addon loaded, and if Xen is here')
  .action(async () => {
    const { XEN_EVTCHN_DEVICE, nativeInfo, nativeLoad } = await import('../index.js');
    const { existsSync } = await import('node:fs');
    const xen = existsSync(XEN_EVTCHN_DEVICE) ? `found (${XEN_EVTCHN_DEVICE})` : `not found (no ${XEN_EVTCHN_DEVICE})`;
    // Without an addon, this says why, and what to do, and fails.
    const load = nativeLoad();
    if (load.error) throw load.error;
    console.log(JSON.stringify({ package: packageInfo.version, addon: load.file ?? null, xen, ...nativeInfo() }));
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
addTopCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  // Errors of the library may carry the prefix already.
  console.error(`xenrx: ${(err instanceof Error ? err.message : String(err)).replace(/^xenrx: /, '')}`);
  process.exitCode = 1;
});
