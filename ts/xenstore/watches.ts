// Watches as Observables: one XenStore watch per path, shared by all of its
// subscribers, registered on the first subscription and removed after the
// last unsubscription.
import { Observable, share } from 'rxjs';
import type { Subscriber } from 'rxjs';

import type { NativeXsClient, XsWatchEvent } from '../native.js';
import { call } from './ops.js';

/** Routes a client's watch events to the Observables watching them. */
export class WatchRegistry {
  readonly #native: NativeXsClient;
  readonly #streams = new Map<string, Observable<string>>();
  readonly #routes = new Map<string, Subscriber<string>>();
  #sequence = 0;
  #keepalive: NodeJS.Timeout | undefined;

  constructor(native: NativeXsClient) {
    this.#native = native;
  }

  /** Hands a batch of native events to their subscribers. */
  deliver(events: readonly XsWatchEvent[]): void {
    for (const e of events) this.#routes.get(e.token)?.next(e.path);
  }

  /** Number of XenStore watches this registry holds. */
  get size(): number {
    return this.#routes.size;
  }

  /** The paths changed at or below `path`, starting with `path` itself. */
  watch$(path: string): Observable<string> {
    const existing = this.#streams.get(path);
    if (existing) return existing;
    const stream = new Observable<string>((subscriber) => {
      // A token per registration (structured, never a pointer): a watch
      // registered again after an unwatch cannot collide with the old one.
      const token = `xenrx:${String(++this.#sequence)}:${path}`;
      this.#routes.set(token, subscriber);
      this.#hold();
      call(`watch ${path}`, () => this.#native.watch(path, token)).catch((err: unknown) => subscriber.error(err));
      return () => {
        this.#routes.delete(token);
        if (this.#streams.get(path) === stream) this.#streams.delete(path);
        this.#release();
        this.#native.unwatch(path, token).catch(() => undefined);
      };
    }).pipe(share());
    this.#streams.set(path, stream);
    return stream;
  }

  /** Completes every watch (the client is closing). */
  closeAll(): void {
    for (const subscriber of [...this.#routes.values()]) subscriber.complete();
  }

  // While a watch is active, a timer keeps the process alive: the native
  // event callback deliberately does not.
  #hold(): void {
    this.#keepalive ??= setInterval(() => undefined, 2 ** 31 - 1);
  }

  #release(): void {
    if (this.#routes.size === 0 && this.#keepalive) {
      clearInterval(this.#keepalive);
      this.#keepalive = undefined;
    }
  }
}
