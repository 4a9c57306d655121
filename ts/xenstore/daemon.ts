// The embedded XenStore daemon.
import { native } from '../native.js';
import type { NativeXenstored, NativeXsClient } from '../native.js';
import { XenStoreError } from './errors.js';

/** How to run the embedded daemon. */
export interface XenstoredOptions {
  /** The privileged (dom0) socket. */
  readonly socket: string;
  /** Directory of per-domain sockets (default `<socket>.d`). */
  readonly domainSocketDir?: string;
  /**
   * Persist the store here (default: in memory only): a snapshot, plus a
   * journal of changes beside it (`<file>.journal.<n>`) that is folded into
   * the snapshot in the background. Its directory must exist; the file is
   * locked against a second daemon (`<file>.lock` names the holder's pid).
   */
  readonly stateFile?: string;
  /**
   * With a state file, sync each group of changes to disk before replying
   * (default true). With `false`, an acknowledged change survives the
   * daemon's death but not a crash of the machine.
   */
  readonly fsync?: boolean;
  /** Connections one domain may have open on its socket (default 8; 0: unlimited). */
  readonly maxDomainConnections?: number;
  /**
   * Bytes of output one domain's connections may leave unread before their
   * oldest watch events are dropped (default 1 MiB; 0: unlimited).
   */
  readonly maxDomainOutput?: number;
  /** Log to stderr (default true). */
  readonly log?: boolean;
}

/** Counters of a running daemon. */
export interface XenstoredStats {
  readonly requests: number;
  readonly connections: number;
  readonly killed: number;
  /** Groups of changes made durable (one journal sync each). */
  readonly persists: number;
  /** Changes undone because they could not be saved (requests failed with ENOSPC or EIO). */
  readonly unsaved: number;
  /** Connections refused by the per-domain connection limit. */
  readonly refused: number;
}

/**
 * A XenStore daemon speaking the real wire protocol on Unix sockets: one
 * privileged socket for dom0 and one per introduced domain, on which a
 * connection acts as that domain.
 */
export class Xenstored {
  readonly #native: NativeXenstored;
  #stopped = false;

  private constructor(n: NativeXenstored) {
    this.#native = n;
  }

  /** Starts a daemon. */
  static start(options: XenstoredOptions): Xenstored {
    try {
      return new Xenstored(native.NativeXenstored.start(options));
    } catch (err) {
      throw XenStoreError.fromNative(err, `xenstored ${options.socket}`);
    }
  }

  /** The privileged socket's path. */
  get socket(): string {
    return this.#native.socket;
  }

  /** The socket of an introduced domain. */
  domainSocket(domid: number): string {
    return this.#native.domainSocket(domid);
  }

  /** Tells the daemon a domain died (as the hypervisor would): it is released. */
  domainDied(domid: number): void {
    this.#native.domainDied(domid);
  }

  /** Tells the daemon a domain shut down: `@releaseDomain` fires. */
  domainShutdown(domid: number): void {
    this.#native.domainShutdown(domid);
  }

  /** The daemon's counters. */
  stats(): XenstoredStats {
    return this.#native.stats();
  }

  /** @internal An in-process native connection acting as `domid`. */
  connectNative(domid: number): Promise<NativeXsClient> {
    return native.NativeXsClient.connectLocal(this.#native, domid);
  }

  /** Stops the daemon: persists, closes connections, removes its sockets. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#native.stop();
  }

  [Symbol.dispose](): void {
    this.stop();
  }
}
