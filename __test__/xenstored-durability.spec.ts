// The daemon's state file under duress: an acknowledged write is durable
// whatever happens to the daemon after it (SIGKILL at any moment, a full
// disk), a transaction is applied whole or not at all, and one state file
// belongs to one daemon, in a directory that exists.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { XenStore, Xenstored, isXenStoreError } from '../ts/index.js';
import { readyOrExited, tmpfsNamespace, xenrxArgs } from './helpers/namespace.js';
import { startXenrx } from './helpers/process.js';
import type { Background } from './helpers/process.js';
import { tempDir } from './helpers/xenstore.js';

/** Kills `bg` when the test ends, if it still runs. */
function killAtEnd(t: ExecutionContext, bg: Background): Background {
  t.teardown(() => {
    if (bg.child.exitCode === null && bg.child.signalCode === null) bg.child.kill('SIGKILL');
  });
  return bg;
}

/** Waits until `bg` (a `xenrx xenstored`) listens; throws with its output if it exited instead. */
async function listening(bg: Background): Promise<Background> {
  if (!(await readyOrExited(bg, /listening on/))) {
    throw new Error(`xenstored exited (${String(bg.child.exitCode ?? bg.child.signalCode)}) instead of listening:\n${bg.output()}`);
  }
  return bg;
}

/** Starts `xenrx xenstored` on `socket` and `state` and waits until it listens. */
function cliDaemon(t: ExecutionContext, socket: string, state: string): Promise<Background> {
  return listening(killAtEnd(t, startXenrx(['xenstored', '--socket', socket, '--state-file', state])));
}

/** Reads each path, `chunk` requests in flight at a time: the value, or undefined if absent. */
async function readAll(xs: XenStore, paths: readonly string[], chunk = 64): Promise<(string | undefined)[]> {
  const values: (string | undefined)[] = [];
  for (let i = 0; i < paths.length; i += chunk) values.push(...(await Promise.all(paths.slice(i, i + chunk).map((p) => xs.tryRead(p)))));
  return values;
}

/** A connection that fails, rather than reconnects, when its daemon goes. */
function connect(socket: string): Promise<XenStore> {
  return XenStore.connect({ path: socket, reconnect: false });
}

const WRITE_LANES = 4;

interface Write {
  readonly value: string;
  acked: boolean;
}

/**
 * What the state must hold after a crash: every acknowledged write with its
 * value (an unacknowledged one may be there, but only with its own value);
 * every committed transaction whole, and no transaction in part.
 */
async function crashProblems(xs: XenStore, writes: ReadonlyMap<string, Write>, txs: ReadonlyMap<number, boolean>): Promise<string[]> {
  const problems: string[] = [];
  const paths = [...writes.keys()];
  const found = await readAll(xs, paths);
  paths.forEach((path, i) => {
    const w = writes.get(path);
    const got = found[i];
    if (w === undefined) return;
    if (w.acked && got !== w.value) problems.push(`acknowledged write ${path} = ${JSON.stringify(w.value)} reads ${JSON.stringify(got)}`);
    if (!w.acked && got !== undefined && got !== w.value) problems.push(`unacknowledged write ${path} reads ${JSON.stringify(got)}, not what was written`);
  });
  const ids = [...txs.keys()];
  const txPaths = ids.flatMap((n) => ['a', 'b', 'c'].map((leaf) => `/tx/${String(n)}/${leaf}`));
  const txFound = await readAll(xs, txPaths);
  ids.forEach((n, k) => {
    const got = txFound.slice(3 * k, 3 * k + 3);
    const whole = got.every((v, j) => v === txValue(n, j));
    const none = got.every((v) => v === undefined);
    if (txs.get(n) === true && !whole) problems.push(`committed transaction ${String(n)} reads ${JSON.stringify(got)}`);
    if (txs.get(n) === false && !whole && !none) problems.push(`uncommitted transaction ${String(n)} is half applied: ${JSON.stringify(got)}`);
  });
  return problems;
}

function txValue(n: number, leaf: number): string {
  return `tx${String(n)}.${'abc'[leaf] ?? '?'}`;
}

/**
 * Kills a daemon once per round of `rounds`, restarting it on the same state
 * file each time, and checks after each restart what the state holds.
 */
async function killRounds(t: ExecutionContext, rounds: readonly number[]): Promise<void> {
  const dir = tempDir(t);
  const socket = join(dir, 'xenstored.sock');
  const state = join(dir, 'state');
  const writes = new Map<string, Write>();
  /** Transaction number → whether its commit was acknowledged. */
  const txs = new Map<number, boolean>();
  let nextTx = 0;
  let inFlightAtKills = 0;
  let kills = 0;

  for (const round of [...rounds, undefined]) {
    // The same state file every round: the restart after the last kill.
    const bg = await cliDaemon(t, socket, state);
    const xs = await connect(socket);
    const problems = await crashProblems(xs, writes, txs);
    t.deepEqual(problems.slice(0, 20), [], `after ${String(kills)} kills: ${String(problems.length)} problems (the first 20 shown)`);
    if (problems.length > 0 || round === undefined) {
      xs.close();
      t.is(await bg.stop('SIGTERM'), 0);
      break;
    }

    // Writes on several lanes (one in flight on each) and transactions on
    // one more, until `killAfter` writes (and in even rounds a transaction)
    // are acknowledged: then SIGKILL, with the other lanes' requests in
    // flight. Anything acknowledged after the kill (a reply already on its
    // way) counts as acknowledged.
    const killAfter = 5 + ((round * 7) % 40);
    const txFirst = round % 2 === 0;
    let acks = 0;
    let commits = 0;
    let inFlight = 0;
    let killed = false;
    const failures: string[] = [];
    const kill = (): void => {
      if (killed) return;
      killed = true;
      kills++;
      inFlightAtKills += inFlight > 0 ? 1 : 0;
      bg.child.kill('SIGKILL');
    };
    // A request fails only because its daemon is gone.
    const failed = (what: string, err: unknown): void => {
      if (!killed || !isXenStoreError(err, 'ECONNRESET', 'ESHUTDOWN')) failures.push(`${what}: ${killed ? '' : 'before the kill: '}${String(err)}`);
      kill();
    };
    const writeLane = async (lane: number): Promise<void> => {
      for (let i = lane; ; i += WRITE_LANES) {
        const path = `/kill/r${String(round)}/${String(i)}`;
        const w: Write = { value: `r${String(round)}.${String(i)}.${'v'.repeat((round + i) % 32)}`, acked: false };
        writes.set(path, w);
        inFlight++;
        try {
          await xs.write(path, w.value);
        } catch (err) {
          failed(`write ${path}`, err);
          return;
        } finally {
          inFlight--;
        }
        w.acked = true;
        acks++;
        if (acks >= killAfter && (commits > 0 || !txFirst)) kill();
      }
    };
    const txLane = async (): Promise<void> => {
      for (;;) {
        const n = nextTx++;
        txs.set(n, false);
        inFlight++;
        try {
          // One attempt: no other writer touches /tx, so a commit cannot conflict.
          await xs.transaction((tx) => Promise.all([0, 1, 2].map((j) => tx.write(`/tx/${String(n)}/${'abc'[j] ?? '?'}`, txValue(n, j)))), {
            maxAttempts: 1,
          });
        } catch (err) {
          failed(`transaction ${String(n)}`, err);
          return;
        } finally {
          inFlight--;
        }
        txs.set(n, true);
        commits++;
        if (acks >= killAfter && txFirst) kill();
      }
    };
    await Promise.all([txLane(), ...Array.from({ length: WRITE_LANES }, (_, lane) => writeLane(lane))]);
    xs.close();
    await bg.exited();
    t.deepEqual(failures, [], `round ${String(round)}`);
    t.is(bg.child.signalCode, 'SIGKILL', `round ${String(round)}: the daemon died of the SIGKILL\n${bg.output()}`);
    t.true(acks >= killAfter, `round ${String(round)}: ${String(acks)} writes acknowledged, the kill was due after ${String(killAfter)}`);
  }
  const acked = [...writes.values()].filter((w) => w.acked).length;
  const committed = [...txs.values()].filter(Boolean).length;
  t.log(`${String(acked)}/${String(writes.size)} writes and ${String(committed)}/${String(txs.size)} transactions acknowledged across ${String(kills)} kills`);
  t.is(kills, rounds.length);
  t.is(inFlightAtKills, kills, 'requests were in flight at every kill');
  t.true(committed >= Math.floor(kills / 2), 'a transaction committed in every even round');
}

// Two chains of kills, each on its own state file, side by side: the time
// goes into starting daemons, and a second chain uses a second core.
const KILLS = 30;
const CHAINS = 2;
for (let chain = 0; chain < CHAINS; chain++) {
  const first = chain * (KILLS / CHAINS);
  const rounds = Array.from({ length: KILLS / CHAINS }, (_, i) => first + i);
  test(`SIGKILL loses no acknowledged write or transaction (kills ${String(first + 1)}-${String(first + rounds.length)} of ${String(KILLS)})`, (t) =>
    killRounds(t, rounds));
}

test('a full disk loses no acknowledged write, and writes resume once space is freed', async (t) => {
  // 64 KiB, a quarter of it taken by a ballast file the operator removes later.
  const ns = await tmpfsNamespace(t, 64, 'head -c 16384 /dev/zero > "$0/ballast"');
  const socket = join(tempDir(t), 'xenstored.sock');
  const state = join(ns.dir, 'state');
  const start = (): Promise<Background> =>
    listening(killAtEnd(t, ns.start(process.execPath, xenrxArgs(['xenstored', '--socket', socket, '--state-file', state]))));

  const acked = new Map<string, string>();
  /** Path → the error code its write failed with. */
  const failed = new Map<string, string>();
  const unexpected: string[] = [];
  let bg = await start();
  let xs = await connect(socket);
  const write = async (path: string, value: string): Promise<boolean> => {
    try {
      await xs.write(path, value);
      acked.set(path, value);
      return true;
    } catch (err) {
      if (isXenStoreError(err, 'ENOSPC', 'EIO')) failed.set(path, err.code);
      else unexpected.push(`${path}: ${String(err)}`);
      return false;
    }
  };
  // 1,000 printable bytes each, varied so that no compression could make 60 of them fit.
  const value = (i: number): string => {
    let x = 0x9e3779b9 ^ (i * 0x85ebca6b);
    let s = `${String(i)}:`;
    while (s.length < 1000) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      s += String.fromCharCode(33 + ((x >>> 16) % 94));
    }
    return s;
  };

  for (let i = 0; i < 60; i++) await write(`/disk/${String(i)}`, value(i));
  t.log(`${String(acked.size)} writes acknowledged, ${String(failed.size)} failed with ${[...new Set(failed.values())].join(', ') || 'nothing'}`);
  t.deepEqual(unexpected, [], 'writes fail only with ENOSPC or EIO');
  t.true(acked.size > 0, 'some writes fit');
  t.true(failed.size > 0, '60 KB of values do not fit in what is left of 64 KiB: some writes must fail');
  const refused = [...failed.keys()];
  t.deepEqual(await readAll(xs, refused), refused.map(() => undefined), 'a write that failed is not there');

  // The operator frees space: the daemon takes writes again.
  rmSync(ns.inside(join(ns.dir, 'ballast')));
  const resumed: boolean[] = [];
  for (let i = 0; i < 3; i++) resumed.push(await write(`/disk/after/${String(i)}`, value(100 + i)));
  t.deepEqual(resumed, [true, true, true], `writes are acknowledged once space is freed (failures: ${JSON.stringify([...failed.entries()].slice(-3))})`);
  t.deepEqual(unexpected, []);
  xs.close();
  t.is(await bg.stop('SIGTERM'), 0, bg.output());

  // The tmpfs outlives the daemon: a new one reads what it left.
  bg = await start();
  xs = await connect(socket);
  const ackedPaths = [...acked.keys()];
  const lost = (await readAll(xs, ackedPaths)).flatMap((got, i) => {
    const path = ackedPaths[i] ?? '';
    return got === acked.get(path) ? [] : [`${path} reads ${got === undefined ? 'nothing' : JSON.stringify(got.slice(0, 20)) + '…'}`];
  });
  t.deepEqual(lost, [], `every acknowledged write (${String(acked.size)}) is there after a restart`);
  const failedPaths = [...failed.keys()];
  const present = (await readAll(xs, failedPaths)).flatMap((got, i) => (got === undefined ? [] : [failedPaths[i]]));
  t.deepEqual(present, [], `no failed write (${String(failed.size)}) is there after a restart`);
  xs.close();
  t.is(await bg.stop('SIGTERM'), 0, bg.output());
});

test('Xenstored.start refuses a state file in a directory that does not exist', (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'missing', 'dir');
  let daemon: Xenstored | undefined;
  let error: unknown;
  try {
    daemon = Xenstored.start({ socket: join(dir, 'xenstored.sock'), stateFile: join(missing, 'state'), log: false });
  } catch (err) {
    error = err;
  }
  daemon?.stop();
  t.true(error instanceof Error, 'start throws');
  const message = error instanceof Error ? error.message : '';
  t.true(message.includes(missing), `the message names ${missing}: ${message}`);
  t.regex(message, /does not exist/);
  t.deepEqual(readdirSync(dir), [], 'nothing was created');
});

test('xenrx xenstored refuses a state file in a directory that does not exist', async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'missing', 'dir');
  const bg = killAtEnd(t, startXenrx(['xenstored', '--socket', join(dir, 'xenstored.sock'), '--state-file', join(missing, 'state')]));
  const started = await readyOrExited(bg, /listening on/);
  if (started) await bg.stop('SIGTERM');
  t.false(started, `it must not start:\n${bg.output()}`);
  t.not(bg.child.exitCode, 0);
  t.true(bg.output().includes(missing), `the message names ${missing}:\n${bg.output()}`);
  t.regex(bg.output(), /does not exist/);
  t.deepEqual(readdirSync(dir), [], 'nothing was created');
});

test('Xenstored.start refuses a state file another daemon holds', async (t) => {
  const dir = tempDir(t);
  const state = join(dir, 'state');
  const first = Xenstored.start({ socket: join(dir, 'first.sock'), stateFile: state, log: false });
  t.teardown(() => first.stop());
  const xs = await connect(first.socket);
  await xs.write('/owner', 'first');

  const secondSocket = join(dir, 'second.sock');
  let second: Xenstored | undefined;
  let error: unknown;
  try {
    second = Xenstored.start({ socket: secondSocket, stateFile: state, log: false });
  } catch (err) {
    error = err;
  }
  second?.stop();
  t.true(error instanceof Error, 'a second daemon on the same state file throws');
  const message = error instanceof Error ? error.message : '';
  t.true(message.includes('is locked by'), `the message says the state file is locked: ${message}`);
  t.true(message.includes(`pid ${String(process.pid)}`), `the message names the holder, pid ${String(process.pid)}: ${message}`);
  t.false(existsSync(secondSocket), 'the refused daemon left no socket');
  // The first one is undisturbed.
  await xs.write('/owner/still', 'yes');
  xs.close();
  first.stop();

  const third = Xenstored.start({ socket: secondSocket, stateFile: state, log: false });
  t.teardown(() => third.stop());
  const after = await connect(third.socket);
  t.is(await after.read('/owner'), 'first');
  t.is(await after.read('/owner/still'), 'yes');
  after.close();
});

test('Xenstored.stop lets go of the state file after an in-process client was used', async (t) => {
  const dir = tempDir(t);
  const state = join(dir, 'state');
  const first = Xenstored.start({ socket: join(dir, 'first.sock'), stateFile: state, log: false });
  t.teardown(() => first.stop());
  const xs = await XenStore.connect({ daemon: first });
  await xs.write('/owner', 'first');
  xs.close();
  first.stop();
  t.false(existsSync(join(dir, 'first.sock')), 'the stopped daemon removed its socket');

  let second: Xenstored | undefined;
  try {
    second = Xenstored.start({ socket: join(dir, 'second.sock'), stateFile: state, log: false });
  } catch (err) {
    t.fail(`a daemon on the state file of a stopped one must start: ${String(err)}`);
    return;
  }
  t.teardown(() => second.stop());
  const after = await connect(second.socket);
  t.is(await after.read('/owner'), 'first');
  after.close();
});

test('xenrx xenstored refuses a state file another daemon holds, naming its pid', async (t) => {
  const dir = tempDir(t);
  const state = join(dir, 'state');
  const first = await cliDaemon(t, join(dir, 'first.sock'), state);
  const xs = await connect(join(dir, 'first.sock'));
  await xs.write('/owner', 'first');

  const second = killAtEnd(t, startXenrx(['xenstored', '--socket', join(dir, 'second.sock'), '--state-file', state]));
  const started = await readyOrExited(second, /listening on/);
  if (started) await second.stop('SIGTERM');
  t.false(started, `a second daemon on the same state file must not start:\n${second.output()}`);
  t.not(second.child.exitCode, 0);
  t.regex(second.output(), /is locked by/);
  t.true(second.output().includes(`pid ${String(first.child.pid)}`), `it names the first daemon, pid ${String(first.child.pid)}:\n${second.output()}`);
  await xs.write('/owner/still', 'yes');
  xs.close();
  t.is(await first.stop('SIGTERM'), 0);

  const third = await cliDaemon(t, join(dir, 'third.sock'), state);
  const after = await connect(join(dir, 'third.sock'));
  t.is(await after.read('/owner'), 'first');
  t.is(await after.read('/owner/still'), 'yes');
  after.close();
  t.is(await third.stop('SIGTERM'), 0);
});
