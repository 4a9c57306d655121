import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Root directory of the installed package (the one holding package.json). */
export const packageRoot: string = fileURLToPath(new URL('..', import.meta.url));

interface PackageJson {
  readonly name: string;
  readonly version: string;
}

function readPackageJson(): PackageJson {
  const raw: unknown = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  if (typeof raw !== 'object' || raw === null || !('name' in raw) || !('version' in raw)) {
    throw new Error('xenrx: package.json lacks name or version');
  }
  const { name, version } = raw as Record<string, unknown>;
  if (typeof name !== 'string' || typeof version !== 'string') {
    throw new Error('xenrx: package.json name and version must be strings');
  }
  return { name, version };
}

/** Name and version of this package, read from its package.json. */
export const packageInfo: PackageJson = readPackageJson();
