// A simulated guest's console: the page and port from the Rust side, the
// xenbus handshake from SimFrontend, input delivered as an Observable.
import { setTimeout as delay } from 'node:timers/promises';

import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeConsoleFrontend } from '../native.js';
import { platformCall } from '../platform/errors.js';
import type { SimHost } from '../platform/index.js';
import type { XenStore } from '../xenstore/index.js';
import { SimFrontend } from './frontend.js';

/** A guest's console device, guest side. */
export class SimConsoleFrontend {
  readonly #input = new Subject<Buffer>();
  #reading = false;
  #closed = false;

  /** What the backend typed into the guest. */
  readonly input$: Observable<Buffer> = this.#input.asObservable();

  private constructor(
    readonly native: NativeConsoleFrontend,
    readonly handshake: SimFrontend,
  ) {}

  /**
   * Sets up the console at `frontendPath` of guest `domid`: grants its page,
   * allocates its port, and publishes them when the backend waits for them.
   */
  static async attach(host: SimHost, xs: XenStore, domid: number, frontendPath: string, backendDomid = 0): Promise<SimConsoleFrontend> {
    const fe = platformCall(() => native.NativeConsoleFrontend.create(host.native, domid, backendDomid));
    let self: SimConsoleFrontend | null = null;
    const handshake = await SimFrontend.attach(xs, frontendPath, {
      prepare: () => ({ 'ring-ref': String(fe.ringRef), port: String(fe.port) }),
      connected: () => {
        if (self) self.#startReading();
      },
    });
    self = new SimConsoleFrontend(fe, handshake);
    return self;
  }

  /** Writes guest output (as a guest kernel's console driver does); returns the bytes the ring took. */
  write(text: string | Buffer): number {
    return platformCall(() => this.native.write(typeof text === 'string' ? Buffer.from(text) : text));
  }

  /** Writes all of `text`, waiting for room in the ring. */
  async writeAll(text: string | Buffer): Promise<void> {
    let rest = typeof text === 'string' ? Buffer.from(text) : text;
    while (rest.length > 0) {
      const n = this.write(rest);
      rest = rest.subarray(n);
      if (rest.length > 0) await delay(5);
    }
  }

  #startReading(): void {
    if (this.#reading) return;
    this.#reading = true;
    void (async () => {
      while (!this.#closed) {
        const data = await this.native.waitInput(200).catch(() => Buffer.alloc(0));
        if (data.length > 0) this.#input.next(data);
      }
    })();
  }

  /** Stops reading input, without the close handshake (the guest died). */
  detach(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.handshake.detach();
    this.#input.complete();
  }

  /** Closes the device (Closing, Closed), then ends the page's grant once the backend unmapped it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.handshake.close();
    this.handshake.detach();
    for (let i = 0; i < 200; i++) {
      try {
        this.native.close();
        break;
      } catch {
        await delay(10);
      }
    }
    this.#input.complete();
  }
}
