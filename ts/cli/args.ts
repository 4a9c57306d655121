// Command-line values checked before anything runs: a number is a number
// in range, written in decimal, with nothing after it.
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { InvalidArgumentError } from 'commander';

/** A parser for commander: a decimal integer in `[min, max]`, named `what` in errors. */
export function integer(what: string, min: number, max: number): (value: string) => number {
  return (value: string) => {
    if (!/^(0|[1-9][0-9]*)$/.test(value)) throw new InvalidArgumentError(`${what} must be a whole number, got ${JSON.stringify(value)}`);
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`${what} must be between ${String(min)} and ${String(max)}, got ${value}`);
    return n;
  };
}

/** A domain id (0 to 32751, DOMID_FIRST_RESERVED − 1). */
export const domid = integer('a domain id', 0, 0x7fef);

/** A device id. */
export const devid = integer('a device id', 0, 0x7fffffff);

/** A number of seconds greater than zero (fractions allowed). */
export function seconds(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(n > 0)) throw new InvalidArgumentError(`seconds must be a number greater than 0, got ${JSON.stringify(value)}`);
  return n;
}

/** The directory a file is to be made in must exist already: we do not guess at creating it. */
export function inExistingDirectory(what: string): (value: string) => string {
  return (value: string) => {
    const dir = dirname(resolve(value));
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) throw new InvalidArgumentError(`the directory of the ${what} (${dir}) does not exist`);
    return value;
  };
}
