import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { runXenrx as runCli, startXenrx, startXenrxOnTerminal } from './helpers/process.js';

test('--help lists every subcommand on one line', async (t) => {
  const { code, stdout } = await runCli(['--help']);
  t.is(code, 0);
  const commands = stdout.slice(stdout.indexOf('Commands:')).split('\n').slice(1).filter((l) => l.trim() !== '');
  t.deepEqual(
    commands.map((l) => /^ {2}(\S+)/.exec(l)?.[1]),
    ['demo', 'info', 'build-native', 'serve', 'xenstored', 'xs', 'console', 'top', 'help'],
    `continuation lines or missing commands in:\n${stdout}`,
  );
});

/** Fails unless each pattern matches `text` after where the one before it matched. */
function assertInOrder(t: ExecutionContext, text: string, patterns: readonly RegExp[]): void {
  let from = 0;
  for (const pattern of patterns) {
    const m = pattern.exec(text.slice(from));
    if (!m) {
      t.fail(`${String(pattern)} not found after ${String(from)} in:\n${text}`);
      return;
    }
    from += m.index + m[0].length;
  }
  t.pass();
}

/** The disk workload's summary line, parsed; undefined if it did not verify its data. */
function verifiedDiskSummary(text: string): { written: number; read: number; requests: number; responses: number; errors: number } | undefined {
  const m =
    /disk xvda: wrote (\d+) MiB at [\d.]+ MiB\/s, read back (\d+) MiB at [\d.]+ MiB\/s; data verified byte for byte \(read back in the guest and in dom0's storage\); backend: (\d+) requests, (\d+) responses, (\d+) errors$/m.exec(
      text,
    );
  if (!m) return undefined;
  const [written, read, requests, responses, errors] = m.slice(1).map(Number) as [number, number, number, number, number];
  return { written, read, requests, responses, errors };
}

// The disk's story: connected, its workload, then closed (frontend and
// backend) before the registry removes it.
const diskConnected = /xenbus vbd-1-51712: backend Connected, frontend Connected$/m;
// The backend's own Connected, which comes before the guest's disk is up.
// (When the registry sees the frontend's Connected races the demo's own
// lines, so that is checked for presence, not order.)
const diskBackendConnected = /xenbus vbd-1-51712: backend Connected, frontend \S+$/m;
const diskSummary = /disk xvda: wrote .*; backend: \d+ requests/;
const diskClosed = [/xenbus vbd-1-51712: backend Closed, frontend Closed$/m, /xenbus vbd-1-51712: .*\(removed\)$/m];

test('the demo boots two guests with consoles and a disk, then shuts down cleanly', async (t) => {
  // Long enough never to run out: the test waits for the demo's last step.
  const demo = startXenrx(['demo', '--duration', '600']);
  t.teardown(() => {
    if (demo.child.exitCode === null) demo.child.kill('SIGKILL');
  });
  // Each step of the demo's story, waited for in turn.
  const steps = [
    /xenbus console-1-0: backend Connected, frontend Connected/,
    /xenbus console-2-0: backend Connected, frontend Connected/,
    /guest1 \| Booting paravirtualized kernel on Xen/,
    /guest1 \| guest1 received: "uptime\\n"/,
    /xenbus vif-1-0: backend Connected, frontend Connected/,
    /net: guest1 pings guest2 through the TypeScript switch: seq=5 time=[\d.]+ ms/,
    /net: bulk transfer guest1 → guest2: \d+ of \d+ frames of 1514 bytes/,
    /guest2 VM run state: shutdown/,
    /vif-2-0: .*\(removed\)/,
    /console-2-0: .*\(removed\)/,
    /guest1 \| \[guest1\] up \d+s/,
  ];
  // The disk's steps, which run alongside: they must come in this order.
  const diskSteps = [
    diskBackendConnected,
    /guest1: disk xvda \(vbd 51712\), 256 MiB in memory, ring of 4 pages/,
    /disk xvda: writing 64 MiB in 1 MiB chunks/,
    /disk xvda: writing +\d+% \(/,
    /disk xvda: verifying +\d+% \(/,
    /disk xvda: verifying 100% \(/,
    diskSummary,
  ];
  for (const step of [...steps, ...diskSteps]) await demo.waitFor(step);
  t.is(await demo.stop('SIGTERM'), 0);
  const stdout = demo.output();
  for (const step of steps) t.regex(stdout, step);
  t.regex(stdout, diskConnected);
  // The heartbeat (every 2 s) counts real seconds: its k-th beat comes at
  // least 2k seconds after boot, however late its timer fires.
  const beats = [...stdout.matchAll(/guest1 \| \[guest1\] up (\d+)s/g)].map((m) => Number(m[1]));
  t.true(beats.length > 0);
  beats.forEach((seconds, k) => t.true(seconds >= 2 * (k + 1), `beat ${String(k + 1)} says up ${String(seconds)}s`));
  assertInOrder(t, stdout, [...diskSteps, ...diskClosed]);
  // Every device still there at the end is Closed on both sides first.
  assertInOrder(t, stdout, [/shutting down/, /xenbus console-1-0: backend Closed, frontend Closed$/m, /stopped cleanly/]);
  const summary = verifiedDiskSummary(stdout);
  t.truthy(summary, `the disk's data did not verify:\n${stdout}`);
  if (summary) {
    t.true(summary.written > 0);
    t.is(summary.read, summary.written);
    // At least a request per MiB each way, each answered, none failed.
    t.true(summary.requests >= summary.written + summary.read, JSON.stringify(summary));
    t.is(summary.responses, summary.requests);
    t.is(summary.errors, 0);
  }
  t.notRegex(stdout, /xenbus error|DATA MISMATCH|workload failed/);
  // Every frame of the bulk transfer arrived (the window never overruns the receiver).
  const bulk = /bulk transfer guest1 → guest2: (\d+) of (\d+) frames/.exec(stdout);
  t.true(bulk !== null && Number(bulk[2]) > 0 && bulk[1] === bulk[2], bulk?.[0]);
  t.regex(stdout, /stopped cleanly/);
});

test('the demo stops cleanly on SIGINT', async (t) => {
  const demo = startXenrx(['demo', '--duration', '60']);
  await demo.waitFor(/attach from another terminal/);
  t.is(await demo.stop('SIGINT'), 0);
  const stdout = demo.output();
  t.regex(stdout, /SIGINT: shutting down/);
  // Whenever the signal came, the disk workload ended with a summary
  // (stopped, or done if it was quicker), then the disk was closed.
  t.regex(stdout, /disk xvda: wrote .*; (data verified byte for byte|stopped by the shutdown)/);
  assertInOrder(t, stdout, [diskBackendConnected, diskSummary, ...diskClosed, /stopped cleanly/]);
  assertInOrder(t, stdout, [/SIGINT: shutting down/, ...diskClosed]);
  t.notRegex(stdout, /xenbus error|DATA MISMATCH|workload failed/);
});

test('on a terminal the demo draws the disk\'s progress bar in place, and Ctrl-C stops it cleanly', async (t) => {
  const demo = startXenrxOnTerminal(['demo', '--duration', '600']);
  t.teardown(() => {
    if (demo.child.exitCode === null) demo.child.kill('SIGKILL');
  });
  // The writing phase is over once the verifying one draws its bar.
  await demo.waitFor(/disk xvda: verifying +\[#*-*\] +\d+%/);
  demo.child.stdin.write('\x03');
  t.is(await demo.exited(), 0);
  const out = demo.output();
  // A bar drawn in place: after "erase the line", and followed by the next
  // erase rather than a new line. The writing phase drew its first chunk's
  // and its last's at least, each with the live throughput.
  const draws = [...out.matchAll(new RegExp(String.raw`\r\u001b\[K(?:demo \| )?disk xvda: writing +\[#*-*\] +(\d+)% +[\d.]+/64 MiB +[\d.]+ MiB/s(?=\r\u001b\[K)`, 'g'))];
  const percents = new Set(draws.map((m) => m[1]));
  t.true(percents.size >= 2 && percents.has('100'), `bars drawn in place: ${JSON.stringify([...percents])}`);
  t.regex(out, /SIGINT: shutting down/);
  t.regex(out, /stopped cleanly/);
  t.notRegex(out, /xenbus error|DATA MISMATCH|workload failed/);
});

test('the demo with --metrics: xenrx top shows its guests\' disk and consoles', async (t) => {
  const demo = startXenrx(['demo', '--duration', '600', '--metrics', '127.0.0.1:0']);
  t.teardown(() => {
    if (demo.child.exitCode === null && demo.child.signalCode === null) demo.child.kill('SIGKILL');
  });
  await demo.waitFor(/attach from another terminal/);
  const url = /xenrx top --url (http:\/\/\S+)/.exec(demo.output())?.[1];
  if (url === undefined) throw new Error(`no endpoint in:\n${demo.output()}`);
  const top = await runCli(['top', '--url', url, '--once', '--interval', '100']);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /^guest1\s+1\s+vbd-1-51712\s+Connected\s/m);
  // (guest2 and its console are destroyed a few seconds in: not asked for.)
  t.regex(top.stdout, /^guest1\s+1\s+console-1-0\s+Connected\s/m);
  t.is(await demo.stop('SIGTERM'), 0);
  t.regex(demo.output(), /stopped cleanly/);
});

test('the demo stops its disk workload midway on SIGTERM, and closes the disk', async (t) => {
  const demo = startXenrx(['demo', '--duration', '600']);
  t.teardown(() => {
    if (demo.child.exitCode === null) demo.child.kill('SIGKILL');
  });
  // The first progress line: the workload is running (it may finish before
  // the signal is handled; either way it must end with a summary).
  await demo.waitFor(/disk xvda: writing +\d+% \(/);
  t.is(await demo.stop('SIGTERM'), 0);
  const stdout = demo.output();
  t.regex(stdout, /disk xvda: wrote .*; (data verified byte for byte|stopped by the shutdown)/);
  assertInOrder(t, stdout, [diskBackendConnected, diskSummary, ...diskClosed, /stopped cleanly/]);
  assertInOrder(t, stdout, [/SIGTERM: shutting down/, ...diskClosed]);
  t.notRegex(stdout, /xenbus error|DATA MISMATCH|workload failed/);
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

test('numbers on the command line are checked, with errors that say what is wrong', async (t) => {
  const cases: [string[], RegExp][] = [
    [['console', '1', '--devid', 'xyz'], /a device id must be a whole number, got "xyz"/],
    [['console', 'abc'], /a domain id must be a whole number, got "abc"/],
    [['console', '1.5'], /a domain id must be a whole number/],
    [['console', '40000'], /a domain id must be between 0 and 32751, got 40000/],
    [['console', '-1'], /unknown option '-1'|a domain id must be a whole number/],
    [['demo', '--duration', '0'], /seconds must be a number greater than 0, got "0"/],
    [['demo', '--duration', '5s'], /seconds must be a number greater than 0, got "5s"/],
    [['xs', 'watch', '-n', 'ten', '/a'], /the count must be a whole number, got "ten"/],
  ];
  for (const [args, message] of cases) {
    const { code, stderr } = await runCli(args);
    t.not(code, 0, args.join(' '));
    t.regex(stderr, message, args.join(' '));
    t.notRegex(stderr, /NaN/, args.join(' '));
  }
});

test('xenstored refuses a socket in a directory that does not exist, and creates none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'no', 'such', 'xs.sock');
  const { code, stderr } = await runCli(['xenstored', '--socket', socket]);
  t.is(code, 1);
  t.regex(stderr, /the directory of the socket \(.*\/no\/such\) does not exist/);
  t.false(existsSync(join(dir, 'no')));
  const state = await runCli(['xenstored', '--socket', join(dir, 'xs.sock'), '--state-file', join(dir, 'none', 'state')]);
  t.is(state.code, 1);
  t.regex(state.stderr, /the directory of the state file \(.*\/none\) does not exist/);
});
