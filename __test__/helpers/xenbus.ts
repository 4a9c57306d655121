// A registry over an embedded daemon, with a device type that records what
// the state machine asks of it.
import type { ExecutionContext } from 'ava';
import { ReplaySubject, filter, firstValueFrom, timeout } from 'rxjs';

import { SimFrontend, XenbusRegistry, XenbusState, addDevice } from '../../ts/index.js';
import type { DeviceInfo, DeviceOps, DeviceSpec, LogEntry, RegistryOptions, XenStore } from '../../ts/index.js';
import { startDaemon } from './xenstore.js';
import type { DaemonFixture } from './xenstore.js';

export interface Recorder {
  readonly calls: string[];
  readonly ops: DeviceOps<{ name: string }>;
}

/** A device type whose operations record themselves as `<op>:<device>`. */
export function recorder(fail: Partial<Record<'init' | 'connect', (name: string) => boolean>> = {}): Recorder {
  const calls: string[] = [];
  const ops: DeviceOps<{ name: string }> = {
    alloc: (ctx) => {
      calls.push(`alloc:${ctx.name}`);
      return { name: ctx.name };
    },
    init: (_ctx, d) => {
      calls.push(`init:${d.name}`);
      if (fail.init?.(d.name)) throw new Error('init refused');
    },
    connect: async (_ctx, d) => {
      calls.push(`connect:${d.name}`);
      await Promise.resolve();
      if (fail.connect?.(d.name)) throw new Error('no ring for you');
    },
    disconnect: (_ctx, d) => {
      calls.push(`disconnect:${d.name}`);
    },
    free: (_ctx, d) => {
      calls.push(`free:${d.name}`);
    },
  };
  return { calls, ops };
}

export interface XenbusFixture extends DaemonFixture {
  readonly registry: XenbusRegistry;
  readonly logs: LogEntry[];
}

export async function startRegistry(t: ExecutionContext, options: RegistryOptions = {}): Promise<XenbusFixture> {
  const fixture = await startDaemon(t);
  const logs: LogEntry[] = [];
  const registry = await XenbusRegistry.create(fixture.dom0, { logger: (e) => logs.push(e), ...options });
  t.teardown(() => registry.close());
  return { ...fixture, registry, logs };
}

/**
 * Records a device's states from now on, so that states it passed through
 * before the test looked (a device torn down as soon as it appeared) are
 * not missed.
 */
export function recordDevice(
  registry: XenbusRegistry,
  type: string,
  domid: number,
  devid: number,
): { until(match: (d: DeviceInfo) => boolean): Promise<DeviceInfo>; stop(): void } {
  const states = new ReplaySubject<DeviceInfo>();
  const sub = registry.devices$
    .pipe(filter((d) => d.key.type === type && d.key.domid === domid && d.key.devid === devid))
    .subscribe(states);
  return {
    until: (match) => firstValueFrom(states.pipe(filter(match))),
    stop: () => sub.unsubscribe(),
  };
}

/**
 * Resolves with the device once it matches. The bound only keeps a broken
 * test from hanging: it is far beyond what any step takes, even on a
 * loaded machine.
 */
export function waitDevice(
  registry: XenbusRegistry,
  type: string,
  domid: number,
  devid: number,
  match: (d: DeviceInfo) => boolean,
  ms = 60_000,
): Promise<DeviceInfo> {
  const now = registry.device(type, domid, devid);
  if (now && match(now)) return Promise.resolve(now);
  return firstValueFrom(
    registry.devices$.pipe(
      filter((d) => d.key.type === type && d.key.domid === domid && d.key.devid === devid && match(d)),
      timeout(ms),
    ),
  );
}

export const connected = (d: DeviceInfo): boolean => d.beState === XenbusState.Connected;

/** Adds a device and attaches a simulated frontend to it. */
export async function addWithFrontend(xs: XenStore, spec: DeviceSpec): Promise<SimFrontend> {
  const { frontendPath } = await addDevice(xs, spec);
  return SimFrontend.attach(xs, frontendPath, { prepare: () => ({ 'ring-ref': '8', 'event-channel': '3' }) });
}
