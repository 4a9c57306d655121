// The console device type: a guest's PV console (console.h), served by the
// Rust data path. connect maps the page named by the frontend's ring-ref
// and binds its port; guest output becomes Observables (raw and by line);
// input goes into the guest's ring. Optionally a pseudo-terminal per
// console, published as `tty` in the frontend directory (read-only to the
// guest, XSA-57), so that `xenrx console <domid>` can attach to it.
import { StringDecoder } from 'node:string_decoder';

import { Observable, Subject, filter, map } from 'rxjs';
import type { OperatorFunction } from 'rxjs';

import { native } from '../native.js';
import type { ConsoleBackendStats, NativeConsoleBackend } from '../native.js';
import { PlatformError } from '../platform/errors.js';
import type { Platform } from '../platform/index.js';
import type { DeviceContext, DeviceOps } from '../xenbus/index.js';
import type { XenStore } from '../xenstore/index.js';
import { parseXenbusInt, xenbusStateName } from '../xenbus/state.js';
import { consoleDeviceStats } from '../stats/types.js';
import type { ConsoleDeviceStats, StatsSource } from '../stats/types.js';

/** How consoles are served. */
export interface ConsoleOptions {
  /** The backend domain's platform (simulated or Xen): the consoles run on its event loop. */
  readonly platform: Platform;
  /** Serve each console on a pseudo-terminal too (default false). */
  readonly pty?: boolean;
  /** Events per window before a chatty guest is held (default 30, as xenconsoled). */
  readonly rateLimitEvents?: number;
  /** The rate-limit window in ms (default 200). */
  readonly rateLimitWindowMs?: number;
}

/**
 * The longest line `lines$` holds back while it waits for the newline, in
 * UTF-16 code units: a guest that never ends its line gets it emitted in
 * pieces of this length, so the partial line held in memory stays bounded.
 */
export const MAX_CONSOLE_LINE = 4096;

/**
 * Splits text into lines (without the newline; a `\r` before it is dropped
 * too). Each chunk is scanned once: what was already split is never looked
 * at again, and a partial line longer than `maxLine` is emitted as a line of
 * `maxLine` units. The partial line left when the text ends is emitted.
 */
export function splitLines(maxLine = MAX_CONSOLE_LINE): OperatorFunction<string, string> {
  if (!Number.isInteger(maxLine) || maxLine < 1) throw new RangeError(`maxLine must be a positive integer, got ${String(maxLine)}`);
  return (source) =>
    new Observable<string>((sub) => {
      let held: string[] = [];
      let heldLength = 0;
      const take = (): string => {
        const line = held.join('');
        held = [];
        heldLength = 0;
        return line;
      };
      return source.subscribe({
        next: (text) => {
          let at = 0;
          while (at < text.length) {
            const nl = text.indexOf('\n', at);
            const end = nl < 0 ? text.length : nl;
            // Hold what comes before the newline, emitting full-length lines
            // whenever the held part reaches the bound.
            while (end - at > maxLine - heldLength) {
              const cut = at + (maxLine - heldLength);
              held.push(text.slice(at, cut));
              sub.next(take());
              at = cut;
            }
            if (end > at) {
              held.push(text.slice(at, end));
              heldLength += end - at;
            }
            if (nl < 0) break;
            const line = take();
            sub.next(line.endsWith('\r') ? line.slice(0, -1) : line);
            at = nl + 1;
          }
        },
        error: (err: unknown) => sub.error(err),
        complete: () => {
          if (heldLength > 0) sub.next(take());
          sub.complete();
        },
      });
    });
}

/** Decodes chunks of UTF-8 into text, across chunk boundaries. */
export function decodeUtf8(): OperatorFunction<Buffer, string> {
  return (source) =>
    new Observable<string>((sub) => {
      const decoder = new StringDecoder('utf8');
      return source.subscribe({
        next: (b) => {
          const text = decoder.write(b);
          if (text) sub.next(text);
        },
        error: (err: unknown) => sub.error(err),
        complete: () => sub.complete(),
      });
    });
}

/** Where a console's page and port are: the guest, its grant reference and its port. */
export interface ConsoleEndpoint {
  readonly domid: number;
  readonly ringRef: number;
  readonly port: number;
}

/**
 * Starts the Rust data path of one console (a device's, or a primary
 * console's through its reserved grant entry) with the service's options.
 * Throws the native error.
 */
export function startConsoleBackend(
  options: ConsoleOptions,
  endpoint: ConsoleEndpoint,
  onOutput: (chunks: Buffer[]) => void,
  onNotice: (notice: string) => void,
): NativeConsoleBackend {
  return native.NativeConsoleBackend.start(
    options.platform.native,
    {
      frontendDomid: endpoint.domid,
      ringRef: endpoint.ringRef,
      remotePort: endpoint.port,
      pty: options.pty ?? false,
      ...(options.rateLimitEvents !== undefined ? { rateLimitEvents: options.rateLimitEvents } : {}),
      ...(options.rateLimitWindowMs !== undefined ? { rateLimitWindowMs: options.rateLimitWindowMs } : {}),
    },
    onOutput,
    onNotice,
  );
}

/**
 * Publishes a console's pseudo-terminal as `<dir>/tty`, owned by the
 * backend domain `be` and read-only to the guest `fe` (XSA-57). The
 * toolstack pre-creates the node so; where it did not, or the guest
 * replaced it, the node is (re)made with those permissions. A directory
 * the guest removed is never made again.
 */
export async function publishTty(xs: XenStore, dir: string, tty: string, be: number, fe: number): Promise<void> {
  const node = `${dir}/tty`;
  await xs.transaction(async (tx) => {
    if (!(await tx.exists(dir))) return;
    await tx.write(node, tty);
    await tx.setPerms(node, [`n${String(be)}`, `r${String(fe)}`]);
  });
}

/** Empties a published `tty` node, if it is still there: its terminal number will be handed out again. */
export async function clearTty(xs: XenStore, node: string): Promise<void> {
  await xs.transaction(async (tx) => {
    if (await tx.exists(node)) await tx.write(node, '');
  });
}

/** Guest output, tagged with its console. */
export interface ConsoleOutput {
  readonly domid: number;
  readonly devid: number;
  readonly data: Buffer;
}

/** One console, for as long as the device exists. */
interface ConsoleRecord {
  readonly ctx: DeviceContext;
  readonly domid: number;
  readonly devid: number;
  backend: NativeConsoleBackend | null;
  /** Notices from the data path since the last connect. */
  notices: number;
}

function key(domid: number, devid: number): string {
  return `${String(domid)}/${String(devid)}`;
}

/** The console device type and its guests' output. */
export class ConsoleService implements StatsSource {
  readonly #options: ConsoleOptions;
  readonly #consoles = new Map<string, ConsoleRecord>();
  readonly #output = new Subject<ConsoleOutput>();

  /** Every console's output, raw, as it arrives. */
  readonly output$: Observable<ConsoleOutput> = this.#output.asObservable();

  constructor(options: ConsoleOptions) {
    this.#options = options;
  }

  /** The device type's operations, for `registry.register('console', service.ops)`. */
  readonly ops: DeviceOps<ConsoleRecord> = {
    // As QEMU's console backend: a console whose frontend names a `type`
    // other than `ioemu` is another daemon's. libxl writes the primary
    // console as device 0 with `type` xenconsoled (served by xenconsoled or
    // PrimaryConsoleService), its `ring-ref` a frame, not a grant.
    claim: async ({ xs, backendPath }) => {
      const frontend = await xs.tryRead(`${backendPath}/frontend`);
      if (!frontend?.startsWith('/')) return true;
      const type = await xs.tryRead(`${frontend}/type`);
      return type === undefined || type === 'ioemu';
    },
    alloc: (ctx) => {
      const rec: ConsoleRecord = { ctx, domid: ctx.key.domid, devid: ctx.key.devid, backend: null, notices: 0 };
      this.#consoles.set(key(rec.domid, rec.devid), rec);
      return rec;
    },
    connect: (ctx, rec) => this.#connect(ctx, rec),
    // A console found Connected (the backend that served it died, or
    // handed over): its ring and its indexes are in the shared page, so
    // serving it again is connecting again, writing no state.
    reattach: (ctx, rec) => this.#connect(ctx, rec),
    disconnect: async (ctx, rec) => {
      const hadPty = rec.backend?.ptyPath != null;
      rec.backend?.stop();
      rec.backend = null;
      // The pseudo-terminal is gone and its number will be handed out
      // again: a `tty` left behind would lead `xenrx console` to whoever
      // gets it next.
      if (hadPty) await this.#unpublishTty(ctx);
      ctx.log(1, 'console stopped');
    },
    free: (_ctx, rec) => {
      rec.backend?.stop();
      rec.backend = null;
      this.#consoles.delete(key(rec.domid, rec.devid));
    },
  };

  async #connect(ctx: DeviceContext, rec: ConsoleRecord): Promise<void> {
    const ringRef = parseXenbusInt(await ctx.readFrontend('ring-ref'));
    const port = parseXenbusInt(await ctx.readFrontend('port'));
    if (ringRef === undefined || ringRef < 0 || port === undefined || port <= 0) {
      throw new Error(`the frontend gave no valid ring-ref and port (ring-ref ${String(ringRef)}, port ${String(port)})`);
    }
    rec.notices = 0;
    try {
      rec.backend = startConsoleBackend(
        this.#options,
        { domid: rec.domid, ringRef, port },
        (chunks) => {
          for (const data of chunks) this.#output.next({ domid: rec.domid, devid: rec.devid, data });
        },
        (notice) => {
          // A hostile guest could repeat this forever: report the first as
          // an error, the rest as noise.
          ctx.log(rec.notices++ === 0 ? 0 : 2, notice);
        },
      );
    } catch (err) {
      throw PlatformError.fromNative(err);
    }
    const tty = rec.backend.ptyPath;
    if (tty !== null) await this.#publishTty(ctx, tty);
    ctx.log(1, `console connected (ring-ref ${String(ringRef)}, port ${String(port)}${tty ? `, ${tty}` : ''})`);
  }

  /**
   * Publishes the pseudo-terminal as `tty` in the frontend directory, owned
   * by the backend domain and read-only to the guest (XSA-57). The toolstack
   * pre-creates the node so; where it did not, or the guest replaced it,
   * the node is (re)made with those permissions.
   */
  async #publishTty(ctx: DeviceContext, tty: string): Promise<void> {
    const fe = ctx.frontendPath;
    if (fe === null) return;
    await publishTty(ctx.xs, fe, tty, this.#options.platform.domid, ctx.key.domid);
  }

  /** Empties the published `tty`, if it is still there. */
  async #unpublishTty(ctx: DeviceContext): Promise<void> {
    const fe = ctx.frontendPath;
    if (fe === null) return;
    const node = `${fe}/tty`;
    try {
      await clearTty(ctx.xs, node);
    } catch (err) {
      ctx.log(0, `clearing ${node} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** A console's raw output. */
  raw$(domid: number, devid = 0): Observable<Buffer> {
    return this.#output.pipe(
      filter((o) => o.domid === domid && o.devid === devid),
      map((o) => o.data),
    );
  }

  /** A console's output as text, decoded as UTF-8 across chunk boundaries. */
  text$(domid: number, devid = 0): Observable<string> {
    return this.raw$(domid, devid).pipe(decodeUtf8());
  }

  /**
   * A console's output line by line (without the newline; a `\r` before it
   * is dropped too). A line longer than `maxLine` (default
   * {@link MAX_CONSOLE_LINE}) arrives in pieces of that length.
   */
  lines$(domid: number, devid = 0, maxLine = MAX_CONSOLE_LINE): Observable<string> {
    return this.text$(domid, devid).pipe(splitLines(maxLine));
  }

  /** Types input into a guest's console; returns the bytes its ring accepted. */
  write(domid: number, input: string | Buffer, devid = 0): number {
    const backend = this.#consoles.get(key(domid, devid))?.backend;
    if (!backend) throw new PlatformError('ENOTCONN', `console ${key(domid, devid)} is not connected`);
    return backend.write(typeof input === 'string' ? Buffer.from(input) : input);
  }

  /** Where a console's pseudo-terminal is, if it has one. */
  ptyPath(domid: number, devid = 0): string | null {
    return this.#consoles.get(key(domid, devid))?.backend?.ptyPath ?? null;
  }

  /** A console's counters. */
  stats(domid: number, devid = 0): ConsoleBackendStats | undefined {
    return this.#consoles.get(key(domid, devid))?.backend?.stats();
  }

  /** Every connected console's statistics (for {@link stats$} and the metrics endpoint). */
  deviceStats(): ConsoleDeviceStats[] {
    const out: ConsoleDeviceStats[] = [];
    for (const rec of this.#consoles.values()) {
      const s = rec.backend?.stats();
      if (!s) continue;
      out.push(consoleDeviceStats(rec.domid, rec.devid, xenbusStateName(rec.ctx.state.beState), s));
    }
    return out;
  }
}
