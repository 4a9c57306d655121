// Bringing N xenbus devices from the toolstack's write to Connected, with a
// simulated frontend per device, over the embedded XenStore: the time, the
// time per device (which must stay flat as N grows) and XenStore requests
// per device.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { filter, firstValueFrom } from 'rxjs';

import { SimFrontend, XenStore, XenbusRegistry, XenbusState, Xenstored, addDevice } from '../ts/index.js';
import type { DeviceSpec } from '../ts/index.js';
import { report } from './report.js';

async function bringUp(n: number): Promise<{ ms: number; requestsPerDevice: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-bench-xenbus-'));
  const daemon = Xenstored.start({ socket: join(dir, 'xs.sock'), log: false });
  const backendXs = await XenStore.connect({ daemon });
  const toolstackXs = await XenStore.connect({ daemon });
  const frontendXs = await XenStore.connect({ daemon });
  const registry = await XenbusRegistry.create(backendXs, { logger: () => undefined });
  try {
    await registry.register('bench', {});
    const specs: DeviceSpec[] = Array.from({ length: n }, (_, i) => ({
      type: 'bench',
      frontendDomid: 1 + (i % 100),
      devid: Math.floor(i / 100),
    }));
    let connected = 0;
    const all = firstValueFrom(
      registry.devices$.pipe(filter((d) => d.beState === XenbusState.Connected && ++connected === n)),
    );
    const before = daemon.stats().requests;
    const t0 = performance.now();
    // The toolstack creates devices 8 at a time; each frontend then follows its backend.
    const queue = [...specs];
    const frontends: SimFrontend[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let s = queue.shift(); s; s = queue.shift()) {
          const { frontendPath } = await addDevice(toolstackXs, s);
          frontends.push(await SimFrontend.attach(frontendXs, frontendPath, { prepare: () => ({ 'ring-ref': '8' }) }));
        }
      }),
    );
    await all;
    const ms = performance.now() - t0;
    const requests = daemon.stats().requests - before;
    for (const f of frontends) f.detach();
    return { ms, requestsPerDevice: requests / n };
  } finally {
    await registry.close();
    backendXs.close();
    toolstackXs.close();
    frontendXs.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the benchmark and prints its figures. */
export async function run(): Promise<void> {
  const sizes = (process.env['XENRX_BENCH_XENBUS_SIZES'] ?? '100,1000,10000').split(',').map(Number);
  const results = new Map<number, { ms: number; requestsPerDevice: number }>();
  for (const n of sizes) {
    const r = await bringUp(n);
    results.set(n, r);
    const base = results.get(sizes[0] ?? n) ?? r;
    report({
      bench: 'xenbus',
      metric: `${String(n)} devices from toolstack write to Connected`,
      value: r.ms,
      unit: 'ms',
      per_device_ms: r.ms / n,
      requests_per_device: r.requestsPerDevice,
      reference: { name: `time per device at N=${String(sizes[0])}, scaled to N`, value: (base.ms / (sizes[0] ?? n)) * n, unit: 'ms' },
    });
  }
  const big = results.get(10_000);
  const mid = results.get(1000);
  if (big && mid) {
    report({
      bench: 'xenbus',
      metric: 't(10000)/t(1000): 10 means a flat cost per device',
      value: big.ms / mid.ms,
      unit: 'ratio',
      reference: { name: 'flat cost per device', value: 10, unit: 'ratio' },
    });
  }
}
