// Waiting in tests for something that happens asynchronously elsewhere (a
// daemon, a backend thread), without a stream to subscribe to. The bounds
// only keep a broken test from hanging: they are far beyond what any step
// takes, even on a loaded machine, and a test never passes by waiting.
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Polls `done` every `every` ms until it holds or `ms` have passed. It does
 * not fail by itself: the assertion that follows says what was expected.
 */
export async function pollUntil(done: () => boolean, ms = 30_000, every = 10): Promise<void> {
  for (let waited = 0; !done() && waited < ms; waited += every) await delay(every);
}

/**
 * Reads until the value satisfies `done` (or `ms` have passed) and returns
 * the last value read; a read that throws counts as not yet. The assertion
 * that follows says what was expected.
 */
export async function readUntil<T>(read: () => Promise<T>, done: (value: T) => boolean, ms = 30_000, every = 10): Promise<T | undefined> {
  let last: T | undefined;
  for (let waited = 0; waited < ms; waited += every) {
    try {
      last = await read();
      if (done(last)) return last;
    } catch {
      last = undefined;
    }
    await delay(every);
  }
  return last;
}
