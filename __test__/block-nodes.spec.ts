// What the vbd backend tells a frontend in XenStore, the same disk served
// under another device type's name, and a disk whose image grows while
// the guest uses it.
import { truncateSync } from 'node:fs';

import test from 'ava';
import { firstValueFrom } from 'rxjs';
import { filter } from 'rxjs/operators';
import type { ExecutionContext } from 'ava';

import { BlockService, SimulatedHost, XenbusRegistry } from '../ts/index.js';
import type { BlockOptions } from '../ts/index.js';
import { sparseImage } from './helpers/images.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly disks: BlockService;
}

async function setup(t: ExecutionContext, type = 'vbd', options: Omit<BlockOptions, 'platform'> = {}): Promise<Setup> {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: () => undefined, domains: host.domains });
  const disks = new BlockService({ platform: host.platform, ...options });
  await registry.register(type, disks.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return { host, disks };
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

test('a raw image: every node a frontend reads before it connects', async (t) => {
  const s = await setup(t, 'vbd', { maxQueues: 3 });
  const guest = await s.host.createGuest(1, 'g');
  const fe = await s.host.addDisk(guest, { params: sparseImage(t, 8 * 2 ** 20) });
  const node = (name: string): Promise<string> => s.host.dom0.read(`/local/domain/0/backend/vbd/1/51712/${name}`);
  const nodes: Record<string, string> = {};
  for (const name of [
    'sectors',
    'sector-size',
    'physical-sector-size',
    'info',
    'mode',
    'feature-flush-cache',
    'feature-barrier',
    'feature-discard',
    'discard-granularity',
    'discard-alignment',
    'discard-secure',
    'feature-max-indirect-segments',
    'feature-persistent',
    'max-ring-page-order',
    'multi-queue-max-queues',
  ]) {
    nodes[name] = await node(name);
  }
  t.deepEqual(nodes, {
    sectors: '16384',
    'sector-size': '512',
    'physical-sector-size': '4096',
    info: '0',
    mode: 'w',
    'feature-flush-cache': '1',
    'feature-barrier': '1',
    // A file punches holes (secure discard it cannot promise).
    'feature-discard': '1',
    'discard-granularity': '4096',
    'discard-alignment': '0',
    'discard-secure': '0',
    'feature-max-indirect-segments': '256',
    'feature-persistent': '1',
    'max-ring-page-order': '4',
    'multi-queue-max-queues': '3',
  });
  // The frontend read them as they are.
  t.is(fe.sectors, 16384);
  t.like(fe.features, { flushCache: true, barrier: true, discard: true, discardSecure: false, discardGranularity: 4096, discardAlignment: 0 });
});

test('registered under another device type (as a toolstack picks one), a disk is served and found by its guest and number', async (t) => {
  const s = await setup(t, 'qdisk');
  const guest = await s.host.createGuest(2, 'g');
  const path = sparseImage(t, 4 * 2 ** 20);
  const fe = await s.host.addDisk(guest, { params: path, backendType: 'qdisk' });
  t.is(await s.host.dom0.read('/local/domain/0/backend/qdisk/2/51712/state'), '4');
  await fe.write(8, pattern(8192, 1));
  t.deepEqual(await fe.read(8, 8192), pattern(8192, 1));
  t.is(s.disks.storage(2, 51712)?.kind, 'file');
  t.is(s.disks.stats(2, 51712)?.writes, 1);
  const [stats] = s.disks.deviceStats();
  t.is(stats?.name, 'qdisk-2-51712');
  truncateSync(path, 8 * 2 ** 20);
  t.is(await s.disks.resize(2, 51712), 16384);
  t.is(await s.host.dom0.read('/local/domain/0/backend/qdisk/2/51712/sectors'), '16384');
  await t.throwsAsync(s.disks.resize(2, 51728), { code: 'ENODEV' });
});

test('an image that grows is noticed without being told: the frontend learns the new size and uses it', async (t) => {
  const s = await setup(t, 'vbd', { sizeCheckMs: 20 });
  const guest = await s.host.createGuest(3, 'g');
  const path = sparseImage(t, 2 * 2 ** 20);
  const fe = await s.host.addDisk(guest, { params: path });
  t.is(fe.sectors, 4096);
  await t.throwsAsync(fe.write(4096, pattern(4096, 2)), { code: 'EIO' });
  const told = firstValueFrom(fe.sectors$.pipe(filter((n) => n !== 4096)));
  truncateSync(path, 3 * 2 ** 20);
  t.is(await told, 6144);
  t.is(await s.host.dom0.read('/local/domain/0/backend/vbd/3/51712/sectors'), '6144');
  await fe.write(4096, pattern(4096, 2));
  t.deepEqual(await fe.read(4096, 4096), pattern(4096, 2));
});

test('sizeCheckMs is a whole number of milliseconds up to a day', async (t) => {
  const host = await SimulatedHost.start();
  t.teardown(() => host.stop());
  for (const bad of [-1, 0.5, 86_400_001, Number.NaN]) {
    t.throws(() => new BlockService({ platform: host.platform, sizeCheckMs: bad }), { instanceOf: RangeError });
  }
  t.notThrows(() => new BlockService({ platform: host.platform, sizeCheckMs: 0 }));
});
