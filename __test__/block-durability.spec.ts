// The block backend killed at any moment: `xenrx serve` runs in its own
// process on the test's simulated host (XenStore and a hypervisor served
// over a socket), the guest writes and flushes, and the backend is
// SIGKILLed with a request in flight, 30 times. Every write acknowledged
// before an acknowledged flush must be in the image, byte for byte; a
// response never comes before the data reached the storage.
import { closeSync, openSync, readSync } from 'node:fs';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { SimBlockFrontend, addDevice, removeDevice } from '../ts/index.js';
import { startXenrx } from './helpers/process.js';
import { servedHost } from './helpers/served-host.js';

const IMAGE_BYTES = 64 * 2 ** 20;

interface Write {
  readonly offset: number;
  readonly data: Buffer;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 13 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

function readImage(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

async function killRounds(t: ExecutionContext, rounds: readonly number[]): Promise<void> {
  // Each round starts a process: slow on a busy machine, never stuck (each
  // wait has its own bound).
  t.timeout(15 * 60_000);
  const { host, image, guest, serveArgs } = await servedHost(t, { imageBytes: IMAGE_BYTES, guestPages: 16384 });

  const durable: Write[] = [];
  let next = 0; // next free byte of the image: writes never overlap
  let kills = 0;
  for (const round of rounds) {
    const serve = startXenrx([...serveArgs, '--debug', '0']);
    t.teardown(() => {
      if (serve.child.exitCode === null && serve.child.signalCode === null) serve.child.kill('SIGKILL');
    });
    await serve.waitFor(/serving vbd/);
    const spec = { type: 'vbd', frontendDomid: 1, devid: 1000 + round, backend: { params: image, mode: 'w' } };
    const { frontendPath } = await addDevice(host.dom0, spec);
    const fe = await SimBlockFrontend.attach(host.sim, guest.xs, 1, frontendPath, { ringPageOrder: 1, timeoutMs: 2000 });
    await fe.waitConnected();
    t.true(fe.features?.flushCache, 'a file has a volatile cache: flush is offered');

    // What earlier rounds made durable is there.
    for (const w of durable) t.deepEqual(readImage(image, w.offset, w.data.length), w.data, `round ${String(round)}: write at ${String(w.offset)}`);

    const killAfter = 3 + ((round * 5) % 17);
    let acked = 0;
    let pending: Write[] = [];
    let inFlight: Promise<unknown>;
    for (let k = 0; ; k++) {
      const flush = k % 3 === 2;
      if (flush) {
        const done = fe.flush();
        if (acked >= killAfter) {
          inFlight = done;
          break;
        }
        await done;
        durable.push(...pending);
        pending = [];
      } else {
        const length = 4096 * (1 + ((round * 7 + k) % 16));
        const w = { offset: next, data: pattern(length, round * 100 + k) };
        next += length;
        const done = fe.write(w.offset / 512, w.data);
        if (acked >= killAfter) {
          inFlight = done;
          break;
        }
        await done;
        pending.push(w);
      }
      acked++;
    }
    // A request is in flight (or just answered): kill the backend now.
    inFlight.catch(() => undefined);
    serve.child.kill('SIGKILL');
    t.is(await serve.stop('SIGKILL'), null);
    kills++;
    fe.detach();
    await removeDevice(host.dom0, spec);
    t.true(next + 2 ** 20 < IMAGE_BYTES, 'room left in the image');
  }
  for (const w of durable) t.deepEqual(readImage(image, w.offset, w.data.length), w.data);
  t.true(durable.length > rounds.length, `${String(durable.length)} durable writes`);
  t.log(`${String(kills)} kills, ${String(durable.length)} writes made durable by acknowledged flushes`);
}

test('SIGKILL of the block backend loses no write made durable by a flush (kills 1-15 of 30)', async (t) => {
  await killRounds(t, Array.from({ length: 15 }, (_, i) => i));
});

test('SIGKILL of the block backend loses no write made durable by a flush (kills 16-30 of 30)', async (t) => {
  await killRounds(t, Array.from({ length: 15 }, (_, i) => i + 15));
});
