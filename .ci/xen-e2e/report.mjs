// Reads the E2E- lines of a real-Xen run (see run.sh and dom0-init.sh),
// prints one JSON line per backend and the ratios of xenrx to the others,
// and exits non-zero unless every check passed.
//   node report.mjs E2E_LOG ROUNDS
import { readFileSync } from 'node:fs';

const [file, roundList = 'xenrx.blkback.qdisk.lifecycle'] = process.argv.slice(2);
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
    images.set(m[1], json(m[2]));
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

const FIGURES = [
  ['seqwrite-1m', 'seqwrite_MBps'],
  ['seqread-1m', 'seqread_MBps'],
  ['randread-4k-t1', 'randread_4k_t1_IOPS'],
  ['randread-4k-t4', 'randread_4k_t4_IOPS'],
];
const figures = new Map();
for (const backend of rounds.filter((r) => r !== 'lifecycle')) {
  const list = jobs.get(backend) ?? [];
  for (const j of list.filter((j) => j.job === 'error')) failures.push(`${backend}: the guest's job failed: ${JSON.stringify(j)}`);
  const verify = list.find((j) => j.job === 'verify-pattern');
  check(verify?.ok === true, `${backend}: the guest read back ${verify ? `${verify.bad_words} wrong words` : 'nothing'}`);
  const image = images.get(backend);
  check(image?.ok === true, `${backend}: dom0's image ${image ? `has ${image.bad_words} wrong words` : 'was not checked'}`);
  const row = { backend };
  for (const [job, name] of FIGURES) {
    const j = list.find((x) => x.job === job);
    check(j !== undefined, `${backend}: no ${job} figure`);
    if (j) row[name] = j.value;
  }
  figures.set(backend, row);
  console.log(JSON.stringify(row));
}

// xenrx's device reached Connected, then Closed, and was taken down.
const device = (log) => log.find((l) => /vbd-\d+-51712: Connected$/.test(l))?.match(/(vbd-\d+-51712)/)?.[1];
for (const round of rounds.filter((r) => r === 'xenrx' || r === 'lifecycle')) {
  const log = xenrxLog.get(round) ?? [];
  const name = device(log);
  check(name !== undefined, `${round}: xenrx's device never reached Connected`);
  if (name) {
    const connected = log.findIndex((l) => l.endsWith(`${name}: Connected`));
    const closed = log.findIndex((l, i) => i > connected && l.includes(`${name}: Closed`));
    check(closed > connected, `${round}: ${name} did not reach Closed after Connected`);
  }
  const errors = log.filter((l) => / error|failed|refused|EIO/.test(l));
  check(errors.length === 0, `${round}: xenrx logged errors: ${errors.slice(0, 5).join(' | ')}`);
}

for (const other of ['blkback', 'qdisk']) {
  const a = figures.get('xenrx');
  const b = figures.get(other);
  if (!a || !b) continue;
  const ratio = { ratio: `xenrx/${other}` };
  for (const [, name] of FIGURES) if (a[name] && b[name]) ratio[name] = Number((a[name] / b[name]).toFixed(2));
  console.log(JSON.stringify(ratio));
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
  console.log(JSON.stringify({ lifecycle: transitions }));
}

if (failures.length > 0) {
  for (const f of failures) console.error(`FAIL ${f}`);
  process.exit(1);
}
console.log(JSON.stringify({ e2e: 'passed', rounds }));
