// A disk whose storage is a pipeline in TypeScript: the guest's writes go
// to a primary copy and, through a write log, to a replica that is brought
// up to date at each flush; reads come from the primary. Each stage is a
// BlockStorageHandler wrapping the next, so stages compose like functions.
// The Rust data path does the ring, the grants and the copies; only the
// storage runs here. Run it with `node --import tsx examples/replicated-disk.ts`.
import { BlockService, BlockStorage, SimulatedHost, XenbusRegistry, stats$ } from 'xenrx';
import type { BlockStorageHandler } from 'xenrx';
import { firstValueFrom } from 'rxjs';

const SECTORS = 8192; // 4 MiB
const PAGE = 4096;

/** A sparse disk in memory: 4 KiB pages in a Map. */
function memoryDisk(sectors: number): BlockStorageHandler & { pages: Map<number, Buffer> } {
  const pages = new Map<number, Buffer>();
  return {
    sectors,
    pages,
    read(offset, length) {
      const out = Buffer.alloc(length);
      for (let at = 0; at < length; at += PAGE) pages.get((offset + at) / PAGE)?.copy(out, at);
      return out;
    },
    write(offset, data) {
      for (let at = 0; at < data.length; at += PAGE) pages.set((offset + at) / PAGE, Buffer.from(data.subarray(at, at + PAGE)));
    },
  };
}

/**
 * A stage: writes go to `primary` and are logged; a flush ships the log to
 * `replica` (in order) before it says the writes are durable.
 */
function replicated(primary: BlockStorageHandler, replica: BlockStorageHandler): BlockStorageHandler {
  const log: { offset: number; data: Buffer }[] = [];
  return {
    sectors: primary.sectors,
    read: (offset, length) => primary.read(offset, length),
    async write(offset, data) {
      await primary.write(offset, data);
      log.push({ offset, data: Buffer.from(data) });
    },
    async flush() {
      const shipped = log.splice(0);
      for (const w of shipped) await replica.write(w.offset, w.data);
      console.log(`flush: ${String(shipped.length)} writes shipped to the replica`);
    },
  };
}

const primary = memoryDisk(SECTORS);
const replica = memoryDisk(SECTORS);
const host = await SimulatedHost.start();
const registry = await XenbusRegistry.create(host.dom0, { domains: host.domains });
const disks = new BlockService({ platform: host.platform, storage: () => BlockStorage.custom(replicated(primary, replica)) });
await registry.register('vbd', disks.ops);

const guest = await host.createGuest(1, 'guest1');
const disk = await host.addDisk(guest, { params: 'replicated' });
console.log(`guest: disk of ${String(disk.sectors)} sectors, flush offered: ${String(disk.features?.flushCache)}`);
for (let i = 0; i < 4; i++) await disk.write(i * 64, Buffer.alloc(2 * PAGE, 0x41 + i));
await disk.flush();
await disk.write(1024, Buffer.alloc(PAGE, 0x7a));
await disk.flush();

const same = [...primary.pages].every(([page, data]) => replica.pages.get(page)?.equals(data) === true);
console.log(`replica matches the primary: ${String(same)} (${String(replica.pages.size)} pages)`);
const snapshot = await firstValueFrom(stats$([disks]));
const d = snapshot.devices.find((x) => x.type === 'vbd');
if (d?.type === 'vbd') console.log(`backend counted ${String(d.counters.writes)} writes and ${String(d.counters.flushRequests)} flushes`);

await disk.close();
await registry.close();
await host.stop();
