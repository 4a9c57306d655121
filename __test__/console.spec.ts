import { setTimeout as delay } from 'node:timers/promises';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { firstValueFrom, take, toArray } from 'rxjs';

import { ConsoleService, SimulatedHost, XenbusRegistry, XenbusState } from '../ts/index.js';
import type { LogEntry, SimConsoleFrontend } from '../ts/index.js';
import type { Guest } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';
import { startXenrx } from './helpers/process.js';
import { connected, waitDevice } from './helpers/xenbus.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly consoles: ConsoleService;
}

async function setup(t: ExecutionContext, pty = false, logs: LogEntry[] = []): Promise<Setup> {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: (e) => logs.push(e), deaths$: host.domains.deaths$ });
  const consoles = new ConsoleService({ host: host.platform, pty });
  await registry.register('console', consoles.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return { host, registry, consoles };
}

async function guestWithConsole(s: Setup, domid: number): Promise<{ guest: Guest; fe: SimConsoleFrontend }> {
  const guest = await s.host.createGuest(domid, `guest${String(domid)}`);
  const fe = await s.host.addConsole(guest);
  await waitDevice(s.registry, 'console', domid, 0, connected);
  await fe.handshake.waitState(XenbusState.Connected);
  return { guest, fe };
}

test('guest output arrives raw and by line; input reaches the guest', async (t) => {
  const s = await setup(t);
  const { fe } = await guestWithConsole(s, 1);
  const lines = firstValueFrom(s.consoles.lines$(1).pipe(take(2), toArray()));
  t.is(fe.write('hello\r\nwor'), 10);
  fe.write('ld\npartial');
  t.deepEqual(await lines, ['hello', 'world']);
  const typed = firstValueFrom(fe.input$);
  t.is(s.consoles.write(1, 'ls -l\n'), 6);
  t.is((await typed).toString(), 'ls -l\n');
});

test('output larger than the ring arrives whole and in order', async (t) => {
  const s = await setup(t);
  const { fe } = await guestWithConsole(s, 2);
  const text = Array.from({ length: 400 }, (_, i) => `line ${String(i).padStart(4, '0')}\n`).join('');
  const received: string[] = [];
  const sub = s.consoles.text$(2).subscribe((x) => received.push(x));
  await fe.writeAll(text);
  await pollUntil(() => received.join('').length >= text.length);
  sub.unsubscribe();
  t.is(received.join(''), text);
  t.true(text.length > 2048, 'more than the out ring holds');
});

test('a hostile guest gets its indexes clamped and logged; other consoles keep working', async (t) => {
  const logs: LogEntry[] = [];
  const s = await setup(t, false, logs);
  const { fe: bad } = await guestWithConsole(s, 3);
  const { fe: good } = await guestWithConsole(s, 4);
  bad.native.setIndexes(0, 0, 0, 0xdead_beef);
  bad.native.notify();
  await pollUntil(() => (s.consoles.stats(3)?.clamped ?? 0) > 0);
  t.true((s.consoles.stats(3)?.clamped ?? 0) > 0, 'the distance beyond the buffer was clamped and reported');
  await pollUntil(() => logs.some((l) => /clamped/.test(l.message)), 1000);
  t.true(logs.some((l) => l.level === 0 && l.device === 'console-3-0' && /indexes out of range/.test(l.message)));
  const line = firstValueFrom(s.consoles.lines$(4));
  good.write('still fine\n');
  t.is(await line, 'still fine');
});

test('the console pseudo-terminal is published read-only to the guest', async (t) => {
  const s = await setup(t, true);
  const { guest } = await guestWithConsole(s, 5);
  const tty = await s.host.dom0.read('/local/domain/5/device/console/0/tty');
  t.is(s.consoles.ptyPath(5), tty);
  t.regex(tty, /^\/dev\/pts\//);
  t.deepEqual(await s.host.dom0.getPerms('/local/domain/5/device/console/0/tty'), [
    { domid: 0, access: 'none' },
    { domid: 5, access: 'read' },
  ]);
  t.is(await guest.xs.read('device/console/0/tty'), tty);
  const err = await t.throwsAsync(guest.xs.write('device/console/0/tty', '/dev/evil'));
  t.regex(err?.message ?? '', /EACCES/);
});

test('xenrx console attaches to a guest console and detaches on Ctrl-]', async (t) => {
  const s = await setup(t, true);
  const { fe } = await guestWithConsole(s, 6);
  const cli = startXenrx(['console', '6', '--socket', s.host.socket]);
  t.teardown(() => {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  });
  const typed = firstValueFrom(fe.input$);
  cli.child.stdin.write('uname -a\n');
  t.is((await typed).toString(), 'uname -a\n');
  // Give the CLI's terminal time to open before the guest speaks.
  await delay(200);
  fe.write('Linux guest6\n');
  await cli.waitFor(/Linux guest6/);
  cli.child.stdin.write(Buffer.from([0x1d]));
  t.is(await cli.exited(), 0);
});

test('a destroyed guest takes its console device with it; other guests stay', async (t) => {
  const s = await setup(t);
  await guestWithConsole(s, 7);
  const { fe } = await guestWithConsole(s, 8);
  const gone = new Promise<void>((r) => s.registry.state$('console', 7, 0)?.subscribe({ complete: r }));
  await s.host.destroyGuest(7);
  await gone;
  t.is(s.registry.device('console', 7, 0), undefined);
  const line = firstValueFrom(s.consoles.lines$(8));
  fe.write('alive\n');
  t.is(await line, 'alive');
});
