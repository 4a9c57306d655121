// XenStore permissions: a list whose first entry names the node's owner and
// the access of every domain not listed after it.

/** What a permission entry grants. */
export type Access = 'none' | 'read' | 'write' | 'both';

/** One permission entry. */
export interface Permission {
  readonly domid: number;
  readonly access: Access;
}

const LETTERS: Record<Access, string> = { none: 'n', read: 'r', write: 'w', both: 'b' };
const ACCESS: Record<string, Access> = { n: 'none', r: 'read', w: 'write', b: 'both' };

/** Parses `r5`-style text. */
export function parsePermission(text: string): Permission {
  const m = /^([nrwb])(\d+)$/.exec(text);
  const access = m?.[1] !== undefined ? ACCESS[m[1]] : undefined;
  if (!m || access === undefined) throw new TypeError(`invalid XenStore permission ${JSON.stringify(text)}`);
  return { domid: Number(m[2]), access };
}

/** Formats a permission as XenStore writes it (`r5`). */
export function formatPermission(p: Permission): string {
  if (!Number.isInteger(p.domid) || p.domid < 0 || p.domid > 0xffff) {
    throw new TypeError(`invalid domain id ${String(p.domid)} in a XenStore permission`);
  }
  return `${LETTERS[p.access]}${String(p.domid)}`;
}
