// The block backend killed and started again under a running guest:
// `xenrx serve` runs in its own process on the test's simulated host, a
// simulated blkfront runs a verifying workload on two queues, 32 requests
// deep on each (random 4 KiB reads and writes, a flush every 32 writes),
// and the backend is SIGKILLed at a different point each round, then
// started again. The new process takes the disk over from the journals
// the old one left: no reconnect (the frontend never leaves Connected, no
// backend state is written), every request completes without an error,
// every read finds what the last acknowledged write put there, and every
// write acknowledged before an acknowledged flush is in the image.
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { SimBlockFrontend, addDevice } from '../ts/index.js';
import { startXenrx } from './helpers/process.js';
import type { Background } from './helpers/process.js';
import { servedHost } from './helpers/served-host.js';

const IMAGE_BYTES = 16 * 2 ** 20;
const BLOCK = 4096;

function readBlock(path: string, block: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(BLOCK);
    readSync(fd, b, 0, BLOCK, block * BLOCK);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** A block's stamp: (block, version) repeated, as the workload writes it. */
function stampOf(b: Buffer): { block: number; version: number } {
  return { block: b.readUInt32LE(0), version: b.readUInt32LE(4) };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** How the backend goes: SIGKILLed, then started again; or replaced by a process started with --takeover while it runs. */
type Mode = 'kill' | 'takeover';

async function restartRounds(t: ExecutionContext, rounds: number, seed: number, mode: Mode = 'kill'): Promise<void> {
  // Each round starts a process: slow on a busy machine, never stuck (each
  // wait has its own bound).
  t.timeout(30 * 60_000);
  const { dir, host, image, guest, serveArgs } = await servedHost(t, { imageBytes: IMAGE_BYTES, guestPages: 16384 });
  const args = [...serveArgs, '--max-queues', '2', '--state-dir', join(dir, 'state'), '--debug', '1'];
  const serves: Background[] = [];
  const startServe = (extra: readonly string[] = []): Background => {
    const s = startXenrx([...args, ...extra]);
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

  const run = fe.startVerify({ blocks: 512, depth: 32, seed, flushEvery: 32 });
  const random = ((x: number) => () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)(seed);
  const pauses: number[] = [];
  for (let round = 0; round < rounds; round++) {
    // Some requests go through, then the backend dies at once.
    const target = run.progress() + 50 + Math.floor(random() * 400);
    while (run.progress() < target) await new Promise((r) => setTimeout(r, 1));
    if (mode === 'kill') {
      serve.child.kill('SIGKILL');
      await serve.exited();
      const killedAt = Date.now();
      const before = run.progress();
      serve = startServe();
      await serve.waitFor(/vbd-1-51712: taken over: Connected/);
      // The pause: from the kill to the first answer from the new backend.
      while (run.progress() === before) await new Promise((r) => setTimeout(r, 1));
      pauses.push(Date.now() - killedAt);
    } else {
      // The new process loads while the old one serves; the pause is the
      // longest stretch without an answer while one hands over to the other.
      const old = serve;
      serve = startServe(['--takeover']);
      let last = run.progress();
      let lastAt = Date.now();
      let longest = 0;
      let done = false;
      const settled = serve.waitFor(/vbd-1-51712: taken over: Connected/).then(() => (done = true));
      while (!done || run.progress() === last) {
        await new Promise((r) => setTimeout(r, 1));
        const now = run.progress();
        if (now !== last) {
          longest = Math.max(longest, Date.now() - lastAt);
          last = now;
          lastAt = Date.now();
        }
      }
      longest = Math.max(longest, Date.now() - lastAt);
      await settled;
      t.is(await old.exited(), 0, old.output());
      t.regex(old.output(), /SIGUSR2: 2 disk queues and 0 vif queues handed over; exiting/);
      pauses.push(longest);
    }
  }
  const reports = await run.stop();

  const failures = reports.flatMap((r) => r.failures);
  t.deepEqual(failures, []);
  t.is(reports.reduce((n, r) => n + r.failed, 0), 0);
  const requests = reports.reduce((n, r) => n + r.requests, 0);
  const durable = reports.flatMap((r) => r.durable);
  t.true(durable.length > 0 && reports.every((r) => r.verified > 0 && r.flushes > 0));
  // What a flush made durable is in the image (or a later version of it).
  for (const [block = -1, version = -1] of durable) {
    const found = stampOf(readBlock(image, block));
    t.true(found.block === block && found.version >= version, `block ${String(block)}: version ${String(found.version)} found, ${String(version)} made durable`);
  }
  // The frontend never left Connected, and no backend state was written.
  t.is(await host.dom0.read(`${frontendPath}/state`), '4');
  t.is(await host.dom0.read('/local/domain/0/backend/vbd/1/51712/state'), '4');
  t.is(await host.dom0.read('/local/domain/0/backend/vbd/1/51712/hotplug-status'), 'connected');
  pauses.sort((a, b) => a - b);
  t.log(
    mode === 'kill'
      ? `${String(rounds)} SIGKILLs, ${String(requests)} requests at depth 32 on 2 queues, ${String(durable.length)} blocks made durable; ` +
          `pause from SIGKILL to the new backend's first answer: p50 ${String(percentile(pauses, 50))} ms, p99 ${String(percentile(pauses, 99))} ms (a node process start each)`
      : `${String(rounds)} takeovers, ${String(requests)} requests at depth 32 on 2 queues, ${String(durable.length)} blocks made durable; ` +
          `longest stretch without an answer during each: p50 ${String(percentile(pauses, 50))} ms, p99 ${String(percentile(pauses, 99))} ms`,
  );
  t.is(await serve.stop('SIGTERM'), 0);
}

test('SIGKILL and restart of the block backend under a running guest, 50 times: no I/O error, no lost write', async (t) => {
  await restartRounds(t, 50, 1);
});

test('SIGKILL and restart of the block backend under a running guest, 50 more times (another seed)', async (t) => {
  await restartRounds(t, 50, 7);
});

test('a planned takeover (xenrx serve --takeover) under a running guest, 25 times: no I/O error, no lost write', async (t) => {
  await restartRounds(t, 25, 11, 'takeover');
});
