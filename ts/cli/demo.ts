// `xenrx demo`: the main job, on the embedded simulated host. Two simulated
// guests boot with PV consoles served by the console backend; the demo
// prints their xenbus devices walking through the states, their VM run
// states and their console output. The first guest also gets a disk in
// memory, served by the block backend, on which it writes 64 MiB and reads
// it back to verify it (with a progress bar on a terminal). Both guests get
// a network interface, joined by a learning switch written in TypeScript:
// the first pings the second, then sends it a bulk transfer. The demo types
// into one console, destroys the other guest, and keeps running until
// Ctrl-C (or --duration) shuts everything down cleanly.
import { setTimeout as sleep } from 'node:timers/promises';

import { EMPTY, distinctUntilChanged, filter, firstValueFrom, map, timeout } from 'rxjs';
import type { Subscription } from 'rxjs';

import { BlockService, ConsoleService, NetService } from '../backends/index.js';
import { nativeInfo } from '../index.js';
import { SimulatedHost } from '../simhost/index.js';
import type { Guest, SimConsoleFrontend, SimNetFrontend } from '../simhost/index.js';
import { XenbusRegistry, XenbusState, xenbusStateName } from '../xenbus/index.js';
import { runDiskWorkload } from './demo-disk.js';
import { learningSwitch } from '../backends/net-switch.js';
import { runNetWorkload } from './demo-net.js';
import { DemoOutput } from './demo-output.js';
import { untilStopped } from './signals.js';

/** How long the demo runs, in seconds; `undefined`: until Ctrl-C. */
export interface DemoOptions {
  readonly duration?: number;
  /** Serve statistics (as `xenrx serve --metrics`) on this address, or the default one with `true`. */
  readonly metrics?: string | true;
}

/** The disk the first guest gets: in memory, with a 4-page ring. */
const DISK = { params: 'memory:256M', ringPageOrder: 2, devid: 51712, name: 'xvda' } as const;

/**
 * With a time limit, the share of it the disk workload may spend writing
 * (it then verifies what it wrote, which takes less): the workload ends
 * well within the limit even on a slow, busy machine.
 */
const WRITE_SHARE = 0.4;

const out = new DemoOutput();

function say(line: string): void {
  out.line(`demo | ${line}`);
}

/** A guest's "kernel": boot messages, a heartbeat, and an echo of what is typed at it. */
function runGuest(guest: Guest, fe: SimConsoleFrontend): () => void {
  const name = guest.name;
  void fe.writeAll(
    `Linux version 6.1.0-xenrx (${name}) #1 SMP PREEMPT_DYNAMIC\r\n` +
      'Booting paravirtualized kernel on Xen\r\n' +
      'hvc0: console [hvc0] enabled\r\n',
  );
  // The uptime is read from the clock: a timer that fires late (a busy
  // machine) must not make a second of uptime longer.
  const booted = Date.now();
  const timer = setInterval(() => {
    fe.write(`[${name}] up ${String(Math.round((Date.now() - booted) / 1000))}s\r\n`);
  }, 2000);
  const sub = fe.input$.subscribe((b) => {
    fe.write(`${name} received: ${JSON.stringify(b.toString())}\r\n`);
  });
  return () => {
    clearInterval(timer);
    sub.unsubscribe();
  };
}

/** Runs the demo and resolves when it is finished. */
export async function runDemo(options: DemoOptions = {}): Promise<void> {
  const info = nativeInfo();
  say(`xenrx ${info.version} (${info.target}); real Xen support ${info.xenPlatform ? 'built in' : 'not built in'}`);
  const host = await SimulatedHost.start();
  say(`simulated host: XenStore on ${host.socket}, hypervisor with dom0`);
  const registry = await XenbusRegistry.create(host.dom0, {
    domains: host.domains,
    logger: (e) => {
      if (e.level === 0) say(`xenbus error: ${e.device ?? 'core'}: ${e.message}`);
    },
  });
  const consoles = new ConsoleService({ platform: host.platform, pty: true });
  await registry.register('console', consoles.ops);
  const disks = new BlockService({ platform: host.platform });
  await registry.register('vbd', disks.ops);
  // Every vif on the packet stream, switched in TypeScript.
  const net = new NetService({ platform: host.platform, path: () => 'stream', maxQueues: 1 });
  await registry.register('vif', net.ops);
  const switching = learningSwitch(net);
  const metrics =
    options.metrics === undefined
      ? null
      : await (await import('./serve-metrics.js')).startServeMetrics({ address: options.metrics, xs: host.dom0, platform: host.platform, sources: [disks, consoles, net], devices$: registry.devices$ });
  if (metrics) say(`statistics on ${metrics.url}/metrics; watch the devices from another terminal: npx xenrx top --url ${metrics.url}`);
  const subs: Subscription[] = [];
  // Each device's walk through the xenbus states.
  subs.push(
    registry.devices$
      .pipe(
        map((d) => `${d.name}: backend ${xenbusStateName(d.beState)}, frontend ${xenbusStateName(d.feState)}${d.phase === 'active' ? '' : ` (${d.phase})`}`),
        distinctUntilChanged(),
      )
      .subscribe((line) => say(`xenbus ${line}`)),
  );

  const stops: (() => void)[] = [];
  const frontends = new Map<number, SimConsoleFrontend>();
  const guests = new Map<number, Guest>();
  for (const domid of [1, 2]) {
    const lc = host.domains.lifecycle(domid);
    subs.push(lc.runState$.subscribe((s) => say(`guest${String(domid)} VM run state: ${s}`)));
    subs.push(lc.connect());
    subs.push(consoles.lines$(domid).subscribe((line) => out.line(`guest${String(domid)} | ${line}`)));
    const guest = await host.createGuest(domid, `guest${String(domid)}`);
    guests.set(domid, guest);
    const fe = await host.addConsole(guest);
    frontends.set(domid, fe);
    await fe.handshake.waitState(4);
    stops.push(runGuest(guest, fe));
    say(`guest${String(domid)}: console on ${consoles.ptyPath(domid) ?? '(no pty)'}`);
  }
  // Next to guest1's console, a disk.
  const guest1 = guests.get(1);
  if (!guest1) throw new Error('guest1 was not created');
  const disk = await host.addDisk(guest1, { params: DISK.params, ringPageOrder: DISK.ringPageOrder, devid: DISK.devid });
  say(
    `guest1: disk ${DISK.name} (vbd ${String(DISK.devid)}), ${String((disk.sectors * 512) / 2 ** 20)} MiB in memory, ` +
      `ring of ${String(2 ** (disk.features?.ringPageOrder ?? 0))} pages, ` +
      `${disk.features?.maxIndirectSegments === undefined ? 'no indirect requests' : `${String(disk.features.maxIndirectSegments)} segments per indirect request`}`,
  );
  const nics = new Map<number, SimNetFrontend>();
  for (const [domid, guest] of guests) {
    const nic = await host.addNic(guest);
    nics.set(domid, nic);
    say(`guest${String(domid)}: network interface eth0 (vif ${String(domid)}/0), MAC ${[...nic.mac].map((b) => b.toString(16).padStart(2, '0')).join(':')}, on the TypeScript switch`);
  }
  const stopped = new AbortController();
  // Listen for Ctrl-C before saying we are ready for it.
  const stoppedBy = untilStopped(stopped.signal);
  say(`attach from another terminal: npx xenrx console 1 --socket ${host.socket}   (Ctrl-] detaches)`);

  const story = (async () => {
    await sleep(1500, undefined, { signal: stopped.signal });
    say('typing "uptime" into guest1\'s console');
    consoles.write(1, 'uptime\n');
    const [a, b] = [nics.get(1), nics.get(2)];
    if (a && b) {
      await runNetWorkload({
        a,
        b,
        say,
        ...(out.tty ? { status: (text: string | null) => out.status(text === null ? null : `demo | ${text}`) } : {}),
        signal: stopped.signal,
      }).catch((err: unknown) => say(`net: workload failed: ${err instanceof Error ? err.message : String(err)}`));
    }
    await sleep(1000, undefined, { signal: stopped.signal });
    say('destroying guest2: its console device and network interface go with it');
    stops.pop()?.();
    await host.destroyGuest(2);
  })().catch(() => undefined);

  const workload = runDiskWorkload({
    disk,
    name: DISK.name,
    say,
    ...(out.tty ? { status: (text: string | null) => out.status(text === null ? null : `demo | ${text}`) } : {}),
    signal: stopped.signal,
    ...(options.duration === undefined ? {} : { writeBudgetMs: options.duration * 1000 * WRITE_SHARE }),
    backendStats: () => disks.stats(1, DISK.devid),
    backendStorage: () => disks.storage(1, DISK.devid),
  }).catch((err: unknown) => say(`disk ${DISK.name}: workload failed: ${err instanceof Error ? err.message : String(err)}`));

  const limit = options.duration === undefined ? undefined : setTimeout(() => stopped.abort(), options.duration * 1000);
  const signal = await stoppedBy;
  if (limit) clearTimeout(limit);
  stopped.abort();
  await story;
  say(signal ? `${signal}: shutting down` : 'time is up: shutting down');
  // The workload stops between two chunks; the disk closes (Closing,
  // Closed with its backend) while the registry still serves it.
  await workload;
  // Each device still there is closed by its guest, and the registry is
  // closed only once its backend is Closed too: every device ends Closed.
  const closed = (type: string, domid: number, devid: number): Promise<unknown> =>
    firstValueFrom(
      (registry.state$(type, domid, devid) ?? EMPTY).pipe(
        filter((d) => d.beState === XenbusState.Closed),
        timeout(10_000),
      ),
    ).catch(() => undefined);
  const diskClosed = closed('vbd', 1, DISK.devid);
  await disk.close().catch(() => undefined);
  await diskClosed;
  for (const s of stops) s();
  for (const [domid, nic] of nics) {
    if (registry.state$('vif', domid, 0) === undefined) continue;
    const nicClosed = closed('vif', domid, 0);
    await nic.close().catch(() => undefined);
    await nicClosed;
  }
  for (const [domid, fe] of frontends) {
    // A destroyed guest's console is gone already.
    if (registry.state$('console', domid, 0) === undefined) continue;
    const consoleClosed = closed('console', domid, 0);
    await fe.close().catch(() => undefined);
    await consoleClosed;
  }
  switching.unsubscribe();
  await metrics?.close();
  await registry.close();
  for (const s of subs) s.unsubscribe();
  const requests = host.xenstored.stats().requests;
  await host.stop();
  say(`stopped cleanly (${String(requests)} XenStore requests served)`);
}
