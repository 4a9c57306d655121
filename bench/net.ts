// The network backend's data path on the simulated host: one guest sends
// to another through their vifs, each guest's netfront on its own driver
// thread in Rust (packets generated and counted there, costing JavaScript
// nothing), through
// - the in-process switch in Rust (NetService path 'switch'): no packet
//   crosses into JavaScript;
// - the TypeScript packet stream with the learning switch of
//   ts/backends/net-switch.ts (path 'stream'): every packet goes to
//   JavaScript in batches and back.
// Packets per second at 64 and 1500 bytes, and Gbit/s with 64 KiB GSO
// packets, received by the second guest. Each against memcpy of the same
// size in this run (the limit: each packet is copied twice by grant copy,
// out of one guest and into the other), and the TypeScript path against
// the Rust one measured just before it.
import { performance } from 'node:perf_hooks';

import { NetService, SimulatedHost, XenbusRegistry, learningSwitch } from '../ts/index.js';
import type { Packet, SimNetFrontend, VifPath } from '../ts/index.js';
import { native } from '../ts/native.js';
import { report } from './report.js';

const MS = Number(process.env['XENRX_BENCH_MS'] ?? 1000);
/** Packets unanswered at a time per sender (a guest's transmit queue). */
const WINDOW = 512;

interface World {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly net: NetService;
  readonly a: SimNetFrontend;
  readonly b: SimNetFrontend;
  stop(): Promise<void>;
}

async function world(path: VifPath): Promise<World> {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
  const net = new NetService({ platform: host.platform, path: () => path, maxQueues: 1 });
  await registry.register('vif', net.ops);
  const switching = path === 'stream' ? learningSwitch(net) : null;
  const a = await host.addNic(await host.createGuest(1, 'sender', { pages: 8192 }), { countOnly: true });
  const b = await host.addNic(await host.createGuest(2, 'receiver', { pages: 8192 }), { countOnly: true });
  // The receiver announces itself: the switch learns where it is.
  b.send(frame(Buffer.alloc(6, 0xff), b.mac, 60));
  const deadline = performance.now() + 10_000;
  while (a.stats().rxPackets < 1 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return {
    host,
    registry,
    net,
    a,
    b,
    stop: async () => {
      switching?.unsubscribe();
      await registry.close();
      await host.stop();
    },
  };
}

function frame(dst: Buffer, src: Buffer, length: number): Packet {
  const data = Buffer.alloc(length, 0x5a);
  dst.copy(data, 0);
  src.copy(data, 6);
  data.writeUInt16BE(0x88b5, 12);
  return { data };
}

interface Figures {
  readonly packetsPerSec: number;
  readonly bytesPerSec: number;
  readonly sent: number;
  readonly received: number;
  readonly seconds: number;
}

/** Sends `packet` from a to b for about MS ms; what b received per second. */
async function measure(w: World, packet: Packet): Promise<Figures> {
  const before = w.b.stats();
  const started = performance.now();
  let sent = 0;
  // Chunks of traffic until the time is up, then what is in flight lands.
  const chunk = Math.max(2000, Math.round(200_000 / Math.max(1, packet.data.length / 1000)));
  while (performance.now() - started < MS) sent += await w.a.blast(packet, chunk, WINDOW);
  const drain = performance.now() + 10_000;
  while (w.a.pending > 0 && performance.now() < drain) await new Promise((r) => setTimeout(r, 1));
  const seconds = (performance.now() - started) / 1000;
  const after = w.b.stats();
  const received = after.rxPackets - before.rxPackets;
  return { packetsPerSec: received / seconds, bytesPerSec: (after.rxBytes - before.rxBytes) / seconds, sent, received, seconds };
}

export async function run(): Promise<void> {
  const rust = await world('switch');
  const ts = await world('stream');
  try {
    for (const size of [64, 1500]) {
      const r = await measure(rust, frame(rust.b.mac, rust.a.mac, size));
      const memcpy = native.benchMemcpyBlocks(size, MS) / size;
      report({
        bench: 'net',
        metric: `pps_${String(size)}B_rust_switch`,
        value: r.packetsPerSec,
        unit: 'packets/s',
        reference: { name: `memcpy of ${String(size)}-byte blocks (blocks/s)`, value: memcpy, unit: 'blocks/s' },
        sent: r.sent,
        received: r.received,
        seconds: r.seconds,
      });
      const t = await measure(ts, frame(ts.b.mac, ts.a.mac, size));
      report({
        bench: 'net',
        metric: `pps_${String(size)}B_ts_stream`,
        value: t.packetsPerSec,
        unit: 'packets/s',
        reference: { name: 'the Rust switch path, this run', value: r.packetsPerSec, unit: 'packets/s' },
        sent: t.sent,
        received: t.received,
        seconds: t.seconds,
      });
    }
    const gso = (w: World): Packet => ({ ...frame(w.b.mac, w.a.mac, 65535), gsoSize: 1448, gsoType: 'tcpv4' });
    const r = await measure(rust, gso(rust));
    const memcpy = native.benchMemcpyBlocks(65536, MS);
    report({
      bench: 'net',
      metric: 'gbit_64k_gso_rust_switch',
      value: (r.bytesPerSec * 8) / 1e9,
      unit: 'Gbit/s',
      reference: { name: 'memcpy of 64 KiB blocks', value: (memcpy * 8) / 1e9, unit: 'Gbit/s' },
      packets_per_s: r.packetsPerSec,
      received: r.received,
    });
    const t = await measure(ts, gso(ts));
    report({
      bench: 'net',
      metric: 'gbit_64k_gso_ts_stream',
      value: (t.bytesPerSec * 8) / 1e9,
      unit: 'Gbit/s',
      reference: { name: 'the Rust switch path, this run', value: (r.bytesPerSec * 8) / 1e9, unit: 'Gbit/s' },
      packets_per_s: t.packetsPerSec,
      received: t.received,
    });
  } finally {
    await rust.stop();
    await ts.stop();
  }
}
