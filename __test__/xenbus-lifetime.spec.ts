// Devices whose domain or frontend goes away, and domain ids used again:
// the registry tears such devices down instead of leaving them waiting, and
// the toolstack leaves nothing behind that the next guest would trip on.
import test from 'ava';
import type { ExecutionContext } from 'ava';

import { SimFrontend, SimulatedHost, XenbusRegistry, XenbusState, addDevice, devicePaths } from '../ts/index.js';
import type { DeviceSpec, RegistryOptions } from '../ts/index.js';
import { addWithFrontend, connected, recordDevice, recorder, startRegistry, waitDevice } from './helpers/xenbus.js';
import type { Recorder } from './helpers/xenbus.js';
import { readUntil } from './helpers/poll.js';

const spec = (frontendDomid: number, devid = 0, type = 'test'): DeviceSpec => ({ type, frontendDomid, devid });

interface HostFixture {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly rec: Recorder;
}

/** A simulated host whose registry knows the hypervisor's domains. */
async function startHost(t: ExecutionContext, options: RegistryOptions = {}): Promise<HostFixture> {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains, logger: () => undefined, ...options });
  const rec = recorder();
  await registry.register('test', rec.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return { host, registry, rec };
}

/** Resolves once the registry has let go of the device. */
function gone(registry: XenbusRegistry, s: DeviceSpec): Promise<void> {
  const state$ = registry.state$(s.type, s.frontendDomid, s.devid);
  if (!state$) return Promise.resolve();
  return new Promise((resolve) => state$.subscribe({ complete: resolve }));
}

/** Records a device's states from now on. */
function record(registry: XenbusRegistry, s: DeviceSpec): ReturnType<typeof recordDevice> {
  return recordDevice(registry, s.type, s.frontendDomid, s.devid);
}

test('a frontend that deletes its directory mid-handshake: the device is removed and says Closed', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const { frontendPath, backendPath } = await addDevice(dom0, spec(21));
  await waitDevice(registry, 'test', 21, 0, (d) => d.beState === XenbusState.InitWait);
  const removed = gone(registry, spec(21));
  await dom0.rm(frontendPath);
  await removed;
  t.deepEqual(rec.calls, ['alloc:test-21-0', 'init:test-21-0', 'disconnect:test-21-0', 'free:test-21-0']);
  t.is(registry.device('test', 21, 0), undefined);
  t.is(await readUntil(() => dom0.read(`${backendPath}/state`), (v) => v === String(XenbusState.Closed)), String(XenbusState.Closed));
  t.false(await dom0.exists(frontendPath), 'the frontend directory was not re-created');
});

test('a frontend whose state node vanishes after connecting: the device is removed', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const fe = await addWithFrontend(dom0, spec(22));
  await waitDevice(registry, 'test', 22, 0, connected);
  await fe.waitState(XenbusState.Connected);
  const removed = gone(registry, spec(22));
  await dom0.rm(`${fe.frontendPath}/state`);
  await removed;
  t.deepEqual(rec.calls.slice(-2), ['disconnect:test-22-0', 'free:test-22-0']);
  t.is(await readUntil(() => dom0.read(`${fe.backendPath}/state`), (v) => v === String(XenbusState.Closed)), String(XenbusState.Closed));
});

test('a device removed for its vanished frontend is served again once the toolstack writes it anew', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  const { frontendPath } = await addDevice(dom0, spec(23));
  await waitDevice(registry, 'test', 23, 0, (d) => d.beState === XenbusState.InitWait);
  const removed = gone(registry, spec(23));
  await dom0.rm(frontendPath);
  await removed;
  // Our own Closed, and anything else written, does not bring it back...
  await dom0.write(`${devicePaths(spec(23)).backendPath}/params`, 'x');
  t.is(registry.device('test', 23, 0), undefined);
  // ...but the toolstack adding the device again does.
  const fe = await addWithFrontend(dom0, spec(23));
  await waitDevice(registry, 'test', 23, 0, connected);
  await fe.waitState(XenbusState.Connected);
  t.deepEqual(rec.calls.slice(-3), ['alloc:test-23-0', 'init:test-23-0', 'connect:test-23-0']);
});

test('garbage in the frontend state is not a vanished frontend', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  await registry.register('test', recorder().ops);
  const fe = await addWithFrontend(dom0, spec(24));
  await waitDevice(registry, 'test', 24, 0, connected);
  // The simulated frontend writes Connected after the backend does: let it
  // finish, so that its write cannot land on top of the garbage below.
  await fe.waitState(XenbusState.Connected);
  await waitDevice(registry, 'test', 24, 0, (d) => d.feState === XenbusState.Connected);
  await fe.writeRawState('');
  await waitDevice(registry, 'test', 24, 0, (d) => d.feState === XenbusState.Unknown);
  await fe.writeRawState('4');
  const d = await waitDevice(registry, 'test', 24, 0, (x) => x.feState === XenbusState.Connected);
  t.is(d.phase, 'active');
  t.is(d.beState, XenbusState.Connected);
});

test('a device added for a domain that was already destroyed is torn down, not left waiting', async (t) => {
  const { host, registry, rec } = await startHost(t);
  await host.createGuest(31, 'guest31');
  await host.destroyGuest(31);
  const device = record(registry, spec(31));
  const { backendPath } = await addDevice(host.dom0, spec(31));
  await device.until((d) => d.phase === 'removed');
  t.is(registry.device('test', 31, 0), undefined);
  t.deepEqual(rec.calls, ['alloc:test-31-0', 'free:test-31-0']);
  t.is(await readUntil(() => host.dom0.read(`${backendPath}/state`), (v) => v === String(XenbusState.Closed)), String(XenbusState.Closed));
});

test('a domain that dies while its device waits for the frontend takes the device with it', async (t) => {
  const { host, registry, rec } = await startHost(t);
  await host.createGuest(32, 'guest32');
  const { backendPath } = await addDevice(host.dom0, spec(32));
  await waitDevice(registry, 'test', 32, 0, (d) => d.beState === XenbusState.InitWait);
  const removed = gone(registry, spec(32));
  // The domain dies; the toolstack has not cleaned up (yet).
  host.hypervisor.destroyDomain(32);
  await removed;
  t.deepEqual(rec.calls, ['alloc:test-32-0', 'init:test-32-0', 'disconnect:test-32-0', 'free:test-32-0']);
  t.is(await readUntil(() => host.dom0.read(`${backendPath}/state`), (v) => v === String(XenbusState.Closed)), String(XenbusState.Closed));
});

test('without a domain source, a device of a domain XenStore saw released is torn down', async (t) => {
  const { registry, dom0 } = await startRegistry(t);
  const rec = recorder();
  await registry.register('test', rec.ops);
  await dom0.introduce(33);
  await addWithFrontend(dom0, spec(33, 0));
  await waitDevice(registry, 'test', 33, 0, connected);
  const first = gone(registry, spec(33, 0));
  await dom0.release(33);
  await first;
  // A device added after the release (its domain is gone) goes too.
  const device = record(registry, spec(33, 1));
  await addDevice(dom0, spec(33, 1));
  await device.until((d) => d.phase === 'removed');
  t.true(rec.calls.includes('free:test-33-1'));
  t.false(rec.calls.includes('connect:test-33-1'));
});

test('destroying a guest removes its device directories, as xl destroy does', async (t) => {
  const { host, registry, rec } = await startHost(t);
  const guest = await host.createGuest(34, 'guest34');
  const devices = [spec(34, 0), spec(34, 1)];
  for (const s of devices) {
    const { frontendPath } = await addDevice(host.dom0, s);
    await SimFrontend.attach(guest.xs, frontendPath, { prepare: () => ({}) });
  }
  for (const s of devices) await waitDevice(registry, 'test', 34, s.devid, connected);
  const removed = devices.map((s) => gone(registry, s));
  await host.destroyGuest(34);
  await Promise.all(removed);
  for (const s of devices) {
    const { backendPath, frontendPath } = devicePaths(s);
    t.false(await host.dom0.exists(backendPath));
    t.false(await host.dom0.exists(frontendPath));
  }
  t.false(await host.dom0.exists('/libxl/34'), "the toolstack's record is gone too");
  t.true(rec.calls.includes('free:test-34-1'));
});

test("a guest's own backend node cannot steer which directories the toolstack removes", async (t) => {
  const { host, registry } = await startHost(t);
  const victim = await host.createGuest(35, 'victim');
  const attacker = await host.createGuest(36, 'attacker');
  const v = await addDevice(host.dom0, spec(35));
  await SimFrontend.attach(victim.xs, v.frontendPath, { prepare: () => ({}) });
  const a = await addDevice(host.dom0, spec(36));
  await waitDevice(registry, 'test', 35, 0, connected);
  // The attacker points its frontend's backend node at the victim's device.
  await attacker.xs.write(`${a.frontendPath}/backend`, v.backendPath);
  await host.destroyGuest(36);
  t.true(await host.dom0.exists(v.backendPath), "the victim's device is still there");
  t.is(registry.device('test', 35, 0)?.beState, XenbusState.Connected);
});

test('a domain id used again gets working devices, 20 times over', async (t) => {
  const { host, registry, rec } = await startHost(t);
  for (let round = 1; round <= 20; round++) {
    const guest = await host.createGuest(37, `guest37-${String(round)}`);
    const { frontendPath } = await addDevice(host.dom0, spec(37));
    const fe = await SimFrontend.attach(guest.xs, frontendPath, { prepare: () => ({}) });
    await fe.waitState(XenbusState.Connected);
    t.is(await guest.xs.read(`${frontendPath}/backend-id`), '0', `round ${String(round)}: the guest reads its device`);
    const be = await guest.xs.read(`${devicePaths(spec(37)).backendPath}/state`);
    t.is(be, String(XenbusState.Connected), `round ${String(round)}: and the backend's state`);
    const removed = gone(registry, spec(37));
    fe.detach();
    await host.destroyGuest(37);
    await removed;
  }
  t.is(rec.calls.filter((c) => c.startsWith('connect')).length, 20);
});
