// Reads the E2E- lines of a real-Xen run (see run.sh and dom0-init.sh),
// prints one JSON line per backend and the ratios of xenrx to the others,
// and exits non-zero unless every check passed.
//   node report.mjs E2E_LOG ROUNDS
import { readFileSync } from 'node:fs';
import process from 'node:process';

const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);

const [file, roundList = 'xenrx.blkback.poll.qdisk.vif.netback.lifecycle.restart.console'] = process.argv.slice(2);
const lines = readFileSync(file, 'utf8').split('\n');
const rounds = roundList.split('.').filter(Boolean);
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};
const json = (text) => {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
};

// Per round: the guest's jobs, dom0's check of the image, xenrx's log.
const jobs = new Map();
const images = new Map();
const xenrxLog = new Map();
const life = [];
for (const line of lines) {
  let m = /^E2E-CONSOLE\[(\w+)\] E2E-JOB (\{.*\})/.exec(line);
  if (m) {
    const job = json(m[2]);
    if (job) (jobs.get(m[1]) ?? jobs.set(m[1], []).get(m[1])).push(job);
    continue;
  }
  m = /^E2E-IMAGE\[(\w+)\] (\{.*\})/.exec(line);
  if (m) {
    (images.get(m[1]) ?? images.set(m[1], []).get(m[1])).push(json(m[2]));
    continue;
  }
  m = /^E2E-XENRX\[(\w+)\] (.*)$/.exec(line);
  if (m) {
    (xenrxLog.get(m[1]) ?? xenrxLog.set(m[1], []).get(m[1])).push(m[2]);
    continue;
  }
  m = /^E2E-LIFE (\{.*\})/.exec(line);
  if (m) life.push(json(m[1]));
  m = /^E2E-CHECK (\{.*\})/.exec(line);
  if (m) {
    const c = json(m[1]);
    if (c) check(c.ok === true, `${c.check}: ${c.detail}`);
  }
}
check(lines.some((l) => l.startsWith('E2E-DONE')), 'dom0 did not finish (no E2E-DONE)');
check(lines.includes('E2E-SMOKE XEN-SMOKE PASS'), `the platform smoke test did not pass: ${lines.filter((l) => l.startsWith('E2E-SMOKE')).join(' | ')}`);

// The console round's transcript, and its checks (E2E-CHECK above).
if (rounds.includes('console')) {
  const transcript = lines.filter((l) => l.startsWith('E2E-TRANSCRIPT ')).map((l) => l.slice('E2E-TRANSCRIPT '.length));
  check(transcript.length > 0, 'console: xenrx console showed nothing');
  print({ console: transcript });
}

// The restart round: five SIGKILLs of xenrx serve, each disk taken over,
// and the guest's verifying job intact.
if (rounds.includes('restart')) {
  const restarts = lines.filter((l) => l.startsWith('E2E-RESTART ')).map((l) => json(l.slice('E2E-RESTART '.length)));
  check(restarts.length === 5 && restarts.every((r) => r?.taken_over === true), `restart: takeovers ${JSON.stringify(restarts)}`);
  const list = jobs.get('restart') ?? [];
  for (const j of list.filter((j) => j.job === 'error')) failures.push(`restart: the guest's job failed: ${JSON.stringify(j)}`);
  const verifies = list.filter((j) => j.job === 'verify-pattern');
  check(verifies.length === 31 && verifies.every((v) => v.ok === true), `restart: the guest verified ${String(verifies.length)} of 31 patterns, ${String(verifies.filter((v) => v.ok !== true).length)} wrong`);
  const checked = images.get('restart') ?? [];
  check(checked.length === 1 && checked[0]?.ok === true, `restart: dom0's image: ${JSON.stringify(checked)}`);
  const log = xenrxLog.get('restart') ?? [];
  const errors = log.filter((l) => / error|failed|refused|EIO/.test(l));
  check(errors.length === 0, `restart: xenrx logged errors: ${errors.slice(0, 5).join(' | ')}`);
  print({ restart: { kills: restarts.length, verified: verifies.filter((v) => v.ok === true).length } });
}

// The median of a round's figures (a backend named more than once in the
// rounds, to interleave them against the host's load, has several).
const median = (values) => {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
// Traced, the disk rounds' guests measure 4 KiB reads at depth 1 only.
const tracing = process.env.XENRX_E2E_PROFILE === 'trace';
const figureRow = (backend, list, figures) => {
  const row = { backend };
  for (const [job, name] of figures) {
    const values = list.filter((x) => x.job === job).map((x) => x.value);
    check(values.length > 0 || (tracing && job !== 'randread-4k-t1'), `${backend}: no ${job} figure`);
    if (values.length > 0) row[name] = median(values);
  }
  return row;
};
const ratios = (figures, names, ours, others) => {
  for (const other of others) {
    const a = figures.get(ours);
    const b = figures.get(other);
    if (!a || !b) continue;
    const ratio = { ratio: `${ours}/${other}` };
    for (const [, name] of names) if (a[name] && b[name]) ratio[name] = Number((a[name] / b[name]).toFixed(2));
    print(ratio);
  }
};

// What dom0's primitives cost on this machine (primitives.c): the
// references for the figures below. A reference, not a check.
const primitives = lines.map((l) => /^E2E-PRIMITIVES (\{.*\})/.exec(l)).find(Boolean);
if (primitives) print({ dom0_primitives: json(primitives[1]) });

const DISK_ROUNDS = ['xenrx', 'blkback', 'qdisk', 'epoll', 'poll'];
const FIGURES = [
  ['seqwrite-1m', 'seqwrite_MBps'],
  ['seqread-1m', 'seqread_MBps'],
  ['randread-4k-t1', 'randread_4k_t1_IOPS'],
  ['randread-4k-t4', 'randread_4k_t4_IOPS'],
];
const figures = new Map();
for (const backend of [...new Set(rounds)].filter((r) => DISK_ROUNDS.includes(r))) {
  const list = jobs.get(backend) ?? [];
  for (const j of list.filter((j) => j.job === 'error')) failures.push(`${backend}: the guest's job failed: ${JSON.stringify(j)}`);
  const verifies = list.filter((j) => j.job === 'verify-pattern');
  check(verifies.length > 0 && verifies.every((v) => v.ok === true), `${backend}: the guest read back ${verifies.length > 0 ? verifies.map((v) => `${v.bad_words} wrong words`).join(', ') : 'nothing'}`);
  const checked = images.get(backend) ?? [];
  check(checked.length === verifies.length && checked.every((i) => i?.ok === true), `${backend}: dom0's images: ${JSON.stringify(checked)}`);
  const row = figureRow(backend, list, FIGURES);
  if (verifies.length > 1) row.runs = verifies.length;
  figures.set(backend, row);
  print(row);
}
ratios(figures, FIGURES, 'xenrx', ['blkback', 'qdisk', 'epoll']);
// xenrx with its queues polling their rings (serve --poll-us).
ratios(figures, FIGURES, 'poll', ['blkback', 'qdisk', 'xenrx']);

// The network rounds: a ping, UDP round trips, and a TCP stream each way
// whose every byte the receiver checked.
const NET_ROUNDS = ['vif', 'netback', 'vifepoll'];
const NET_FIGURES = [
  ['udp-rtt', 'udp_rtt_p50_us'],
  ['tcp-send', 'guest_to_dom0_Mbitps'],
  ['tcp-recv', 'dom0_to_guest_Mbitps'],
];
const netFigures = new Map();
for (const backend of [...new Set(rounds)].filter((r) => NET_ROUNDS.includes(r))) {
  const list = jobs.get(backend) ?? [];
  for (const j of list.filter((j) => j.job === 'error')) failures.push(`${backend}: the guest's job failed: ${JSON.stringify(j)}`);
  const pings = list.filter((j) => j.job === 'ping');
  check(pings.length > 0 && pings.every((p) => p.ok === true), `${backend}: ping: ${JSON.stringify(pings)}`);
  for (const j of list.filter((j) => j.job === 'udp-rtt')) check(j.echoed === j.sent, `${backend}: ${String(j.sent - j.echoed)} of ${String(j.sent)} datagrams not echoed`);
  for (const j of list.filter((j) => j.job === 'tcp-send' || j.job === 'tcp-recv')) check(j.ok === true, `${backend}: ${j.job}: ${JSON.stringify(j)}`);
  const row = figureRow(backend, list, NET_FIGURES);
  netFigures.set(backend, row);
  print(row);
}
ratios(netFigures, NET_FIGURES, 'vif', ['netback', 'vifepoll']);

// xenrx's device reached Connected, then Closed, and was taken down.
const device = (log, re) => log.find((l) => new RegExp(`${re.source}: Connected$`).test(l))?.match(new RegExp(`(${re.source})`))?.[1];
for (const round of [...new Set(rounds)].filter((r) => ['xenrx', 'epoll', 'poll', 'vif', 'vifepoll', 'lifecycle', 'console'].includes(r))) {
  const log = xenrxLog.get(round) ?? [];
  const name = device(log, round.startsWith('vif') ? /vif-\d+-0/ : /vbd-\d+-51712/);
  check(name !== undefined, `${round}: xenrx's device never reached Connected`);
  if (name) {
    const connected = log.findIndex((l) => l.endsWith(`${name}: Connected`));
    const closed = log.findIndex((l, i) => i > connected && l.includes(`${name}: Closed`));
    check(closed > connected, `${round}: ${name} did not reach Closed after Connected`);
  }
  const errors = log.filter((l) => / error|failed|refused|EIO/.test(l));
  check(errors.length === 0, `${round}: xenrx logged errors: ${errors.slice(0, 5).join(' | ')}`);
}

// The lifecycle: what the toolstack did, and what xenrx's domain watcher saw.
if (rounds.includes('lifecycle')) {
  const log = xenrxLog.get('lifecycle') ?? [];
  const seen = (re) => log.some((l) => re.test(l));
  const step = (s) => life.find((x) => x?.step === s);
  const first = step('created')?.domid;
  const rebooted = step('rebooted')?.domid;
  const destroyed = step('destroy')?.domid;
  check(first !== undefined && rebooted !== undefined && destroyed !== undefined, `lifecycle: steps missing: ${JSON.stringify(life)}`);
  const expect = [
    [first, 'paused'],
    [first, 'run state paused'],
    [first, 'unpaused'],
    [first, 'run state running'],
    [first, 'shut down: reboot'],
    [first, '(dying|gone)'],
    [rebooted, 'appeared'],
    [rebooted, 'shut down: poweroff'],
    [rebooted, 'gone'],
    [destroyed, '(dying|gone)'],
  ];
  const transitions = [];
  for (const [domid, what] of expect) {
    if (domid === undefined) continue;
    const ok = seen(new RegExp(`domain ${String(domid)}: ${what}`));
    transitions.push(`${String(domid)} ${what.replace(/[()]/g, '')}: ${ok ? 'seen' : 'MISSED'}`);
    check(ok, `lifecycle: xenrx did not see domain ${String(domid)} ${what}`);
  }
  for (const domid of [first, rebooted, destroyed]) {
    if (domid !== undefined) check(seen(new RegExp(`vbd-${String(domid)}-51712: Connected`)), `lifecycle: domain ${String(domid)}'s disk never connected`);
  }
  print({ lifecycle: transitions });
}

if (failures.length > 0) {
  for (const f of failures) process.stderr.write(`FAIL ${f}\n`);
  process.exit(1);
}
print({ e2e: 'passed', rounds });
