import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { GntSt, Platform, PlatformError, SimHypervisor, XEN_EVTCHN_DEVICE, XENSTORE_ERRNOS, gntstName } from '../ts/index.js';
import { native } from '../ts/native.js';
import { pollUntil } from './helpers/poll.js';
import { tempDir } from './helpers/xenstore.js';

const BACK = 0;
const FRONT = 5;
const OTHER = 6;
const GTF_READING = 8;
const GTF_WRITING = 16;

function setup(): { hv: SimHypervisor; host: ReturnType<SimHypervisor['host']> } {
  const hv = new SimHypervisor();
  for (const domid of [BACK, FRONT, OTHER]) hv.createDomain({ domid });
  return { hv, host: hv.host() };
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof PlatformError) return err.code;
    throw err;
  }
  return undefined;
}

test('a backend maps what a frontend granted, and the guest sees it in use', (t) => {
  const { host } = setup();
  const gt = host.gnttab(FRONT);
  const frame = gt.allocPage();
  gt.writePage(frame, 0, Buffer.from('from the guest'));
  const gref = gt.grant(BACK, frame, false);
  const map = host.gntdev(BACK).map(FRONT, [gref], true);
  t.is(map.length, 4096);
  t.is(map.read(0, 14).toString(), 'from the guest');
  map.write(0, Buffer.from('from dom0'));
  t.is(gt.readPage(frame, 0, 9).toString(), 'from dom0');
  t.is((gt.entryFlags(gref) ?? 0) & (GTF_READING | GTF_WRITING), GTF_READING | GTF_WRITING);
  t.is(code(() => gt.endAccess(gref)), 'EBUSY', 'ending access while mapped fails, as on Xen');
  map.unmap();
  t.is((gt.entryFlags(gref) ?? 0) & (GTF_READING | GTF_WRITING), 0);
  gt.endAccess(gref);
  t.is(code(() => map.read(0, 1)), 'EBADF');
});

test('bad grants give the Xen status and leave other mappings intact', (t) => {
  const { host } = setup();
  const gt = host.gnttab(FRONT);
  const dev = host.gntdev(BACK);
  const good = gt.grant(BACK, gt.allocPage(), false);
  const keep = dev.map(FRONT, [good], true);
  keep.write(0, Buffer.from('keep'));
  t.is(code(() => dev.map(FRONT, [100_000], false)), 'GNTST_bad_gntref', 'ref out of range');
  const toOther = gt.grant(OTHER, gt.allocPage(), false);
  t.is(code(() => dev.map(FRONT, [toOther], false)), 'GNTST_general_error', 'granted to another domain');
  const ro = gt.grant(BACK, gt.allocPage(), true);
  t.is(code(() => dev.map(FRONT, [ro], true)), 'GNTST_general_error', 'writable map of a read-only grant');
  t.is(code(() => dev.map(99, [good], false)), 'GNTST_bad_domain');
  t.is(code(() => dev.map(FRONT, [good, toOther], true)), 'GNTST_general_error', 'one bad ref fails the batch');
  t.is(keep.read(0, 4).toString(), 'keep');
  t.is((gt.entryFlags(good) ?? 0) & GTF_WRITING, GTF_WRITING, 'the batch failure did not unpin the other mapping');
  const readOnly = dev.map(FRONT, [ro], false);
  t.false(readOnly.writable);
  t.is(code(() => readOnly.write(0, Buffer.from('x'))), 'EACCES');
  t.is(gntstName(GntSt.BadGntref), 'GNTST_bad_gntref');
  t.is(GntSt.BadGntref, -3);
  t.is(gntstName(-99), 'GNTST_-99');
});

test('grant copy reports a status per segment', (t) => {
  const { host } = setup();
  const gt = host.gnttab(FRONT);
  const frame = gt.allocPage();
  const rw = gt.grant(BACK, frame, false);
  const dev = host.gntdev(BACK);
  const statuses = dev.copyIn([
    { domid: FRONT, gref: rw, offset: 100, data: Buffer.from('copied') },
    { domid: FRONT, gref: rw, offset: 4095, data: Buffer.from('too long') },
    { domid: FRONT, gref: 99_999, offset: 0, data: Buffer.from('x') },
  ]);
  t.deepEqual(statuses, [GntSt.Okay, GntSt.BadCopyArg, GntSt.BadGntref]);
  const out = dev.copyOut([{ domid: FRONT, gref: rw, offset: 100, length: 6 }]);
  t.is(out[0]?.status, GntSt.Okay);
  t.is(out[0]?.data?.toString(), 'copied');
});

test('event channels: bind, notify, mask until unmask, errors by errno', async (t) => {
  const { host } = setup();
  const front = host.evtchn(FRONT);
  const back = host.evtchn(BACK);
  const fport = front.allocUnbound(BACK);
  const bport = back.bindInterdomain(FRONT, fport);
  front.notify(fport);
  t.deepEqual(await back.waitPending(2000), [bport]);
  front.notify(fport);
  t.deepEqual(await back.waitPending(50), [], 'masked until unmasked');
  back.unmask(bport);
  t.deepEqual(await back.waitPending(2000), [bport], 'held, then delivered');
  back.notify(bport);
  t.deepEqual(await front.waitPending(2000), [fport]);
  t.is(code(() => back.notify(4242)), 'ENOTCONN', 'notify on an unbound port');
  t.is(code(() => back.bindInterdomain(77, 1)), 'ESRCH', 'no such domain');
  t.is(code(() => back.bindInterdomain(FRONT, 999)), 'EINVAL', 'no such unbound port');
  // After all that the channel still works.
  back.unmask(bport);
  front.notify(fport);
  t.deepEqual(await back.waitPending(2000), [bport]);
});

test('a destroyed domain can no longer be mapped or bound', (t) => {
  const { hv, host } = setup();
  const gt = host.gnttab(FRONT);
  const gref = gt.grant(BACK, gt.allocPage(), false);
  const ch = host.evtchn(FRONT);
  const fport = ch.allocUnbound(BACK);
  t.true(hv.destroyDomain(FRONT));
  t.false(hv.destroyDomain(FRONT));
  t.deepEqual(hv.domains(), [BACK, OTHER]);
  t.is(code(() => host.gntdev(BACK).map(FRONT, [gref], false)), 'GNTST_bad_domain');
  t.is(code(() => host.evtchn(BACK).bindInterdomain(FRONT, fport)), 'ESRCH');
});

test('across processes: a frontend in a child process, the backend here', async (t) => {
  const { hv, host } = setup();
  const socket = join(tempDir(t), 'hv.sock');
  hv.serve(socket);
  t.teardown(() => hv.stopServing());
  const script = fileURLToPath(new URL('fixtures/sim-frontend.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script, socket, String(FRONT), String(BACK)]);
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const ready = await new Promise<string>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const m = /READY (\d+) (\d+)/.exec(out);
      if (m) resolve(`${m[1] ?? ''} ${m[2] ?? ''}`);
    });
    void exited.then(() => reject(new Error(`child exited early: ${err}`)));
  });
  const [gref, port] = ready.split(' ').map(Number);
  if (gref === undefined || port === undefined) throw new Error(ready);
  const map = host.gntdev(BACK).map(FRONT, [gref], true);
  t.is(map.read(0, 4).toString(), 'PING');
  map.write(0, Buffer.from('PONG'));
  const back = host.evtchn(BACK);
  const bport = back.bindInterdomain(FRONT, port);
  back.notify(bport);
  t.deepEqual(await back.waitPending(60_000), [bport], 'the child answered');
  map.unmap();
  t.is(await exited, 0, err);
  t.regex(out, /DONE/);
});

test('shared facts come from the native core: shutdown reasons, XenStore errnos, GNTST names', (t) => {
  const hv = new SimHypervisor();
  hv.createDomain({ domid: 4 });
  const reasons = native.shutdownReasons();
  t.deepEqual(reasons, ['poweroff', 'reboot', 'suspend', 'crash', 'watchdog', 'soft-reset']);
  for (const reason of reasons) {
    t.true(hv.shutdownDomain(4, reason), reason);
    t.is(hv.domainInfo().find((d) => d.domid === 4)?.shutdown, reason);
    hv.resumeDomain(4);
  }
  t.is(XENSTORE_ERRNOS.length, 16);
  t.is(XENSTORE_ERRNOS[4], 'ENOENT', "xs_wire.h's order");
  for (const [name, status] of Object.entries(GntSt)) {
    if (typeof status === 'number') t.regex(gntstName(status), /^GNTST_[a-z_]+$/, name);
  }
});

test('Platform.open picks Xen only where /dev/xen/evtchn exists, else the simulated host given', (t) => {
  t.false(existsSync(XEN_EVTCHN_DEVICE), 'this test runs without Xen');
  const hv = new SimHypervisor();
  hv.createDomain({ domid: 0 });
  const platform = Platform.open({ host: hv.host() });
  t.teardown(() => platform.stop());
  t.is(platform.kind, 'simulated');
  // io_uring is for the real event-channel device; the simulated handle
  // is waited on with epoll.
  t.is(platform.eventWait, 'epoll');
  t.is(platform.domid, 0);
  const none = t.throws(() => Platform.open(), { instanceOf: PlatformError });
  t.is(none?.code, 'ENODEV');
  t.regex(none?.message ?? '', /no Xen here/);
  const xen = t.throws(() => Platform.xen(), { instanceOf: PlatformError });
  t.is(xen?.code, 'ENODEV');
});

test('a TypeScript data path: one handler run per event, the port unmasked only once it settles', async (t) => {
  const hv = new SimHypervisor();
  hv.createDomain({ domid: 0 });
  hv.createDomain({ domid: 6 });
  const host = hv.host();
  const platform = Platform.simulated(host, 0);
  t.teardown(() => platform.stop());
  const guest = host.evtchn(6);
  const remote = guest.allocUnbound(0);
  let running = 0;
  let most = 0;
  let runs = 0;
  let release: (() => void) | null = null;
  const ch = platform.bindEventChannel(6, remote, async () => {
    running++;
    most = Math.max(most, running);
    runs++;
    await new Promise<void>((r) => (release = r));
    running--;
    ch.notify();
  });
  guest.notify(remote);
  await pollUntil(() => release !== null);
  // More events while the handler is busy: held, not run concurrently.
  guest.notify(remote);
  guest.notify(remote);
  (release as (() => void) | null)?.();
  release = null;
  t.deepEqual(await guest.waitPending(60_000), [remote], 'answered');
  guest.unmask(remote);
  // The events that came meanwhile are delivered once, after it settled.
  await pollUntil(() => release !== null);
  (release as (() => void) | null)?.();
  t.is(runs, 2);
  t.is(most, 1);
  ch.unbind();
  t.throws(() => ch.notify(), { instanceOf: PlatformError });
});
