// A primary console's history outlives the service that kept it: with
// `historyDir` (what `xenrx serve` passes its --state-dir as), each
// console's latest output is in `console-<domid>-<name>.log`, and a
// service started again, after a clean stop or a SIGKILL, starts with it;
// what the guest wrote while no backend ran waits in its ring.
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { PrimaryConsoleService, SimulatedHost } from '../ts/index.js';
import type { PrimaryConsoleLogEntry, PrimaryConsoleOptions } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';
import { startXenrx } from './helpers/process.js';
import { servedHost } from './helpers/served-host.js';
import { tempDir } from './helpers/xenstore.js';

type ServiceOptions = Partial<Omit<PrimaryConsoleOptions, 'xs' | 'platform'>>;

async function startService(t: ExecutionContext, host: SimulatedHost, options: ServiceOptions): Promise<{ consoles: PrimaryConsoleService; logs: PrimaryConsoleLogEntry[] }> {
  const logs: PrimaryConsoleLogEntry[] = [];
  const consoles = await PrimaryConsoleService.start({ xs: host.dom0, platform: host.platform, domains: host.domains, logger: (e) => logs.push(e), ...options });
  t.teardown(() => consoles.close());
  return { consoles, logs };
}

function readText(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

test("a service started again with the same history directory starts with the last one's output; a dead guest's file goes", async (t) => {
  const host = await SimulatedHost.start();
  t.teardown(() => host.stop());
  const dir = join(tempDir(t), 'state');
  const guest = await host.createGuest(1, 'web one');
  const fe = await host.addPrimaryConsole(guest);
  const file = join(dir, 'console-1-web%20one.log');
  const first = await startService(t, host, { historyDir: dir });
  await pollUntil(() => first.consoles.isServed(1));
  fe.write('boot 1\nboot 2\n');
  await pollUntil(() => first.consoles.history(1).toString() === 'boot 1\nboot 2\n');
  t.is(readText(file), 'boot 1\nboot 2\n', 'the file holds the raw output');
  t.is(statSync(file).mode & 0o777, 0o600);
  await first.consoles.close();
  t.is(readText(file), 'boot 1\nboot 2\n', 'a clean stop keeps the file');

  // Written while no backend runs: it waits in the ring.
  fe.write('while down\n');
  // Left by guests that had id 1 or 7 before, and died while no service ran.
  writeFileSync(join(dir, 'console-1-old%20guest.log'), 'an earlier guest 1\n');
  writeFileSync(join(dir, 'console-7-gone.log'), 'a guest that died meanwhile\n');
  writeFileSync(join(dir, 'unrelated.txt'), 'not a history\n');
  const second = await startService(t, host, { historyDir: dir });
  t.false(existsSync(join(dir, 'console-7-gone.log')), "a dead domain's file is removed at start");
  t.false(existsSync(join(dir, 'console-1-old%20guest.log')), "another guest's file of the same id is removed");
  t.true(existsSync(join(dir, 'unrelated.txt')));
  await pollUntil(() => second.consoles.history(1).toString().endsWith('while down\n'));
  t.is(second.consoles.history(1).toString(), 'boot 1\nboot 2\nwhile down\n');
  t.is(readText(file), 'boot 1\nboot 2\nwhile down\n');

  await host.destroyGuest(1);
  await pollUntil(() => !existsSync(file));
  t.deepEqual(readdirSync(dir), ['unrelated.txt']);
});

test('the history file stays within twice the history, and a restart reads back its latest bytes', async (t) => {
  const host = await SimulatedHost.start();
  t.teardown(() => host.stop());
  const dir = join(tempDir(t), 'state');
  const guest = await host.createGuest(3, 'guest3');
  const fe = await host.addPrimaryConsole(guest);
  const file = join(dir, 'console-3-guest3.log');
  const first = await startService(t, host, { historyDir: dir, historyBytes: 64 });
  await pollUntil(() => first.consoles.isServed(3));
  const text = Array.from({ length: 30 }, (_, i) => `line ${String(i).padStart(2, '0')}\n`).join('');
  let largest = 0;
  for (let at = 0; at < text.length; at += 40) {
    fe.write(text.slice(at, at + 40));
    await pollUntil(() => first.consoles.history(3).toString().endsWith(text.slice(at, at + 40)));
    largest = Math.max(largest, statSync(file).size);
  }
  t.true(largest <= 128, `the file grew to ${String(largest)} bytes`);
  t.true(text.endsWith(readText(file)) && readText(file).length >= 64);
  await first.consoles.close();
  const second = await startService(t, host, { historyDir: dir, historyBytes: 64 });
  await pollUntil(() => second.consoles.isServed(3));
  t.is(second.consoles.history(3).toString(), text.slice(-64));
});

test('xenrx serve killed with SIGKILL and started again keeps each primary console history in its state directory', async (t) => {
  const h = await servedHost(t, { imageBytes: 1 << 20, guestPages: 64 });
  const state = join(h.dir, 'state');
  const args = ['serve', '--socket', h.host.socket, '--hypervisor', h.hvSocket, '--types', 'console', '--primary-consoles', '--state-dir', state, '--debug', '1'];
  const fe = await h.host.addPrimaryConsole(h.guest);
  const file = join(state, 'console-1-guest1.log');
  const lines: string[] = [];
  for (let round = 1; round <= 3; round++) {
    const serve = startXenrx(args);
    t.teardown(() => {
      if (serve.child.exitCode === null && serve.child.signalCode === null) serve.child.kill('SIGKILL');
    });
    await serve.waitFor(/console of domain 1: connected/);
    const line = `round ${String(round)}: served\n`;
    fe.write(line);
    lines.push(line);
    await pollUntil(() => readText(file) === lines.join(''));
    serve.child.kill('SIGKILL');
    await serve.exited();
    // Output while no backend runs waits in the guest's ring.
    const down = `round ${String(round)}: written while down\n`;
    t.is(fe.write(down), down.length);
    lines.push(down);
  }
  const last = startXenrx(args);
  t.teardown(() => {
    if (last.child.exitCode === null) last.child.kill('SIGKILL');
  });
  await pollUntil(() => readText(file) === lines.join(''));
  // Said once it listens for SIGTERM (a signal before that would kill it).
  await last.waitFor(/serving console, primary consoles/);
  t.is(readText(file), lines.join(''));
  t.is(await last.stop('SIGTERM'), 0);
  t.is(readText(file), lines.join(''), 'a clean stop keeps it');
});
