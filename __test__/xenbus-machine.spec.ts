// The device state machine alone: a pure function, driven here by a small
// in-memory XenStore that answers its effects.
import test from 'ava';

import { XenbusState, newDevice, reduceDevice } from '../ts/index.js';
import type { Device, DeviceEffect, DeviceEvent, MachineOptions } from '../ts/index.js';

const BE = '/local/domain/0/backend/t/1/0';
const FE = '/local/domain/1/device/t/0';

/** Answers effects from a map of nodes; op calls succeed unless told otherwise. */
class World {
  readonly nodes = new Map<string, string>([
    [`${BE}/state`, '1'],
    [`${BE}/frontend`, FE],
    [`${BE}/online`, '1'],
    [`${FE}/state`, '1'],
  ]);
  readonly trace: string[] = [];
  device: Device = newDevice({ type: 't', domid: 1, devid: 0 }, BE);
  readonly failOps = new Set<string>();

  constructor(readonly options: MachineOptions = {}) {}

  /** Feeds an event and answers every effect until nothing is pending. */
  run(first: DeviceEvent): void {
    const queue: DeviceEvent[] = [first];
    for (let ev = queue.shift(); ev; ev = queue.shift()) {
      const t = reduceDevice(this.device, ev, this.options);
      this.device = t.device;
      for (const e of t.effects) {
        const answer = this.answer(e);
        if (answer) queue.push(answer);
      }
    }
  }

  answer(e: DeviceEffect): DeviceEvent | null {
    switch (e.kind) {
      case 'read': {
        const dir = e.side === 'backend' ? BE : FE;
        this.trace.push(`read ${e.side} ${e.node}`);
        return { type: 'read', side: e.side, node: e.node, value: this.nodes.get(`${dir}/${e.node}`) ?? null };
      }
      case 'write':
      case 'write-quiet':
        this.trace.push(`write ${e.node}=${e.value}`);
        this.nodes.set(`${BE}/${e.node}`, e.value);
        return e.kind === 'write' ? { type: 'written', node: e.node } : null;
      case 'watch-frontend':
        this.trace.push(`watch ${e.path}`);
        return { type: 'watched' };
      case 'op':
        this.trace.push(`op ${e.op}`);
        return { type: 'op-done', op: e.op, ...(this.failOps.has(e.op) ? { error: 'boom' } : {}) };
      case 'unwatch-frontend':
      case 'forget':
      case 'changed':
        this.trace.push(e.kind === 'changed' ? `${e.callback} ${e.node}` : e.kind);
        return null;
      case 'log':
        return null;
    }
  }
}

test('setup, init and the wait for the frontend, in the reference order', (t) => {
  const w = new World();
  w.run({ type: 'start' });
  t.deepEqual(w.trace, [
    'op alloc',
    'read backend state',
    'read backend frontend',
    `watch ${FE}`,
    'write state=1',
    'read backend online',
    'read frontend state',
    'read frontend protocol',
    'op init',
    'write hotplug-status=connected',
    'write state=2',
  ]);
  t.is(w.device.beState, XenbusState.InitWait);
  t.is(w.device.busy, null);
});

test('connect once the frontend is Initialised, not before', (t) => {
  const w = new World();
  w.run({ type: 'start' });
  w.trace.length = 0;
  w.run({ type: 'frontend-changed', node: 'other' });
  t.false(w.trace.includes('op connect'));
  w.nodes.set(`${FE}/state`, '3');
  w.run({ type: 'frontend-changed', node: 'state' });
  t.deepEqual(w.trace, ['frontendChanged other', 'read frontend state', 'frontendChanged state', 'op connect', 'write state=4']);
  t.is(w.device.beState, XenbusState.Connected);
});

test('a device type may connect without waiting for the frontend', (t) => {
  const w = new World({ ignoreFrontendState: true });
  w.run({ type: 'start' });
  t.is(w.device.beState, XenbusState.Connected);
});

test('setup waits for the backend state to be Initialising', (t) => {
  const w = new World();
  w.nodes.set(`${BE}/state`, '4');
  w.run({ type: 'start' });
  t.is(w.device.beState, XenbusState.Unknown);
  t.false(w.device.setUp);
  // Retried on the next backend event, once the toolstack fixed it.
  w.nodes.set(`${BE}/state`, '1');
  w.run({ type: 'backend-changed', node: 'state' });
  t.is(w.device.beState, XenbusState.InitWait);
});

test('init waits for online', (t) => {
  const w = new World();
  w.nodes.set(`${BE}/online`, '0');
  w.run({ type: 'start' });
  t.is(w.device.beState, XenbusState.Initialising);
  t.false(w.trace.includes('op init'));
  w.nodes.set(`${BE}/online`, '1');
  w.run({ type: 'backend-changed', node: 'online' });
  t.is(w.device.beState, XenbusState.InitWait);
});

test('frontend closing: disconnect once, follow its state; reset to reconnect', (t) => {
  const w = new World();
  w.nodes.set(`${FE}/state`, '3');
  w.run({ type: 'start' });
  t.is(w.device.beState, XenbusState.Connected);
  w.trace.length = 0;
  w.nodes.set(`${FE}/state`, '5');
  w.run({ type: 'frontend-changed', node: 'state' });
  w.nodes.set(`${FE}/state`, '6');
  w.run({ type: 'frontend-changed', node: 'state' });
  t.is(w.trace.filter((x) => x === 'op disconnect').length, 1);
  t.is(w.device.beState, XenbusState.Closed);
  w.nodes.set(`${FE}/state`, '1');
  w.run({ type: 'frontend-changed', node: 'state' });
  t.is(w.device.beState, XenbusState.InitWait, 'reset, then init again');
  t.is(w.trace.filter((x) => x === 'op init').length, 1);
});

test('rapid frontend flips are serialised and their reads coalesced', (t) => {
  const w = new World();
  w.nodes.set(`${FE}/state`, '3');
  w.run({ type: 'start' });
  // Many watch events before any read is answered: one read in flight, one queued.
  let d = w.device;
  const effects: DeviceEffect[] = [];
  for (let i = 0; i < 50; i++) {
    const t2 = reduceDevice(d, { type: 'frontend-changed', node: 'state' });
    d = t2.device;
    effects.push(...t2.effects);
  }
  t.is(effects.filter((e) => e.kind === 'read').length, 1);
  t.is(d.reads['frontend:state'], true, 'one more read wanted after it');
  const answered = reduceDevice(d, { type: 'read', side: 'frontend', node: 'state', value: '3' });
  t.is(answered.effects.filter((e) => e.kind === 'read').length, 1, 'the queued read goes out');
});

test('a failing operation fails the device: Closed and hotplug-error', (t) => {
  const w = new World();
  w.failOps.add('init');
  w.run({ type: 'start' });
  t.is(w.device.phase, 'failed');
  t.regex(w.device.failure ?? '', /init\(\) failed: boom/);
  t.is(w.nodes.get(`${BE}/state`), '6');
  t.is(w.nodes.get(`${BE}/hotplug-error`), 'init() failed: boom');
  // Removed later: torn down without calling disconnect for a connection never opened.
  w.trace.length = 0;
  w.run({ type: 'removed' });
  t.deepEqual(w.trace, ['op free', 'unwatch-frontend', 'forget']);
});

test('removal tears down in order: disconnect, free, unwatch, forget', (t) => {
  const w = new World();
  w.nodes.set(`${FE}/state`, '3');
  w.run({ type: 'start' });
  w.trace.length = 0;
  w.run({ type: 'removed' });
  t.deepEqual(w.trace, ['op disconnect', 'op free', 'unwatch-frontend', 'forget']);
  t.is(w.device.phase, 'removed');
  // Nothing happens to a removed device.
  w.trace.length = 0;
  w.run({ type: 'frontend-changed', node: 'state' });
  w.run({ type: 'domain-dead' });
  t.deepEqual(w.trace, []);
});

test('a write refused because the directory is gone means removal', (t) => {
  const w = new World();
  w.run({ type: 'start' });
  const d = w.device;
  w.nodes.set(`${FE}/state`, '3');
  const t1 = reduceDevice(d, { type: 'frontend-changed', node: 'state' });
  const t2 = reduceDevice(t1.device, { type: 'read', side: 'frontend', node: 'state', value: '3' });
  const t3 = reduceDevice(t2.device, { type: 'op-done', op: 'connect' });
  const t4 = reduceDevice(t3.device, { type: 'written', node: 'state', error: 'ENOENT' });
  t.is(t4.device.phase, 'removing');
  t.true(t4.effects.some((e) => e.kind === 'op' && e.op === 'disconnect'));
});

test('a device found Connected is taken over by reattach, writing nothing, when the type can', (t) => {
  const w = new World({ adopt: true });
  w.nodes.set(`${BE}/state`, '4');
  w.nodes.set(`${FE}/state`, '4');
  w.run({ type: 'start' });
  t.deepEqual(w.trace, [
    'op alloc',
    'read backend state',
    'read backend frontend',
    `watch ${FE}`,
    'read backend online',
    'read frontend state',
    'read frontend protocol',
    'op reattach',
  ]);
  t.is(w.device.beState, XenbusState.Connected);
  t.true(w.device.opened);
  t.false(w.device.adopting);
  // From there on, as any connected device: the frontend closes, the
  // backend disconnects and follows.
  w.trace.length = 0;
  w.nodes.set(`${FE}/state`, '5');
  w.run({ type: 'frontend-changed', node: 'state' });
  t.deepEqual(w.trace, ['read frontend state', 'frontendChanged state', 'op disconnect', 'write state=5']);
});

test('a device found Connected whose frontend moved on, or whose reattach fails, is not taken over', (t) => {
  // The frontend started again meanwhile: Closed, then the usual reset.
  const moved = new World({ adopt: true });
  moved.nodes.set(`${BE}/state`, '4');
  moved.nodes.set(`${FE}/state`, '1');
  moved.run({ type: 'start' });
  t.false(moved.trace.includes('op reattach'));
  const closed = moved.trace.indexOf('write state=6');
  t.true(closed > 0, moved.trace.join(', '));
  t.deepEqual(moved.trace.slice(closed, closed + 3), ['write state=6', 'write state=1', 'op init']);
  t.is(moved.device.beState, XenbusState.InitWait);

  const failing = new World({ adopt: true });
  failing.failOps.add('reattach');
  failing.nodes.set(`${BE}/state`, '4');
  failing.nodes.set(`${FE}/state`, '4');
  failing.run({ type: 'start' });
  t.is(failing.device.phase, 'failed');
  t.regex(failing.device.failure ?? '', /reattach\(\) failed: boom/);
  t.is(failing.nodes.get(`${BE}/hotplug-error`), 'reattach() failed: boom');

  // A type that cannot reattach leaves the device alone, as QEMU does.
  const unable = new World();
  unable.nodes.set(`${BE}/state`, '4');
  unable.nodes.set(`${FE}/state`, '4');
  unable.run({ type: 'start' });
  t.deepEqual(unable.trace, ['op alloc', 'read backend state']);
});
