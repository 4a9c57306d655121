import { setTimeout as delay } from 'node:timers/promises';

import test from 'ava';

import {
  LogLevel,
  SimFrontend,
  SimulatedHost,
  XenbusRegistry,
  XenbusState,
  addDevice,
  createDomainHome,
  devicePaths,
  removeDevice,
  setOnline,
  xenbusStateName,
} from '../ts/index.js';
import type { DeviceInfo, DeviceOps, LogEntry } from '../ts/index.js';
import { startDaemon } from './helpers/xenstore.js';
import { addWithFrontend, connected, recorder, startRegistry, waitDevice } from './helpers/xenbus.js';

const spec = (frontendDomid: number, devid: number, type = 'test') => ({ type, frontendDomid, devid });

test('state names have Xen numbers', (t) => {
  t.is(XenbusState.Connected, 4);
  t.is(xenbusStateName(XenbusState.Reconfigured), 'Reconfigured');
  t.is(xenbusStateName(9), 'INVALID');
  t.is(xenbusStateName(-1), 'INVALID');
});

test('full handshake: alloc, init, InitWait, connect, Connected', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const seen: number[] = [];
  registry.devices$.subscribe((d) => {
    if (seen.at(-1) !== d.beState) seen.push(d.beState);
  });
  const fe = await addWithFrontend(dom0, spec(1, 0));
  const dev = await waitDevice(registry, 'test', 1, 0, connected);
  await fe.waitState(XenbusState.Connected);
  t.deepEqual(rec.calls, ['alloc:test-1-0', 'init:test-1-0', 'connect:test-1-0']);
  t.deepEqual(seen, [XenbusState.Unknown, XenbusState.Initialising, XenbusState.InitWait, XenbusState.Connected]);
  const be = devicePaths(spec(1, 0)).backendPath;
  t.is(await dom0.read(`${be}/state`), '4');
  t.is(await dom0.read(`${be}/hotplug-status`), 'connected');
  t.is(dev.frontendPath, '/local/domain/1/device/test/0');
  t.true(dev.online);
});

test('the frontend closes and reconnects; disconnect runs once', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const fe = await addWithFrontend(dom0, spec(2, 0));
  await waitDevice(registry, 'test', 2, 0, connected);
  await fe.close();
  await waitDevice(registry, 'test', 2, 0, (d) => d.beState === XenbusState.Closed);
  t.deepEqual(rec.calls.filter((c) => c.startsWith('disconnect')), ['disconnect:test-2-0']);
  await fe.reconnect();
  await waitDevice(registry, 'test', 2, 0, connected);
  await fe.waitState(XenbusState.Connected);
  t.deepEqual(rec.calls, [
    'alloc:test-2-0',
    'init:test-2-0',
    'connect:test-2-0',
    'disconnect:test-2-0',
    'init:test-2-0',
    'connect:test-2-0',
  ]);
});

test('garbage and invalid frontend states are read as the reference reads them', async (t) => {
  const { registry, dom0 } = await startRegistry(t, { debug: 1 });
  const rec = recorder();
  await registry.register('test', rec.ops);
  const fe = await addWithFrontend(dom0, spec(3, 0));
  await waitDevice(registry, 'test', 3, 0, connected);
  // The simulated frontend writes Connected after the backend does: let it
  // finish, so that its write cannot land on top of the garbage below.
  await fe.waitState(XenbusState.Connected);
  await waitDevice(registry, 'test', 3, 0, (d) => d.feState === XenbusState.Connected);
  await fe.writeRawState('banana');
  const unknown = await waitDevice(registry, 'test', 3, 0, (d) => d.feState === XenbusState.Unknown);
  t.is(unknown.beState, XenbusState.Connected, 'nothing torn down');
  await fe.writeRawState('42');
  const invalid = await waitDevice(registry, 'test', 3, 0, (d) => d.feState === 42);
  t.is(xenbusStateName(invalid.feState), 'INVALID');
  await fe.writeRawState('5');
  await waitDevice(registry, 'test', 3, 0, (d) => d.beState === XenbusState.Closing);
  t.true(rec.calls.includes('disconnect:test-3-0'));
});

test('online=0 closes gracefully; removal then frees the device', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const fe = await addWithFrontend(dom0, spec(4, 1));
  await waitDevice(registry, 'test', 4, 1, connected);
  const removed = new Promise<void>((resolve) => registry.state$('test', 4, 1)?.subscribe({ complete: resolve }));
  await setOnline(dom0, spec(4, 1), false);
  await waitDevice(registry, 'test', 4, 1, (d) => d.beState === XenbusState.Closed);
  t.is(fe.state, XenbusState.Closed, 'the frontend followed the backend down');
  t.true(rec.calls.includes('disconnect:test-4-1'));
  await removeDevice(dom0, spec(4, 1));
  await removed;
  t.is(registry.device('test', 4, 1), undefined);
  t.deepEqual(rec.calls.slice(-2), ['disconnect:test-4-1', 'free:test-4-1']);
});

test('a backend directory removed mid-handshake removes the device and is not re-created', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  // No frontend: the device waits in InitWait.
  await addDevice(dom0, spec(5, 0));
  await waitDevice(registry, 'test', 5, 0, (d) => d.beState === XenbusState.InitWait);
  const removed = new Promise<void>((resolve) => registry.state$('test', 5, 0)?.subscribe({ complete: resolve }));
  await removeDevice(dom0, spec(5, 0));
  await removed;
  t.deepEqual(rec.calls, ['alloc:test-5-0', 'init:test-5-0', 'disconnect:test-5-0', 'free:test-5-0']);
  await delay(50);
  t.false(await dom0.exists(devicePaths(spec(5, 0)).backendPath), 'no late write brought it back');
});

test('a released domain takes its devices with it', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  await createDomainHome(dom0, 6, 'guest6');
  await dom0.introduce(6);
  await addWithFrontend(dom0, spec(6, 0));
  await addWithFrontend(dom0, spec(6, 1));
  await addWithFrontend(dom0, spec(7, 0));
  await waitDevice(registry, 'test', 6, 1, connected);
  await waitDevice(registry, 'test', 7, 0, connected);
  const gone = [0, 1].map((id) => new Promise<void>((r) => registry.state$('test', 6, id)?.subscribe({ complete: r })));
  await dom0.release(6);
  await Promise.all(gone);
  t.true(rec.calls.includes('free:test-6-0'));
  t.true(rec.calls.includes('free:test-6-1'));
  t.truthy(registry.device('test', 7, 0), 'a domain never introduced is left alone');
});

test("a device whose connect throws fails alone", async (t) => {
  const { registry, dom0, logs } = await startRegistry(t);
  const rec = recorder({ connect: (name) => name === 'test-8-0' });
  await registry.register('test', rec.ops);
  await addWithFrontend(dom0, spec(8, 0));
  await addWithFrontend(dom0, spec(8, 1));
  const failed = await waitDevice(registry, 'test', 8, 0, (d) => d.phase === 'failed');
  await waitDevice(registry, 'test', 8, 1, connected);
  t.regex(failed.failure ?? '', /connect\(\) failed: no ring for you/);
  const be = devicePaths(spec(8, 0)).backendPath;
  t.is(await dom0.read(`${be}/state`), String(XenbusState.Closed));
  t.regex(await dom0.read(`${be}/hotplug-error`), /no ring for you/);
  t.true(logs.some((l) => l.level === 0 && l.device === 'test-8-0' && /connect/.test(l.message)));
});

test('two device types at once', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const a = recorder();
  const b = recorder();
  await registry.register('alpha', a.ops);
  await registry.register('beta', b.ops);
  await t.throwsAsync(registry.register('alpha', a.ops), { message: /already registered/ });
  await addWithFrontend(dom0, spec(9, 0, 'alpha'));
  await addWithFrontend(dom0, spec(9, 0, 'beta'));
  await waitDevice(registry, 'alpha', 9, 0, connected);
  await waitDevice(registry, 'beta', 9, 0, connected);
  t.deepEqual(a.calls, ['alloc:alpha-9-0', 'init:alpha-9-0', 'connect:alpha-9-0']);
  t.deepEqual(b.calls, ['alloc:beta-9-0', 'init:beta-9-0', 'connect:beta-9-0']);
});

test('devices present before registering are found by the scan', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const fe = await addWithFrontend(dom0, spec(10, 3));
  const rec = recorder();
  await registry.register('test', rec.ops);
  await waitDevice(registry, 'test', 10, 3, connected);
  await fe.waitState(XenbusState.Connected);
  t.pass();
});

test('log levels: 0 by default, more on demand, per device', async (t) => {
  const { registry, dom0, logs } = await startRegistry(t);
  await registry.register('test', recorder().ops);
  await addWithFrontend(dom0, spec(11, 0));
  await waitDevice(registry, 'test', 11, 0, connected);
  t.deepEqual(logs, [], 'a clean handshake logs nothing at level 0');
  registry.setDebug(1, 'test-11-1');
  await addWithFrontend(dom0, spec(11, 1));
  await waitDevice(registry, 'test', 11, 1, connected);
  t.true(logs.some((l) => l.device === 'test-11-1' && /backend state: InitWait -> Connected/.test(l.message)));
  t.false(logs.some((l) => l.device === 'test-11-0'));
});

test('1,000 devices across 100 domains all reach Connected', async (t) => {
  t.timeout(120_000);
  const { registry, dom0 } = await startRegistry(t);
  await registry.register('test', recorder().ops);
  const specs = Array.from({ length: 1000 }, (_, i) => spec(100 + (i % 100), Math.floor(i / 100)));
  // A toolstack creates devices a few at a time; all at once, their
  // transactions would mostly conflict on the shared parent directories.
  const queue = [...specs];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let s = queue.shift(); s; s = queue.shift()) await addWithFrontend(dom0, s);
    }),
  );
  const all: DeviceInfo[] = await Promise.all(specs.map((s) => waitDevice(registry, 'test', s.frontendDomid, s.devid, connected, 100_000)));
  t.is(all.length, 1000);
  t.is(registry.list().filter(connected).length, 1000);
});

test('a device type with its data path in TypeScript gets its events', async (t) => {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { platform: host.platform, logger: () => undefined });
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  let events = 0;
  await registry.register<{ port: number }>('echo', {
    alloc: () => ({ port: 0 }),
    connect: async (ctx, d) => {
      const remote = Number(await ctx.readFrontend('event-channel'));
      d.port = await ctx.bindEventChannel(remote);
    },
    event: (ctx) => {
      events++;
      ctx.notify();
    },
  });
  const guest = await host.createGuest(12, 'guest12');
  const ch = host.sim.evtchn(12);
  const port = ch.allocUnbound(0);
  const { frontendPath } = await addDevice(host.dom0, spec(12, 0, 'echo'));
  const fe = await SimFrontend.attach(guest.xs, frontendPath, { prepare: () => ({ 'event-channel': String(port) }) });
  await fe.waitState(XenbusState.Connected);
  for (let i = 1; i <= 3; i++) {
    ch.notify(port);
    t.deepEqual(await ch.waitPending(60_000), [port], `answer ${String(i)}`);
    ch.unmask(port);
  }
  t.is(events, 3);
  fe.detach();
});

test('devices$ tells each change of a device once', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const seen: string[] = [];
  registry.devices$.subscribe((d) => {
    if (d.name === 'test-3-0') seen.push(JSON.stringify(d));
  });
  const fe = await addWithFrontend(dom0, spec(3, 0));
  await waitDevice(registry, 'test', 3, 0, connected);
  await fe.waitState(XenbusState.Connected);
  // Nodes of the backend's directory written: each reaches backendChanged,
  // and changes nothing the device state holds.
  const be = devicePaths(spec(3, 0)).backendPath;
  for (const node of ['extra-1', 'extra-2', 'extra-3']) await dom0.write(`${be}/${node}`, '1');
  await fe.close();
  await waitDevice(registry, 'test', 3, 0, (d) => d.beState === XenbusState.Closed);
  t.true(seen.length > 4, String(seen.length));
  t.deepEqual(
    seen.filter((s, i) => i > 0 && s === seen[i - 1]),
    [],
    'the same state told twice in a row',
  );
});

test.serial('the default logger keeps quiet while log$ is watched, and speaks again after', async (t) => {
  const { dom0 } = await startDaemon(t);
  const registry = await XenbusRegistry.create(dom0);
  t.teardown(() => registry.close());
  const failing: DeviceOps = {
    connect: () => {
      throw new Error('broken on purpose');
    },
  };
  await registry.register('test', failing);
  const written: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    written.push(String(chunk));
    return true;
  });
  t.teardown(() => {
    process.stderr.write = write;
  });
  const entries: LogEntry[] = [];
  const sub = registry.log$.subscribe((e) => entries.push(e));
  await addWithFrontend(dom0, spec(7, 0));
  await waitDevice(registry, 'test', 7, 0, (d) => d.phase === 'failed');
  t.true(entries.some((e) => e.level === LogLevel.error && e.device === 'test-7-0' && e.message.includes('broken on purpose')));
  t.false(written.some((w) => w.includes('broken on purpose')), written.join(''));
  sub.unsubscribe();
  await addWithFrontend(dom0, spec(8, 0));
  await waitDevice(registry, 'test', 8, 0, (d) => d.phase === 'failed');
  t.true(written.some((w) => /^xen be: test-8-0: .*broken on purpose/.test(w)), written.join(''));
});
