// `xenrx demo`: the main job, on the embedded simulated host. Two simulated
// guests boot with PV consoles served by the console backend; the demo
// prints their xenbus devices walking through the states, their VM run
// states and their console output, types into one console, destroys the
// other guest, and keeps running until Ctrl-C (or --duration) shuts
// everything down cleanly.
import { setTimeout as sleep } from 'node:timers/promises';

import { distinctUntilChanged, map } from 'rxjs';
import type { Subscription } from 'rxjs';

import { ConsoleService } from '../backends/index.js';
import { nativeInfo } from '../index.js';
import { SimulatedHost } from '../simhost/index.js';
import type { Guest, SimConsoleFrontend } from '../simhost/index.js';
import { XenbusRegistry, xenbusStateName } from '../xenbus/index.js';
import { untilStopped } from './signals.js';

/** How long the demo runs, in seconds; `undefined`: until Ctrl-C. */
export interface DemoOptions {
  readonly duration?: number;
}

function say(line: string): void {
  console.log(`demo | ${line}`);
}

/** A guest's "kernel": boot messages, a heartbeat, and an echo of what is typed at it. */
function runGuest(guest: Guest, fe: SimConsoleFrontend): () => void {
  const name = guest.name;
  void fe.writeAll(
    `Linux version 6.1.0-xenrx (${name}) #1 SMP PREEMPT_DYNAMIC\r\n` +
      'Booting paravirtualized kernel on Xen\r\n' +
      'hvc0: console [hvc0] enabled\r\n',
  );
  let ticks = 0;
  const timer = setInterval(() => {
    ticks++;
    fe.write(`[${name}] up ${String(ticks)}s\r\n`);
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
  for (const domid of [1, 2]) {
    const lc = host.domains.lifecycle(domid);
    subs.push(lc.runState$.subscribe((s) => say(`guest${String(domid)} VM run state: ${s}`)));
    subs.push(lc.connect());
    subs.push(consoles.lines$(domid).subscribe((line) => console.log(`guest${String(domid)} | ${line}`)));
    const guest = await host.createGuest(domid, `guest${String(domid)}`);
    const fe = await host.addConsole(guest);
    frontends.set(domid, fe);
    await fe.handshake.waitState(4);
    stops.push(runGuest(guest, fe));
    say(`guest${String(domid)}: console on ${consoles.ptyPath(domid) ?? '(no pty)'}`);
  }
  const stopped = new AbortController();
  // Listen for Ctrl-C before saying we are ready for it.
  const stoppedBy = untilStopped(stopped.signal);
  say(`attach from another terminal: xenrx console 1 --socket ${host.socket}   (Ctrl-] detaches)`);

  const story = (async () => {
    await sleep(1500, undefined, { signal: stopped.signal });
    say('typing "uptime" into guest1\'s console');
    consoles.write(1, 'uptime\n');
    await sleep(2500, undefined, { signal: stopped.signal });
    say('destroying guest2: its console device goes with it');
    stops.pop()?.();
    await host.destroyGuest(2);
  })().catch(() => undefined);

  const limit = options.duration === undefined ? undefined : setTimeout(() => stopped.abort(), options.duration * 1000);
  const signal = await stoppedBy;
  if (limit) clearTimeout(limit);
  stopped.abort();
  await story;
  say(signal ? `${signal}: shutting down` : 'time is up: shutting down');
  for (const s of stops) s();
  for (const fe of frontends.values()) await fe.close().catch(() => undefined);
  await registry.close();
  for (const s of subs) s.unsubscribe();
  const requests = host.xenstored.stats().requests;
  await host.stop();
  say(`stopped cleanly (${String(requests)} XenStore requests served)`);
}
