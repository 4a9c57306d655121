// A disk whose storage is implemented in TypeScript, on the simulated host:
// the Rust data path serves the guest's ring and hands the requests over
// in batches; the handler's answers go back to the guest.
import test from 'ava';
import type { ExecutionContext } from 'ava';

import { BlockService, BlockStorage, SimulatedHost, XenbusRegistry } from '../ts/index.js';
import type { BlockStorageHandler } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';

const PAGE = 4096;

/** A sparse disk of 4 KiB pages in a Map. */
class PageDisk implements BlockStorageHandler {
  readonly pages = new Map<number, Buffer>();
  flushes = 0;
  constructor(readonly sectors: number) {}

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let at = offset; at < offset + length; ) {
      const page = Math.floor(at / PAGE);
      const within = at % PAGE;
      const n = Math.min(PAGE - within, offset + length - at);
      this.pages.get(page)?.copy(out, at - offset, within, within + n);
      at += n;
    }
    return out;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await Promise.resolve();
    for (let at = offset; at < offset + data.length; ) {
      const page = Math.floor(at / PAGE);
      const within = at % PAGE;
      const n = Math.min(PAGE - within, offset + data.length - at);
      let buf = this.pages.get(page);
      if (!buf) this.pages.set(page, (buf = Buffer.alloc(PAGE)));
      data.copy(buf, within, at - offset, at - offset + n);
      at += n;
    }
  }
}

/** A handler over `disk` with some of its parts replaced by `parts`. */
function over(disk: PageDisk, parts: Partial<BlockStorageHandler>): BlockStorageHandler {
  return {
    sectors: disk.sectors,
    read: (offset, length) => disk.read(offset, length),
    write: (offset, data) => disk.write(offset, data),
    ...parts,
  };
}

/** The example pipeline: a handler around another one, logging its writes. */
function withWriteLog(inner: BlockStorageHandler, log: (offset: number, length: number) => void): BlockStorageHandler {
  return {
    sectors: inner.sectors,
    ...(inner.readOnly !== undefined ? { readOnly: inner.readOnly } : {}),
    ...(inner.flushCache !== undefined ? { flushCache: inner.flushCache } : {}),
    read: (offset, length) => inner.read(offset, length),
    write: async (offset, data) => {
      await inner.write(offset, data);
      log(offset, data.length);
    },
    ...(inner.flush ? { flush: () => inner.flush?.() } : {}),
  };
}

async function setup(t: ExecutionContext, handler: () => BlockStorageHandler): Promise<SimulatedHost> {
  const host = await SimulatedHost.start();
  // The data path's notices (the refusals these tests provoke) are not checked here.
  const registry = await XenbusRegistry.create(host.dom0, { logger: () => undefined, domains: host.domains });
  const disks = new BlockService({ platform: host.platform, storage: () => BlockStorage.custom(handler()) });
  await registry.register('vbd', disks.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return host;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed + Math.floor(i / 4096)) & 0xff;
  return b;
}

test('a guest writes and reads back through a TypeScript handler, and a wrapper sees the writes', async (t) => {
  const disk = new PageDisk((16 * 2 ** 20) / 512);
  const log: [number, number][] = [];
  const host = await setup(t, () => withWriteLog(disk, (offset, length) => log.push([offset, length])));
  const guest = await host.createGuest(1, 'g');
  const fe = await host.addDisk(guest, { params: 'custom', ringPageOrder: 1 });
  t.is(fe.sectors, disk.sectors);
  t.false(fe.readOnly);
  t.is(fe.features?.flushCache, false);
  // 200 KiB: indirect requests; and a sector at an odd place.
  const data = pattern(200 * 1024, 7);
  await fe.write(2048, data);
  await fe.write(5, pattern(512, 9));
  t.deepEqual(await fe.read(2048, data.length), data);
  t.deepEqual(await fe.read(5, 512), pattern(512, 9));
  t.deepEqual(await fe.read(4000, 8192), Buffer.alloc(8192), 'never written: zeros');
  t.deepEqual(disk.read(2048 * 512, data.length), data);
  // The log covers exactly what was written, whatever the requests' split.
  const logged = log.reduce((n, [, length]) => n + length, 0);
  t.is(logged, data.length + 512);
  t.true(log.some(([offset, length]) => offset === 5 * 512 && length === 512));
  t.true(log.every(([offset, length]) => (offset >= 2048 * 512 && offset + length <= 2048 * 512 + data.length) || offset === 5 * 512));
});

test('a handler that rejects a read fails that read alone with EIO', async (t) => {
  const disk = new PageDisk(2048);
  let failNext = false;
  const host = await setup(t, () =>
    over(disk, {
      read: async (offset, length) => {
        await Promise.resolve();
        if (failNext) {
          failNext = false;
          throw new Error('medium error');
        }
        return disk.read(offset, length);
      },
    }),
  );
  const guest = await host.createGuest(2, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  await fe.write(8, pattern(4096, 3));
  failNext = true;
  const err = await t.throwsAsync(fe.read(8, 4096));
  t.is((err as Error & { code?: string }).code, 'EIO');
  t.deepEqual(await fe.read(8, 4096), pattern(4096, 3));
});

test('a handler returning the wrong length or throwing synchronously fails the request', async (t) => {
  let mode: 'short' | 'throw' | 'ok' = 'short';
  const host = await setup(t, () => ({
    sectors: 2048,
    read: (_offset, length) => {
      if (mode === 'throw') throw new Error('boom');
      return Buffer.alloc(mode === 'short' ? length - 512 : length, 0xab);
    },
    write: () => undefined,
  }));
  const guest = await host.createGuest(3, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  await t.throwsAsync(fe.read(0, 4096), { code: 'EIO' });
  mode = 'throw';
  await t.throwsAsync(fe.read(0, 4096), { code: 'EIO' });
  mode = 'ok';
  t.deepEqual(await fe.read(0, 4096), Buffer.alloc(4096, 0xab));
});

test('flush is offered and reaches the handler after the writes before it', async (t) => {
  const disk = new PageDisk(2048);
  const events: string[] = [];
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  let received: () => void = () => undefined;
  const writeReceived = new Promise<void>((resolve) => (received = resolve));
  const host = await setup(t, () =>
    over(disk, {
      write: async (offset, data) => {
        received();
        await held;
        await disk.write(offset, data);
        events.push('write');
      },
      flush: () => {
        events.push('flush');
        disk.flushes++;
      },
    }),
  );
  const guest = await host.createGuest(4, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  t.is(fe.features?.flushCache, true);
  const write = fe.write(16, pattern(4096, 5));
  await writeReceived;
  const flush = fe.flush();
  release();
  await Promise.all([write, flush]);
  t.deepEqual(events, ['write', 'flush']);
  t.is(disk.flushes, 1);
  t.deepEqual(await fe.read(16, 4096), pattern(4096, 5));
});

test('a read-only handler never sees a write; bad geometry is refused', async (t) => {
  const disk = new PageDisk(2048);
  let writes = 0;
  const host = await setup(t, () =>
    over(disk, {
      readOnly: true,
      write: () => {
        writes++;
      },
    }),
  );
  const guest = await host.createGuest(5, 'g');
  const fe = await host.addDisk(guest, { params: 'custom', readOnly: true });
  t.true(fe.readOnly);
  await t.throwsAsync(fe.write(0, pattern(512, 1)), { code: 'EIO' });
  t.is(writes, 0);
  t.deepEqual(await fe.read(0, 512), Buffer.alloc(512));
  t.throws(() => BlockStorage.custom({ sectors: 0.5, read: () => Buffer.alloc(0), write: () => undefined }), { instanceOf: RangeError });
});

test('discards reach the handler with their range and whether they are secure', async (t) => {
  const disk = new PageDisk((16 * 2 ** 20) / 512);
  const discards: [number, number, boolean][] = [];
  const host = await setup(t, () =>
    over(disk, {
      discardSecure: true,
      discard: (offset, length, secure) => {
        discards.push([offset, length, secure]);
        for (let page = offset / PAGE; page < (offset + length) / PAGE; page++) disk.pages.delete(page);
      },
    }),
  );
  const guest = await host.createGuest(2, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  t.true(fe.features?.discard);
  t.true(fe.features?.discardSecure);
  await fe.write(0, pattern(16 * PAGE, 3));
  await fe.discard(8, 16);
  await fe.discard(64, 8, true);
  t.deepEqual(discards, [
    [8 * 512, 16 * 512, false],
    [64 * 512, 8 * 512, true],
  ]);
  const expected = pattern(16 * PAGE, 3);
  expected.fill(0, PAGE, 3 * PAGE).fill(0, 8 * PAGE, 9 * PAGE);
  t.deepEqual(await fe.read(0, 16 * PAGE), expected);
});

test('a handler without discard offers none, and a discard asked for anyway is refused', async (t) => {
  const disk = new PageDisk((16 * 2 ** 20) / 512);
  const host = await setup(t, () => disk);
  const guest = await host.createGuest(3, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  t.false(fe.features?.discard);
  await t.throwsAsync(fe.discard(0, 8), { code: 'EOPNOTSUPP' });
  await t.throwsAsync(fe.discard(0, 8, true), { code: 'EOPNOTSUPP' });
  await fe.write(0, pattern(PAGE, 1));
  t.deepEqual(await fe.read(0, PAGE), pattern(PAGE, 1));
});

for (const depth of [1, 4]) {
  test(`the requests a guest keeps in flight (queue depth ${String(depth)}) are at the handler together`, async (t) => {
    const disk = new PageDisk((16 * 2 ** 20) / 512);
    let inFlight = 0;
    let most = 0;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const host = await setup(t, () =>
      over(disk, {
        write: async (offset, data) => {
          inFlight++;
          most = Math.max(most, inFlight);
          await gate;
          await disk.write(offset, data);
          inFlight--;
        },
      }),
    );
    const guest = await host.createGuest(4, 'g');
    // Eleven segments a request: eight requests for this write.
    const fe = await host.addDisk(guest, { params: 'custom', queueDepth: depth, maxIndirectSegments: 11 });
    const data = pattern(8 * 11 * PAGE, depth);
    const written = fe.write(0, data);
    // A frontend that ignored its depth would push the rest with the same
    // push: the backend takes them in one pass and hands them over in one
    // batch, all at the handler in the same turn as the first.
    await pollUntil(() => inFlight >= depth);
    t.is(inFlight, depth);
    open();
    await written;
    t.is(most, depth, 'never more than the guest keeps in flight');
    t.deepEqual(await fe.read(0, data.length), data);
  });
}

test('a handler that discards but not securely never sees a secure discard', async (t) => {
  const disk = new PageDisk((16 * 2 ** 20) / 512);
  const discards: boolean[] = [];
  const host = await setup(t, () => over(disk, { discard: (_offset, _length, secure) => void discards.push(secure) }));
  const guest = await host.createGuest(5, 'g');
  const fe = await host.addDisk(guest, { params: 'custom' });
  t.true(fe.features?.discard);
  t.false(fe.features?.discardSecure);
  await t.throwsAsync(fe.discard(0, 8, true), { code: 'EOPNOTSUPP' });
  await fe.discard(0, 8);
  t.deepEqual(discards, [false]);
});
