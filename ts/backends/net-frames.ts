// Small facts about Ethernet frames that the vif service, the simulated
// guest and packet pipelines share: MAC addresses as text and bytes, and
// the flow a frame belongs to.
import { PlatformError } from '../platform/errors.js';

/** Six bytes from `aa:bb:cc:dd:ee:ff`. */
export function parseMac(text: string): Buffer {
  const parts = text.trim().split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new PlatformError('EINVAL', `bad MAC address ${JSON.stringify(text)}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/** `aa:bb:cc:dd:ee:ff` from six bytes (of a frame: its destination at 0, its source at 6). */
export function formatMac(bytes: Buffer, at = 0): string {
  return [...bytes.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Whether a frame's destination is a group (broadcast or multicast) address. */
export function isGroupDestination(frame: Buffer): boolean {
  return ((frame[0] ?? 0) & 1) !== 0;
}

/**
 * A hash of a frame's flow (its IPv4 or IPv6 addresses, else its MAC
 * addresses): a multi-queue vif keeps a flow on one queue, so in order.
 */
export function frameFlow(frame: Buffer): number {
  const type = frame.length >= 14 ? frame.readUInt16BE(12) : 0;
  const [from, to] = type === 0x0800 && frame.length >= 34 ? [26, 34] : type === 0x86dd && frame.length >= 54 ? [22, 54] : [0, Math.min(12, frame.length)];
  // FNV-1a.
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ (frame[i] ?? 0), 0x01000193) >>> 0;
  return h;
}
