// The vif's TAP path with the real kernel: in a network namespace the test
// creates (`unshare -n`), two simulated guests' vifs are TAP devices in a
// Linux bridge, as Xen's vif-bridge sets them up (see fixtures/net-tap.ts).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { run, xenrxNodeArgs } from './helpers/process.js';

const fixture = fileURLToPath(new URL('fixtures/net-tap.ts', import.meta.url));

test('vifs on TAP devices in a bridge: the host answers a guest, and guests reach each other through the bridge', async (t) => {
  if (!existsSync('/dev/net/tun')) {
    // Said, not hidden: the Rust TAP tests say the same.
    t.log('SKIPPED: this machine has no /dev/net/tun');
    t.pass();
    return;
  }
  const nodeArgs = xenrxNodeArgs([]).slice(0, 2);
  const r = await run('unshare', ['-n', '--', process.execPath, ...nodeArgs, fixture]);
  if (r.code !== 0 && /unshare failed: Operation not permitted/.test(r.stderr)) {
    t.log(`SKIPPED: no network namespace may be made here (${r.stderr.trim()})`);
    t.pass();
    return;
  }
  t.is(r.code, 0, r.stderr);
  const [seen, after] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(seen, { hostAnswered: true, guestToGuest: true, bridged: ['vif1.0', 'vif2.0'], hotplug: 'connected' });
  t.deepEqual(after, { left: '' });
});
