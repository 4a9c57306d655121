// The domain watcher: domain states from the hypervisor (the simulated one,
// or libxenctrl on real Xen, re-read on @introduceDomain/@releaseDomain and
// on a short period, since pause, unpause and the end of a dying domain fire
// no watch),
// turned into what changed per domain, into lifecycle actions for each
// domain's VM, and into the deaths the xenbus registry tears devices down on.
import { EMPTY, concatMap, defer, filter, from, interval, map, merge, mergeMap, scan, share, startWith } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { DomainInfo, SimHypervisor } from '../platform/index.js';
import { platformCall } from '../platform/errors.js';
import { toDomainInfo } from '../platform/sim.js';
import type { XenStore } from '../xenstore/index.js';
import { createLifecycle } from './stream.js';
import type { Lifecycle, LifecycleOptions } from './stream.js';
import type { LifecycleAction } from './types.js';

/** Where domain states come from. */
export interface DomainInfoSource {
  /** Every domain's current state. */
  list(): readonly DomainInfo[] | Promise<readonly DomainInfo[]>;
  /** Emits whenever the list may have changed. */
  readonly changes$: Observable<unknown>;
}

/** The simulated hypervisor's domains. */
export function simDomainSource(hv: SimHypervisor): DomainInfoSource {
  return { list: () => hv.domainInfo(), changes$: hv.changes$ };
}

/** How often a polled source re-reads the domains unless told otherwise (ms). */
export const DEFAULT_DOMAIN_POLL_MS = 1000;

/**
 * A source that is also re-read every `periodMs`, for hypervisors whose
 * notifications miss changes. On Xen, `xl pause` and `xl unpause` fire no
 * XenStore watch, a domain built paused is introduced before it runs, and
 * @releaseDomain fires once when a domain turns dying, not when it is gone;
 * reading the domain list (one cheap hypercall) on a period sees them all.
 * Readings that find nothing new produce no change.
 */
export function pollingDomainSource(source: DomainInfoSource, periodMs: number = DEFAULT_DOMAIN_POLL_MS): DomainInfoSource {
  if (!Number.isFinite(periodMs) || periodMs <= 0) throw new RangeError(`domain poll period must be a positive number of ms, not ${String(periodMs)}`);
  return { list: () => source.list(), changes$: merge(source.changes$, interval(periodMs)) };
}

/** How the real hypervisor's domains are read. */
export interface XenDomainSourceOptions {
  /** Period of the domain-list poll beside the watches (ms, default 1000). */
  readonly pollMs?: number;
}

/**
 * The real hypervisor's domains, from libxenctrl, re-read whenever XenStore
 * fires @introduceDomain or @releaseDomain and every `pollMs` (see
 * `pollingDomainSource` for why the watches alone are not enough). Throws
 * ENODEV where there is no Xen.
 */
export function xenDomainSource(xs: XenStore, options: XenDomainSourceOptions = {}): DomainInfoSource {
  const ctrl = platformCall(() => native.NativeXenCtrl.open());
  return pollingDomainSource(
    {
      list: () => platformCall(() => ctrl.domainInfo()).map(toDomainInfo),
      changes$: merge(xs.watch$('@introduceDomain'), xs.watch$('@releaseDomain')),
    },
    options.pollMs ?? DEFAULT_DOMAIN_POLL_MS,
  );
}

/** What changed in one domain between two readings. */
export type DomainChange =
  | { readonly kind: 'appeared'; readonly domid: number; readonly info: DomainInfo }
  | { readonly kind: 'paused'; readonly domid: number }
  | { readonly kind: 'unpaused'; readonly domid: number }
  | { readonly kind: 'shutdown'; readonly domid: number; readonly reason: NonNullable<DomainInfo['shutdown']> }
  | { readonly kind: 'resumed'; readonly domid: number }
  | { readonly kind: 'dying'; readonly domid: number }
  | { readonly kind: 'gone'; readonly domid: number };

/** The changes from one reading of the domains to the next. Pure. */
export function diffDomains(before: ReadonlyMap<number, DomainInfo>, after: readonly DomainInfo[]): DomainChange[] {
  const changes: DomainChange[] = [];
  const seen = new Set<number>();
  for (const now of after) {
    const { domid } = now;
    seen.add(domid);
    const was = before.get(domid);
    if (!was) {
      changes.push({ kind: 'appeared', domid, info: now });
      if (now.shutdown) changes.push({ kind: 'shutdown', domid, reason: now.shutdown });
      if (now.dying) changes.push({ kind: 'dying', domid });
      continue;
    }
    // A domain that shut down or is dying is paused by Xen and by the
    // toolstack on its way out: that is part of the shutdown, not a pause
    // anyone asked for.
    const live = !now.shutdown && !now.dying;
    if (live && !was.paused && now.paused) changes.push({ kind: 'paused', domid });
    if (live && was.paused && !now.paused) changes.push({ kind: 'unpaused', domid });
    if (now.shutdown && was.shutdown !== now.shutdown) changes.push({ kind: 'shutdown', domid, reason: now.shutdown });
    if (was.shutdown && !now.shutdown) changes.push({ kind: 'resumed', domid });
    if (!was.dying && now.dying) changes.push({ kind: 'dying', domid });
  }
  for (const domid of before.keys()) {
    if (!seen.has(domid)) changes.push({ kind: 'gone', domid });
  }
  return changes;
}

/**
 * The lifecycle actions a change means for the domain's VM. Pure. A domain
 * that appears running starts; pause and unpause stop and start it; a
 * shutdown becomes the request QEMU would get for it (poweroff: guest
 * shutdown; reboot and soft reset: guest reset; suspend; crash: guest
 * panicked; watchdog: a stop into the watchdog state); a resumed suspend
 * wakes it; a domain destroyed by the toolstack is shut down by the host.
 */
export function actionsForChange(change: DomainChange): LifecycleAction[] {
  switch (change.kind) {
    case 'appeared':
      return change.info.paused || change.info.shutdown ? [] : [{ type: 'start' }];
    case 'paused':
      return [{ type: 'stop', state: 'paused' }];
    case 'unpaused':
      return [{ type: 'start' }];
    case 'shutdown':
      switch (change.reason) {
        case 'reboot':
        case 'soft-reset':
          return [{ type: 'reset', cause: 'guest-reset' }];
        case 'suspend':
          return [{ type: 'suspend' }];
        case 'crash':
          return [{ type: 'guest-panicked' }];
        case 'watchdog':
          return [{ type: 'vmstop', state: 'watchdog' }];
        default:
          return [{ type: 'shutdown', cause: 'guest-shutdown' }];
      }
    case 'resumed':
      return [{ type: 'wakeup', reason: 'other' }];
    case 'dying':
    case 'gone':
      return [{ type: 'shutdown', cause: 'host-qmp-quit' }];
    default: {
      const never: never = change;
      return never;
    }
  }
}

/** Watches the domains of a hypervisor. */
export class DomainWatcher {
  /** Every change of every domain, as it is seen. */
  readonly changes$: Observable<DomainChange>;
  /** Domains that died (dying or gone), once per life: the registry tears their devices down. */
  readonly deaths$: Observable<number>;

  readonly #source: DomainInfoSource;

  constructor(source: DomainInfoSource) {
    this.#source = source;
    this.changes$ = source.changes$.pipe(
      startWith(undefined),
      concatMap(() => defer(() => Promise.resolve(source.list()))),
      scan(
        (acc: { known: Map<number, DomainInfo>; changes: DomainChange[] }, list) => ({
          known: new Map(list.map((d) => [d.domid, d])),
          changes: diffDomains(acc.known, list),
        }),
        { known: new Map<number, DomainInfo>(), changes: [] },
      ),
      mergeMap((acc) => from(acc.changes)),
      share(),
    );
    this.deaths$ = this.changes$.pipe(
      scan(
        (acc: { dead: Set<number>; emit: number | null }, c) => {
          const dead = new Set(acc.dead);
          if (c.kind === 'appeared') dead.delete(c.domid);
          if ((c.kind === 'dying' || c.kind === 'gone') && !dead.has(c.domid)) {
            dead.add(c.domid);
            return { dead, emit: c.domid };
          }
          return { dead, emit: null };
        },
        { dead: new Set<number>(), emit: null },
      ),
      mergeMap((acc) => (acc.emit === null ? EMPTY : [acc.emit])),
      share(),
    );
  }

  /** Whether a domain exists now and is not dying (asks the hypervisor). */
  async exists(domid: number): Promise<boolean> {
    const list = await this.#source.list();
    return list.some((d) => d.domid === domid && !d.dying);
  }

  /** The lifecycle actions of one domain's VM. */
  actions$(domid: number): Observable<LifecycleAction> {
    return this.changes$.pipe(
      filter((c) => c.domid === domid),
      map(actionsForChange),
      mergeMap((actions) => from(actions)),
    );
  }

  /** A lifecycle driven by one domain's changes (call `connect()` on it). */
  lifecycle(domid: number, options?: LifecycleOptions): Lifecycle {
    return createLifecycle(this.actions$(domid), options);
  }
}
