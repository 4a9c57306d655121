// A simulated host whose hypervisor is served on a socket, so that `xenrx
// serve` in another process can be its backend domain, with a sparse raw
// image and a guest to give it to. Everything goes when the test ends.
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { SimulatedHost } from '../../ts/index.js';
import type { Guest } from '../../ts/index.js';
import { tempDir } from './xenstore.js';

export interface ServedHost {
  readonly dir: string;
  readonly host: SimulatedHost;
  /** The hypervisor's control socket, for `xenrx serve --hypervisor`. */
  readonly hvSocket: string;
  /** A sparse raw image in `dir`. */
  readonly image: string;
  /** Domain 1, `guest1`. */
  readonly guest: Guest;
  /** The arguments of `xenrx serve` for this host, serving disks only. */
  readonly serveArgs: readonly string[];
}

export async function servedHost(t: ExecutionContext, options: { readonly imageBytes: number; readonly guestPages: number }): Promise<ServedHost> {
  const dir = tempDir(t);
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(0));
  truncateSync(image, options.imageBytes);
  const host = await SimulatedHost.start({ dir });
  t.teardown(() => host.stop());
  const hvSocket = join(dir, 'hv.sock');
  host.hypervisor.serve(hvSocket);
  t.teardown(() => host.hypervisor.stopServing());
  const guest = await host.createGuest(1, 'guest1', { pages: options.guestPages });
  return { dir, host, hvSocket, image, guest, serveArgs: ['serve', '--socket', host.socket, '--hypervisor', hvSocket, '--types', 'vbd'] };
}
