// Runs TypeScript written for users (README snippets, examples/) as a user
// would, against the sources: 'xenrx' is pointed at ts/index.ts (the tests
// run before any build) and the file is placed inside the repository, so
// that its other imports (rxjs) resolve as in a user's project.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import type { ExecutionContext } from 'ava';

import { run } from './process.js';
import type { Result } from './process.js';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

let count = 0;

/** Runs `code` with `node --import tsx`; `rewrite` adapts it first (after the import is pointed at the sources). */
export async function runUserCode(t: ExecutionContext, code: string, rewrite: (code: string) => string = (c) => c): Promise<Result> {
  count += 1;
  const home = join(repoRoot, '.readme-snippets', `${String(process.pid)}-${String(count)}`);
  mkdirSync(home, { recursive: true });
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const source = pathToFileURL(join(repoRoot, 'ts', 'index.ts')).href;
  const file = join(home, 'user.ts');
  writeFileSync(file, rewrite(code.replace(/from 'xenrx'/g, `from '${source}'`)));
  return run(process.execPath, ['--import', 'tsx', file]);
}
