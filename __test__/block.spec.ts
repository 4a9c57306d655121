// The vbd backend through xenbus on the simulated host: the toolstack makes
// a disk, the guest's blkfront negotiates rings and features in XenStore,
// and data goes through the Rust data path into the disk's storage.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import { firstValueFrom } from 'rxjs';
import type { ExecutionContext } from 'ava';

import { BlockService, SimulatedHost, XenbusRegistry, addDevice } from '../ts/index.js';
import type { LogEntry } from '../ts/index.js';
import { sparseImage } from './helpers/images.js';
import { pollUntil, readUntil } from './helpers/poll.js';
import { connected, waitDevice } from './helpers/xenbus.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly disks: BlockService;
  readonly logs: LogEntry[];
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const logs: LogEntry[] = [];
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: (e) => logs.push(e), domains: host.domains });
  const disks = new BlockService({ platform: host.platform });
  await registry.register('vbd', disks.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return { host, registry, disks, logs };
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed + Math.floor(i / 4096)) & 0xff;
  return b;
}

test('a guest negotiates a disk in memory and its data reaches the storage', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(1, 'guest1');
  const fe = await s.host.addDisk(guest, { params: 'memory:64M', ringPageOrder: 2 });
  await waitDevice(s.registry, 'vbd', 1, 51712, connected);
  t.is(fe.sectors, (64 * 2 ** 20) / 512);
  t.is(fe.sectorSize, 512);
  t.false(fe.readOnly);
  t.is(fe.features?.ringPageOrder, 2);
  t.is(fe.features?.maxIndirectSegments, 256);
  // Memory has no volatile cache: no flush is offered, and one asked for
  // anyway is not supported.
  t.is(fe.features?.flushCache, false);
  await t.throwsAsync(fe.flush(), { code: 'EOPNOTSUPP' });
  // 200 KiB: indirect requests; and a sector at an odd place.
  const data = pattern(200 * 1024, 7);
  await fe.write(2048, data);
  await fe.write(5, pattern(512, 9));
  t.deepEqual(await fe.read(2048, data.length), data);
  const storage = s.disks.storage(1, 51712);
  t.truthy(storage);
  t.deepEqual(storage?.readMemory(2048 * 512, data.length), data);
  t.deepEqual(storage?.readMemory(5 * 512, 512), pattern(512, 9));
  const stats = s.disks.stats(1, 51712);
  t.is(stats?.errors, 1, 'the flush');
  t.is(stats?.requests, stats?.responses);
});

test('queues that poll their rings serve a guest that sends them no events, and bad windows are refused', async (t) => {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
  // Polled for the longest window, far longer than the test lasts: after
  // the first request, which finds the ring asking for an event, the guest
  // is asked for none.
  const disks = new BlockService({ platform: host.platform, pollMicros: 60_000_000 });
  await registry.register('vbd', disks.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  for (const pollMicros of [-1, 1.5, 60_000_001]) {
    t.throws(() => new BlockService({ platform: host.platform, pollMicros }), { instanceOf: RangeError });
  }
  const guest = await host.createGuest(3, 'guest3');
  const fe = await host.addDisk(guest, { params: 'memory:4M' });
  await fe.write(0, pattern(4096, 1));
  const notified = fe.stats().notifications;
  for (let i = 1; i <= 16; i++) await fe.write(i * 8, pattern(4096, i));
  t.is(fe.stats().notifications, notified, 'no event asked for while polled');
  t.deepEqual(await fe.read(16 * 8, 4096), pattern(4096, 16));
  t.deepEqual(disks.storage(3, 51712)?.readMemory(8 * 512, 4096), pattern(4096, 1));
});

test('a 32-bit guest and a raw image file', async (t) => {
  const s = await setup(t);
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-vbd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(8 * 2 ** 20));
  const guest = await s.host.createGuest(2, 'guest2');
  const fe = await s.host.addDisk(guest, { params: image, protocol: 'x86_32-abi' });
  t.is(fe.sectors, (8 * 2 ** 20) / 512);
  t.is(fe.features?.flushCache, true);
  const data = pattern(64 * 1024, 3);
  await fe.write(100, data);
  await fe.flush();
  t.deepEqual(readFileSync(image).subarray(100 * 512, 100 * 512 + data.length), data);
  t.deepEqual(await fe.read(100, data.length), data);
});

test('a read-only disk is advertised so and refuses writes; reads still work', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(3, 'guest3');
  const fe = await s.host.addDisk(guest, { params: 'memory:1M', readOnly: true });
  t.true(fe.readOnly);
  const err = await t.throwsAsync(fe.write(0, pattern(4096, 1)));
  t.is((err as Error & { code?: string }).code, 'EIO');
  t.deepEqual(await fe.read(0, 4096), Buffer.alloc(4096));
  t.is(s.disks.stats(3, 51712)?.errors, 1);
  // One line for the refusal, from the data path.
  const refused = () => s.logs.some((e) => e.device === 'vbd-3-51712' && e.message.includes('read-only'));
  await pollUntil(refused);
  t.true(refused());
});

test('a disk whose params name nothing fails that device alone', async (t) => {
  const s = await setup(t);
  const a = await s.host.createGuest(4, 'guest4');
  const b = await s.host.createGuest(5, 'guest5');
  let badConnected = false;
  s.host.addDisk(a, { params: '/nonexistent/disk.img' }).then(
    () => (badConnected = true),
    () => undefined,
  );
  const good = await s.host.addDisk(b, { params: 'memory:1M' });
  await good.write(0, pattern(4096, 2));
  t.deepEqual(await good.read(0, 4096), pattern(4096, 2));
  // The bad device failed: one error naming the file, its backend Closed.
  const failed = () => s.logs.some((e) => e.device === 'vbd-4-51712' && e.level === 0 && e.message.includes('/nonexistent/disk.img'));
  await pollUntil(failed);
  t.true(failed(), JSON.stringify(s.logs));
  const closed = await readUntil(
    () => s.host.dom0.tryRead('/local/domain/0/backend/vbd/4/51712/state'),
    (v) => v === '6',
  );
  t.is(closed, '6');
  t.false(badConnected);
  t.deepEqual(await good.read(0, 4096), pattern(4096, 2));
});

test('a guest uses two queues: each has its ring and port under queue-N/, and both carry data', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(6, 'guest6');
  const fe = await s.host.addDisk(guest, { params: 'memory:16M', queues: 2, ringPageOrder: 1 });
  const offered = Number(await s.host.dom0.read('/local/domain/0/backend/vbd/6/51712/multi-queue-max-queues'));
  t.true(offered >= 1);
  // The guest asks for 2; a backend offering one gets one queue.
  const expected = Math.min(2, offered);
  t.is(fe.features?.queues, expected);
  t.is(fe.natives.length, expected);
  const front = '/local/domain/6/device/vbd/51712';
  if (expected === 2) {
    t.is(await guest.xs.read(`${front}/multi-queue-num-queues`), '2');
    for (const q of [0, 1]) {
      t.is(await guest.xs.read(`${front}/queue-${String(q)}/event-channel`), String(fe.natives[q]?.port));
      t.is(await guest.xs.read(`${front}/queue-${String(q)}/ring-ref1`), String(fe.natives[q]?.ringRefs[1]));
    }
    t.is(await guest.xs.tryRead(`${front}/ring-ref0`), undefined);
  }
  // Operations alternate between the queues and run side by side.
  const writes = Array.from({ length: 8 }, (_, i) => fe.write(i * 64, pattern(32 * 1024, i)));
  await Promise.all(writes);
  const reads = await Promise.all(Array.from({ length: 8 }, (_, i) => fe.read(i * 64, 32 * 1024)));
  reads.forEach((r, i) => t.deepEqual(r, pattern(32 * 1024, i), `extent ${String(i)}`));
  const perQueue = s.disks.queueStats(6, 51712);
  t.is(perQueue.length, expected);
  for (const q of perQueue) t.true(q.writes >= 4 / expected && q.reads >= 4 / expected, JSON.stringify(perQueue));
  const total = s.disks.stats(6, 51712);
  t.is(total?.writes, 8);
  t.is(total?.reads, 8);
  t.is(total?.errors, 0);
});

test('a frontend asking for more queues than offered fails its device alone', async (t) => {
  const logs: LogEntry[] = [];
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: (e) => logs.push(e), domains: host.domains });
  const disks = new BlockService({ platform: host.platform, maxQueues: 2 });
  await registry.register('vbd', disks.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  t.throws(() => new BlockService({ platform: host.platform, maxQueues: 0 }), { instanceOf: RangeError });
  const guest = await host.createGuest(7, 'guest7');
  const fe = await host.addDisk(guest, { params: 'memory:1M', queues: 4 });
  // The guest takes the smaller of its wish and the offer.
  t.is(fe.features?.queues, 2);
  await fe.write(0, pattern(4096, 5));
  t.deepEqual(await fe.read(0, 4096), pattern(4096, 5));
  // A hostile guest announces 3 queues, beyond the offer: its device
  // fails, the others carry on.
  const other = await host.createGuest(8, 'guest8');
  const good = await host.addDisk(other, { params: 'memory:1M' });
  const hostile = await host.createGuest(10, 'guest10');
  const { frontendPath, backendPath } = await addDevice(host.dom0, {
    type: 'vbd',
    frontendDomid: 10,
    devid: 51712,
    backend: { params: 'memory:1M', mode: 'w', type: 'phy', 'device-type': 'disk' },
    frontend: { 'virtual-device': '51712', 'device-type': 'disk' },
  });
  await readUntil(() => host.dom0.tryRead(`${backendPath}/state`), (v) => v === '2');
  for (const [k, v] of [['multi-queue-num-queues', '3'], ['queue-0/ring-ref', '8'], ['queue-0/event-channel', '5'], ['state', '3']]) {
    await hostile.xs.write(`${frontendPath}/${String(k)}`, String(v));
  }
  const failed = () => logs.some((e) => e.device === 'vbd-10-51712' && e.level === 0 && e.message.includes('multi-queue-num-queues'));
  await pollUntil(failed);
  t.true(failed(), JSON.stringify(logs.filter((e) => e.device === 'vbd-10-51712')));
  t.not(await host.dom0.tryRead(`${backendPath}/state`), '4');
  await good.write(8, pattern(4096, 6));
  t.deepEqual(await good.read(8, 4096), pattern(4096, 6));
});

test('a cdrom is advertised as a removable CD drive', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(9, 'guest9');
  const fe = await s.host.addDisk(guest, { params: 'memory:1M', readOnly: true, deviceType: 'cdrom', devid: 5632 });
  t.true(fe.cdrom);
  t.true(fe.removable);
  t.true(fe.readOnly);
  const disk = await s.host.addDisk(guest, { params: 'memory:1M' });
  t.false(disk.cdrom);
  t.false(disk.removable);
});

test('persistent grants are negotiated when both ends offer them, and either end can decline', async (t) => {
  const s = await setup(t);
  const guest = await s.host.createGuest(11, 'guest11');
  t.is(await s.host.dom0.read('/local/domain/0/backend/vbd/11/51712/feature-persistent').catch(() => undefined), undefined);
  const fe = await s.host.addDisk(guest, { params: 'memory:4M', ringPageOrder: 1 });
  t.is(await s.host.dom0.read('/local/domain/0/backend/vbd/11/51712/feature-persistent'), '1');
  t.is(await guest.xs.read('/local/domain/11/device/vbd/51712/feature-persistent'), '1');
  t.true(fe.features?.persistent);
  for (let round = 0; round < 4; round++) {
    const data = pattern(64 * 1024, round);
    await fe.write(64, data);
    t.deepEqual(await fe.read(64, data.length), data);
  }
  const stats = s.disks.stats(11, 51712);
  // Mapped once, then reused: far fewer mappings than pages moved.
  t.true((stats?.persistentMaps ?? 0) > 0, JSON.stringify(stats));
  t.true((stats?.persistentMaps ?? 0) <= 2 * 16 + 1, JSON.stringify(stats));
  // A guest that declines: grant copy, no mapping kept.
  const other = await s.host.addDisk(guest, { params: 'memory:4M', devid: 51728, persistent: false });
  t.false(other.features?.persistent);
  t.is(await guest.xs.read('/local/domain/11/device/vbd/51728/feature-persistent'), '0');
  const data = pattern(64 * 1024, 9);
  await other.write(0, data);
  t.deepEqual(await other.read(0, data.length), data);
  t.is(s.disks.stats(11, 51728)?.persistentMaps, 0);
  // Closing ends every grant once the backend let go.
  await fe.close();
  await other.close();
  t.is(fe.stats().requests, fe.stats().responses);
});

test('an image that grows is resized live: the frontend is told and can use the new sectors', async (t) => {
  const s = await setup(t);
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-vbd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(2 * 2 ** 20));
  const guest = await s.host.createGuest(12, 'guest12');
  const fe = await s.host.addDisk(guest, { params: image, queues: 2 });
  t.is(fe.sectors, 4096);
  // Past the end: refused.
  await t.throwsAsync(fe.write(4096, pattern(4096, 1)), { code: 'EIO' });
  // The owner grows the image; the toolstack (or an operator) says so.
  truncateSync(image, 4 * 2 ** 20);
  const told = firstValueFrom(fe.sectors$);
  t.is(await s.disks.resize(12, 51712), 8192);
  t.is(await told, 8192);
  t.is(fe.sectors, 8192);
  t.is(await s.host.dom0.read('/local/domain/0/backend/vbd/12/51712/sectors'), '8192');
  t.is(await s.host.dom0.read('/local/domain/0/backend/vbd/12/51712/state'), '4');
  // Both queues take the new end.
  for (let i = 0; i < 4; i++) await fe.write(4096 + i * 8, pattern(4096, i));
  for (let i = 0; i < 4; i++) t.deepEqual(await fe.read(4096 + i * 8, 4096), pattern(4096, i));
  await fe.flush();
  t.deepEqual(readFileSync(image).subarray(4096 * 512, 4096 * 512 + 4096), pattern(4096, 0));
  // What SIGHUP does: measure every file again; only a changed one is
  // announced.
  t.deepEqual(await s.disks.refreshSizes(), []);
  truncateSync(image, 5 * 2 ** 20);
  t.deepEqual(await s.disks.refreshSizes(), [{ name: 'vbd-12-51712', sectors: 10240 }]);
  await pollUntil(() => fe.sectors === 10240);
  t.is(fe.sectors, 10240);
  // A memory disk takes its new size; a bad one is refused.
  const mem = await s.host.addDisk(guest, { params: 'memory:1M', devid: 51728 });
  await t.throwsAsync(s.disks.resize(12, 51728), { code: 'EINVAL' });
  await t.throwsAsync(s.disks.resize(12, 99999, 10), { code: 'ENODEV' });
  t.is(await s.disks.resize(12, 51728, 4096), 4096);
  await pollUntil(() => mem.sectors === 4096);
  t.is(mem.sectors, 4096);
  await mem.write(3000, pattern(4096, 7));
  t.deepEqual(await mem.read(3000, 4096), pattern(4096, 7));
});

test('a qcow2 image named by params serves the guest, and qemu-img finds it consistent', async (t) => {
  const s = await setup(t);
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-vbd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '8M']);
  const guest = await s.host.createGuest(13, 'guest13');
  const fe = await s.host.addDisk(guest, { params: `qcow2:${image}`, queues: 2 });
  t.is(fe.sectors, (8 * 2 ** 20) / 512);
  t.true(fe.features?.flushCache);
  const data = pattern(192 * 1024, 4);
  await fe.write(1000, data);
  await fe.flush();
  t.deepEqual(await fe.read(1000, data.length), data);
  // A raw reading of a qcow2 file sees the file, not the disk: the format
  // comes from params only. (A copy: the image in use is locked, as QEMU
  // locks it, against a second user.)
  const copy = join(dir, 'copy.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', copy, '8M']);
  const raw = await s.host.addDisk(guest, { params: copy, devid: 51728, readOnly: true });
  t.not(raw.sectors, fe.sectors);
  await raw.close();
  await fe.close();
  await readUntil(
    () => s.host.dom0.tryRead('/local/domain/0/backend/vbd/13/51712/state'),
    (v) => v === '6',
  );
  execFileSync('qemu-img', ['check', '-q', image]);
  const out = join(dir, 'disk.raw');
  execFileSync('qemu-img', ['convert', '-O', 'raw', image, out]);
  t.deepEqual(readFileSync(out).subarray(1000 * 512, 1000 * 512 + data.length), data);
});

test('an image served to one guest is refused to a second disk, which fails alone with a clear reason', async (t) => {
  const s = await setup(t);
  const image = sparseImage(t, 4 * 2 ** 20);
  const first = await s.host.addDisk(await s.host.createGuest(21, 'guest21'), { params: image });
  await first.write(0, pattern(4096, 9));
  // Another guest's disk on the same image: its backend refuses it (init
  // fails: Closed and hotplug-error for the toolstack), as QEMU's image
  // locking does; the first disk carries on.
  await s.host.createGuest(22, 'guest22');
  const { backendPath } = await addDevice(s.host.dom0, { type: 'vbd', frontendDomid: 22, devid: 51712, backend: { params: image, mode: 'w' } });
  const reason = await readUntil(
    () => s.host.dom0.tryRead(`${backendPath}/hotplug-error`),
    (v) => v !== undefined,
  );
  t.regex(reason ?? '', /in use by another process/);
  // Closed follows hotplug-error (two writes, in that order).
  t.is(
    await readUntil(
      () => s.host.dom0.tryRead(`${backendPath}/state`),
      (v) => v === '6',
    ),
    '6',
  );
  t.deepEqual(await first.read(0, 4096), pattern(4096, 9));
});

test('an image is free again as soon as its disk is removed: a rebooted guest gets it back at once', async (t) => {
  const s = await setup(t);
  const image = sparseImage(t, 4 * 2 ** 20);
  for (let boot = 0; boot < 3; boot++) {
    // Each boot is a new domain with the same image, as after xl reboot.
    const domid = 30 + boot;
    const guest = await s.host.createGuest(domid, `guest${String(domid)}`);
    const disk = await s.host.addDisk(guest, { params: image });
    if (boot > 0) t.deepEqual(await disk.read(0, 4096), pattern(4096, boot - 1), `boot ${String(boot)}`);
    await disk.write(0, pattern(4096, boot));
    await s.host.destroyGuest(domid);
    // The next boot's disk is added as soon as the registry let this one
    // go (as after xl reboot, which creates the new domain at once).
    await pollUntil(() => s.registry.device('vbd', domid, 51712) === undefined);
  }
});
