// Statistics end to end: `xenrx serve --metrics` in its own process on the
// test's simulated host, a simulated blkfront doing a known workload, and
// the endpoint's counters compared with what the frontend asked for; then
// `xenrx top` driven in a pseudo-terminal. And in process: stats$, the
// health probe, and a console's counters.

import test from 'ava';
import { firstValueFrom, filter } from 'rxjs';

import { BlockService, ConsoleService, PrimaryConsoleService, SimBlockFrontend, SimulatedHost, XenbusRegistry, addDevice, healthProbe, stats$ } from '../ts/index.js';
import type { BlockDeviceStats, ConsoleDeviceStats, StatsDocument } from '../ts/index.js';
import { runXenrx, startProgram, startXenrx, xenrxNodeArgs } from './helpers/process.js';
import { pollUntil } from './helpers/poll.js';
import { connected, waitDevice } from './helpers/xenbus.js';
import { servedHost } from './helpers/served-host.js';

/** The value of one sample of the exposition text, by name and labels (all given labels must match). */
function sample(text: string, name: string, labels: Readonly<Record<string, string>>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

// pty.spawn relays the pseudo-terminal's output to its stdout and its stdin
// to the terminal; the child sees a terminal on both.
const PTY = 'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)';

test('serve --metrics counts exactly what a simulated blkfront did, and xenrx top shows the disk', async (t) => {
  t.timeout(5 * 60_000);
  const { host, image, guest, serveArgs } = await servedHost(t, { imageBytes: 32 * 2 ** 20, guestPages: 8192 });

  const serve = startXenrx([...serveArgs, '--debug', '0', '--metrics', '127.0.0.1:0']);
  t.teardown(() => {
    if (serve.child.exitCode === null && serve.child.signalCode === null) serve.child.kill('SIGKILL');
  });
  await serve.waitFor(/serving vbd/);
  const url = /statistics on (http:\/\/[^\s/]+)\/metrics/.exec(serve.output())?.[1];
  if (url === undefined) throw new Error(`no endpoint in:\n${serve.output()}`);

  const spec = { type: 'vbd', frontendDomid: 1, devid: 51712, backend: { params: image, mode: 'w' } };
  const { frontendPath } = await addDevice(host.dom0, spec);
  const fe = await SimBlockFrontend.attach(host.sim, guest.xs, 1, frontendPath, { ringPageOrder: 1, timeoutMs: 5000 });
  t.teardown(() => fe.detach());
  await fe.waitConnected();
  t.true(fe.features?.flushCache, 'a file has a volatile cache');

  // 7 writes of 1..7 pages, 5 reads of 2 pages, 3 flushes, 2 discards.
  for (let i = 0; i < 7; i++) await fe.write(i * 64, Buffer.alloc(4096 * (i + 1), i + 1));
  for (let i = 0; i < 5; i++) await fe.read(i * 64, 8192);
  for (let i = 0; i < 3; i++) await fe.flush();
  const discard = fe.features?.discard === true;
  if (discard) for (let i = 0; i < 2; i++) await fe.discard(4096 + i * 64, 64);

  const res = await fetch(`${url}/metrics`);
  t.is(res.status, 200);
  t.regex(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const dev = { device: 'vbd-1-51712', domid: '1', devid: '51712', type: 'vbd', guest: 'guest1' };
  t.is(sample(text, 'xenrx_vbd_requests_total', { ...dev, op: 'read' }), 5);
  t.is(sample(text, 'xenrx_vbd_requests_total', { ...dev, op: 'write' }), 7);
  t.is(sample(text, 'xenrx_vbd_requests_total', { ...dev, op: 'flush' }), 3);
  t.is(sample(text, 'xenrx_vbd_requests_total', { ...dev, op: 'discard' }), discard ? 2 : 0);
  t.is(sample(text, 'xenrx_vbd_sectors_total', { ...dev, op: 'write' }), 8 * (1 + 2 + 3 + 4 + 5 + 6 + 7));
  t.is(sample(text, 'xenrx_vbd_sectors_total', { ...dev, op: 'read' }), 5 * 16);
  t.is(sample(text, 'xenrx_vbd_errors_total', dev), 0);
  t.is(sample(text, 'xenrx_vbd_queues', dev), 1);
  t.is(sample(text, 'xenrx_devices', { type: 'vbd', state: 'Connected' }), 1);
  t.is(sample(text, 'xenrx_devices_failed', {}), 0);
  // Histograms: one count per request answered, buckets cumulative up to +Inf.
  for (const [op, n] of [['read', 5], ['write', 7], ['flush', 3]] as const) {
    const labels = { ...dev, op };
    t.is(sample(text, 'xenrx_vbd_request_duration_seconds_count', labels), n, op);
    t.is(sample(text, 'xenrx_vbd_request_duration_seconds_bucket', { ...labels, le: '+Inf' }), n, op);
    t.true((sample(text, 'xenrx_vbd_request_duration_seconds_sum', labels) ?? -1) > 0, op);
    const buckets = text.split('\n').filter((l) => l.startsWith('xenrx_vbd_request_duration_seconds_bucket') && l.includes(`op="${op}"`));
    t.is(buckets.length, 26);
    const counts = buckets.map((l) => Number(l.split(' ').at(-1)));
    t.deepEqual(counts, [...counts].sort((a, b) => a - b), `${op}: cumulative`);
  }
  // The process's own metrics come along.
  t.truthy(sample(text, 'process_resident_memory_bytes', {}));
  // The frontend's count of requests is the backend's.
  const stats = (await (await fetch(`${url}/stats`)).json()) as StatsDocument;
  const disk = stats.devices.find((d): d is BlockDeviceStats & { guest: string } => d.type === 'vbd');
  t.is(disk?.guest, 'guest1');
  t.is(disk?.counters.requests, fe.stats().requests);
  t.is(disk?.counters.responses, fe.stats().responses);

  const health = await fetch(`${url}/healthz`);
  t.is(health.status, 200);
  const report = (await health.json()) as { healthy: boolean; checks: Record<string, { ok: boolean }> };
  t.true(report.healthy);
  t.true(report.checks.xenstore?.ok && report.checks.eventLoop?.ok && report.checks.devices?.ok);
  t.is((await fetch(`${url}/nothing`)).status, 404);

  // One table, without a terminal.
  const once = await runXenrx(['top', '--url', url, '--once', '--interval', '100']);
  t.is(once.code, 0, once.stderr);
  t.regex(once.stdout, /^GUEST\s+DOMID\s+DEVICE\s+STATE\s+OPS\/S\*/m);
  t.regex(once.stdout, /^guest1\s+1\s+vbd-1-51712\s+Connected\s/m);

  // Live, in a terminal: the row, a sort key, and q to quit.
  const top = startProgram('python3', ['-c', PTY, process.execPath, ...xenrxNodeArgs(['top', '--url', url, '--interval', '200'])]);
  t.teardown(() => {
    if (top.child.exitCode === null && top.child.signalCode === null) top.child.kill('SIGKILL');
  });
  await top.waitFor(/guest1\s+1\s+vbd-1-51712\s+Connected/);
  t.regex(top.output(), /sorted by ops\/s/);
  top.child.stdin.write('s');
  await top.waitFor(/sorted by rd\/s/);
  top.child.stdin.write('r');
  await top.waitFor(/sorted by rd\/s \(reversed\)/);
  top.child.stdin.write('q');
  t.is(await top.exited(), 0);

  t.is(await serve.stop('SIGTERM'), 0);
});

test('stats$ gives snapshots of every disk, console and primary console, and the health probe sees a stopped event loop', async (t) => {
  const host = await SimulatedHost.start();
  const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
  const disks = new BlockService({ platform: host.platform });
  const consoles = new ConsoleService({ platform: host.platform });
  await registry.register('vbd', disks.ops);
  await registry.register('console', consoles.ops);
  const primaries = await PrimaryConsoleService.start({ xs: host.dom0, platform: host.platform, domains: host.domains });
  t.teardown(async () => {
    await primaries.close();
    await registry.close();
    await host.stop();
  });
  const guest = await host.createGuest(3, 'guest3');
  const fe = await host.addDisk(guest, { params: 'memory:8M' });
  const con = await host.addConsole(guest);
  await waitDevice(registry, 'vbd', 3, 51712, connected);
  await waitDevice(registry, 'console', 3, 0, connected);
  await fe.write(0, Buffer.alloc(8192, 1));
  await fe.read(0, 4096);
  await con.writeAll('hello\r\n');
  const guest4 = await host.createGuest(4, 'guest4');
  const primary = await host.addPrimaryConsole(guest4);
  await pollUntil(() => primaries.isServed(4));
  await primary.writeAll('booting\r\n');

  // The console's output is counted once the backend read it.
  const snap = await firstValueFrom(
    stats$([disks, consoles, primaries], { periodMs: 20 }).pipe(
      filter((s) => {
        const out = (name: string): number => s.devices.find((d): d is ConsoleDeviceStats => d.type === 'console' && d.name === name)?.counters.bytesOut ?? 0;
        return out('console-3-0') >= 7 && out('console-4-0') >= 9;
      }),
    ),
  );
  const disk = snap.devices.find((d): d is BlockDeviceStats => d.type === 'vbd');
  const console_ = snap.devices.find((d): d is ConsoleDeviceStats => d.name === 'console-3-0');
  const primaryStats = snap.devices.find((d): d is ConsoleDeviceStats => d.name === 'console-4-0');
  t.deepEqual([primaryStats?.type, primaryStats?.domid, primaryStats?.state, primaryStats?.counters.bytesOut], ['console', 4, 'Connected', 9]);
  t.is(disk?.name, 'vbd-3-51712');
  t.is(disk?.state, 'Connected');
  t.deepEqual([disk?.counters.reads, disk?.counters.writes, disk?.counters.sectorsRead, disk?.counters.sectorsWritten], [1, 1, 8, 16]);
  t.is(disk?.latency.read.buckets.reduce((a, b) => a + b, 0), 1);
  t.is(console_?.name, 'console-3-0');
  t.is(console_?.counters.bytesOut, 7);
  t.throws(() => stats$([disks], { periodMs: 0 }), { instanceOf: RangeError });

  const probe = healthProbe({ xs: host.dom0, platform: host.platform, failedDevices: () => 2, timeoutMs: 30_000 });
  const well = await probe();
  t.true(well.healthy);
  t.deepEqual(well.checks.devices, { ok: false, detail: '2 failed' });
  host.platform.stop();
  const stopped = await probe();
  t.false(stopped.healthy);
  t.false(stopped.checks.eventLoop?.ok);
  t.true(stopped.checks.xenstore?.ok);
});
