// Xenbus states, with Xen's numbers (xen/include/public/io/xenbus.h).

/** The xenbus states. */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;

/** A xenbus state (a number 0 to 8). */
export type XenbusState = (typeof XenbusState)[keyof typeof XenbusState];

const NAMES: readonly string[] = [
  'Unknown',
  'Initialising',
  'InitWait',
  'Initialised',
  'Connected',
  'Closing',
  'Closed',
  'Reconfiguring',
  'Reconfigured',
];

/** The state's name; `INVALID` for a number that is no state. */
export function xenbusStateName(state: number): string {
  return Number.isInteger(state) && state >= 0 && state < NAMES.length ? (NAMES[state] ?? 'INVALID') : 'INVALID';
}

/**
 * Parses a state node as C's `sscanf("%d")` does: leading blanks and a sign
 * allowed, digits up to the first non-digit; anything unreadable is
 * `undefined`. Out-of-range numbers are kept (and named INVALID).
 */
export function parseXenbusInt(text: string | null | undefined): number | undefined {
  if (text === null || text === undefined) return undefined;
  const m = /^\s*([+-]?\d+)/.exec(text);
  if (!m?.[1]) return undefined;
  const n = Number.parseInt(m[1], 10);
  return Number.isSafeInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 ? n : undefined;
}
