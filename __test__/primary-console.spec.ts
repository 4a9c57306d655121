// Guests' primary consoles (not xenbus devices: console/ring-ref and
// console/port in the guest's home, the page in grant entry 0), served by
// PrimaryConsoleService as xenconsoled serves them, on the simulated host.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { firstValueFrom, take, toArray } from 'rxjs';

import {
  PlatformError,
  PrimaryConsoleService,
  SimPrimaryConsoleFrontend,
  SimulatedHost,
  addDevice,
  findConsoleTty,
  writePrimaryConsoleNodes,
} from '../ts/index.js';
import type { Guest, PrimaryConsoleLogEntry, PrimaryConsoleOptions } from '../ts/index.js';
import { pollUntil, readUntil } from './helpers/poll.js';
import { startXenrx } from './helpers/process.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly consoles: PrimaryConsoleService;
  readonly logs: PrimaryConsoleLogEntry[];
}

type ServiceOptions = Partial<Omit<PrimaryConsoleOptions, 'xs' | 'platform'>>;

async function startService(t: ExecutionContext, host: SimulatedHost, options: ServiceOptions = {}): Promise<Setup> {
  const logs: PrimaryConsoleLogEntry[] = [];
  const consoles = await PrimaryConsoleService.start({
    xs: host.dom0,
    platform: host.platform,
    domains: host.domains,
    logger: (e) => logs.push(e),
    ...options,
  });
  t.teardown(() => consoles.close());
  return { host, consoles, logs };
}

async function startHost(t: ExecutionContext): Promise<SimulatedHost> {
  const host = await SimulatedHost.start();
  // Registered first, so it runs last: after the service closed.
  t.teardown(() => host.stop());
  return host;
}

async function setup(t: ExecutionContext, options: ServiceOptions = {}): Promise<Setup> {
  return startService(t, await startHost(t), options);
}

async function guestWithPrimary(s: Setup, domid: number): Promise<{ guest: Guest; fe: SimPrimaryConsoleFrontend }> {
  const guest = await s.host.createGuest(domid, `guest${String(domid)}`);
  const fe = await s.host.addPrimaryConsole(guest);
  await pollUntil(() => s.consoles.isServed(domid));
  return { guest, fe };
}

function lines(logs: readonly PrimaryConsoleLogEntry[], domid: number, level?: number): string[] {
  return logs.filter((l) => l.domid === domid && (level === undefined || l.level === level)).map((l) => l.message);
}

test("a guest's primary console output arrives by line, and input reaches the guest", async (t) => {
  const s = await setup(t);
  const { fe } = await guestWithPrimary(s, 1);
  // As libxl publishes it: the page's frame, while the backend maps grant 0.
  t.is(fe.native.ringRef, 0);
  t.is(await s.host.dom0.read('/local/domain/1/console/ring-ref'), String(fe.frame));
  t.not(fe.frame, 0);
  t.is(await s.host.dom0.read('/local/domain/1/console/type'), 'xenconsoled');
  t.true(s.consoles.isServed(1));
  t.deepEqual(s.consoles.served(), [1]);
  const got = firstValueFrom(s.consoles.lines$(1).pipe(take(2), toArray()));
  t.is(fe.write('hello\r\nwor'), 10);
  fe.write('ld\npartial');
  t.deepEqual(await got, ['hello', 'world']);
  const typed = firstValueFrom(fe.input$);
  t.is(s.consoles.write(1, 'ls -l\n'), 6);
  t.is((await typed).toString(), 'ls -l\n');
  t.regex(lines(s.logs, 1, 1).join('\n'), new RegExp(`^connected \\(port ${String(fe.port)}\\)$`, 'm'));
});

test('the boot log, written before the service started, is kept for a late reader', async (t) => {
  const host = await startHost(t);
  const guest = await host.createGuest(2, 'guest2');
  const fe = await host.addPrimaryConsole(guest);
  // The guest boots with nobody serving its console: the lines wait in the ring.
  t.is(fe.write('boot 1\nboot 2\nboot 3\n'), 21);
  const s = await startService(t, host);
  t.true(s.consoles.isServed(2), 'a domain there before the service is served at start');
  await pollUntil(() => s.consoles.history(2).length >= 21);
  t.is(s.consoles.history(2).toString(), 'boot 1\nboot 2\nboot 3\n');
  // A reader that comes late gets the history first, then what follows.
  const late = firstValueFrom(s.consoles.lines$(2, { history: true }).pipe(take(4), toArray()));
  fe.write('login: root\n');
  t.deepEqual(await late, ['boot 1', 'boot 2', 'boot 3', 'login: root']);
  // Live readers start live.
  const live = firstValueFrom(s.consoles.lines$(2));
  fe.write('$ \n');
  t.is(await live, '$ ');
});

test('the history keeps only the latest bytes', async (t) => {
  const s = await setup(t, { historyBytes: 64 });
  const { fe } = await guestWithPrimary(s, 3);
  const text = Array.from({ length: 30 }, (_, i) => `line ${String(i).padStart(2, '0')}\n`).join('');
  t.is(text.length, 240);
  for (let at = 0; at < text.length; at += 40) fe.write(text.slice(at, at + 40));
  // The data path counts bytes before the output reaches the history: wait
  // for the last line in the history itself.
  await pollUntil(() => s.consoles.history(3).toString().endsWith('line 29\n'));
  t.is(s.consoles.history(3).toString(), text.slice(-64));
  for (const historyBytes of [-1, 1.5]) {
    await t.throwsAsync(PrimaryConsoleService.start({ xs: s.host.dom0, platform: s.host.platform, historyBytes }), { instanceOf: RangeError });
  }
});

test('the pseudo-terminal is published as console/tty, read-only to the guest, and found by findConsoleTty', async (t) => {
  const s = await setup(t, { pty: true });
  const { guest } = await guestWithPrimary(s, 4);
  const node = '/local/domain/4/console/tty';
  const tty = (await readUntil(() => s.host.dom0.read(node), (v) => v !== '')) ?? '';
  t.regex(tty, /^\/dev\/pts\/\d+$/);
  t.is(s.consoles.ptyPath(4), tty);
  t.deepEqual(await s.host.dom0.getPerms(node), [
    { domid: 0, access: 'none' },
    { domid: 4, access: 'read' },
  ]);
  t.is(await guest.xs.read('console/tty'), tty);
  const err = await t.throwsAsync(guest.xs.write('console/tty', '/dev/pts/0'));
  t.regex(err?.message ?? '', /EACCES/);
  const found = await findConsoleTty(s.host.dom0, 4);
  t.is(found.path, tty);
  t.is(found.kind, 'primary');
  t.is(found.node, node);
  t.regex(lines(s.logs, 4, 1).join('\n'), new RegExp(`^tty ${tty}$`, 'm'));

  // A toolstack that made no tty: the node the backend creates would
  // inherit the guest-owned directory's permissions; it is made read-only.
  const g18 = await s.host.createGuest(18, 'guest18');
  const fe18 = SimPrimaryConsoleFrontend.create(s.host.sim, 18);
  t.teardown(() => fe18.detach());
  await writePrimaryConsoleNodes(s.host.dom0, 18, { ringRef: String(fe18.frame), port: String(fe18.port), precreateTty: false });
  const tty18 = (await readUntil(() => s.host.dom0.read('/local/domain/18/console/tty'), (v) => v !== '')) ?? '';
  t.is(s.consoles.ptyPath(18), tty18);
  t.regex(tty18, /^\/dev\/pts\/\d+$/);
  t.deepEqual(await s.host.dom0.getPerms('/local/domain/18/console/tty'), [
    { domid: 0, access: 'none' },
    { domid: 18, access: 'read' },
  ]);
  await t.throwsAsync(g18.xs.write('console/tty', '/dev/pts/0'), { message: /EACCES/ });
});

test('garbage or missing console nodes get one log line each; other guests are served', async (t) => {
  const s = await setup(t);
  // Domain 5: a port that is no number.
  const bad = await s.host.createGuest(5, 'guest5');
  const fe5 = SimPrimaryConsoleFrontend.create(s.host.sim, 5);
  t.teardown(() => fe5.detach());
  await writePrimaryConsoleNodes(s.host.dom0, 5, { ringRef: String(fe5.frame), port: 'abc' });
  // Domain 6: a ring-ref but no port; domain 7: numbers naming nothing the
  // guest set up (no grant 0, no port for dom0).
  await s.host.createGuest(6, 'guest6');
  await s.host.dom0.write('/local/domain/6/console/ring-ref', '77');
  await s.host.createGuest(7, 'guest7');
  await writePrimaryConsoleNodes(s.host.dom0, 7, { ringRef: '77', port: '99' });
  // Domain 8: another backend's (QEMU's) console.
  await s.host.createGuest(8, 'guest8');
  await writePrimaryConsoleNodes(s.host.dom0, 8, { ringRef: '77', port: '5', type: 'ioemu' });

  const { fe } = await guestWithPrimary(s, 9);
  const line = firstValueFrom(s.consoles.lines$(9));
  fe.write('unaffected\n');
  t.is(await line, 'unaffected');

  // More changes to domain 5's nodes with the port still bad, then a good
  // port: once served, every change before was looked at.
  await s.host.dom0.write('/local/domain/5/console/limit', '4096');
  await s.host.dom0.write('/local/domain/5/console/output', 'pty');
  const waiting = 'no console/port yet; waiting for them';
  const ioemu = 'console/type is "ioemu": another backend serves it';
  await pollUntil(() => lines(s.logs, 5, 0).length > 0 && lines(s.logs, 6).includes(waiting) && lines(s.logs, 7, 0).length > 0 && lines(s.logs, 8).includes(ioemu));
  await s.host.dom0.write('/local/domain/5/console/port', String(fe5.port));
  await pollUntil(() => s.consoles.isServed(5));
  t.true(s.consoles.isServed(5), 'a console whose nodes were put right is served');
  t.deepEqual(lines(s.logs, 5, 0), ['console/port is "abc", not an event-channel port; not served']);
  const line5 = firstValueFrom(s.consoles.lines$(5));
  t.is(bad.domid, 5);
  fe5.write('fixed\n');
  t.is(await line5, 'fixed');

  // Before its nodes came, each was seen waiting; what is logged is each
  // state once, and no error but the one for what is wrong.
  t.is(lines(s.logs, 6).at(-1), waiting);
  t.deepEqual(lines(s.logs, 6, 0), []);
  const seven = lines(s.logs, 7, 0);
  t.is(seven.length, 1);
  t.regex(seven[0] ?? '', /^cannot serve the console \(grant 0, port 99\): \S/);
  t.is(lines(s.logs, 8).at(-1), ioemu);
  t.deepEqual(lines(s.logs, 8, 0), []);
  for (const d of [5, 6, 7, 8, 9]) t.is(new Set(lines(s.logs, d)).size, lines(s.logs, d).length, `domain ${String(d)}: no line repeated`);
  for (const d of [6, 7, 8]) t.false(s.consoles.isServed(d), `domain ${String(d)}`);
  t.deepEqual(s.consoles.served().sort(), [5, 9]);
});

test('a guest introduced before its console nodes are written is picked up when they appear', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(10, 'guest10');
  // The service has seen the domain, with no console yet.
  await pollUntil(() => lines(s.logs, 10).length > 0);
  t.deepEqual(lines(s.logs, 10), ['no console/ring-ref or console/port yet; waiting for them']);
  t.false(s.consoles.isServed(10));
  const fe = await s.host.addPrimaryConsole(guest);
  await pollUntil(() => s.consoles.isServed(10));
  const line = firstValueFrom(s.consoles.lines$(10));
  fe.write('late but here\n');
  t.is(await line, 'late but here');
});

test("a destroyed domain's console stops; its id used again gets a new one", async (t) => {
  const s = await setup(t);
  await guestWithPrimary(s, 11);
  const { fe: other } = await guestWithPrimary(s, 12);
  await s.host.destroyGuest(11);
  await pollUntil(() => !s.consoles.isServed(11));
  t.false(s.consoles.isServed(11));
  t.deepEqual(s.consoles.served(), [12]);
  t.regex(lines(s.logs, 11, 1).join('\n'), /^closed \(its domain (died|was released|is gone)\)$/m);
  const err = t.throws(() => s.consoles.write(11, 'x'));
  t.true(err instanceof PlatformError && err.code === 'ENOTCONN');
  t.is(s.consoles.history(11).length, 0, "the dead domain's output is not kept for the next one");
  const line = firstValueFrom(s.consoles.lines$(12));
  other.write('alive\n');
  t.is(await line, 'alive');
  for (let round = 1; round <= 3; round++) {
    const { fe } = await guestWithPrimary(s, 11);
    const again = firstValueFrom(s.consoles.lines$(11));
    fe.write(`round ${String(round)}\n`);
    t.is(await again, `round ${String(round)}`);
    await s.host.destroyGuest(11);
    await pollUntil(() => !s.consoles.isServed(11));
  }
});

test('a console moved to another port (a resumed guest) is bound again there', async (t) => {
  const s = await setup(t);
  const { fe } = await guestWithPrimary(s, 19);
  const oldPort = fe.port;
  // The guest's kernel, after a resume, offers the backend a new port.
  const guestPorts = s.host.sim.evtchn(19);
  const newPort = guestPorts.allocUnbound(0);
  await s.host.dom0.write('/local/domain/19/console/port', String(newPort));
  await pollUntil(() => lines(s.logs, 19, 1).includes(`connected (port ${String(newPort)})`));
  t.deepEqual(lines(s.logs, 19, 1).filter((m) => /^(connected|closed)/.test(m)), [`connected (port ${String(oldPort)})`, `closed (it moved to port ${String(newPort)})`, `connected (port ${String(newPort)})`]);
  // Signalled on the new port, the backend reads the ring.
  const line = firstValueFrom(s.consoles.lines$(19));
  fe.write('resumed\n');
  guestPorts.notify(newPort);
  t.is(await line, 'resumed');
});

test('a console whose nodes are removed stops and unmaps its page; close stops the rest and empties their ttys', async (t) => {
  const s = await setup(t, { pty: true });
  const { fe } = await guestWithPrimary(s, 13);
  t.throws(() => fe.native.close(), undefined, 'the backend maps the page');
  await s.host.dom0.rm('/local/domain/13/console');
  await pollUntil(() => !s.consoles.isServed(13));
  t.false(s.consoles.isServed(13));
  // Unmapped: the guest can end its grant now.
  t.notThrows(() => fe.native.close());

  const { fe: fe14 } = await guestWithPrimary(s, 14);
  const node = '/local/domain/14/console/tty';
  t.regex((await readUntil(() => s.host.dom0.read(node), (v) => v !== '')) ?? '', /^\/dev\/pts\/\d+$/);
  await s.consoles.close();
  t.is(await s.host.dom0.read(node), '', 'a closed console names no terminal');
  await t.throwsAsync(findConsoleTty(s.host.dom0, 14), { message: /names no terminal/ });
  t.notThrows(() => fe14.native.close());
  t.regex(lines(s.logs, 14, 1).join('\n'), /^closed \(the service stopped\)$/m);
});

test('xenrx console takes the primary console only when there is no console device 0, and never a tty another guest wrote', async (t) => {
  const s = await setup(t, { pty: true });
  await guestWithPrimary(s, 15);
  const tty = (await readUntil(() => s.host.dom0.read('/local/domain/15/console/tty'), (v) => v !== '')) ?? '';
  t.is((await findConsoleTty(s.host.dom0, 15)).path, tty);
  // A console device 0 that is there but not connected is reported, not
  // replaced by the primary console.
  await addDevice(s.host.dom0, { type: 'console', frontendDomid: 15, devid: 0, frontendReadOnly: { tty: '' } });
  await t.throwsAsync(findConsoleTty(s.host.dom0, 15), { message: /console 0 is not connected/ });
  await s.host.dom0.rm('/local/domain/15/device/console/0');
  t.is((await findConsoleTty(s.host.dom0, 15)).path, tty);
  // Other device ids never fall back to the primary console.
  await t.throwsAsync(findConsoleTty(s.host.dom0, 15, 1), { message: /^domain 15 has no usable console 1: [^;]*device\/console\/1\/tty does not exist$/ });

  // Guest 16's console directory is its own and the toolstack made no tty:
  // neither it nor a guest it lets in can name a terminal.
  const g16 = await s.host.createGuest(16, 'guest16');
  const g17 = await s.host.createGuest(17, 'guest17');
  await s.host.dom0.mkdir('/local/domain/16/console');
  await s.host.dom0.setPerms('/local/domain/16/console', ['n16', 'r0']);
  await g16.xs.write('console/tty', tty);
  await t.throwsAsync(findConsoleTty(s.host.dom0, 16), { message: /written by the guest itself/ });
  await g16.xs.rm('console/tty');
  await g16.xs.setPerms('console', ['n16', 'b17']);
  await g17.xs.write('/local/domain/16/console/tty', tty);
  t.is((await s.host.dom0.getPerms('/local/domain/16/console/tty'))[0]?.domid, 17);
  await t.throwsAsync(findConsoleTty(s.host.dom0, 16), { message: /written by domain 17, which is not its console backend/ });
  const cli = startXenrx(['console', '16', '--socket', s.host.socket]);
  t.teardown(() => {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  });
  t.is(await cli.exited(), 1);
  t.regex(cli.output(), /no usable console 0: .*not its console backend/);
});

test('xenrx serve --primary-consoles serves simulated guests their primary consoles; xenrx console attaches to one', async (t) => {
  // No console devices (--types vbd): `xenrx console 1` takes the primary console.
  const serve = startXenrx(['serve', '--simulated', '--guests', '1', '--types', 'vbd', '--primary-consoles', '--pty']);
  t.teardown(() => {
    if (serve.child.exitCode === null) serve.child.kill('SIGKILL');
  });
  await serve.waitFor(/guest1 started/);
  await serve.waitFor(/console of domain 1: tty \/dev\/pts\/\d+/);
  t.regex(serve.output(), /console of domain 1: connected \(port \d+\)/);
  const socket = /XenStore (\S+) \(simulated host\)/.exec(serve.output())?.[1];
  t.truthy(socket);
  const cli = startXenrx(['console', '1', '--socket', socket ?? '']);
  t.teardown(() => {
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  });
  // The boot line was written before anyone attached.
  await cli.waitFor(/guest1: simulated guest booted/);
  // The guest echoes what is typed: it went in and came back out.
  cli.child.stdin.write('echo from the primary console\n');
  await cli.waitFor(/echo from the primary console/);
  cli.child.stdin.write(Buffer.from([0x1d]));
  t.is(await cli.exited(), 0);
  t.is(await serve.stop('SIGTERM'), 0);
  const out = serve.output();
  const closed = out.search(/console of domain 1: closed/);
  t.true(closed > 0 && closed < out.indexOf('stopped cleanly'), out);
});
