import test from 'ava';

import { runXenrx as runCli } from './helpers/process.js';

test('--help lists every subcommand on one line', async (t) => {
  const { code, stdout } = await runCli(['--help']);
  t.is(code, 0);
  const commands = stdout.slice(stdout.indexOf('Commands:')).split('\n').slice(1).filter((l) => l.trim() !== '');
  t.deepEqual(
    commands.map((l) => /^ {2}(\S+)/.exec(l)?.[1]),
    ['demo', 'info', 'build-native', 'xenstored', 'xs', 'help'],
    `continuation lines or missing commands in:\n${stdout}`,
  );
});

test('demo says what it runs and exits 0', async (t) => {
  const { code, stdout } = await runCli(['demo']);
  t.is(code, 0);
  t.regex(stdout, /native core \d+\.\d+\.\d+ loaded/);
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
