import test from 'ava';
import { NEVER, firstValueFrom, take, toArray } from 'rxjs';

import { DomainWatcher, SimHypervisor, actionsForChange, diffDomains, pollingDomainSource, simDomainSource } from '../ts/index.js';
import type { DomainInfo, DomainInfoSource, LifecycleEvent, RunState } from '../ts/index.js';
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
  // Xen and the toolstack pause a domain that shuts down or dies: no pause of its own.
  t.deepEqual(diffDomains(new Map([[1, running(1)]]), [{ ...running(1), running: false, paused: true, shutdown: 'poweroff' }]), [
    { kind: 'shutdown', domid: 1, reason: 'poweroff' },
  ]);
  t.deepEqual(diffDomains(new Map([[1, running(1)]]), [{ ...running(1), running: false, paused: true, dying: true }]), [{ kind: 'dying', domid: 1 }]);
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

// A source like Xen's: its notifications fire only on introduce and release,
// so pause, unpause and the end of a dying domain reach the watcher only
// through the poll.
function quietSource(domains: DomainInfo[]): DomainInfoSource {
  return { list: () => domains.map((d) => ({ ...d })), changes$: NEVER };
}

test('a polled source sees pause, unpause and a dying domain going, which fire no notification', async (t) => {
  const domains: DomainInfo[] = [{ ...running(5), running: false, paused: true }];
  const watcher = new DomainWatcher(pollingDomainSource(quietSource(domains), 5));
  const changes: string[] = [];
  const deaths: number[] = [];
  const states: RunState[] = [];
  const lc = watcher.lifecycle(5);
  lc.runState$.subscribe((s) => states.push(s));
  const subs = [
    watcher.changes$.subscribe((c) => changes.push(`${c.kind}:${String(c.domid)}`)),
    watcher.deaths$.subscribe((d) => deaths.push(d)),
    lc.connect(),
  ];
  t.teardown(() => subs.forEach((s) => s.unsubscribe()));

  await pollUntil(() => changes.length === 1);
  t.deepEqual(changes, ['appeared:5'], 'introduced while still paused, as xl create does');
  t.deepEqual(states, ['prelaunch']);
  domains[0] = running(5);
  await pollUntil(() => states.length === 2);
  t.deepEqual(states, ['prelaunch', 'running'], 'the unpause after creation starts the VM');
  domains[0] = { ...running(5), running: false, paused: true };
  await pollUntil(() => states.length === 3);
  domains[0] = running(5);
  await pollUntil(() => states.length === 4);
  t.deepEqual(states, ['prelaunch', 'running', 'paused', 'running'], 'xl pause and xl unpause');
  domains[0] = { ...running(5), running: false, dying: true };
  await pollUntil(() => deaths.length === 1);
  domains.length = 0;
  await pollUntil(() => changes.includes('gone:5'));
  t.deepEqual(changes, ['appeared:5', 'unpaused:5', 'paused:5', 'unpaused:5', 'dying:5', 'gone:5']);
  t.deepEqual(deaths, [5], 'one death per life');
});

test('a polled source without news produces no change, and refuses a bad period', async (t) => {
  const domains: DomainInfo[] = [running(2)];
  let reads = 0;
  const source = pollingDomainSource(
    {
      list: () => {
        reads++;
        return domains;
      },
      changes$: NEVER,
    },
    5,
  );
  const changes: string[] = [];
  const sub = new DomainWatcher(source).changes$.subscribe((c) => changes.push(c.kind));
  t.teardown(() => sub.unsubscribe());
  await pollUntil(() => reads >= 5);
  t.deepEqual(changes, ['appeared'], 'five readings, one change');
  for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => pollingDomainSource(quietSource([]), bad), { instanceOf: RangeError });
  }
});
