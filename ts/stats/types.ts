// What the statistics of a device look like, whatever its type: the
// counters its data path keeps, read at one moment.
import type { LatencyHistogram } from './histogram.js';

/** A block device's counters, summed over its queues (blkback's names in brackets). */
export interface BlockCounters {
  /** Requests taken off the rings. */
  readonly requests: number;
  /** Responses published. */
  readonly responses: number;
  /** Reads handed to storage (`rd_req`). */
  readonly reads: number;
  /** Writes handed to storage (`wr_req`). */
  readonly writes: number;
  /** Flush and barrier requests (`f_req`). */
  readonly flushRequests: number;
  /** Discards (`ds_req`). */
  readonly discards: number;
  /** Sectors read (`rd_sect`). */
  readonly sectorsRead: number;
  /** Sectors written (`wr_sect`). */
  readonly sectorsWritten: number;
  /** Times taking requests stopped for a barrier or flush to wait for earlier ones. */
  readonly fenceWaits: number;
  /** Requests answered with an error. */
  readonly errors: number;
  /** Notifications sent to the guest. */
  readonly notifications: number;
}

/** A block device's latency histograms, from taken off the ring to answered. */
export interface BlockLatencies {
  readonly read: LatencyHistogram;
  readonly write: LatencyHistogram;
  /** Flushes, flushes carrying data and barriers. */
  readonly flush: LatencyHistogram;
  readonly discard: LatencyHistogram;
}

/** A console's counters. */
export interface ConsoleCounters {
  /** Bytes of guest output read. */
  readonly bytesOut: number;
  /** Bytes of input written into the guest's ring. */
  readonly bytesIn: number;
  /** Events from the guest. */
  readonly events: number;
  /** Events held back by the rate limit. */
  readonly rateLimited: number;
  /** Passes that found bogus ring indexes. */
  readonly clamped: number;
}

interface DeviceStatsBase {
  /** `<type>-<domid>-<devid>`, with the device type as registered. */
  readonly name: string;
  readonly domid: number;
  readonly devid: number;
  /** The backend's xenbus state (`Connected`...). */
  readonly state: string;
}

/** A connected disk's statistics. */
export interface BlockDeviceStats extends DeviceStatsBase {
  /** A disk, whatever device type it was registered under (`name` says which). */
  readonly type: 'vbd';
  /** Queues (rings) served. */
  readonly queues: number;
  readonly counters: BlockCounters;
  readonly latency: BlockLatencies;
}

/** A connected console's statistics. */
export interface ConsoleDeviceStats extends DeviceStatsBase {
  readonly type: 'console';
  readonly counters: ConsoleCounters;
}

/** A vif's counters ("tx": the guest sending, as the guest counts). */
export interface NetCounters {
  /** Packets the guest sent, and their bytes. */
  readonly txPackets: number;
  readonly txBytes: number;
  /** Packets of the guest answered with an error. */
  readonly txErrors: number;
  /** Packets put into the guest's buffers, and their bytes. */
  readonly rxPackets: number;
  readonly rxBytes: number;
  /** Packets for the guest dropped (no buffers for too long, too large). */
  readonly rxDropped: number;
  /** Blank checksums filled for a guest without checksum offload. */
  readonly csumFilled: number;
  /** Event channel notifications sent to the guest. */
  readonly notifications: number;
}

/** A connected vif's statistics. */
export interface NetDeviceStats extends DeviceStatsBase {
  readonly type: 'vif';
  /** Queues (ring pairs) served. */
  readonly queues: number;
  readonly counters: NetCounters;
}

/** One device's statistics. */
export type DeviceStats = BlockDeviceStats | ConsoleDeviceStats | NetDeviceStats;

/** Anything that can list its devices' statistics (the block and console services). */
export interface StatsSource {
  deviceStats(): DeviceStats[];
}

/** Every device's statistics at one moment. */
export interface StatsSnapshot {
  /** When, in milliseconds since the epoch. */
  readonly at: number;
  readonly devices: readonly DeviceStats[];
}

/** A console's statistics from its backend's counters. */
export function consoleDeviceStats(
  domid: number,
  devid: number,
  state: string,
  s: Pick<ConsoleCounters, 'bytesOut' | 'bytesIn' | 'events' | 'rateLimited' | 'clamped'>,
): ConsoleDeviceStats {
  return {
    type: 'console',
    name: `console-${String(domid)}-${String(devid)}`,
    domid,
    devid,
    state,
    counters: { bytesOut: s.bytesOut, bytesIn: s.bytesIn, events: s.events, rateLimited: s.rateLimited, clamped: s.clamped },
  };
}
