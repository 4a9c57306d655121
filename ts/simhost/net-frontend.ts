// A simulated guest's network interface: the rings, ports and driver
// thread from the Rust side (NativeSimNetFront), the xenbus handshake from
// SimFrontend, negotiated as Linux's xen-netfront does: at InitWait it
// reads what the backend offers (`feature-split-event-channels`,
// `multi-queue-max-queues`), sets up its queues and writes their rings and
// ports with `request-rx-copy`, `feature-rx-notify` and its own features.
import { BehaviorSubject, Observable, Subject, filter, firstValueFrom, map, timeout } from 'rxjs';

import { native } from '../native.js';
import type { NativeSimNetFront, NetPacket, SimNetFrontStats } from '../native.js';
import { PlatformError } from '../platform/errors.js';
import type { SimHost } from '../platform/index.js';
import { parseXenbusInt } from '../xenbus/state.js';
import type { XenStore } from '../xenstore/index.js';
import { frameFlow, parseMac } from '../backends/net-frames.js';
import { SimFrontend } from './frontend.js';

/** How the simulated guest sets up its network interface. */
export interface SimNetFrontendOptions {
  /** The guest's MAC address (default: the frontend's `mac` node). */
  readonly mac?: string;
  /** Scatter-gather: packets over a page (default true). */
  readonly sg?: boolean;
  /** TCP segmentation offload both ways (default true). */
  readonly gso?: boolean;
  /** Take packets whose checksum is left blank (default true; false writes `feature-no-csum-offload`). */
  readonly csumOffload?: boolean;
  /** Separate ports for the two rings, if the backend offers them (default false). */
  readonly splitEventChannels?: boolean;
  /** The most queues wanted (default 1); the backend's `multi-queue-max-queues` bounds it. */
  readonly queues?: number;
  /** Receive buffers posted per queue (default: a ring's worth). */
  readonly rxBuffers?: number;
  /** The domain serving the device (default: the frontend's `backend-id`, else 0). */
  readonly backendDomid?: number;
  /**
   * Only count what is received (`stats()`), never hand it to JavaScript:
   * a guest for benchmarks, whose packets cost JavaScript nothing.
   */
  readonly countOnly?: boolean;
}

type Phase = { readonly kind: 'waiting' } | { readonly kind: 'connected' } | { readonly kind: 'failed'; readonly error: Error } | { readonly kind: 'closed' };

/** The most queues a guest asks for. */
const MAX_QUEUES = 16;

/** A guest's network interface (vif), guest side. */
export class SimNetFrontend {
  readonly #phase = new BehaviorSubject<Phase>({ kind: 'waiting' });
  readonly #received = new Subject<NetPacket[]>();
  #natives: NativeSimNetFront[] = [];
  #mac: Buffer | null = null;

  /** Every batch of packets the guest receives, in order per queue. */
  readonly batches$: Observable<NetPacket[]> = this.#received.asObservable();
  /** The packets the guest receives, one by one. */
  readonly packets$: Observable<NetPacket> = new Observable<NetPacket>((sub) =>
    this.#received.subscribe({
      next: (batch) => {
        for (const p of batch) sub.next(p);
      },
      error: (err: unknown) => sub.error(err),
      complete: () => sub.complete(),
    }),
  );

  private constructor(
    readonly host: SimHost,
    readonly xs: XenStore,
    readonly domid: number,
    readonly frontendPath: string,
    readonly options: SimNetFrontendOptions,
    readonly handshake: SimFrontend,
  ) {}

  /** Starts the vif at `frontendPath` of guest `domid`. */
  static async attach(host: SimHost, xs: XenStore, domid: number, frontendPath: string, options: SimNetFrontendOptions = {}): Promise<SimNetFrontend> {
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > MAX_QUEUES) {
      throw new PlatformError('EINVAL', `queues ${String(queues)} not in 1..${String(MAX_QUEUES)}`);
    }
    let resolve: (fe: SimNetFrontend) => void = () => undefined;
    const self = new Promise<SimNetFrontend>((r) => {
      resolve = r;
    });
    const handshake = await SimFrontend.attach(xs, frontendPath, {
      prepare: async () => (await self).#prepare(),
      connected: async () => (await self).#phase.next({ kind: 'connected' }),
      closed: async () => (await self).#release(),
    });
    const fe = new SimNetFrontend(host, xs, domid, frontendPath, options, handshake);
    resolve(fe);
    return fe;
  }

  /** The guest's MAC address (6 bytes), once set up. */
  get mac(): Buffer {
    if (!this.#mac) throw new PlatformError('ENOTCONN', 'the vif is not set up yet');
    return this.#mac;
  }

  /** Queues in use. */
  get queues(): number {
    return this.#natives.length;
  }

  /** The native frontends, one per queue. */
  get natives(): readonly NativeSimNetFront[] {
    return this.#natives;
  }

  async #prepare(): Promise<Record<string, string>> {
    const o = this.options;
    const backendPath = this.handshake.backendPath;
    const read = async (node: string): Promise<number | undefined> => parseXenbusInt(await this.xs.tryRead(`${backendPath}/${node}`));
    const macText = o.mac ?? (await this.xs.tryRead(`${this.frontendPath}/mac`)) ?? '00:16:3e:00:00:00';
    this.#mac = parseMac(macText);
    const backendDomid = o.backendDomid ?? parseXenbusInt(await this.xs.tryRead(`${this.frontendPath}/backend-id`)) ?? 0;
    const split = (o.splitEventChannels ?? false) && (await read('feature-split-event-channels')) === 1;
    const queues = Math.min(o.queues ?? 1, Math.max(1, (await read('multi-queue-max-queues')) ?? 1));
    const sg = o.sg ?? true;
    const gso = o.gso ?? true;
    this.#release();
    try {
      for (let q = 0; q < queues; q++) {
        this.#natives.push(
          native.NativeSimNetFront.create(
            this.host.native,
            this.domid,
            backendDomid,
            { sg, gso, splitEventChannels: split, ...(o.rxBuffers !== undefined ? { rxBuffers: o.rxBuffers } : {}) },
            o.countOnly === true ? null : (packets) => this.#received.next(packets),
          ),
        );
      }
    } catch (err) {
      const e = PlatformError.fromNative(err);
      this.#phase.next({ kind: 'failed', error: e instanceof Error ? e : new Error(String(e)) });
      throw e;
    }
    const nodes: Record<string, string> = {
      'request-rx-copy': '1',
      'feature-rx-notify': '1',
      'feature-sg': sg ? '1' : '0',
      'feature-gso-tcpv4': gso ? '1' : '0',
      'feature-gso-tcpv6': gso ? '1' : '0',
      'feature-no-csum-offload': o.csumOffload === false ? '1' : '0',
      'feature-ipv6-csum-offload': '1',
    };
    if (queues > 1) nodes['multi-queue-num-queues'] = String(queues);
    this.#natives.forEach((n, q) => {
      const dir = queues === 1 ? '' : `queue-${String(q)}/`;
      nodes[`${dir}tx-ring-ref`] = String(n.txRingRef);
      nodes[`${dir}rx-ring-ref`] = String(n.rxRingRef);
      if (split) {
        nodes[`${dir}event-channel-tx`] = String(n.txPort);
        nodes[`${dir}event-channel-rx`] = String(n.rxPort);
      } else {
        nodes[`${dir}event-channel`] = String(n.txPort);
      }
    });
    return nodes;
  }

  /** Resolves once the backend connected (rejects if setting up failed). */
  async waitConnected(ms = 60_000): Promise<void> {
    const phase = await firstValueFrom(this.#phase.pipe(filter((p) => p.kind !== 'waiting'), timeout(ms)));
    if (phase.kind === 'failed') throw phase.error;
    if (phase.kind === 'closed') throw new PlatformError('ESHUTDOWN', 'the vif closed');
  }

  /**
   * Sends packets (queued at once; the driver threads put them on the
   * rings), spread over the queues by flow as Linux's queue selection
   * does. A packet the features do not allow is refused, with none sent.
   */
  send(packets: NetPacket | readonly NetPacket[]): void {
    const list = Array.isArray(packets) ? (packets as readonly NetPacket[]) : [packets as NetPacket];
    const natives = this.#natives;
    if (natives.length === 0) throw new PlatformError('ENOTCONN', 'the vif is not set up');
    try {
      if (natives.length === 1) {
        natives[0]?.send([...list]);
        return;
      }
      const per: NetPacket[][] = natives.map(() => []);
      for (const p of list) per[frameFlow(p.data) % natives.length]?.push(p);
      per.forEach((batch, q) => {
        if (batch.length > 0) natives[q]?.send(batch);
      });
    } catch (err) {
      throw PlatformError.fromNative(err);
    }
  }

  /**
   * Sends `count` copies of `packet` from a worker thread (its u32 at byte
   * 14 counting up), at most `window` unanswered at a time, on the first
   * queue: a traffic source that costs JavaScript nothing per packet.
   * Resolves with the packets sent.
   */
  async blast(packet: NetPacket, count: number, window = 512): Promise<number> {
    const n = this.#natives[0];
    if (!n) throw new PlatformError('ENOTCONN', 'the vif is not set up');
    try {
      return await n.blast(packet, count, window);
    } catch (err) {
      throw PlatformError.fromNative(err);
    }
  }

  /** The next `n` packets received, in order (rejects after `ms`). */
  receive(n: number, ms = 60_000): Promise<NetPacket[]> {
    const got: NetPacket[] = [];
    return firstValueFrom(
      this.packets$.pipe(
        map((p) => {
          got.push(p);
          return got.length;
        }),
        filter((count) => count >= n),
        map(() => got),
        timeout(ms),
      ),
    );
  }

  /** Packets queued or in flight, not yet answered by the backend. */
  get pending(): number {
    return this.#natives.reduce((sum, n) => sum + n.pending, 0);
  }

  /** What stopped a driver (the backend broke the protocol), if anything did. */
  get fault(): string | null {
    return this.#natives.map((n) => n.fault).find((f) => f != null) ?? null;
  }

  /** The counters, summed over the queues. */
  stats(): SimNetFrontStats {
    const sum: SimNetFrontStats = { txPackets: 0, txBytes: 0, txErrors: 0, rxPackets: 0, rxBytes: 0, rxErrors: 0 };
    for (const n of this.#natives) {
      const s = n.stats();
      for (const k of Object.keys(sum) as (keyof SimNetFrontStats)[]) sum[k] += s[k];
    }
    return sum;
  }

  /** Closes the device from the guest's side (Closing, Closed), then releases the rings. */
  async close(): Promise<void> {
    await this.handshake.close();
    this.#release();
  }

  /** Stops following the backend (the guest is destroyed). */
  detach(): void {
    this.handshake.detach();
    this.#release();
    this.#received.complete();
  }

  #release(): void {
    for (const n of this.#natives) {
      try {
        n.close();
      } catch {
        // A page the backend still maps stays granted, as Linux leaves it.
      }
    }
    this.#natives = [];
    if (this.#phase.value.kind === 'connected') this.#phase.next({ kind: 'closed' });
  }
}
