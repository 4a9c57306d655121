import { closeSync } from 'node:fs';
import { isatty } from 'node:tty';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { firstValueFrom, take, toArray } from 'rxjs';

import {
  ConsoleService,
  SimulatedHost,
  XenbusRegistry,
  XenbusState,
  addDevice,
  findConsoleTty,
  openConsoleTerminal,
} from '../ts/index.js';
import type { LogEntry, SimConsoleFrontend } from '../ts/index.js';
import type { Guest } from '../ts/index.js';
import { pollUntil, readUntil } from './helpers/poll.js';
import { runXenrx as runXenrxOnce, startXenrx } from './helpers/process.js';
import { connected, waitDevice } from './helpers/xenbus.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly consoles: ConsoleService;
}

async function setup(t: ExecutionContext, pty = false, logs: LogEntry[] = [], debug: 0 | 1 = 0): Promise<Setup> {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: (e) => logs.push(e), domains: host.domains, debug });
  const consoles = new ConsoleService({ platform: host.platform, pty });
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
  // The CLI wrote what it read from its terminal into the console, so it
  // has the console's terminal open and is reading it.
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

test('the toolstack pre-creates tty read-only to the guest, before the console connects', async (t) => {
  const s = await setup(t, true);
  const guest = await s.host.createGuest(9, 'guest9');
  // No frontend: the console never connects, and the guest tries its luck.
  await addDevice(s.host.dom0, { type: 'console', frontendDomid: 9, devid: 0, frontendReadOnly: { tty: '' } });
  t.deepEqual(await s.host.dom0.getPerms('/local/domain/9/device/console/0/tty'), [
    { domid: 0, access: 'none' },
    { domid: 9, access: 'read' },
  ]);
  const err = await t.throwsAsync(guest.xs.write('device/console/0/tty', '/dev/pts/0'));
  t.regex(err?.message ?? '', /EACCES/);
  const rm = await t.throwsAsync(guest.xs.rm('device/console/0/tty'));
  t.regex(rm?.message ?? '', /EACCES/);
  await t.throwsAsync(findConsoleTty(s.host.dom0, 9), { message: /not connected/ });
  // The guest may remove its whole device directory, but not make it again.
  await guest.xs.rm('device/console/0');
  const again = await t.throwsAsync(guest.xs.write('device/console/0/tty', '/dev/pts/0'));
  t.regex(again?.message ?? '', /EACCES/);
  await t.throwsAsync(findConsoleTty(s.host.dom0, 9), { message: /does not exist/ });
});

test("xenrx console refuses a tty the guest wrote itself, and never opens it (XSA-57)", async (t) => {
  const s = await setup(t, true);
  await guestWithConsole(s, 10);
  const other = await s.host.createGuest(11, 'guest11');
  // Guest 11's console, whose frontend never connects, added by a
  // toolstack that did not pre-create tty.
  await addDevice(s.host.dom0, { type: 'console', frontendDomid: 11, devid: 0 });
  const tty10 = await s.host.dom0.read('/local/domain/10/device/console/0/tty');
  // Guest 11 owns its device directory: it writes a tty naming guest 10's terminal.
  await other.xs.write('device/console/0/tty', tty10);
  await t.throwsAsync(findConsoleTty(s.host.dom0, 11), { message: /written by the guest itself/ });
  const cli = startXenrx(['console', '11', '--socket', s.host.socket]);
  t.teardown(() => {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  });
  cli.child.stdin.write('rm -rf /\n');
  t.is(await cli.exited(), 1);
  t.regex(cli.output(), /no usable console 0: .*written by the guest itself/);
});

test('a tty the guest may write, of a console not Connected, or naming no pseudo-terminal is refused', async (t) => {
  const s = await setup(t, true);
  await guestWithConsole(s, 12);
  const dom0 = s.host.dom0;
  const node = '/local/domain/12/device/console/0/tty';
  const tty = await dom0.read(node);
  t.is((await findConsoleTty(dom0, 12)).path, tty, 'as published, it is found');
  await dom0.setPerms(node, ['n0', 'b12']);
  await t.throwsAsync(findConsoleTty(dom0, 12), { message: /writable by the guest/ });
  await dom0.setPerms(node, ['w0']);
  await t.throwsAsync(findConsoleTty(dom0, 12), { message: /writable by the guest/ }, 'everyone may write by default');
  await dom0.setPerms(node, ['r0']);
  t.is((await findConsoleTty(dom0, 12)).path, tty, 'everyone may read by default: fine');
  await dom0.setPerms(node, ['n0', 'r12']);
  for (const bad of ['/etc/passwd', '/dev/null', '/dev/pts/../null', '/dev/pts/ptmx', 'relative/0']) {
    await dom0.write(node, bad);
    await t.throwsAsync(findConsoleTty(dom0, 12), { message: /not a pseudo-terminal/ }, bad);
  }
  await dom0.write(node, tty);
  await dom0.write('/local/domain/0/backend/console/12/0/frontend', '/local/domain/12/device/console/1');
  await t.throwsAsync(findConsoleTty(dom0, 12), { message: /belongs to no console/ });
  t.is(await findConsoleTty(dom0, 99).catch((e: unknown) => (e instanceof Error ? e.message : '')), 'domain 99 has no usable console 0: /local/domain/99/device/console/0/tty does not exist; /local/domain/99/console/tty does not exist');
});

test("a closed console's tty is emptied, so its terminal number cannot lead to the next console", async (t) => {
  const s = await setup(t, true);
  const { fe } = await guestWithConsole(s, 13);
  const node = '/local/domain/13/device/console/0/tty';
  t.regex(await s.host.dom0.read(node), /^\/dev\/pts\/\d+$/);
  await fe.handshake.close();
  await waitDevice(s.registry, 'console', 13, 0, (d) => d.beState === XenbusState.Closed);
  t.is(await readUntil(() => s.host.dom0.read(node), (v) => v === ''), '');
  await t.throwsAsync(findConsoleTty(s.host.dom0, 13), { message: /not connected/ });
  const cli = await runXenrxOnce(['console', '13', '--socket', s.host.socket]);
  t.is(cli.code, 1);
  t.regex(cli.stderr, /console 0 is not connected/);
});

test('openConsoleTerminal opens a console pseudo-terminal and nothing else', async (t) => {
  const s = await setup(t, true);
  await guestWithConsole(s, 14);
  const tty = (await findConsoleTty(s.host.dom0, 14)).path;
  const fd = openConsoleTerminal(tty);
  t.true(isatty(fd));
  closeSync(fd);
  for (const bad of ['/etc/passwd', '/dev/null', '/dev/zero', '/dev/pts/ptmx', '/dev/pts/999999', '/dev/pts/../../etc/passwd']) {
    t.throws(() => openConsoleTerminal(bad), undefined, bad);
  }
});

test('a domain id used again gets a working console each time', async (t) => {
  const s = await setup(t);
  for (let round = 1; round <= 5; round++) {
    const { fe } = await guestWithConsole(s, 15);
    const line = firstValueFrom(s.consoles.lines$(15));
    fe.write(`round ${String(round)}\n`);
    t.is(await line, `round ${String(round)}`);
    const gone = new Promise<void>((r) => s.registry.state$('console', 15, 0)?.subscribe({ complete: r }));
    await s.host.destroyGuest(15);
    await gone;
  }
});

test("a console whose frontend names another daemon's type (libxl's primary console) is left alone", async (t) => {
  const logs: LogEntry[] = [];
  const s = await setup(t, false, logs, 1);
  const guest = await s.host.createGuest(4, 'guest4');
  // As libxl writes the primary console for xenconsoled: device console 0
  // whose frontend is the guest's console directory, `type` xenconsoled,
  // `ring-ref` a frame number.
  const spec = {
    type: 'console',
    frontendDomid: guest.domid,
    devid: 0,
    backend: { protocol: 'vt100' },
    frontend: { type: 'xenconsoled', 'ring-ref': '123456', port: '1' },
    frontendPath: `/local/domain/${String(guest.domid)}/console`,
  };
  const { backendPath } = await addDevice(s.host.dom0, spec);
  await pollUntil(() => logs.some((e) => e.message.includes('not for this backend')));
  // A console served next proves the registry has looked at the first.
  const { fe } = await guestWithConsole(s, 5);
  await fe.writeAll('still here\n');
  t.true(logs.some((e) => e.message === `${backendPath}: not for this backend, left alone`), JSON.stringify(logs));
  t.is(await s.host.dom0.tryRead(`${backendPath}/state`), String(XenbusState.Initialising), 'nothing written');
  t.is(await s.host.dom0.tryRead(`${backendPath}/hotplug-error`), undefined);
  t.is(s.registry.device('console', 4, 0), undefined);
  t.false(logs.some((e) => e.level === 0), 'no error');
});
