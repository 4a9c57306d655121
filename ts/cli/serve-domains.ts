// What `xenrx serve` tells of the guests' domains on real Xen: each change
// the domain watcher sees (pause, unpause, shutdown and its reason, dying,
// gone) and the VM run state it leads to, one log line each, so an operator
// can read a guest's life beside its devices'.
import { Subscription, concat, from } from 'rxjs';

import { actionsForChange, createLifecycle } from '../lifecycle/index.js';
import type { DomainChange, DomainWatcher } from '../lifecycle/index.js';

function describe(c: DomainChange): string {
  switch (c.kind) {
    case 'appeared':
      return `appeared${c.info.paused ? ' (paused)' : ''}${c.info.shutdown ? ` (shut down: ${c.info.shutdown})` : ''}`;
    case 'shutdown':
      return `shut down: ${c.reason}`;
    default:
      return c.kind;
  }
}

/** Logs every domain's changes and run states until unsubscribed. */
export function logDomains(watcher: DomainWatcher, log: (line: string) => void): Subscription {
  const lives = new Map<number, Subscription>();
  const all = new Subscription(() => {
    for (const life of lives.values()) life.unsubscribe();
    lives.clear();
  });
  all.add(
    watcher.changes$.subscribe((c) => {
      log(`domain ${String(c.domid)}: ${describe(c)}`);
      if (c.kind === 'appeared') {
        lives.get(c.domid)?.unsubscribe();
        // The lifecycle is made on the change that shows the domain, so it
        // takes that change's actions first, then the domain's later ones.
        const lc = createLifecycle(concat(from(actionsForChange(c)), watcher.actions$(c.domid)));
        const life = new Subscription();
        life.add(lc.runState$.subscribe((s) => log(`domain ${String(c.domid)}: run state ${s}`)));
        life.add(lc.connect());
        lives.set(c.domid, life);
      } else if (c.kind === 'gone') {
        lives.get(c.domid)?.unsubscribe();
        lives.delete(c.domid);
      }
    }),
  );
  return all;
}
