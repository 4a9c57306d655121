// Splitting console output into lines: the same lines however the output is
// chunked, and a bounded partial line.
import test from 'ava';
import fc from 'fast-check';
import { Subject, from, lastValueFrom, toArray } from 'rxjs';

import { MAX_CONSOLE_LINE, splitLines } from '../ts/index.js';

/** The lines of a whole text as the specification says: pieces of at most `max`, `\r` before a newline dropped. */
function expectedLines(text: string, max: number): string[] {
  const segments = text.split('\n');
  const rest = segments.pop() ?? '';
  const out: string[] = [];
  const pieces = (segment: string, ended: boolean): void => {
    let s = segment;
    while (s.length > max) {
      out.push(s.slice(0, max));
      s = s.slice(max);
    }
    if (ended) out.push(s.endsWith('\r') ? s.slice(0, -1) : s);
    else if (s.length > 0) out.push(s);
  };
  for (const segment of segments) pieces(segment, true);
  pieces(rest, false);
  return out;
}

function splitAll(chunks: readonly string[], max: number): Promise<string[]> {
  return lastValueFrom(from(chunks).pipe(splitLines(max), toArray()));
}

test('lines across chunks, CRLF, and the partial line at the end', async (t) => {
  t.deepEqual(await splitAll(['hel', 'lo\r\nwor', 'ld\n', '', 'tail'], 100), ['hello', 'world', 'tail']);
  t.deepEqual(await splitAll(['\n\n'], 100), ['', '']);
});

test('a line with no newline is emitted in pieces of the bound, so the held part stays bounded', (t) => {
  const input = new Subject<string>();
  const got: string[] = [];
  input.pipe(splitLines(8)).subscribe((l) => got.push(l));
  for (let i = 0; i < 100; i++) input.next('abc');
  // 300 characters without a newline: 37 full pieces out, 4 characters held.
  t.is(got.length, 37);
  t.true(got.every((l) => l.length === 8));
  input.next('d\n');
  t.is(got.at(-1), 'cabcd', 'the held part ends the last line');
  t.is(got.join(''), 'abc'.repeat(100) + 'd');
});

test('the default bound is 4096', async (t) => {
  const long = 'x'.repeat(MAX_CONSOLE_LINE * 2 + 5);
  t.deepEqual(
    (await splitAll([long, '\n'], MAX_CONSOLE_LINE)).map((l) => l.length),
    [MAX_CONSOLE_LINE, MAX_CONSOLE_LINE, 5],
  );
  t.throws(() => splitLines(0), { instanceOf: RangeError });
});

test('property: however the text is chunked, the lines are those of the whole text', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.string({ unit: fc.constantFrom('a', 'b', '\r', '\n'), maxLength: 30 }), { maxLength: 12 }),
      fc.integer({ min: 1, max: 8 }),
      async (chunks, max) => {
        t.deepEqual(await splitAll(chunks, max), expectedLines(chunks.join(''), max));
      },
    ),
  );
});
