// `xenrx demo`: the main job, on the embedded simulated host. It grows with
// the package; today it runs the embedded XenStore daemon and plays a short
// toolstack-and-guest session against it, narrating what happens.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { nativeInfo } from '../index.js';
import { XenStore, XenStoreError, Xenstored } from '../xenstore/index.js';

function say(line: string): void {
  console.log(`xenrx demo: ${line}`);
}

/** Runs the demo and resolves when it is finished. */
export async function runDemo(): Promise<void> {
  const info = nativeInfo();
  say(`native core ${info.version} loaded (${info.target}, real Xen ${info.xenPlatform ? 'compiled in' : 'not compiled in'})`);
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-demo-'));
  const daemon = Xenstored.start({ socket: join(dir, 'xenstored.sock'), log: false });
  const dom0 = await XenStore.connect({ path: daemon.socket });
  try {
    say(`embedded XenStore daemon listening on ${daemon.socket}`);
    const events: string[] = [];
    const sub = dom0.watch$('@introduceDomain').subscribe((p) => events.push(p));

    for (const domid of [1, 2]) {
      // As libxl does: a home directory readable by the guest, a guest-owned
      // data directory, then INTRODUCE so the guest gets its connection.
      await dom0.transaction(async (tx) => {
        const home = `/local/domain/${String(domid)}`;
        await tx.write(`${home}/name`, `guest${String(domid)}`);
        await tx.setPerms(home, ['n0', `r${String(domid)}`]);
        await tx.setPerms(`${home}/name`, ['n0', `r${String(domid)}`]);
        await tx.mkdir(`${home}/data`);
        await tx.setPerms(`${home}/data`, [`n${String(domid)}`]);
      });
      await dom0.introduce(domid);
      say(`dom0 created /local/domain/${String(domid)} and introduced domain ${String(domid)} (socket ${daemon.domainSocket(domid)})`);
    }

    const guest1 = await XenStore.connect({ path: daemon.domainSocket(1) });
    const name = await guest1.read('name');
    await guest1.write('data/greeting', `hello from ${name}`);
    say(`guest1 read its name "${name}" and wrote data/greeting`);
    try {
      await guest1.read('/local/domain/2/name');
    } catch (err) {
      if (err instanceof XenStoreError) say(`guest1 reading guest2's name is refused: ${err.code}`);
      else throw err;
    }
    say(`dom0 reads guest1's greeting: "${await dom0.read('/local/domain/1/data/greeting')}"`);
    await dom0.release(1);
    say(`dom0 released domain 1: its data directory is gone (exists: ${String(await dom0.exists('/local/domain/1/data'))})`);
    guest1.close();
    sub.unsubscribe();
    say(`@introduceDomain fired ${String(events.length)} times (once on registration, once per guest)`);
    say(`daemon handled ${String(daemon.stats().requests)} requests; stopping`);
  } finally {
    dom0.close();
    daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
