// A simulated guest's console: the page and port from the Rust side, the
// xenbus handshake from SimFrontend, input delivered as an Observable.
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeConsoleFrontend } from '../native.js';
import { platformCall } from '../platform/errors.js';
import type { SimHost } from '../platform/index.js';
import type { XenStore } from '../xenstore/index.js';
import { GuestConsolePage } from './console-page.js';
import { SimFrontend } from './frontend.js';

/** A guest's console device, guest side. */
export class SimConsoleFrontend {
  readonly #page: GuestConsolePage;
  #closed = false;

  /** What the backend typed into the guest. */
  readonly input$: Observable<Buffer>;

  private constructor(
    readonly native: NativeConsoleFrontend,
    readonly handshake: SimFrontend,
  ) {
    this.#page = new GuestConsolePage(native);
    this.input$ = this.#page.input$;
  }

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
        if (self) self.#page.startReading();
      },
    });
    self = new SimConsoleFrontend(fe, handshake);
    return self;
  }

  /** Writes guest output (as a guest kernel's console driver does); returns the bytes the ring took. */
  write(text: string | Buffer): number {
    return this.#page.write(text);
  }

  /** Writes all of `text`, waiting for room in the ring. */
  writeAll(text: string | Buffer): Promise<void> {
    return this.#page.writeAll(text);
  }

  /** Stops reading input, without the close handshake (the guest died). */
  detach(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.handshake.detach();
    this.#page.stop();
  }

  /** Closes the device (Closing, Closed), then ends the page's grant once the backend unmapped it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.handshake.close();
    this.handshake.detach();
    await this.#page.release();
    this.#page.stop();
  }
}
