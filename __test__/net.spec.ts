// The vif backend through xenbus on the simulated host: the toolstack makes
// a network interface, the guest's netfront negotiates rings, ports and
// features in XenStore, and packets go through the Rust data path, between
// guests on the in-process switch or through a TypeScript pipeline.
import test from 'ava';
import { mergeMap, from as fromArray } from 'rxjs';
import type { ExecutionContext } from 'ava';

import { NetService, PrometheusMetrics, SimulatedHost, XenbusRegistry, formatMac, isGroupDestination } from '../ts/index.js';
import { topRows } from '../ts/cli/top-view.js';
import type { LogEntry, NetOptions, Packet, SimNetFrontend } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';
import { connected, waitDevice } from './helpers/xenbus.js';

interface Setup {
  readonly host: SimulatedHost;
  readonly registry: XenbusRegistry;
  readonly net: NetService;
  readonly logs: LogEntry[];
}

async function setup(t: ExecutionContext, options: Omit<NetOptions, 'platform'> = {}): Promise<Setup> {
  const logs: LogEntry[] = [];
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { logger: (e) => logs.push(e), domains: host.domains });
  const net = new NetService({ platform: host.platform, ...options });
  await registry.register('vif', net.ops);
  t.teardown(async () => {
    await registry.close();
    await host.stop();
  });
  return { host, registry, net, logs };
}

/** A frame from `src` to `dst` (6-byte MACs) of `length` bytes, its payload numbered `seq`. */
function frame(dst: Buffer, src: Buffer, seq: number, length: number): Packet {
  const data = Buffer.alloc(length);
  dst.copy(data, 0);
  src.copy(data, 6);
  data.writeUInt16BE(0x88b5, 12);
  data.writeUInt32BE(seq, 14);
  for (let i = 18; i < length; i++) data[i] = (i * 7 + seq) & 0xff;
  return { data };
}

const BROADCAST = Buffer.alloc(6, 0xff);

async function guestWithNic(s: Setup, domid: number, options: Parameters<SimulatedHost['addNic']>[1] = {}, pages?: number): Promise<SimNetFrontend> {
  const guest = await s.host.createGuest(domid, `guest${String(domid)}`, pages !== undefined ? { pages } : {});
  const nic = await s.host.addNic(guest, options);
  await waitDevice(s.registry, 'vif', domid, options.devid ?? 0, connected);
  return nic;
}

test('two guests exchange packets through the in-process switch', async (t) => {
  const s = await setup(t);
  const a = await guestWithNic(s, 1);
  const b = await guestWithNic(s, 2);
  t.is(formatMac(a.mac), '00:16:3e:00:01:00');
  t.is(await s.host.dom0.read('/local/domain/0/backend/vif/1/0/hotplug-status'), 'connected');
  t.is(await s.host.dom0.read('/local/domain/0/backend/vif/1/0/feature-rx-copy'), '1');
  // A broadcasts; B answers A alone: both learnt.
  const hello = frame(BROADCAST, a.mac, 0, 60);
  const atB = b.receive(1);
  a.send(hello);
  t.deepEqual((await atB)[0]?.data, hello.data);
  const reply = frame(a.mac, b.mac, 1, 98);
  const atA = a.receive(1);
  b.send(reply);
  t.deepEqual((await atA)[0]?.data, reply.data);
  t.is(s.net.switch.portOf(a.mac), 0);
  t.is(s.net.switch.portOf(b.mac), 1);
  // A bulk transfer, every size up to a 64 KiB frame, in order and whole.
  const sizes = [60, 1514, 4096, 9000, 65535];
  const sent = Array.from({ length: 200 }, (_, i) => frame(b.mac, a.mac, 10 + i, sizes[i % sizes.length] ?? 60));
  const got = b.receive(sent.length);
  a.send(sent);
  t.deepEqual(
    (await got).map((p) => p.data),
    sent.map((p) => p.data),
  );
  await pollUntil(() => a.pending === 0);
  const stats = s.net.stats(2, 0);
  t.is(stats?.rxPackets, 201);
  t.is(stats?.rxDropped, 0);
  t.is(s.net.stats(1, 0)?.txErrors, 0);
  t.deepEqual(
    s.net.deviceStats().map((d) => [d.name, d.type, d.queues]),
    [
      ['vif-1-0', 'vif', 1],
      ['vif-2-0', 'vif', 1],
    ],
  );
});

test('a learning switch written in TypeScript bridges two guests on the packet stream', async (t) => {
  const s = await setup(t, { path: () => 'stream' });
  // The switch: learn each frame's source on the vif it came from; send a
  // frame to the vif its destination was learnt on, or to every other vif.
  const where = new Map<string, string>();
  const routed = s.net.packets$
    .pipe(
      mergeMap(({ vif, packets }) => fromArray(packets.map((p) => ({ vif, p })))),
      mergeMap(({ vif, p }) => {
        where.set(formatMac(p.data, 6), vif);
        const to = isGroupDestination(p.data) ? undefined : where.get(formatMac(p.data, 0));
        const targets = to !== undefined ? [to] : s.net.vifs().filter((v) => v !== vif);
        return fromArray(targets.filter((v) => v !== vif).map((target) => ({ target, p })));
      }),
    )
    .subscribe(({ target, p }) => s.net.send(target, [p]));
  t.teardown(() => routed.unsubscribe());
  const a = await guestWithNic(s, 1);
  const b = await guestWithNic(s, 2);
  const c = await guestWithNic(s, 3);
  // A's broadcast reaches B and C; B's answer reaches A only.
  const atB = b.receive(1);
  const atC = c.receive(1);
  a.send(frame(BROADCAST, a.mac, 0, 60));
  t.is((await atB).length, 1);
  t.is((await atC).length, 1);
  const atA = a.receive(1);
  b.send(frame(a.mac, b.mac, 1, 60));
  t.deepEqual((await atA)[0]?.data, frame(a.mac, b.mac, 1, 60).data);
  // Request and response, then a bulk transfer; C sees none of it.
  for (let i = 0; i < 20; i++) {
    const pong = a.receive(1);
    const ping = b.receive(1);
    a.send(frame(b.mac, a.mac, 100 + i, 98));
    await ping;
    b.send(frame(a.mac, b.mac, 100 + i, 98));
    t.is((await pong)[0]?.data.readUInt32BE(14), 100 + i);
  }
  const sent = Array.from({ length: 300 }, (_, i) => frame(b.mac, a.mac, 1000 + i, 1514));
  const got = b.receive(sent.length);
  a.send(sent);
  t.deepEqual(
    (await got).map((p) => p.data),
    sent.map((p) => p.data),
  );
  t.is(c.stats().rxPackets, 1);
  t.is(s.net.switch.ports, 0, 'stream vifs are not on the Rust switch');
});

test('a guest with four queues and split event channels spreads its flows and loses nothing', async (t) => {
  const s = await setup(t, { maxQueues: 4 });
  // Each queue posts a ring's worth of receive buffers: room for them.
  const a = await guestWithNic(s, 1, { queues: 4, splitEventChannels: true }, 4096);
  const b = await guestWithNic(s, 2, { queues: 2 }, 4096);
  t.is(a.queues, 4);
  t.is(b.queues, 2);
  t.is(await s.host.dom0.read('/local/domain/1/device/vif/0/multi-queue-num-queues'), '4');
  t.truthy(await s.host.dom0.tryRead('/local/domain/1/device/vif/0/queue-3/event-channel-rx'));
  const atB = b.receive(1);
  a.send(frame(BROADCAST, a.mac, 0, 60));
  await atB;
  const atA = a.receive(1);
  b.send(frame(a.mac, b.mac, 0, 60));
  await atA;
  // IPv4-looking frames of 16 flows: each flow in order at B.
  const sent: Packet[] = [];
  for (let i = 0; i < 320; i++) {
    const p = frame(b.mac, a.mac, i, 200);
    p.data.writeUInt16BE(0x0800, 12);
    p.data.writeUInt32BE(0x0a000000 + (i % 16), 26);
    sent.push(p);
  }
  const got = b.receive(sent.length);
  a.send(sent);
  const received = await got;
  for (let flow = 0; flow < 16; flow++) {
    const of = (list: readonly Packet[]): number[] => list.filter((p) => p.data.readUInt32BE(26) === 0x0a000000 + flow).map((p) => p.data.readUInt32BE(14));
    t.deepEqual(of(received), of(sent));
  }
  t.is(s.net.queueStats(1, 0).length, 4);
  t.true(s.net.queueStats(1, 0).filter((q) => q.txPackets > 0).length > 1, 'more than one queue carried traffic');
});

test('a frontend without rx-copy or rx-notify, or with garbage nodes, fails its vif only', async (t) => {
  const s = await setup(t);
  const good = await guestWithNic(s, 1);
  const peer = await guestWithNic(s, 2);
  // Guests whose frontend writes what netback refuses.
  const cases: [number, string, string][] = [
    [3, 'request-rx-copy', '0'],
    [4, 'feature-rx-notify', '0'],
    [5, 'multi-queue-num-queues', 'lots'],
    [6, 'tx-ring-ref', '-1'],
  ];
  for (const [domid, node, value] of cases) {
    const guest = await s.host.createGuest(domid, `bad${String(domid)}`);
    await s.host
      .addDevice(guest, 'vif', {
        backend: { mac: `00:16:3e:00:0${String(domid)}:00` },
        hooks: {
          prepare: () => ({
            'tx-ring-ref': '8',
            'rx-ring-ref': '9',
            'event-channel': '5',
            'request-rx-copy': '1',
            'feature-rx-notify': '1',
            [node]: value,
          }),
        },
      })
      .catch(() => undefined);
    await pollUntil(() => s.logs.some((l) => l.device === `vif-${String(domid)}-0` && l.level === 0));
    const line = s.logs.find((l) => l.device === `vif-${String(domid)}-0` && l.level === 0)?.message ?? '';
    t.regex(line, new RegExp(node === 'tx-ring-ref' ? 'tx-ring-ref' : node.replace(/-/g, '.'), 'i'), line);
  }
  // The others carry on.
  const atPeer = peer.receive(1);
  good.send(frame(BROADCAST, good.mac, 7, 60));
  t.is((await atPeer)[0]?.data.readUInt32BE(14), 7);
  t.deepEqual(s.net.vifs().sort(), ['vif-1-0', 'vif-2-0']);
});

test("a destroyed guest's vif is freed, its switch port and addresses with it", async (t) => {
  const s = await setup(t);
  const a = await guestWithNic(s, 1);
  const b = await guestWithNic(s, 2);
  const atB = b.receive(1);
  a.send(frame(BROADCAST, a.mac, 0, 60));
  await atB;
  t.is(s.net.switch.portOf(a.mac), 0);
  await s.host.destroyGuest(1);
  await pollUntil(() => s.net.switch.ports === 1);
  t.is(s.net.switch.portOf(a.mac), null);
  t.deepEqual(s.net.vifs(), ['vif-2-0']);
  // B's frames to the vanished address go nowhere, and B is still served.
  b.send(frame(a.mac, b.mac, 1, 60));
  await pollUntil(() => b.pending === 0);
  t.is(s.net.stats(2, 0)?.txPackets, 1);
});

test('vif counters reach the Prometheus exposition and xenrx top rows', async (t) => {
  const s = await setup(t);
  const a = await guestWithNic(s, 1);
  const b = await guestWithNic(s, 2);
  const atB = b.receive(10);
  a.send(Array.from({ length: 10 }, (_, i) => frame(BROADCAST, a.mac, i, 100)));
  await atB;
  await pollUntil(() => a.pending === 0);
  const metrics = new PrometheusMetrics([s.net], { processMetrics: false });
  const text = await metrics.scrape();
  t.regex(text, /^xenrx_vif_packets_total\{type="vif",domid="1",devid="0",device="vif-1-0",guest="",direction="tx"\} 10$/m);
  t.regex(text, /^xenrx_vif_packets_total\{type="vif",domid="2",devid="0",device="vif-2-0",guest="",direction="rx"\} 10$/m);
  t.regex(text, /^xenrx_vif_bytes_total\{type="vif",domid="2",devid="0",device="vif-2-0",guest="",direction="rx"\} 1000$/m);
  t.regex(text, /^xenrx_devices\{type="vif",state="Connected"\} 2$/m);
  const now = s.net.deviceStats().map((d) => ({ ...d, guest: '' }));
  const zero = now.map((d) => ({ ...d, counters: { txPackets: 0, txBytes: 0, txErrors: 0, rxPackets: 0, rxBytes: 0, rxDropped: 0, csumFilled: 0, notifications: 0 } }));
  const rows = topRows({ at: 2000, devices: now }, { at: 1000, devices: zero });
  const rowB = rows.find((r) => r.device === 'vif-2-0');
  t.is(rowB?.readPerSec, 1000, 'what reached guest 2 in the second');
  t.is(rowB?.errors, 0);
});
