// The hypervisor platform on the simulated host: event-channel round trips
// across two processes, notifications per second, blkif ring round trips
// (1 and 2 queues, backend on the event loop), grant map+unmap rates,
// grant-copy throughput. Each against a reference from the same run.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { SimHypervisor } from '../ts/index.js';
import { native } from '../ts/native.js';
import { percentile, report } from './report.js';

const BACK = 0;
const FRONT = 5;
const MS = Number(process.env['XENRX_BENCH_MS'] ?? 1000);

/** Runs the benchmark and prints its figures. */
export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-bench-platform-'));
  const hv = new SimHypervisor();
  hv.createDomain({ domid: BACK });
  hv.createDomain({ domid: FRONT, pages: 4096 });
  const socket = join(dir, 'hv.sock');
  hv.serve(socket);
  const peerScript = fileURLToPath(new URL('platform-peer.ts', import.meta.url));
  const peer = spawn(process.execPath, ['--import', 'tsx', peerScript, socket, String(FRONT), String(BACK), '64'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  try {
    const hello = await new Promise<string>((resolve, reject) => {
      let out = '';
      peer.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('\n')) resolve(out.split('\n')[0] ?? '');
      });
      peer.on('error', reject);
      peer.on('exit', (code) => reject(new Error(`peer exited (${String(code)})`)));
    });
    const { port, refs } = JSON.parse(hello) as { port: number; refs: number[] };
    const host = hv.host();
    const ch = host.evtchn(BACK);
    const bport = ch.bindInterdomain(FRONT, port);

    const trips = native.benchEvtchnRoundTrips(ch.native, bport, 20_000);
    const ref = native.benchEventfdRoundTrips(20_000);
    for (const p of [50, 99]) {
      report({
        bench: 'platform',
        metric: `event-channel round trip p${String(p)}, two processes`,
        value: percentile(trips, p) / 1000,
        unit: 'us',
        reference: { name: `bare eventfd ping-pong p${String(p)}, two threads`, value: percentile(ref, p) / 1000, unit: 'us' },
        samples: trips.length,
      });
    }
    report({
      bench: 'platform',
      metric: 'event-channel round trips per second, two processes',
      value: trips.length / (trips.reduce((a, b) => a + b, 0) / 1e9),
      unit: 'round trips/s',
      reference: { name: 'bare eventfd ping-pong, two threads', value: ref.length / (ref.reduce((a, b) => a + b, 0) / 1e9), unit: 'round trips/s' },
    });
    const notifyRate = native.benchNotifyRate(ch.native, bport, MS);
    report({
      bench: 'platform',
      metric: 'notifications sent per second (one port, peer coalescing)',
      value: notifyRate,
      unit: 'notifications/s',
      reference: { name: 'round trips per second (one notification each way, waiting)', value: trips.length / (trips.reduce((a, b) => a + b, 0) / 1e9), unit: 'round trips/s' },
    });

    // Rings: one request in flight per ring, the backend on dom0's event
    // loop; read against the bare eventfd round trip measured above.
    const eventfdRate = ref.length / (ref.reduce((a, b) => a + b, 0) / 1e9);
    for (const queues of [1, 2]) {
      report({
        bench: 'platform',
        metric: `blkif ring request+response round trips per second, ${String(queues)} queue${queues > 1 ? 's' : ''}`,
        value: native.benchRingRoundTrips(queues, MS),
        unit: 'round trips/s',
        reference: { name: 'bare eventfd ping-pong, two threads', value: eventfdRate, unit: 'round trips/s' },
      });
    }

    const dev = host.gntdev(BACK);
    for (const n of [1, 11]) {
      const batch = refs.slice(0, n);
      const rate = native.benchMapUnmapRate(dev.native, FRONT, batch, MS);
      const refRate = native.benchMmapMunmapRate(n, MS);
      report({
        bench: 'platform',
        metric: `grant map+unmap, ${String(n)}-page batch`,
        value: rate,
        unit: 'ops/s',
        reference: { name: `plain mmap+munmap of ${String(n)} memfd pages`, value: refRate, unit: 'ops/s' },
      });
    }
    const copy = native.benchGrantCopyRate(dev.native, FRONT, refs, 32, MS);
    const memcpy = native.benchMemcpyRate(64, 32, MS);
    report({
      bench: 'platform',
      metric: 'grant copy, 4 KiB segments, 32 per call',
      value: copy / 2 ** 20,
      unit: 'MiB/s',
      reference: { name: 'memcpy of 4 KiB blocks', value: memcpy / 2 ** 20, unit: 'MiB/s' },
    });
  } finally {
    peer.stdin.end();
    await new Promise((r) => peer.once('exit', r).once('error', r));
    hv.stopServing();
    rmSync(dir, { recursive: true, force: true });
  }
}
