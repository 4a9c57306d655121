// The block backend killed and started again under a running guest:
// `xenrx serve` runs in its own process on the test's simulated host, a
// simulated blkfront on two queues keeps reads, writes and flushes in
// flight, and the backend is SIGKILLed at a different point each round,
// then started again. The new process takes the disk over from the
// journals the old one left (no reconnect: the frontend never leaves
// Connected); every request completes without an error, every read finds
// what the last acknowledged write put there, and every write acknowledged
// before an acknowledged flush is in the image.
import { closeSync, openSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { SimBlockFrontend, SimulatedHost, addDevice } from '../ts/index.js';
import { startXenrx } from './helpers/process.js';
import type { Background } from './helpers/process.js';
import { tempDir } from './helpers/xenstore.js';

const IMAGE_BYTES = 16 * 2 ** 20;
const BLOCK = 4096;
/** Blocks the workload uses (a quarter of the image, so reads often find data). */
const BLOCKS = 256;

function stamp(block: number, version: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i += 8) {
    b.writeUInt32LE(block, i);
    b.writeUInt32LE(version, i + 4);
  }
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

/** A deterministic generator: a failure replays exactly. */
function rng(seed: number): () => number {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

async function restartRounds(t: ExecutionContext, rounds: number, seed: number): Promise<void> {
  t.timeout(20 * 60_000);
  const dir = tempDir(t);
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(0));
  truncateSync(image, IMAGE_BYTES);
  const host = await SimulatedHost.start({ dir });
  t.teardown(() => host.stop());
  const hvSocket = join(dir, 'hv.sock');
  host.hypervisor.serve(hvSocket);
  t.teardown(() => host.hypervisor.stopServing());
  const guest = await host.createGuest(1, 'guest1', { pages: 16384 });
  const stateDir = join(dir, 'state');
  const args = ['serve', '--socket', host.socket, '--hypervisor', hvSocket, '--types', 'vbd', '--max-queues', '2', '--state-dir', stateDir, '--debug', '1'];
  const serves: Background[] = [];
  const startServe = (): Background => {
    const s = startXenrx(args);
    serves.push(s);
    return s;
  };
  t.teardown(() => {
    for (const s of serves) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  });
  let serve = startServe();
  await serve.waitFor(/serving vbd/);
  const spec = { type: 'vbd', frontendDomid: 1, devid: 51712, backend: { params: image, mode: 'w' } };
  const { frontendPath } = await addDevice(host.dom0, spec);
  // Requests wait for the next backend: a long timeout, only a guard.
  const fe = await SimBlockFrontend.attach(host.sim, guest.xs, 1, frontendPath, { ringPageOrder: 1, queues: 2, timeoutMs: 120_000 });
  t.teardown(() => fe.detach());
  await fe.waitConnected();
  t.is(fe.features?.queues, 2);

  // The model: each block's acknowledged version; a block has at most one
  // write in flight, and is not read meanwhile.
  const acked = new Map<number, number>();
  const durable = new Map<number, number>();
  const busy = new Set<number>();
  const random = rng(seed);
  let version = 0;
  let errors = 0;
  let requests = 0;
  let stop = false;
  const failures: string[] = [];

  const worker = async (): Promise<void> => {
    while (!stop) {
      const r = random();
      requests++;
      try {
        if (r < 0.1) {
          const before = new Map(acked);
          await fe.flush();
          for (const [b, v] of before) if ((durable.get(b) ?? 0) < v) durable.set(b, v);
          continue;
        }
        let block = Math.floor(random() * BLOCKS);
        while (busy.has(block)) block = (block + 1) % BLOCKS;
        busy.add(block);
        try {
          if (r < 0.55) {
            const v = ++version;
            await fe.write(block * 8, stamp(block, v));
            acked.set(block, v);
          } else {
            const got = await fe.read(block * 8, BLOCK);
            const want = acked.get(block) ?? 0;
            if (!got.equals(want === 0 ? Buffer.alloc(BLOCK) : stamp(block, want))) {
              failures.push(`block ${String(block)}: read version ${String(got.readUInt32LE(4))}, want ${String(want)}`);
            }
          }
        } finally {
          busy.delete(block);
        }
      } catch (err) {
        errors++;
        failures.push(String(err));
      }
    }
  };
  const workers = Array.from({ length: 4 }, () => worker());

  const pauses: number[] = [];
  for (let round = 0; round < rounds; round++) {
    // Let some requests go through, then kill the backend at once.
    const target = requests + 20 + Math.floor(random() * 60);
    while (requests < target && failures.length === 0) await new Promise((r) => setImmediate(r));
    serve.child.kill('SIGKILL');
    await serve.exited();
    const killedAt = Date.now();
    const before = fe.stats().responses;
    serve = startServe();
    await serve.waitFor(/vbd-1-51712: taken over: Connected/);
    // The pause: from the kill to the first answer from the new backend.
    while (fe.stats().responses === before) await new Promise((r) => setTimeout(r, 1));
    pauses.push(Date.now() - killedAt);
  }
  stop = true;
  await Promise.all(workers);
  await fe.flush();
  for (const [b, v] of acked) if ((durable.get(b) ?? 0) < v) durable.set(b, v);

  t.deepEqual(failures, []);
  t.is(errors, 0);
  // What the guest made durable is in the image, byte for byte.
  for (const [b, v] of durable) t.true(readImage(image, b * BLOCK, BLOCK).equals(stamp(b, v)), `block ${String(b)}`);
  // The frontend never left Connected, and no backend state was written.
  t.is(await host.dom0.read(`${frontendPath}/state`), '4');
  t.is(await host.dom0.read('/local/domain/0/backend/vbd/1/51712/state'), '4');
  t.true(fe.stats().responses === fe.stats().requests);
  pauses.sort((a, b) => a - b);
  const pct = (p: number): number => pauses[Math.min(pauses.length - 1, Math.floor((p / 100) * pauses.length))] ?? NaN;
  t.log(`${String(rounds)} restarts, ${String(requests)} requests, ${String(durable.size)} blocks made durable; pause from SIGKILL to the new backend's first answer: p50 ${String(pct(50))} ms, p99 ${String(pct(99))} ms (a process start each)`);
  t.is(await serve.stop('SIGTERM'), 0);
}

test('SIGKILL and restart of the block backend under a running guest: no I/O error, no lost write (rounds 1-10)', async (t) => {
  await restartRounds(t, 10, 1);
});
