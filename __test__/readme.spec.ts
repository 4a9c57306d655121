// Every TypeScript snippet of README.md, extracted and run as a user would
// run it, so that none rots. A snippet that says it continues the one above
// runs after it, in one file. Imports of 'xenrx' are pointed at the sources
// (the tests run before any build), and files the snippets name under /tmp
// go to a fresh directory instead. Each snippet must exit 0 and print what
// the table below expects; a snippet missing from the table fails the test
// until it says what its output should be.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';

import { repoRoot, runUserCode } from './helpers/snippet.js';
import { tempDir } from './helpers/xenstore.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The README's `ts` code blocks, with continuations joined to what they continue. */
function snippets(markdown: string): string[] {
  const out: string[] = [];
  for (const [, body = ''] of markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)) {
    const last = out.length - 1;
    if (/continuing the snippet above/.test(body) && last >= 0) out[last] = `${out[last] ?? ''}\n${body}`;
    else out.push(body);
  }
  return out;
}

/** What each snippet prints, found by a line of its code. */
const expected: readonly { readonly code: RegExp; readonly prints: readonly RegExp[] }[] = [
  { code: /Xenstored\.start/, prints: [/^counter 1$/m] },
  { code: /platform\.bindEventChannel/, prints: [/^backend: copied /m, /^guest: answered on \[ \d+ \]$/m] },
  { code: /ConsoleService/, prints: [/^guest1: hello from the guest$/m] },
  { code: /memory:64M/, prints: [/^abababab 2$/m] },
  { code: /BlockStorage\.custom\(logged\)/, prints: [/^write 8192 bytes at 4096$/m, /^true$/m] },
  { code: /stats\$\(\[disks\]/, prints: [/^vbd-1-51712: 10 writes, 1280 sectors, p99 <= \d+(\.\d+)? us$/m] },
  { code: /path: \(\) => 'stream'/, prints: [/^guest2 got: anyone there\?$/m, /^guest1 got: guest2 here$/m] },
];

const all = snippets(readme);

test('the README has the snippets this test knows', (t) => {
  t.true(all.length >= expected.length, `${String(all.length)} snippets found`);
  for (const snippet of all) {
    const known = expected.filter((e) => e.code.test(snippet));
    t.is(known.length, 1, `say what this snippet prints:\n${snippet}`);
  }
});

for (const [i, snippet] of all.entries()) {
  test(`README snippet ${String(i + 1)} runs as written`, async (t) => {
    const dir = tempDir(t);
    const r = await runUserCode(t, snippet, (code) => code.replace(/'\/tmp\//g, `'${dir}/`));
    t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
    for (const e of expected.filter((x) => x.code.test(snippet))) {
      for (const p of e.prints) t.regex(r.stdout, p);
    }
  });
}
