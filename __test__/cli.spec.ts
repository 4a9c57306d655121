import test from 'ava';

import { runXenrx as runCli, startXenrx } from './helpers/process.js';

test('--help lists every subcommand on one line', async (t) => {
  const { code, stdout } = await runCli(['--help']);
  t.is(code, 0);
  const commands = stdout.slice(stdout.indexOf('Commands:')).split('\n').slice(1).filter((l) => l.trim() !== '');
  t.deepEqual(
    commands.map((l) => /^ {2}(\S+)/.exec(l)?.[1]),
    ['demo', 'info', 'build-native', 'xenstored', 'xs', 'console', 'help'],
    `continuation lines or missing commands in:\n${stdout}`,
  );
});

test('the demo boots two guests with consoles, then shuts down cleanly', async (t) => {
  const { code, stdout } = await runCli(['demo', '--duration', '6']);
  t.is(code, 0, stdout);
  t.regex(stdout, /xenbus console-1-0: backend Connected, frontend Connected/);
  t.regex(stdout, /xenbus console-2-0: backend Connected, frontend Connected/);
  t.regex(stdout, /guest1 \| Booting paravirtualized kernel on Xen/);
  t.regex(stdout, /guest1 \| guest1 received: "uptime\\n"/);
  t.regex(stdout, /guest2 VM run state: shutdown/);
  t.regex(stdout, /console-2-0: .*\(removed\)/);
  t.regex(stdout, /stopped cleanly/);
});

test('the demo stops cleanly on SIGINT', async (t) => {
  const demo = startXenrx(['demo', '--duration', '60']);
  await demo.waitFor(/attach from another terminal/, 20_000);
  t.is(await demo.stop('SIGINT'), 0);
  t.regex(demo.output(), /SIGINT: shutting down/);
  t.regex(demo.output(), /stopped cleanly/);
});

test('info reports the loaded native core as JSON', async (t) => {
  const { code, stdout } = await runCli(['info']);
  t.is(code, 0);
  const info = JSON.parse(stdout) as { package: string; version: string; target: string };
  t.is(info.version, info.package);
});

test('an unknown subcommand fails', async (t) => {
  const { code, stderr } = await runCli(['no-such-command']);
  t.not(code, 0);
  t.regex(stderr, /unknown command/);
});

test('build-native without Rust says what is missing', async (t) => {
  const { code, stderr } = await runCli(['build-native'], { ...process.env, PATH: '/nonexistent' });
  t.is(code, 1);
  t.regex(stderr, /cargo was not found on PATH: install Rust/);
});
