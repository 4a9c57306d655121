// The vbd backend through xenbus on the simulated host: the toolstack makes
// a disk, the guest's blkfront negotiates rings and features in XenStore,
// and data goes through the Rust data path into the disk's storage.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { BlockService, SimulatedHost, XenbusRegistry } from '../ts/index.js';
import type { LogEntry } from '../ts/index.js';
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
