// Every program in examples/ runs to completion and does what it says.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import test from 'ava';

import { repoRoot, runUserCode } from './helpers/snippet.js';

const dir = join(repoRoot, 'examples');
const examples = readdirSync(dir).filter((f) => f.endsWith('.ts'));

/**
 * What each example must print: each list in its order (lines of other
 * lists may come between). The backend's and the guest's sides run
 * concurrently, so a list orders one side's lines, or lines one causes.
 */
const expected: Readonly<Record<string, readonly (readonly RegExp[])[]>> = {
  'replicated-disk.ts': [
    [
      /^guest: disk of 8192 sectors, flush offered: true$/m,
      /^flush: 4 writes shipped to the replica$/m,
      /^flush: 1 writes shipped to the replica$/m,
      /^replica matches the primary: true \(9 pages\)$/m,
      /^backend counted 5 writes and 2 flushes$/m,
    ],
  ],
  'hello-device.ts': [
    // The backend's callbacks, in the order the registry calls them.
    [
      /^backend hello-1-0: alloc$/m,
      /^backend hello-1-0: init$/m,
      /^backend hello-1-0: frontendChanged state$/m,
      /^backend hello-1-0: connect, the guest says "guest1"$/m,
      /^backend hello-1-0: disconnect$/m,
      /^backend hello-1-0: free$/m,
    ],
    // The handshake, each step caused by the one before.
    [
      /^backend hello-1-0: init$/m,
      /^frontend: prepare \(backend offers reply: 1\)$/m,
      /^backend hello-1-0: connect, the guest says "guest1"$/m,
      /^frontend: connected, dom0 replies "hello guest1, from dom0"$/m,
      /^frontend: closed$/m,
    ],
  ],
};

test('every example is known here', (t) => {
  t.deepEqual(examples.sort(), Object.keys(expected).sort());
});

for (const name of examples) {
  test(`examples/${name} runs`, async (t) => {
    const r = await runUserCode(t, readFileSync(join(dir, name), 'utf8'));
    t.is(r.code, 0, `${r.stdout}\n${r.stderr}`);
    for (const lines of expected[name] ?? []) {
      let from = 0;
      for (const line of lines) {
        const m = line.exec(r.stdout.slice(from));
        t.truthy(m, `${String(line)} after offset ${String(from)} in:\n${r.stdout}`);
        if (m) from += m.index + m[0].length;
      }
    }
  });
}
