// Waiting in tests for something that happens asynchronously elsewhere (a
// daemon, a backend thread), without a stream to subscribe to.
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Polls `done` every `every` ms until it holds or `ms` have passed. It does
 * not fail by itself: the assertion that follows says what was expected.
 */
export async function pollUntil(done: () => boolean, ms = 2000, every = 10): Promise<void> {
  for (let waited = 0; !done() && waited < ms; waited += every) await delay(every);
}
