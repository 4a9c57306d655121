// Typed XenStore errors. The native layer throws errors whose `code` is the
// errno name XenStore answered (`ENOENT`) or the client's own failure; this
// turns them into XenStoreError.
import type { XenStoreErrno } from '../native.js';

/**
 * Errors a XenStore daemon answers with, by name, in xs_wire.h's order (the
 * native core's table is the same; a test holds them together). Written
 * out here so that this module loads without the addon.
 */
export const XENSTORE_ERRNOS: readonly XenStoreErrno[] = Object.freeze([
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
] as const);

/** An error name XenStore itself answers with. */
export type { XenStoreErrno };

/**
 * Why a XenStore call failed: an errno the daemon answered, or one of the
 * client's own failures: `ECONNRESET` (connection lost with the request in
 * flight; it may or may not have taken effect), `ESHUTDOWN` (client or daemon
 * closed), `EPROTO` (the daemon broke the protocol), `ECONNREFUSED` (could not
 * connect), `EADDRINUSE` (a daemon already listens there). Starting a daemon
 * on a state file another daemon holds fails with `EBUSY`.
 */
export type XenStoreErrorCode = XenStoreErrno | 'ECONNRESET' | 'ESHUTDOWN' | 'EPROTO' | 'ECONNREFUSED' | 'EADDRINUSE';

const CLIENT_CODES: readonly string[] = ['ECONNRESET', 'ESHUTDOWN', 'EPROTO', 'ECONNREFUSED', 'EADDRINUSE'];

function isCode(s: string): s is XenStoreErrorCode {
  return (XENSTORE_ERRNOS as readonly string[]).includes(s) || CLIENT_CODES.includes(s);
}

/** A failed XenStore operation. */
export class XenStoreError extends Error {
  override readonly name = 'XenStoreError';

  constructor(
    /** The error code. */
    readonly code: XenStoreErrorCode,
    message: string,
    /** What was being done, e.g. `read /local/domain/1/name`. */
    readonly operation?: string,
  ) {
    super(operation ? `${operation}: ${message}` : message);
  }

  /** Converts an error thrown by the native layer. Other errors pass through. */
  static fromNative(err: unknown, operation?: string): unknown {
    if (!(err instanceof Error)) return err;
    const code = (err as Error & { code?: unknown }).code;
    if (typeof code !== 'string' || !isCode(code)) return err;
    return new XenStoreError(code, err.message, operation);
  }
}

/** Whether `err` is a XenStoreError with one of the given codes. */
export function isXenStoreError(err: unknown, ...codes: XenStoreErrorCode[]): err is XenStoreError {
  return err instanceof XenStoreError && (codes.length === 0 || codes.includes(err.code));
}
