// `xenrx serve` SIGKILLed and started again under two guests exchanging
// packets through its switch: the new process takes the vifs over from
// their journals without the guests reconnecting, the packets in flight
// are answered (some dropped, as a NIC reset drops them), nothing wedges,
// and traffic goes on. The simulated hypervisor is served on a socket by
// this process (see helpers/served-host.ts).
import { join } from 'node:path';

import test from 'ava';

import type { Packet, SimNetFrontend } from '../ts/index.js';
import { pollUntil } from './helpers/poll.js';
import { startXenrx } from './helpers/process.js';
import type { Background } from './helpers/process.js';
import { servedHost } from './helpers/served-host.js';

function frame(dst: Buffer, src: Buffer, seq: number, length: number): Packet {
  const data = Buffer.alloc(length, seq & 0xff);
  dst.copy(data, 0);
  src.copy(data, 6);
  data.writeUInt16BE(0x88b5, 12);
  data.writeUInt32BE(seq, 14);
  return { data };
}

/** Resolves with the packets `to` gets until one from `from` numbered `seq`. */
function until(to: SimNetFrontend, seq: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const sub = to.packets$.subscribe({
      next: (p) => {
        seen++;
        if (p.data.readUInt16BE(12) === 0x88b5 && p.data.readUInt32BE(14) === seq) {
          sub.unsubscribe();
          resolve(seen);
        }
      },
      error: reject,
    });
  });
}

test('xenrx serve SIGKILLed 5 times under two guests exchanging packets: the vifs are taken over, nothing wedges', async (t) => {
  t.timeout(10 * 60_000);
  const h = await servedHost(t, { imageBytes: 1 << 20, guestPages: 4096 });
  const args = ['serve', '--socket', h.host.socket, '--hypervisor', h.hvSocket, '--types', 'vif', '--vif-path', 'switch', '--state-dir', join(h.dir, 'state'), '--debug', '1'];
  const serves: Background[] = [];
  const start = (): Background => {
    const s = startXenrx(args);
    serves.push(s);
    return s;
  };
  t.teardown(() => {
    for (const s of serves) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  });
  let serve = start();
  await serve.waitFor(/serving vif/);
  const a = await h.host.addNic(h.guest);
  const guest2 = await h.host.createGuest(2, 'guest2', { pages: 4096 });
  const b = await h.host.addNic(guest2);
  t.teardown(() => {
    a.detach();
    b.detach();
  });
  // B announces itself; A hears it.
  const heard = a.receive(1);
  b.send(frame(Buffer.alloc(6, 0xff), b.mac, 0, 60));
  await heard;
  let seq = 1;
  for (let round = 0; round < 5; round++) {
    // A burst in flight, and the backend dies under it.
    a.send(Array.from({ length: 200 }, (_, i) => frame(b.mac, a.mac, seq + i, 1514)));
    seq += 200;
    serve.child.kill('SIGKILL');
    await serve.exited();
    serve = start();
    await serve.waitFor(/vif-1-0: vif taken over/);
    await serve.waitFor(/vif-2-0: vif taken over/);
    // Every packet of A's is answered (none wedged), and traffic goes on.
    await pollUntil(() => a.pending === 0);
    // The switch of the new process learns B again from B's next frame.
    const back = a.receive(1);
    b.send(frame(a.mac, b.mac, 7, 60));
    await back;
    const marker = until(b, seq);
    a.send(frame(b.mac, a.mac, seq, 100));
    t.true((await marker) <= 201);
    seq++;
  }
  t.is(a.fault, null);
  t.is(b.fault, null);
  t.is(a.stats().txErrors, 0);
  const out = serve.output();
  // Taken over as found: no state written, no handshake again.
  t.notRegex(out, /Closing|Initialis|InitWait/);
  t.is(await serve.stop('SIGTERM'), 0);
});
