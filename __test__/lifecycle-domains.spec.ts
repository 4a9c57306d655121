import test from 'ava';
import { firstValueFrom, take, toArray } from 'rxjs';

import { DomainWatcher, SimHypervisor, actionsForChange, diffDomains, simDomainSource } from '../ts/index.js';
import type { DomainInfo, LifecycleEvent, RunState } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';

const running = (domid: number): DomainInfo => ({ domid, running: true, paused: false, blocked: false, dying: false });

test('diffDomains names each change', (t) => {
  const before = new Map([
    [1, running(1)],
    [2, running(2)],
    [3, { ...running(3), shutdown: 'suspend' as const }],
  ]);
  const after: DomainInfo[] = [
    { ...running(1), running: false, paused: true },
    { ...running(3) },
    { ...running(4), shutdown: 'crash' },
  ];
  t.deepEqual(diffDomains(before, after), [
    { kind: 'paused', domid: 1 },
    { kind: 'resumed', domid: 3 },
    { kind: 'appeared', domid: 4, info: after[2] },
    { kind: 'shutdown', domid: 4, reason: 'crash' },
    { kind: 'gone', domid: 2 },
  ]);
  t.deepEqual(diffDomains(new Map(after.map((d) => [d.domid, d])), after), [], 'nothing changed');
});

test('each domain change maps to the request QEMU would get', (t) => {
  const a = (c: Parameters<typeof actionsForChange>[0]) => actionsForChange(c);
  t.deepEqual(a({ kind: 'appeared', domid: 1, info: running(1) }), [{ type: 'start' }]);
  t.deepEqual(a({ kind: 'appeared', domid: 1, info: { ...running(1), paused: true } }), []);
  t.deepEqual(a({ kind: 'paused', domid: 1 }), [{ type: 'stop', state: 'paused' }]);
  t.deepEqual(a({ kind: 'unpaused', domid: 1 }), [{ type: 'start' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'poweroff' }), [{ type: 'shutdown', cause: 'guest-shutdown' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'reboot' }), [{ type: 'reset', cause: 'guest-reset' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'soft-reset' }), [{ type: 'reset', cause: 'guest-reset' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'suspend' }), [{ type: 'suspend' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'crash' }), [{ type: 'guest-panicked' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'watchdog' }), [{ type: 'vmstop', state: 'watchdog' }]);
  t.deepEqual(a({ kind: 'shutdown', domid: 1, reason: 'code-77' }), [{ type: 'shutdown', cause: 'guest-shutdown' }]);
  t.deepEqual(a({ kind: 'resumed', domid: 1 }), [{ type: 'wakeup', reason: 'other' }]);
  t.deepEqual(a({ kind: 'gone', domid: 1 }), [{ type: 'shutdown', cause: 'host-qmp-quit' }]);
});

test('a simulated domain drives its VM lifecycle end to end', async (t) => {
  const hv = new SimHypervisor();
  const watcher = new DomainWatcher(simDomainSource(hv));
  const changes: string[] = [];
  const changeSub = watcher.changes$.subscribe((c) => changes.push(`${c.kind}:${String(c.domid)}`));
  const states: RunState[] = [];
  const events: LifecycleEvent['type'][] = [];
  const deaths: number[] = [];
  const deathSub = watcher.deaths$.subscribe((d) => deaths.push(d));
  const lc = watcher.lifecycle(7, { config: { rebootAction: 'reset', panicAction: 'pause' } });
  lc.runState$.subscribe((s) => states.push(s));
  lc.events$.subscribe((e) => events.push(e.type));
  const conn = lc.connect();
  t.teardown(() => {
    conn.unsubscribe();
    deathSub.unsubscribe();
    changeSub.unsubscribe();
  });

  hv.createDomain({ domid: 7, paused: true });
  hv.createDomain({ domid: 8 });
  await pollUntil(() => changes.includes('appeared:7') && changes.includes('appeared:8'));
  t.deepEqual(states, ['prelaunch'], 'built paused: not started yet');
  hv.unpauseDomain(7);
  await pollUntil(() => states.length === 2);
  hv.pauseDomain(7);
  await pollUntil(() => states.length === 3);
  hv.unpauseDomain(7);
  await pollUntil(() => states.length === 4);
  t.deepEqual(states, ['prelaunch', 'running', 'paused', 'running']);
  hv.shutdownDomain(7, 'reboot');
  await pollUntil(() => events.includes('RESET'));
  t.true(events.includes('RESET'), events.join(','));
  hv.resumeDomain(7);
  hv.shutdownDomain(7, 'crash');
  await pollUntil(() => events.includes('GUEST_PANICKED') && states.at(-1) === 'guest-panicked');
  t.true(events.includes('GUEST_PANICKED'));
  t.is(states.at(-1), 'guest-panicked', 'panic action pause');
  t.deepEqual(deaths, []);
  hv.destroyDomain(7);
  await pollUntil(() => deaths.length === 1);
  t.deepEqual(deaths, [7], 'the registry learns of the death');
  hv.destroyDomain(8);
  await pollUntil(() => deaths.length === 2);
  t.deepEqual(deaths, [7, 8]);
});

test('changes are read from the source on each signal; a reading sees the state of its moment', async (t) => {
  const hv = new SimHypervisor();
  const watcher = new DomainWatcher(simDomainSource(hv));
  const seen: string[] = [];
  const sub = watcher.changes$.subscribe((c) => seen.push(c.kind));
  t.teardown(() => sub.unsubscribe());
  const got = firstValueFrom(watcher.changes$.pipe(take(4), toArray()));
  hv.createDomain({ domid: 3 });
  await pollUntil(() => seen.length === 1);
  hv.pauseDomain(3);
  await pollUntil(() => seen.length === 2);
  // Two changes between readings are seen together, as a poll of Xen would see them.
  hv.unpauseDomain(3);
  hv.shutdownDomain(3, 'poweroff');
  t.deepEqual(
    (await got).map((c) => c.kind),
    ['appeared', 'paused', 'unpaused', 'shutdown'],
  );
});
