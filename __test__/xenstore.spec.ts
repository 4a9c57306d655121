import { join } from 'node:path';

import test from 'ava';
import { firstValueFrom, take as rxTake, toArray } from 'rxjs';

import { XenStore, XenStoreError, Xenstored, isXenStoreError } from '../ts/index.js';
import { pollUntil, readUntil } from './helpers/poll.js';
import { startDaemon, take, tempDir } from './helpers/xenstore.js';

test('reads and writes text and bytes', async (t) => {
  const { dom0 } = await startDaemon(t);
  await dom0.write('/t/text', 'héllo');
  t.is(await dom0.read('/t/text'), 'héllo');
  await dom0.write('/t/bin', Buffer.from([0, 255, 0, 7]));
  t.deepEqual(await dom0.read('/t/bin', 'buffer'), Buffer.from([0, 255, 0, 7]));
  t.deepEqual(await dom0.list('/t'), ['text', 'bin']);
  t.true(await dom0.exists('/t/bin'));
  await dom0.rm('/t/bin');
  t.false(await dom0.exists('/t/bin'));
  t.is(await dom0.tryRead('/t/bin'), undefined);
  await dom0.mkdir('/t/dir');
  t.is(await dom0.read('/t/dir'), '');
  t.is(await dom0.getDomainPath(7), '/local/domain/7');
});

test('errors are typed with their XenStore code', async (t) => {
  const { dom0 } = await startDaemon(t);
  const err = await t.throwsAsync(dom0.read('/missing'), { instanceOf: XenStoreError });
  t.is(err?.code, 'ENOENT');
  t.regex(err?.message ?? '', /read \/missing/);
  const bad = await t.throwsAsync(dom0.write('/bad path', 'x'), { instanceOf: XenStoreError });
  t.is(bad?.code, 'EINVAL');
  t.true(isXenStoreError(bad, 'EINVAL'));
  t.false(isXenStoreError(bad, 'ENOENT'));
});

test('permissions round-trip and bind guests', async (t) => {
  const { daemon, dom0 } = await startDaemon(t);
  await dom0.write('/local/domain/3/data', '');
  await dom0.setPerms('/local/domain/3/data', [{ domid: 3, access: 'none' }]);
  await dom0.write('/private', 'p');
  await dom0.setPerms('/private', ['n0', 'r4']);
  t.deepEqual(await dom0.getPerms('/private'), [
    { domid: 0, access: 'none' },
    { domid: 4, access: 'read' },
  ]);
  const guest = await XenStore.connect({ daemon, domid: 3 });
  t.teardown(() => guest.close());
  const denied = await t.throwsAsync(guest.read('/private'), { instanceOf: XenStoreError });
  t.is(denied?.code, 'EACCES');
  await guest.write('data/own', 'mine');
  t.deepEqual(await dom0.getPerms('/local/domain/3/data/own'), [{ domid: 3, access: 'none' }]);
  t.throws(() => void dom0.setPerms('/private', ['x1']), { instanceOf: TypeError });
});

test('a transaction commits all or nothing', async (t) => {
  const { dom0 } = await startDaemon(t);
  const result = await dom0.transaction(async (tx) => {
    await tx.write('/tx/a', '1');
    await tx.write('/tx/b', '2');
    t.is(await tx.read('/tx/a'), '1');
    t.false(await dom0.exists('/tx/a'), 'invisible outside before commit');
    return 'done';
  });
  t.is(result, 'done');
  t.is(await dom0.read('/tx/b'), '2');
  await t.throwsAsync(
    dom0.transaction(async (tx) => {
      await tx.write('/tx/c', '3');
      throw new Error('changed my mind');
    }),
    { message: 'changed my mind' },
  );
  t.false(await dom0.exists('/tx/c'));
});

test('a transaction is retried on EAGAIN with jittered backoff', async (t) => {
  const { dom0, daemon } = await startDaemon(t);
  const other = await XenStore.connect({ daemon });
  t.teardown(() => other.close());
  await dom0.write('/counter', '0');
  let attempts = 0;
  const waits: number[] = [];
  await dom0.transaction(
    async (tx) => {
      attempts++;
      const n = Number(await tx.read('/counter'));
      // Someone else changes what we read, the first two times.
      if (attempts <= 2) await other.write('/counter', String(n + 100));
      await tx.write('/counter', String(n + 1));
    },
    {
      random: () => {
        waits.push(attempts);
        return 0.5;
      },
    },
  );
  t.is(attempts, 3);
  t.deepEqual(waits, [1, 2]);
  t.is(await dom0.read('/counter'), '201');
});

test('a transaction gives up after its attempts with EAGAIN', async (t) => {
  const { dom0, daemon } = await startDaemon(t);
  const other = await XenStore.connect({ daemon });
  t.teardown(() => other.close());
  await dom0.write('/hot', '0');
  let attempts = 0;
  const err = await t.throwsAsync(
    dom0.transaction(
      async (tx) => {
        attempts++;
        await tx.read('/hot');
        await other.write('/hot', String(attempts));
        await tx.write('/mine', 'x');
      },
      { maxAttempts: 4, baseDelayMs: 0 },
    ),
    { instanceOf: XenStoreError },
  );
  t.is(err?.code, 'EAGAIN');
  t.is(attempts, 4);
  t.false(await dom0.exists('/mine'));
});

test('by default a transaction is retried until it commits, as libxl retries', async (t) => {
  const { dom0, daemon } = await startDaemon(t);
  const other = await XenStore.connect({ daemon });
  t.teardown(() => other.close());
  await dom0.write('/hot', '0');
  let attempts = 0;
  const result = await dom0.transaction(
    async (tx) => {
      attempts++;
      await tx.read('/hot');
      // Another writer wins the first 40 rounds.
      if (attempts <= 40) await other.write('/hot', String(attempts));
      await tx.write('/mine', String(attempts));
      return attempts;
    },
    { baseDelayMs: 0 },
  );
  t.is(result, 41);
  t.is(await dom0.read('/mine'), '41');
});

test('watch$ emits the path first, then changes below it', async (t) => {
  const { dom0 } = await startDaemon(t);
  const events = take(dom0.watch$('/w'), 3);
  await events.started;
  await dom0.write('/w/a', '1');
  await dom0.write('/other', '1');
  await dom0.write('/w/b/c', '1');
  t.deepEqual(await events.values, ['/w', '/w/a', '/w/b/c']);
});

test('subscribers of one path share one XenStore watch', async (t) => {
  const { dom0 } = await startDaemon(t);
  const w = dom0.watch$('/shared');
  const registered = firstValueFrom(w);
  const first = w.subscribe();
  const second = w.subscribe();
  t.is(await registered, '/shared');
  const third = dom0.watch$('/elsewhere').subscribe();
  t.is(dom0.watchCount, 2);
  first.unsubscribe();
  t.is(dom0.watchCount, 2);
  const later = firstValueFrom(w.pipe(rxTake(1), toArray()));
  await dom0.write('/shared/x', '');
  // A subscriber joining a shared watch gets the changes from then on.
  t.deepEqual(await later, ['/shared/x']);
  second.unsubscribe();
  third.unsubscribe();
  t.is(dom0.watchCount, 0);
  // The daemon agrees: the watches are gone. Unwatching does not wait for
  // the daemon's answer, so the report is read until it catches up.
  const report = await readUntil(
    () => dom0.control('memreport'),
    (r) => /watches 0 /.test(r),
  );
  t.regex(report ?? '', /watches 0 /);
});

test('watches of a guest are relative and filtered by permissions', async (t) => {
  const { dom0, daemon } = await startDaemon(t);
  await dom0.write('/local/domain/6/data', '');
  await dom0.setPerms('/local/domain/6/data', ['n6']);
  const guest = await XenStore.connect({ daemon, domid: 6 });
  t.teardown(() => guest.close());
  const events = take(guest.watch$('data'), 2);
  await events.started;
  await dom0.write('/secret', 's');
  await dom0.write('/local/domain/6/data/k', 'v');
  t.deepEqual(await events.values, ['data', 'data/k']);
});

test('introduce and release drive the special watches', async (t) => {
  const { dom0 } = await startDaemon(t);
  const intro = take(dom0.watch$('@introduceDomain'), 2);
  const rel = take(dom0.watch$('@releaseDomain'), 2);
  await Promise.all([intro.started, rel.started]);
  t.false(await dom0.isDomainIntroduced(9));
  await dom0.introduce(9);
  t.true(await dom0.isDomainIntroduced(9));
  await dom0.release(9);
  t.deepEqual(await intro.values, ['@introduceDomain', '@introduceDomain']);
  t.deepEqual(await rel.values, ['@releaseDomain', '@releaseDomain']);
  const err = await t.throwsAsync(dom0.release(9), { instanceOf: XenStoreError });
  t.is(err?.code, 'ENOENT');
});

test('the client reconnects after a daemon restart and keeps its watches', async (t) => {
  const dir = tempDir(t);
  const options = { socket: join(dir, 'xs.sock'), stateFile: join(dir, 'state'), log: false };
  let daemon = Xenstored.start(options);
  const xs = await XenStore.connect({ path: daemon.socket });
  t.teardown(() => {
    xs.close();
    daemon.stop();
  });
  await xs.write('/survives', 'yes');
  const seen: string[] = [];
  const sub = xs.watch$('/survives').subscribe((p) => seen.push(p));
  t.teardown(() => sub.unsubscribe());
  await pollUntil(() => seen.length === 1);
  daemon.stop();
  daemon = Xenstored.start(options);
  // The state file kept the node; the client finds the new daemon.
  t.is(await readUntil(() => xs.read('/survives'), (v) => v === 'yes'), 'yes');
  // The watch is set again after reconnecting, before the write below.
  await pollUntil(() => seen.length === 2);
  await xs.write('/survives/after', '1');
  await pollUntil(() => seen.includes('/survives/after'));
  // The watch fired on registration, again after reconnecting, then on the write.
  t.deepEqual(seen, ['/survives', '/survives', '/survives/after']);
});

test('a second daemon on a live socket is refused', async (t) => {
  const { daemon } = await startDaemon(t);
  const err = t.throws(() => Xenstored.start({ socket: daemon.socket, log: false }), { instanceOf: XenStoreError });
  t.is(err?.code, 'EADDRINUSE');
});

test('connecting to nothing is a clear error', async (t) => {
  const dir = tempDir(t);
  const err = await t.throwsAsync(XenStore.connect({ path: join(dir, 'nope') }), { instanceOf: XenStoreError });
  t.is(err?.code, 'ECONNREFUSED');
  t.regex(err?.message ?? '', /nope/);
});

test('waitFor resolves once the node holds an accepted value, and lets its watch go', async (t) => {
  const { daemon, dom0 } = await startDaemon(t);
  // Already there: at once.
  await dom0.write('/w/ready', 'yes');
  t.is(await dom0.waitFor('/w/ready'), 'yes');
  // Not yet there: when a second connection writes it.
  const other = await XenStore.connect({ daemon });
  t.teardown(() => other.close());
  const state = dom0.waitFor('/w/state', (v) => v === '4');
  await other.write('/w/state', '1');
  await other.write('/w/state', '3');
  await other.write('/w/state', '4');
  t.is(await state, '4');
  // A node that goes away: `undefined` is what is accepted.
  const gone = dom0.waitFor('/w/ready', (v) => v === undefined);
  await other.rm('/w/ready');
  t.is(await gone, undefined);
  t.is(dom0.watchCount, 0);
  // Never accepted: the timeout says so, and the watch goes too.
  await t.throwsAsync(dom0.waitFor('/w/state', (v) => v === '5', { timeoutMs: 50 }), { message: /waitFor \/w\/state: no accepted value within 50 ms/ });
  t.is(dom0.watchCount, 0);
  // The connection closes first.
  const orphan = dom0.waitFor('/w/never');
  dom0.close();
  await t.throwsAsync(orphan, { message: /waitFor \/w\/never: the connection closed first/ });
});
