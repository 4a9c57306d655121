// `xenrx serve` as a dom0 runs it, here on its embedded simulated host:
// every guest's disks and consoles served until SIGTERM, then disconnected.
import test from 'ava';

import { runXenrx, startXenrx } from './helpers/process.js';

test('xenrx serve --simulated serves each guest a disk and a console until SIGTERM, then closes them', async (t) => {
  const serve = startXenrx(['serve', '--simulated', '--guests', '2', '--poll-us', '200']);
  t.teardown(() => {
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  });
  await serve.waitFor(/guest2 started/);
  t.true(serve.output().includes('disk queues polling rings for 200 us after taking requests'));
  const devices = ['console-1-0', 'vbd-1-51712', 'console-2-0', 'vbd-2-51712'];
  for (const d of devices) t.true(serve.output().includes(`${d}: Connected`), d);
  // Each guest's domain and the VM run state it leads to, as they change.
  await serve.waitFor(/domain 2: run state running/);
  t.regex(serve.output(), /domain 1: appeared \(paused\)\n[^]*domain 1: unpaused\n[^]*domain 1: run state running/);
  // SIGHUP measures the disks again (these are in memory: nothing to do)
  // and keeps serving.
  serve.child.kill('SIGHUP');
  await serve.waitFor(/SIGHUP: no disk changed size/);
  t.is(serve.child.exitCode, null);
  t.is(await serve.stop('SIGTERM'), 0);
  const out = serve.output();
  t.true(out.includes('SIGTERM: disconnecting'));
  // Each device was taken down (disconnected and freed) before the process
  // said it stopped.
  const stoppedAt = out.indexOf('stopped cleanly');
  t.true(stoppedAt > 0, out);
  for (const d of devices) {
    const removed = out.search(new RegExp(`${d}: [A-Za-z]+ \\(removed\\)`));
    t.true(removed > 0 && removed < stoppedAt, `${d} taken down before the end:\n${out}`);
  }
});

test('xenrx serve --debug sets what is logged: 0 errors only, 2 each node a device reads too', async (t) => {
  const lines: Record<number, string> = {};
  for (const level of [0, 2]) {
    const serve = startXenrx(['serve', '--simulated', '--guests', '1', '--debug', String(level)]);
    t.teardown(() => {
      if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
    });
    await serve.waitFor(/guest1 started/);
    t.is(await serve.stop('SIGTERM'), 0);
    lines[level] = serve.output();
  }
  const quiet = lines[0] ?? '';
  const chatty = lines[2] ?? '';
  // Device changes are level 1: none at 0, every one at 2.
  t.notRegex(quiet, /vbd-1-51712: /);
  t.notRegex(quiet, /domain 1: /);
  t.regex(chatty, /vbd-1-51712: Connected/);
  t.regex(chatty, /vbd-1-51712: frontend update: /);
  t.notRegex(lines[0] ?? '', /frontend update/);
  // What the process itself says is not a device's log.
  t.regex(quiet, /stopped cleanly/);
});

test('xenrx serve refuses what it cannot do, before doing anything', async (t) => {
  const guests = await runXenrx(['serve', '--guests', '1']);
  t.not(guests.code, 0);
  t.regex(guests.stderr, /--guests needs --simulated/);
  const queues = await runXenrx(['serve', '--simulated', '--max-queues', '0']);
  t.not(queues.code, 0);
  t.regex(queues.stderr, /queue count/);
  const poll = await runXenrx(['serve', '--domain-poll', '0']);
  t.not(poll.code, 0);
  t.regex(poll.stderr, /period in ms/);
  const polling = await runXenrx(['serve', '--simulated', '--poll-us', '-1']);
  t.not(polling.code, 0);
  t.regex(polling.stderr, /time in microseconds/);
  const types = await runXenrx(['serve', '--simulated', '--types', 'vbd,vtpm']);
  t.not(types.code, 0);
  t.regex(types.stderr, /unknown device type "vtpm"/);
  const path = await runXenrx(['serve', '--simulated', '--types', 'vif', '--vif-path', 'bridge']);
  t.not(path.code, 0);
  t.regex(path.stderr, /unknown vif path "bridge" \(switch or tap\)/);
});

test('xenrx serve --types vif serves simulated guests network interfaces on the in-process switch', async (t) => {
  const serve = startXenrx(['serve', '--simulated', '--guests', '2', '--types', 'vif']);
  t.teardown(() => {
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  });
  await serve.waitFor(/guest2 started/);
  for (const d of ['vif-1-0', 'vif-2-0']) {
    t.regex(serve.output(), new RegExp(`${d}: vif 00:16:3e:00:0\\d:00 on the in-process switch`));
    t.regex(serve.output(), new RegExp(`${d}: vif connected \\(1 queue\\(s\\), sg, gso\\)`));
  }
  t.notRegex(serve.output(), /vbd-|console-/);
  t.is(await serve.stop('SIGTERM'), 0);
  t.regex(serve.output(), /vif-2-0: [A-Za-z]+ \(removed\)[^]*stopped cleanly/);
});
