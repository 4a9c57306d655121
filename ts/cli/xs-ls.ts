// `xenrx xs ls`: a XenStore subtree printed as Xen's `xenstore-ls` prints
// it, byte for byte, so that scripts and eyes used to one read the other.
//
// Each node is a line: its name indented one space per level (or, with
// `-f`, its full path), ` = "value"` with the value's bytes escaped, and
// with `-p` its permissions as Xen writes them, `(n0,r1)`. Lines are kept
// to a width: the terminal's less two, or 80 when the output is not a
// terminal; a value that does not fit is cut and ends in `\...`. With `-p`,
// a dotted leader pads short lines to column 60. `-f` lifts the width.
import { formatPermission } from '../xenstore/perms.js';
import type { XenStore } from '../xenstore/index.js';

/** How lines are laid out. */
export interface LsLayout {
  /** Widest line (values are cut to fit). */
  readonly maxWidth: number;
  /** With permissions: short lines are padded with a leader to here. */
  readonly desiredWidth: number;
  /** Full paths rather than indented names. */
  readonly wholePath: boolean;
  /** Print each node's permissions. */
  readonly perms: boolean;
}

/** What a cut value's line keeps room for: ` = "..."`. */
const TAG_LEN = ' = "..."'.length;

/** The layout `xenstore-ls` uses for these options and this output. */
export function lsLayout(opts: { full: boolean; perms: boolean }, columns: number | undefined): LsLayout {
  if (opts.full) return { maxWidth: 2 ** 30, desiredWidth: 0, wholePath: true, perms: opts.perms };
  return { maxWidth: columns === undefined ? 80 : columns - 2, desiredWidth: 60, wholePath: false, perms: opts.perms };
}

/**
 * A value's bytes as Xen's tools print them: printable ASCII as it is; a
 * backslash, tab, newline and carriage return as `\\`, `\t`, `\n`, `\r`;
 * bytes below 8 as three octal digits (`\001`); any other byte as `\xHH`.
 */
export function sanitiseValue(bytes: Uint8Array): string {
  let out = '';
  for (const c of bytes) {
    if (c >= 0x20 && c <= 0x7e && c !== 0x5c) out += String.fromCharCode(c);
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x5c) out += '\\\\';
    else if (c < 8) out += `\\${c.toString(8).padStart(3, '0')}`;
    else out += `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** `text` cut to `n` characters; a negative `n` cuts nothing (as C's `%.*s`). */
function cut(text: string, n: number): string {
  return n < 0 ? text : text.slice(0, n);
}

/**
 * One node's line. `value` is undefined for a node that vanished while
 * listed (printed `name:`, as `xenstore-ls` prints a node it cannot read).
 */
export function lsLine(
  layout: LsLayout,
  depth: number,
  name: string,
  path: string,
  value: Uint8Array | undefined,
  perms: string | undefined,
): string {
  let line: string;
  let width: number;
  if (layout.wholePath) {
    // The path does not count towards the width: only what follows it.
    line = path;
    width = 0;
  } else {
    line = ' '.repeat(depth) + cut(name, layout.maxWidth - TAG_LEN - depth);
    width = line.length;
  }
  if (value === undefined) return `${line}:`;
  const shown = sanitiseValue(value);
  // The raw length decides, as in Xen's tool, even where escapes lengthen it.
  if (layout.maxWidth < width + value.length + TAG_LEN) {
    line += ` = "${cut(shown, layout.maxWidth - TAG_LEN - width)}\\..."`;
  } else {
    const part = ` = "${shown}"`;
    line += part;
    width += part.length;
    if (layout.perms) {
      line += ' ';
      for (width += 1; width < Math.min(layout.desiredWidth, layout.maxWidth); width += 1) line += width % 2 === 1 ? '.' : ' ';
    }
  }
  if (layout.perms && perms !== undefined) line += `  (${perms})`;
  return line;
}

/** Prints the subtree below `path` (not `path` itself), depth first. */
export async function printLs(xs: XenStore, path: string, layout: LsLayout, write: (line: string) => void, depth = 0): Promise<void> {
  for (const name of await xs.list(path)) {
    const child = path.endsWith('/') ? `${path}${name}` : `${path}/${name}`;
    const value = await xs.read(child, 'buffer').catch(() => undefined);
    if (value === undefined) {
      write(lsLine(layout, depth, name, child, undefined, undefined));
      continue;
    }
    const perms = layout.perms
      ? await xs.getPerms(child).then(
          (p) => p.map(formatPermission).join(','),
          () => undefined,
        )
      : undefined;
    write(lsLine(layout, depth, name, child, value, perms));
    await printLs(xs, child, layout, write, depth + 1);
  }
}
