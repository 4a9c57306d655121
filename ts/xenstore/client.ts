// The XenStore client: node operations, transactions, watches as Observables,
// and the privileged requests a toolstack uses.
import { concatMap, filter, firstValueFrom, from, take, throwError, timeout } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeXsClient } from '../native.js';
import type { Xenstored } from './daemon.js';
import { NodeOps, call } from './ops.js';
import { runTransaction } from './transaction.js';
import type { RetryOptions, Transaction } from './transaction.js';
import { WatchRegistry } from './watches.js';

/** Where and how to connect. */
export interface ConnectOptions {
  /**
   * A daemon's socket or the xenbus device. By default, as Xen's own library:
   * `$XENSTORED_PATH`, then `/run/xenstored/socket`, then `/dev/xen/xenbus`.
   */
  readonly path?: string;
  /** Connect in-process to this embedded daemon instead of a path. */
  readonly daemon?: Xenstored;
  /** With `daemon`: the domain the connection acts as (default 0, privileged). */
  readonly domid?: number;
  /** Reconnect after the daemon restarts (default true). */
  readonly reconnect?: boolean;
}

/** A XenStore connection. */
export class XenStore extends NodeOps {
  protected readonly tx = undefined;
  readonly #watches: WatchRegistry;
  #closed = false;

  private constructor(protected readonly native: NativeXsClient) {
    super();
    this.#watches = new WatchRegistry(native);
    native.onWatchEvents((events) => this.#watches.deliver(events));
  }

  /** Connects to XenStore. */
  static async connect(options: ConnectOptions = {}): Promise<XenStore> {
    const { daemon } = options;
    const client = await call('connect', () =>
      daemon
        ? daemon.connectNative(options.domid ?? 0)
        : native.NativeXsClient.connect({ path: options.path, reconnect: options.reconnect }),
    );
    return new XenStore(client);
  }

  /**
   * Runs `body` in a transaction and commits it, retrying the whole body on
   * EAGAIN with bounded, jittered backoff (see {@link RetryOptions}).
   */
  transaction<T>(body: (tx: Transaction) => Promise<T>, options?: RetryOptions): Promise<T> {
    return runTransaction(this.native, body, options);
  }

  /**
   * Changes at or below `path`: emits the changed path (relative if `path`
   * is), first `path` itself once the watch is set. Subscribing registers
   * the watch; all subscribers of one path share one XenStore watch, removed
   * when the last one unsubscribes.
   */
  watch$(path: string): Observable<string> {
    return this.#watches.watch$(path);
  }

  /**
   * Waits until the node at `path` holds a value `accept` takes (by
   * default: until the node exists), and resolves with that value; `accept`
   * sees `undefined` while the node is missing. The node is watched in the
   * meantime (one XenStore watch, shared with other subscribers of the
   * path, and dropped when done) and read again at each change, so no
   * change between the check and the watch is missed. Rejects after
   * `timeoutMs` if given, or when the connection closes first.
   */
  async waitFor(
    path: string,
    accept: (value: string | undefined) => boolean = (value) => value !== undefined,
    options: { readonly timeoutMs?: number } = {},
  ): Promise<string | undefined> {
    const found$ = this.watch$(path).pipe(
      // The watch fires once when set, then at each change: read each time.
      concatMap(() => from(this.tryRead(path))),
      filter(accept),
      take(1),
    );
    const { timeoutMs } = options;
    const bounded$ =
      timeoutMs === undefined
        ? found$
        : found$.pipe(timeout({ first: timeoutMs, with: () => throwError(() => new Error(`waitFor ${path}: no accepted value within ${String(timeoutMs)} ms`)) }));
    try {
      return await firstValueFrom(bounded$);
    } catch (err) {
      if (err instanceof Error && err.name === 'EmptyError') throw new Error(`waitFor ${path}: the connection closed first`, { cause: err });
      throw err;
    }
  }

  /** Number of XenStore watches this connection holds. */
  get watchCount(): number {
    return this.#watches.size;
  }

  /** `/local/domain/<domid>`, from the daemon. */
  getDomainPath(domid: number): Promise<string> {
    return call(`getDomainPath ${String(domid)}`, () => this.native.getDomainPath(domid));
  }

  /** Introduces a domain (privileged): it gets its XenStore connection. */
  introduce(domid: number, gfn = 0, evtchn = 0): Promise<void> {
    return call(`introduce ${String(domid)}`, () => this.native.introduce(domid, gfn, evtchn));
  }

  /** Releases a domain (privileged): its connection closes, `@releaseDomain` fires. */
  release(domid: number): Promise<void> {
    return call(`release ${String(domid)}`, () => this.native.release(domid));
  }

  /** Whether a domain is introduced (privileged). */
  isDomainIntroduced(domid: number): Promise<boolean> {
    return call(`isDomainIntroduced ${String(domid)}`, () => this.native.isDomainIntroduced(domid));
  }

  /** Lets `domid` act for `target` (privileged), as a device model does. */
  setTarget(domid: number, target: number): Promise<void> {
    return call(`setTarget ${String(domid)}`, () => this.native.setTarget(domid, target));
  }

  /** Drops this connection's watches and transactions on the daemon. */
  resetWatches(): Promise<void> {
    return call('resetWatches', () => this.native.resetWatches());
  }

  /** A daemon control command (privileged), e.g. `check`. */
  control(...args: string[]): Promise<string> {
    return call(`control ${args.join(' ')}`, () => this.native.control(args));
  }

  /** Closes the connection; watches complete. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watches.closeAll();
    this.native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
