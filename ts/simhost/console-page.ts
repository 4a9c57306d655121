// The guest's end of a console page, shared by console devices and the
// primary console: output written into the ring as a guest kernel's
// console driver does, input read from it as an Observable, and the
// page's grant ended once the backend let go of it.
import { setTimeout as delay } from 'node:timers/promises';

import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';

import type { NativeConsoleFrontend } from '../native.js';
import { platformCall } from '../platform/errors.js';

export class GuestConsolePage {
  readonly #input = new Subject<Buffer>();
  #reading = false;
  #stopped = false;

  /** What the backend typed into the guest. */
  readonly input$: Observable<Buffer> = this.#input.asObservable();

  constructor(readonly native: NativeConsoleFrontend) {}

  /** Writes guest output; returns the bytes the ring took. */
  write(text: string | Buffer): number {
    return platformCall(() => this.native.write(typeof text === 'string' ? Buffer.from(text) : text));
  }

  /** Writes all of `text`, waiting for room in the ring (for a backend to read it), until stopped. */
  async writeAll(text: string | Buffer): Promise<void> {
    let rest = typeof text === 'string' ? Buffer.from(text) : text;
    while (rest.length > 0 && !this.#stopped) {
      const n = this.write(rest);
      rest = rest.subarray(n);
      if (rest.length > 0) await delay(5);
    }
  }

  /** Starts reading input (once). */
  startReading(): void {
    if (this.#reading) return;
    this.#reading = true;
    void (async () => {
      while (!this.#stopped) {
        const data = await this.native.waitInput(200).catch(() => Buffer.alloc(0));
        if (data.length > 0 && !this.#stopped) this.#input.next(data);
      }
    })();
  }

  /** Stops reading input and writing; `input$` completes. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#input.complete();
  }

  /** Ends the page's grant and closes the port, retrying while the backend still has the page mapped. */
  async release(): Promise<void> {
    for (let i = 0; i < 200; i++) {
      try {
        this.native.close();
        return;
      } catch {
        await delay(10);
      }
    }
  }
}
