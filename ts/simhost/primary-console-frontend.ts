// A simulated guest's primary console: what the domain builder, the
// toolstack and a PV guest kernel set up before any xenbus device exists.
// The page (the Rust simulated console frontend, shared with console
// devices) sits in the guest's reserved grant entry GNTTAB_RESERVED_CONSOLE
// for the console backend's domain, with an unbound port for it; the
// toolstack publishes the page's frame and the port as `console/ring-ref`
// and `console/port` in the guest's home. There is no handshake: the guest
// writes from boot, and a backend reads what waits in the ring.
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeConsoleFrontend } from '../native.js';
import { platformCall } from '../platform/errors.js';
import type { SimHost } from '../platform/index.js';
import type { XenStore } from '../xenstore/index.js';
import { GuestConsolePage } from './console-page.js';

/** xenconsoled's default buffer limit, as libxl writes it to `console/limit` (LIBXL_XENCONSOLE_LIMIT). */
const XENCONSOLE_LIMIT = 1048576;

/** A guest's primary console, guest side. */
export class SimPrimaryConsoleFrontend {
  readonly #page: GuestConsolePage;

  /** What the backend typed into the guest. */
  readonly input$: Observable<Buffer>;

  private constructor(
    readonly native: NativeConsoleFrontend,
    readonly domid: number,
    readonly backendDomid: number,
  ) {
    this.#page = new GuestConsolePage(native);
    this.input$ = this.#page.input$;
  }

  /**
   * Sets up the primary console of guest `domid` for `backendDomid`, as the
   * domain builder and the guest kernel do: a page in the reserved grant
   * entry and an unbound port. Nothing is written to XenStore (see
   * {@link writePrimaryConsoleNodes}). EBUSY if the guest has one already.
   */
  static create(host: SimHost, domid: number, backendDomid = 0): SimPrimaryConsoleFrontend {
    const fe = platformCall(() => native.NativeConsoleFrontend.createPrimary(host.native, domid, backendDomid));
    const self = new SimPrimaryConsoleFrontend(fe, domid, backendDomid);
    // The console is live from boot: input is read from the start.
    self.#page.startReading();
    return self;
  }

  /** The guest frame holding the page: what the toolstack writes as `console/ring-ref`. */
  get frame(): number {
    return this.native.frame;
  }

  /** The port for the backend (`console/port`). */
  get port(): number {
    return this.native.port;
  }

  /** Writes guest output (as a guest kernel's console driver does); returns the bytes the ring took. */
  write(text: string | Buffer): number {
    return this.#page.write(text);
  }

  /** Writes all of `text`, waiting for room in the ring (for a backend to read it). */
  writeAll(text: string | Buffer): Promise<void> {
    return this.#page.writeAll(text);
  }

  /** Stops reading input, leaving the page and port as they are (the guest died). */
  detach(): void {
    this.#page.stop();
  }

  /** Stops reading input, then ends the page's grant (once the backend unmapped it) and closes the port. */
  async close(): Promise<void> {
    this.#page.stop();
    await this.#page.release();
  }
}

/** What the toolstack publishes of a primary console. */
export interface PrimaryConsoleNodes {
  /** `console/ring-ref`: the page's frame. */
  readonly ringRef: string;
  /** `console/port`: the guest's port for the backend. */
  readonly port: string;
  /** `console/type` (default `xenconsoled`). */
  readonly type?: string;
  /** The console backend's domain (default 0). */
  readonly backendDomid?: number;
  /**
   * Pre-create an empty `tty` read-only to the guest, as libxl does since
   * XSA-57 (default true); without it, the backend makes the node.
   */
  readonly precreateTty?: boolean;
}

/**
 * Writes a guest's primary console nodes as libxl does, in one
 * transaction: the directory `/local/domain/<domid>/console` owned by the
 * guest and readable by the backend, the guest's `backend-id`, and, owned
 * by the backend domain and read-only to the guest (XSA-57), `ring-ref`,
 * `port`, `type`, `output` (`pty`), `limit` and an empty `tty` for the
 * backend to fill (unless `precreateTty` is false). Values are written as given, so tests can write garbage.
 */
export async function writePrimaryConsoleNodes(xs: XenStore, domid: number, nodes: PrimaryConsoleNodes): Promise<void> {
  const dir = `/local/domain/${String(domid)}/console`;
  const fe = String(domid);
  const be = String(nodes.backendDomid ?? 0);
  const readOnly: Record<string, string> = {
    limit: String(XENCONSOLE_LIMIT),
    type: nodes.type ?? 'xenconsoled',
    output: 'pty',
    ...(nodes.precreateTty === false ? {} : { tty: '' }),
    port: nodes.port,
    'ring-ref': nodes.ringRef,
  };
  await xs.transaction(async (tx) => {
    await tx.mkdir(dir);
    await tx.setPerms(dir, [`n${fe}`, `r${be}`]);
    await tx.write(`${dir}/backend-id`, be);
    for (const [k, v] of Object.entries(readOnly)) {
      await tx.write(`${dir}/${k}`, v);
      await tx.setPerms(`${dir}/${k}`, [`n${be}`, `r${fe}`]);
    }
  });
}
