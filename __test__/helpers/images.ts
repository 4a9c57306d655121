// Disk images for block tests, in directories removed when the test ends.
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

/** A sparse raw image of `bytes` in a directory removed when the test ends. */
export function sparseImage(t: ExecutionContext, bytes: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'xenrx-vbd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(0));
  truncateSync(image, bytes);
  return image;
}
