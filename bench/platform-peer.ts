// The other process of bench/platform: a simulated frontend that grants
// pages, allocates a port and answers every event on it from a Rust thread,
// until its stdin closes.
import { SimHost } from '../ts/index.js';

const [socket, frontArg, backArg, pagesArg] = process.argv.slice(2);
if (!socket || !frontArg || !backArg || !pagesArg) throw new Error('usage: platform-peer <socket> <front> <back> <pages>');
const front = Number(frontArg);
const back = Number(backArg);
const host = SimHost.connect(socket);
const gt = host.gnttab(front);
const refs: number[] = [];
for (let i = 0; i < Number(pagesArg); i++) {
  const frame = gt.allocPage();
  gt.writePage(frame, 0, Buffer.alloc(4096, i));
  refs.push(gt.grant(back, frame, false));
}
const ch = host.evtchn(front);
const port = ch.allocUnbound(back);
const echo = ch.native.startEcho(port);
console.log(JSON.stringify({ port, refs }));
process.stdin.resume();
process.stdin.on('end', () => {
  echo.stop();
  process.exit(0);
});
