// The vif device type: a guest's PV network interface (netif.h), served by
// the Rust data path on the platform's event loop, as Linux netback serves
// it. init advertises what netback does (scatter-gather, TCP segmentation
// offload, rx-copy, split event channels, queues) and writes
// `hotplug-status` once the vif's packet path is ready, as Xen's vif
// hotplug script does; connect reads the frontend's rings, ports and
// features and starts a data-path queue per ring pair.
//
// Where a vif's packets go is chosen per vif:
// - 'switch' (the default): an in-process learning switch in Rust, shared
//   by the vifs of the service: guests reach one another with no packet
//   crossing into JavaScript;
// - 'stream': to TypeScript, as batches on `packets$`; what TypeScript
//   sends a vif with `send` goes to its guest. A switch, a filter, a NAT
//   or a logger is an RxJS pipeline between the two;
// - 'tap': a Linux TAP device named as Xen names a vif's, `vif<domid>.<devid>`,
//   added to the bridge the toolstack named (`bridge`), as the vif-bridge
//   hotplug script does: the host's bridge, OVS or routing takes it from
//   there. The device lives as long as the vif (a reconnecting guest
//   keeps it).
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

import { Subject } from 'rxjs';
import type { Observable } from 'rxjs';

import { native } from '../native.js';
import type { NativeSwitch, NativeSwitchPort, NativeTapLink, NativeVifQueue, NetPacket, VifQueueOptions, VifQueueStats } from '../native.js';
import { PlatformError } from '../platform/errors.js';
import type { Platform } from '../platform/index.js';
import type { DeviceContext, DeviceKey, DeviceOps } from '../xenbus/index.js';
import { parseXenbusInt, xenbusStateName } from '../xenbus/state.js';
import type { NetDeviceStats, StatsSource } from '../stats/types.js';
import { frameFlow } from './net-frames.js';
import { handOverQueues } from './hand-over.js';

/** A packet: an Ethernet frame and its checksum and segmentation state. */
export type Packet = NetPacket;

/** Counters of one vif queue ("tx": the guest sending). */
export type VifStats = VifQueueStats;

/** Where a vif's packets go (see the module's comment). */
export type VifPath = 'switch' | 'stream' | 'tap';

/** What the toolstack wrote for a vif. */
export interface VifConfig {
  readonly key: DeviceKey;
  /** `vif-<domid>-<devid>`. */
  readonly name: string;
  /** `mac`, as the toolstack wrote it (the guest's address). */
  readonly mac: string | undefined;
  /** `bridge`, if the toolstack named one. */
  readonly bridge: string | undefined;
}

/** A batch of packets a guest sent, on a 'stream' vif. */
export interface VifPackets {
  /** `vif-<domid>-<devid>`. */
  readonly vif: string;
  readonly domid: number;
  readonly devid: number;
  readonly packets: readonly Packet[];
}

/** How vifs are served. */
export interface NetOptions {
  /** The backend domain's platform: the queues run on its event loop. */
  readonly platform: Platform;
  /** Where each vif's packets go (default: every vif on the switch). */
  readonly path?: (vif: VifConfig) => VifPath;
  /**
   * The most queues a frontend may use, `multi-queue-max-queues` (default:
   * the number of CPUs, at most 8). Each queue has its own rings and
   * port(s); a flow stays on one queue.
   */
  readonly maxQueues?: number;
  /** Packets held per queue for a guest that posts no buffers (default 1000). */
  readonly rxQueue?: number;
  /**
   * A directory (on tmpfs: `/run/xenrx`) for each queue's journals of the
   * requests it took. With it, a backend started after this one died
   * takes over the vifs it finds Connected without the guests
   * reconnecting (`reattach`): the packets in flight are dropped, as a
   * NIC reset drops them, and the rings go on.
   */
  readonly stateDir?: string;
}

/** The most queues a backend offers. */
export const MAX_NET_QUEUES = 16;

/** One vif, for as long as the device exists. */
interface VifRecord {
  readonly ctx: DeviceContext;
  path: VifPath;
  /** With 'switch': its port, made at init. */
  port: NativeSwitchPort | null;
  /** With 'tap': its device, made at init. */
  tap: NativeTapLink | null;
  queues: NativeVifQueue[];
  notices: number;
}

/** The vif device type. */
export class NetService implements StatsSource {
  readonly #options: NetOptions;
  readonly #maxQueues: number;
  readonly #vifs = new Map<string, VifRecord>();
  readonly #packets = new Subject<VifPackets>();

  /** The in-process switch the 'switch' vifs share. */
  readonly switch: NativeSwitch;
  /** What the guests of 'stream' vifs send, batch by batch. */
  readonly packets$: Observable<VifPackets> = this.#packets.asObservable();
  /** The device type's operations, for `registry.register('vif', service.ops)`. */
  readonly ops: DeviceOps<VifRecord>;

  constructor(options: NetOptions) {
    this.#options = options;
    const max = options.maxQueues ?? Math.min(availableParallelism(), 8);
    if (!Number.isInteger(max) || max < 1 || max > MAX_NET_QUEUES) {
      throw new RangeError(`maxQueues must be a whole number from 1 to ${String(MAX_NET_QUEUES)}, got ${String(max)}`);
    }
    this.#maxQueues = max;
    this.switch = new native.NativeSwitch();
    this.ops = {
      alloc: (ctx) => {
        const rec: VifRecord = { ctx, path: 'switch', port: null, tap: null, queues: [], notices: 0 };
        this.#vifs.set(ctx.name, rec);
        return rec;
      },
      init: (ctx, rec) => this.#init(ctx, rec),
      connect: (ctx, rec) => this.#connect(ctx, rec, false),
      ...(options.stateDir === undefined
        ? {}
        : {
            reattach: async (ctx: DeviceContext, rec: VifRecord) => {
              await this.#openPath(ctx, rec);
              await this.#connect(ctx, rec, true);
              ctx.log(1, `vif taken over: ${String(rec.queues.length)} queue${rec.queues.length === 1 ? '' : 's'} served again from their journals`);
            },
          }),
      disconnect: (ctx, rec) => {
        stopQueues(rec);
        ctx.log(1, 'vif disconnected');
      },
      free: (ctx, rec) => {
        stopQueues(rec);
        rec.port?.remove();
        rec.port = null;
        rec.tap?.stop();
        rec.tap = null;
        this.#vifs.delete(ctx.name);
      },
    };
  }

  /**
   * Hands every vif over to the process taking this one's place (`xenrx
   * serve --takeover`): each queue stops without a word to its guest and
   * keeps its journals. Nothing is written to XenStore; call it just
   * before exiting.
   */
  handOver(): number {
    return handOverQueues(this.#vifs.values());
  }

  /**
   * Sends packets to the guest of a connected vif (`vif-<domid>-<devid>`),
   * spread over its queues by flow; returns how many were taken (the rest
   * found the guest's queue full).
   */
  send(vif: string, packets: readonly Packet[]): number {
    const rec = this.#vifs.get(vif);
    if (!rec || rec.queues.length === 0) throw new PlatformError('ENOTCONN', `vif ${vif} is not connected`);
    const queues = rec.queues;
    if (queues.length === 1) return callNative(() => queues[0]?.deliver([...packets]) ?? 0);
    const per: Packet[][] = queues.map(() => []);
    for (const p of packets) per[frameFlow(p.data) % queues.length]?.push(p);
    return per.reduce((taken, batch, q) => taken + (batch.length === 0 ? 0 : callNative(() => queues[q]?.deliver(batch) ?? 0)), 0);
  }

  /** The connected vifs, by name. */
  vifs(): string[] {
    return [...this.#vifs.values()].filter((r) => r.queues.length > 0).map((r) => r.ctx.name);
  }

  /** The counters of each queue of a connected vif, in queue order. */
  queueStats(domid: number, devid: number): VifStats[] {
    return (this.#vifs.get(vifName(domid, devid))?.queues ?? []).map((q) => q.stats());
  }

  /** A connected vif's counters, summed over its queues. */
  stats(domid: number, devid: number): VifStats | undefined {
    const all = this.queueStats(domid, devid);
    const [first, ...rest] = all;
    if (!first) return undefined;
    const sum = { ...first };
    for (const s of rest) for (const k of Object.keys(sum) as (keyof VifStats)[]) sum[k] += s[k];
    return sum;
  }

  /** Every connected vif's statistics (for `stats$` and the metrics endpoint). */
  deviceStats(): NetDeviceStats[] {
    const out: NetDeviceStats[] = [];
    for (const rec of this.#vifs.values()) {
      const s = this.stats(rec.ctx.key.domid, rec.ctx.key.devid);
      if (!s) continue;
      out.push({
        type: 'vif',
        name: rec.ctx.name,
        domid: rec.ctx.key.domid,
        devid: rec.ctx.key.devid,
        state: xenbusStateName(rec.ctx.state.beState),
        queues: rec.queues.length,
        counters: {
          txPackets: s.txPackets,
          txBytes: s.txBytes,
          txErrors: s.txErrors,
          rxPackets: s.rxPackets,
          rxBytes: s.rxBytes,
          rxDropped: s.rxDropped,
          csumFilled: s.csumFilled,
          notifications: s.notifications,
        },
      });
    }
    return out;
  }

  /** Where the vif's packets go, made ready: its switch port or its TAP device. */
  async #openPath(ctx: DeviceContext, rec: VifRecord): Promise<VifConfig> {
    const config: VifConfig = { key: ctx.key, name: ctx.name, mac: await ctx.readBackend('mac'), bridge: await ctx.readBackend('bridge') };
    rec.path = this.#options.path?.(config) ?? 'switch';
    if (rec.path === 'switch') rec.port ??= this.switch.addPort();
    if (rec.path === 'tap' && !rec.tap) rec.tap = await this.#openTap(ctx, config);
    return config;
  }

  async #init(ctx: DeviceContext, rec: VifRecord): Promise<void> {
    const config = await this.#openPath(ctx, rec);
    // What netback offers, all before InitWait in one transaction; then
    // the hotplug status a toolstack waits for (the packet path is ready).
    const nodes: [string, string][] = [
      ['feature-sg', '1'],
      ['feature-gso-tcpv4', '1'],
      ['feature-gso-tcpv6', '1'],
      ['feature-ipv6-csum-offload', '1'],
      ['feature-rx-copy', '1'],
      ['feature-rx-flip', '0'],
      ['feature-split-event-channels', '1'],
      ['multi-queue-max-queues', String(this.#maxQueues)],
      ['hotplug-status', 'connected'],
    ];
    await ctx.xs.transaction(async (tx) => {
      for (const [node, value] of nodes) await tx.write(`${ctx.backendPath}/${node}`, value);
    });
    const where = { switch: 'the in-process switch', stream: 'the packet stream', tap: `TAP device ${rec.tap?.name ?? ''}` }[rec.path];
    ctx.log(1, `vif ${config.mac ?? '(no mac)'} on ${where}`);
  }

  /**
   * Makes the vif's TAP device, `vif<domid>.<devid>`, with the `mtu` the
   * toolstack wrote, in the bridge it named if that bridge exists (else
   * it stays out of any, and says so: the guest is served all the same).
   */
  async #openTap(ctx: DeviceContext, config: VifConfig): Promise<NativeTapLink> {
    const name = `vif${String(ctx.key.domid)}.${String(ctx.key.devid)}`;
    const mtu = parseXenbusInt(await ctx.readBackend('mtu'));
    const tap = callNative(() => native.NativeTapLink.start(this.#options.platform.native, name, mtu !== undefined && mtu > 0 ? { mtu } : {}));
    const bridge = config.bridge;
    if (bridge !== undefined && bridge !== '') {
      try {
        tap.joinBridge(bridge);
      } catch (err) {
        const e = PlatformError.fromNative(err);
        const missing = e instanceof PlatformError && e.code === 'ENODEV';
        ctx.log(0, missing ? `bridge ${bridge} does not exist: ${name} is left out of any bridge` : `${name} cannot join bridge ${bridge}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return tap;
  }

  async #connect(ctx: DeviceContext, rec: VifRecord, resume: boolean): Promise<void> {
    const flag = async (node: string, fallback: boolean): Promise<boolean> => {
      const v = await ctx.readFrontend(node);
      if (v === undefined) return fallback;
      const n = parseXenbusInt(v);
      if (n === undefined) throw new Error(`bad ${node} ${JSON.stringify(v.slice(0, 32))}`);
      return n !== 0;
    };
    // As netback: only copying receive, and a frontend that says when it
    // posts buffers.
    if (!(await flag('request-rx-copy', false))) throw new Error('the frontend does not request rx-copy, the only receive mode served');
    if (!(await flag('feature-rx-notify', false))) throw new Error('the frontend does not offer feature-rx-notify, which is required');
    const features = {
      sg: await flag('feature-sg', false),
      gsoTcpv4: await flag('feature-gso-tcpv4', false),
      gsoTcpv6: await flag('feature-gso-tcpv6', false),
      csumOffload: !(await flag('feature-no-csum-offload', false)),
    };
    const queuesNode = await ctx.readFrontend('multi-queue-num-queues');
    const count = queuesNode === undefined ? 1 : parseXenbusInt(queuesNode);
    if (count === undefined || count < 1 || count > this.#maxQueues) {
      throw new Error(`bad multi-queue-num-queues ${JSON.stringify(queuesNode)} (1 to ${String(this.#maxQueues)} offered)`);
    }
    const rings: { txRingRef: number; rxRingRef: number; txPort: number; rxPort: number | undefined }[] = [];
    for (let q = 0; q < count; q++) {
      const dir = count === 1 ? '' : `queue-${String(q)}/`;
      const ref = async (node: string): Promise<number> => {
        const v = parseXenbusInt(await ctx.readFrontend(dir + node));
        if (v === undefined || v < 0 || v > 0xffff_ffff) throw new Error(`the frontend gave no valid ${dir}${node}`);
        return v;
      };
      const port = async (node: string): Promise<number | undefined> => {
        const raw = await ctx.readFrontend(dir + node);
        if (raw === undefined) return undefined;
        const v = parseXenbusInt(raw);
        if (v === undefined || v <= 0 || v > 0xffff_ffff) throw new Error(`bad ${dir}${node} ${JSON.stringify(raw.slice(0, 32))}`);
        return v;
      };
      const txRingRef = await ref('tx-ring-ref');
      const rxRingRef = await ref('rx-ring-ref');
      // Split channels when the frontend wrote both, else the one.
      const [tx, rx, one] = [await port('event-channel-tx'), await port('event-channel-rx'), await port('event-channel')];
      if (tx !== undefined && rx !== undefined) rings.push({ txRingRef, rxRingRef, txPort: tx, rxPort: rx });
      else if (one !== undefined) rings.push({ txRingRef, rxRingRef, txPort: one, rxPort: undefined });
      else throw new Error(`the frontend gave no ${dir}event-channel`);
    }
    rec.notices = 0;
    stopQueues(rec);
    const { platform, rxQueue, stateDir } = this.#options;
    // The journals' directory, made on first use.
    if (stateDir !== undefined) mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const journals = (q: number): Partial<VifQueueOptions> =>
      stateDir === undefined ? {} : { txJournal: join(stateDir, `${ctx.name}-q${String(q)}-tx`), rxJournal: join(stateDir, `${ctx.name}-q${String(q)}-rx`), resume };
    const options = (r: (typeof rings)[number], q: number): VifQueueOptions => ({
      frontendDomid: ctx.key.domid,
      txRingRef: r.txRingRef,
      rxRingRef: r.rxRingRef,
      txPort: r.txPort,
      ...(r.rxPort !== undefined ? { rxPort: r.rxPort } : {}),
      ...features,
      gsoOffered: true,
      ...(rxQueue !== undefined ? { rxQueue } : {}),
      ...journals(q),
    });
    try {
      rings.forEach((r, q) => {
        const prefix = count === 1 ? '' : `queue ${String(q)}: `;
        // A hostile guest could repeat this forever: the first is an
        // error, the rest noise.
        const notice = (text: string): void => ctx.log(rec.notices++ === 0 ? 0 : 2, prefix + text);
        rec.queues.push(
          rec.tap
            ? native.NativeVifQueue.startOnTap(platform.native, options(r, q), rec.tap, notice)
            : native.NativeVifQueue.start(
                platform.native,
                options(r, q),
                rec.port,
                rec.path === 'stream' ? (packets) => this.#packets.next({ vif: ctx.name, domid: ctx.key.domid, devid: ctx.key.devid, packets }) : null,
                notice,
              ),
        );
      });
      const first = rings[0];
      if (rec.tap && first) rec.tap.connect(rec.queues, options(first, 0));
    } catch (err) {
      stopQueues(rec);
      throw PlatformError.fromNative(err);
    }
    rec.port?.connect(rec.queues);
    const split = rings[0]?.rxPort !== undefined;
    ctx.log(1, `vif connected (${String(count)} queue(s)${split ? ', split event channels' : ''}${features.sg ? ', sg' : ''}${features.gsoTcpv4 || features.gsoTcpv6 ? ', gso' : ''})`);
  }
}

function vifName(domid: number, devid: number): string {
  return `vif-${String(domid)}-${String(devid)}`;
}

function stopQueues(rec: VifRecord): void {
  for (const q of rec.queues) q.stop();
  rec.queues = [];
}

function callNative<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw PlatformError.fromNative(err);
  }
}
