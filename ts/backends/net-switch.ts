// A learning switch between a NetService's 'stream' vifs, as an RxJS
// pipeline: what the README shows, and what the demo and the benchmark
// run. A starting point for a switch, a filter or a NAT of your own.
import { map } from 'rxjs';
import type { Subscription } from 'rxjs';

import { formatMac, isGroupDestination } from './net-frames.js';
import type { NetService, Packet } from './net.js';

/**
 * A learning switch between the service's 'stream' vifs: each frame's
 * source is learnt on the vif it came from; a frame goes to the vif its
 * destination was learnt on, or to every other vif. Unsubscribe to stop it.
 */
export function learningSwitch(net: NetService): Subscription {
  const where = new Map<string, string>();
  return net.packets$
    .pipe(
      // One batch in, one batch out per destination vif.
      map(({ vif, packets }) => {
        const out = new Map<string, Packet[]>();
        for (const p of packets) {
          where.set(formatMac(p.data, 6), vif);
          const to = isGroupDestination(p.data) ? undefined : where.get(formatMac(p.data, 0));
          for (const target of to !== undefined ? [to] : net.vifs()) {
            if (target !== vif) out.set(target, [...(out.get(target) ?? []), p]);
          }
        }
        return out;
      }),
    )
    .subscribe((out) => {
      for (const [target, packets] of out) net.send(target, packets);
    });
}
