// The demo's network part: two guests' vifs on the packet stream, joined by
// a learning switch written as an RxJS pipeline; the first guest pings the
// second, then sends it a bulk transfer, with live throughput.
import { performance } from 'node:perf_hooks';

import { firstValueFrom, take, timeout } from 'rxjs';

import type { Packet } from '../backends/net.js';
import type { SimNetFrontend } from '../simhost/index.js';

/** A frame from `src` to `dst`: an experimental EtherType, a sequence number, a pattern. */
function frame(dst: Buffer, src: Buffer, seq: number, length: number): Packet {
  const data = Buffer.alloc(length);
  dst.copy(data, 0);
  src.copy(data, 6);
  data.writeUInt16BE(0x88b5, 12);
  data.writeUInt32BE(seq, 14);
  return { data };
}

export interface NetWorkloadOptions {
  readonly a: SimNetFrontend;
  readonly b: SimNetFrontend;
  readonly say: (line: string) => void;
  /** A status line that is rewritten (on a terminal). */
  readonly status?: (text: string | null) => void;
  readonly signal: AbortSignal;
  /** How long the bulk transfer may run (default 2 s). */
  readonly bulkMs?: number;
}

/** Pings, then a bulk transfer; resolves when done (or stopped). */
export async function runNetWorkload(o: NetWorkloadOptions): Promise<void> {
  const { a, b, say } = o;
  // The guests learn each other: an announcement each (the switch floods).
  const heard = firstValueFrom(b.packets$.pipe(take(1), timeout(30_000)));
  a.send(frame(Buffer.alloc(6, 0xff), a.mac, 0, 60));
  await heard;
  // The second guest answers every ping-like frame it gets.
  const echo = b.packets$.subscribe((p) => {
    if (p.data.readUInt16BE(12) === 0x88b5 && p.data.length === 98) b.send(frame(a.mac, b.mac, p.data.readUInt32BE(14), 98));
  });
  try {
    const rtts: number[] = [];
    for (let seq = 1; seq <= 5 && !o.signal.aborted; seq++) {
      const pong = firstValueFrom(a.packets$.pipe(take(1), timeout(30_000)));
      const sent = performance.now();
      a.send(frame(b.mac, a.mac, seq, 98));
      await pong;
      rtts.push(performance.now() - sent);
      say(`net: guest1 pings guest2 through the TypeScript switch: seq=${String(seq)} time=${(rtts[rtts.length - 1] ?? 0).toFixed(2)} ms`);
    }
  } finally {
    echo.unsubscribe();
  }
  if (o.signal.aborted) return;
  // Bulk: 1514-byte frames in batches, a few batches in flight: at most
  // WINDOW * BATCH, fewer than the receiving vif holds while its guest
  // posts no buffers (its rx queue, 1000 by default), so however slowly
  // the receiver runs no frame is dropped.
  const BATCH = 256;
  const WINDOW = 3;
  const budget = o.bulkMs ?? 2000;
  let received = 0;
  let sent = 0;
  let wake: (() => void) | null = null;
  const counting = b.batches$.subscribe((batch) => {
    received += batch.length;
    wake?.();
  });
  const started = performance.now();
  let lastStatus = 0;
  try {
    while (!o.signal.aborted && performance.now() - started < budget) {
      while (sent - received + BATCH <= WINDOW * BATCH) {
        a.send(Array.from({ length: BATCH }, (_, i) => frame(b.mac, a.mac, sent + i, 1514)));
        sent += BATCH;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000);
      });
      wake = null;
      const now = performance.now();
      if (o.status && now - lastStatus > 200) {
        lastStatus = now;
        o.status(`net: bulk transfer ${rate(received, now - started)}`);
      }
    }
    // What is in flight lands (frames dropped on the way are counted by the vif).
    const deadline = performance.now() + 5000;
    while (received < sent && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
      wake = null;
    }
  } finally {
    counting.unsubscribe();
    o.status?.(null);
  }
  const elapsed = performance.now() - started;
  say(`net: bulk transfer guest1 → guest2: ${String(received)} of ${String(sent)} frames of 1514 bytes in ${(elapsed / 1000).toFixed(1)} s, ${rate(received, elapsed)}`);
}

function rate(frames: number, ms: number): string {
  const bytes = frames * 1514;
  const perSec = ms > 0 ? (bytes * 1000) / ms : 0;
  return `${(perSec / 2 ** 20).toFixed(1)} MiB/s (${((perSec * 8) / 1e9).toFixed(2)} Gbit/s), ${Math.round((frames * 1000) / Math.max(ms, 1)).toLocaleString('en')} packets/s`;
}
