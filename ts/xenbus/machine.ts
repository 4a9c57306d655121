// The xenbus device state machine as a pure reducer: (device, event) ->
// { device, effects }. It re-implements the backend side of the xenbus
// protocol (setup, init, connect, disconnect, reset; repeated while a step
// makes progress) with the I/O turned into effects whose results come back
// as events. One blocking step runs at a time, which serialises a device's
// state changes however fast its frontend flips (XSA-350); reads of a node
// are coalesced to one in flight per node (XSA-349).
import { XenbusState, parseXenbusInt, xenbusStateName } from './state.js';
import type { XenbusState as State } from './state.js';
import type { Busy, Device, DeviceEffect, DeviceEvent, DeviceKey, LogLevel, OpName, Removal, Side, Transition } from './types.js';

/** How a device type wants the machine to behave. */
export interface MachineOptions {
  /** Connect without waiting for the frontend to be Initialised (the reference's DEVOPS_FLAG_IGNORE_STATE). */
  readonly ignoreFrontendState?: boolean;
  /**
   * A device found Connected at setup (the backend that served it died)
   * is taken over with the `reattach` operation, writing nothing, rather
   * than refused. Set by the registry for types that have `reattach`.
   */
  readonly adopt?: boolean;
}

/** A new device, before anything was read. */
export function newDevice(key: DeviceKey, backendPath: string): Device {
  return {
    key,
    name: `${key.type}-${String(key.domid)}-${String(key.devid)}`,
    backendPath,
    frontendPath: null,
    beState: XenbusState.Unknown,
    feState: XenbusState.Unknown,
    online: false,
    protocol: null,
    setUp: false,
    allocated: false,
    opened: false,
    adopting: false,
    phase: 'active',
    removal: null,
    failure: null,
    busy: null,
    reads: {},
    recheck: false,
  };
}

/** Builds one transition: the device as it changes, and the effects asked for. */
class Step {
  readonly effects: DeviceEffect[] = [];

  constructor(
    public device: Device,
    readonly options: MachineOptions,
  ) {}

  set(patch: Partial<Device>): void {
    this.device = { ...this.device, ...patch };
  }

  log(level: LogLevel, message: string): void {
    this.effects.push({ kind: 'log', level, message });
  }

  begin(busy: Busy, effect: DeviceEffect): void {
    this.set({ busy });
    this.effects.push(effect);
  }

  op(op: OpName): void {
    this.begin({ step: 'op', op }, { kind: 'op', op });
  }

  writeState(state: State): void {
    this.begin({ step: 'write', node: 'state', then: state }, { kind: 'write', node: 'state', value: String(state) });
  }

  /** Reads a node, unless a read of it is in flight: then once more after it. */
  read(side: Side, node: string): void {
    const key = `${side}:${node}`;
    if (key in this.device.reads) {
      this.set({ reads: { ...this.device.reads, [key]: true } });
      return;
    }
    this.set({ reads: { ...this.device.reads, [key]: false } });
    this.effects.push({ kind: 'read', side, node });
  }

  /** Starts removing the device (once): tear down, then forget it. */
  remove(removal: Removal, message: string): void {
    const d = this.device;
    if (d.phase === 'removing' || d.phase === 'removed') return;
    this.log(1, message);
    this.set({ phase: 'removing', removal });
  }

  /** A device operation failed: the device fails, alone (logged, Closed, hotplug-error). */
  fail(reason: string): void {
    this.log(0, reason);
    this.set({ phase: 'failed', failure: reason, busy: null, beState: XenbusState.Closed });
    this.effects.push({ kind: 'write-quiet', node: 'hotplug-error', value: reason });
    this.effects.push({ kind: 'write-quiet', node: 'state', value: String(XenbusState.Closed) });
  }
}

function closing(state: number): boolean {
  return state === XenbusState.Closing || state === XenbusState.Closed;
}

/** Looks for the next step and starts it (the reference's check_state). */
function advance(s: Step): void {
  const d = s.device;
  if (d.busy) {
    s.set({ recheck: true });
    return;
  }
  s.set({ recheck: false });
  switch (d.phase) {
    case 'removed':
    case 'failed':
      return;
    case 'removing':
      // Tear down in the order the device was built up: disconnect, free,
      // then stop watching and forget it.
      if (d.opened) s.op('disconnect');
      else if (d.allocated) s.op('free');
      else {
        if (d.frontendPath !== null) s.effects.push({ kind: 'unwatch-frontend' });
        // The directory is still there: say Closed in it, so a toolstack
        // waiting for the device to close can remove it.
        if (d.removal !== 'backend-removed' && d.beState !== XenbusState.Closed) {
          s.effects.push({ kind: 'write-quiet', node: 'state', value: String(XenbusState.Closed) });
          s.set({ beState: XenbusState.Closed });
        }
        s.effects.push({ kind: 'forget' });
        s.set({ phase: 'removed' });
        s.log(1, 'removed');
      }
      return;
    case 'active':
      break;
  }
  if (!d.allocated) return;
  // The frontend may close from almost anywhere: disconnect once, then
  // follow its state.
  if (d.setUp && closing(d.feState)) {
    if (d.opened) s.op('disconnect');
    else if (d.beState !== d.feState) s.writeState(d.feState === XenbusState.Closing ? XenbusState.Closing : XenbusState.Closed);
    return;
  }
  // Hot-unplug: offline while open, close gracefully and let the frontend follow.
  if (d.setUp && !d.online && d.opened && !closing(d.beState)) {
    s.log(1, 'offline: closing');
    s.writeState(XenbusState.Closing);
    return;
  }
  switch (d.beState) {
    case XenbusState.Connected:
      if (d.adopting && !d.opened) {
        if (d.feState === XenbusState.Connected && d.online) {
          s.op('reattach');
          return;
        }
        // The frontend moved on while no backend served it: no taking
        // over; Closed, so that it can connect anew.
        s.log(1, `frontend ${xenbusStateName(d.feState)}${d.online ? '' : ', offline'}: not taken over`);
        s.set({ adopting: false });
        s.writeState(XenbusState.Closed);
      }
      return;
    case XenbusState.Unknown:
      if (!d.setUp) s.begin({ step: 'setup-state' }, { kind: 'read', side: 'backend', node: 'state' });
      return;
    case XenbusState.Initialising:
      if (!d.online) {
        s.log(1, 'not online');
        return;
      }
      s.op('init');
      return;
    case XenbusState.InitWait:
      if (d.feState !== XenbusState.Initialised && d.feState !== XenbusState.Connected) {
        if (!s.options.ignoreFrontendState) {
          s.log(2, 'frontend not ready (yet)');
          return;
        }
        s.log(2, 'frontend not ready, ignoring');
      }
      s.op('connect');
      return;
    case XenbusState.Closed:
      if (d.feState === XenbusState.Initialising && d.online) {
        s.log(1, 'device reset (for re-connect)');
        s.writeState(XenbusState.Initialising);
      }
      return;
    default:
      return;
  }
}

function onRead(s: Step, side: Side, node: string, value: string | null): void {
  const key = `${side}:${node}`;
  const again = s.device.reads[key];
  const reads = { ...s.device.reads };
  delete reads[key];
  s.set({ reads });
  if (again) s.read(side, node);
  const busy = s.device.busy;

  if (busy?.step === 'setup-state' && side === 'backend' && node === 'state') {
    s.set({ busy: null });
    const state = parseXenbusInt(value);
    if (state === XenbusState.Connected && s.options.adopt) {
      s.log(1, 'found Connected: taking the device over, without a reconnect');
      s.set({ adopting: true });
      s.begin({ step: 'setup-frontend' }, { kind: 'read', side: 'backend', node: 'frontend' });
      return;
    }
    if (state !== XenbusState.Initialising) {
      s.log(0, `initial backend state is wrong (${value === null ? 'missing' : xenbusStateName(state ?? -1)})`);
      return;
    }
    s.begin({ step: 'setup-frontend' }, { kind: 'read', side: 'backend', node: 'frontend' });
    return;
  }
  if (busy?.step === 'setup-frontend' && side === 'backend' && node === 'frontend') {
    s.set({ busy: null });
    if (value === null || value === '') {
      s.log(0, 'reading frontend path failed');
      return;
    }
    s.set({ frontendPath: value });
    s.begin({ step: 'setup-watch' }, { kind: 'watch-frontend', path: value });
    return;
  }

  // A fact of the device, read at setup or after a watch event.
  if (side === 'backend' && node === 'online') {
    s.set({ online: (parseXenbusInt(value) ?? 0) !== 0 });
  } else if (side === 'frontend' && node === 'state' && value === null) {
    // No state to read: the frontend is gone (its directory deleted, or
    // made unreadable). Like Linux's backends, disconnect and remove the
    // device rather than wait for a frontend that cannot answer. Garbage
    // in the node is another matter: it reads as Unknown, as in the
    // reference.
    s.remove('frontend-gone', `frontend state unreadable (${s.device.frontendPath ?? ''}): the frontend is gone`);
  } else if (side === 'frontend' && node === 'state') {
    const state = parseXenbusInt(value) ?? XenbusState.Unknown;
    if (state !== s.device.feState) {
      s.log(1, `frontend state: ${xenbusStateName(s.device.feState)} -> ${xenbusStateName(state)}`);
    }
    s.set({ feState: state });
  } else if (side === 'frontend' && node === 'protocol') {
    s.set({ protocol: value });
    if (value !== null) s.log(1, `frontend protocol: ${value}`);
  }
  if (busy?.step === 'setup-facts') {
    if (busy.awaiting > 1) {
      s.set({ busy: { step: 'setup-facts', awaiting: busy.awaiting - 1 } });
      return;
    }
    s.set({ busy: null, setUp: true });
  } else if (s.device.setUp && s.device.phase === 'active') {
    s.effects.push({ kind: 'changed', callback: side === 'backend' ? 'backendChanged' : 'frontendChanged', node });
  }
  advance(s);
}

function onWritten(s: Step, node: string, error: string | undefined): void {
  const busy = s.device.busy;
  if (busy?.step !== 'write' || busy.node !== node) return;
  s.set({ busy: null });
  if (error !== undefined) {
    if (error === 'ENOENT') {
      // The backend directory is gone: the device goes with it.
      s.remove('backend-removed', 'backend directory removed');
      advance(s);
      return;
    }
    s.fail(`writing ${node} failed: ${error}`);
    return;
  }
  if (node === 'hotplug-status') {
    s.writeState(XenbusState.InitWait);
    return;
  }
  if (busy.then !== null) {
    s.log(1, `backend state: ${xenbusStateName(s.device.beState)} -> ${xenbusStateName(busy.then)}`);
    s.set({ beState: busy.then });
    if (!s.device.setUp && busy.then === XenbusState.Initialising) {
      readFacts(s);
      return;
    }
  }
  advance(s);
}

/** The reference's backend_changed(NULL) and frontend_changed(NULL): the facts the machine follows. */
function readFacts(s: Step): void {
  s.begin({ step: 'setup-facts', awaiting: 3 }, { kind: 'read', side: 'backend', node: 'online' });
  s.set({ reads: { ...s.device.reads, 'backend:online': false } });
  s.read('frontend', 'state');
  s.read('frontend', 'protocol');
}

function onOpDone(s: Step, op: OpName, error: string | undefined): void {
  const busy = s.device.busy;
  if (busy?.step !== 'op' || busy.op !== op) return;
  s.set({ busy: null });
  switch (op) {
    case 'alloc':
      if (error !== undefined) return s.fail(`alloc() failed: ${error}`);
      s.set({ allocated: true });
      break;
    case 'init':
      if (error !== undefined) return s.fail(`init() failed: ${error}`);
      s.set({ opened: true });
      s.begin(
        { step: 'write', node: 'hotplug-status', then: null },
        { kind: 'write', node: 'hotplug-status', value: 'connected' },
      );
      return;
    case 'connect':
      if (error !== undefined) return s.fail(`connect() failed: ${error}`);
      s.writeState(XenbusState.Connected);
      return;
    case 'reattach':
      s.set({ adopting: false });
      if (error !== undefined) return s.fail(`reattach() failed: ${error}`);
      // Connected as it was: nothing written, the frontend notices nothing.
      s.set({ opened: true });
      s.log(1, 'taken over: Connected');
      break;
    case 'disconnect':
      // A failing disconnect still ends the connection: log it and go on.
      if (error !== undefined) s.log(0, `disconnect() failed: ${error}`);
      s.set({ opened: false });
      break;
    case 'free':
      if (error !== undefined) s.log(0, `free() failed: ${error}`);
      s.set({ allocated: false });
      break;
    default: {
      const never: never = op;
      return never;
    }
  }
  advance(s);
}

/** The state machine. Pure: no I/O, no clocks. */
export function reduce(device: Device, event: DeviceEvent, options: MachineOptions = {}): Transition {
  const s = new Step(device, options);
  const d = device;
  switch (event.type) {
    case 'start':
      if (d.phase === 'active' && !d.allocated && !d.busy) s.op('alloc');
      break;
    case 'backend-changed':
      if (d.phase !== 'active') break;
      s.log(2, `backend update: ${event.node || '(directory)'}`);
      if (event.node === 'online' && d.setUp) s.read('backend', 'online');
      else if (event.node !== '' && d.setUp) s.effects.push({ kind: 'changed', callback: 'backendChanged', node: event.node });
      advance(s);
      break;
    case 'frontend-changed':
      if (d.phase !== 'active' || !d.setUp) break;
      if (event.node === '') {
        // The directory itself changed, e.g. it was removed: whether the
        // frontend is still there shows in its state.
        s.read('frontend', 'state');
        break;
      }
      s.log(2, `frontend update: ${event.node}`);
      if (event.node === 'state' || event.node === 'protocol') s.read('frontend', event.node);
      else s.effects.push({ kind: 'changed', callback: 'frontendChanged', node: event.node });
      advance(s);
      break;
    case 'read':
      onRead(s, event.side, event.node, event.value);
      break;
    case 'written':
      onWritten(s, event.node, event.error);
      break;
    case 'watched':
      if (d.busy?.step !== 'setup-watch') break;
      s.set({ busy: null });
      if (event.error !== undefined) {
        s.log(0, `watching frontend path (${d.frontendPath ?? ''}) failed: ${event.error}`);
        s.set({ frontendPath: null });
        break;
      }
      if (d.adopting) {
        // Connected already: nothing is written.
        s.set({ beState: XenbusState.Connected });
        readFacts(s);
        break;
      }
      s.writeState(XenbusState.Initialising);
      break;
    case 'op-done':
      onOpDone(s, event.op, event.error);
      break;
    case 'callback-failed':
      if (d.phase === 'active') s.fail(`${event.callback}() failed: ${event.error}`);
      break;
    case 'removed':
      s.remove('backend-removed', 'backend directory removed');
      advance(s);
      break;
    case 'domain-dead':
      s.remove('domain-dead', 'domain died');
      advance(s);
      break;
    default: {
      const never: never = event;
      return never;
    }
  }
  if (s.device.recheck && !s.device.busy) advance(s);
  return { device: s.device, effects: s.effects };
}
