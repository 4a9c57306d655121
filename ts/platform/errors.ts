// Platform errors: grant operations fail with Xen's GNTST names, event
// channels with errno names, as Linux's Xen devices report them.

/** GNTST status codes (grant_table.h). */
export const GNTST = {
  okay: 0,
  general_error: -1,
  bad_domain: -2,
  bad_gntref: -3,
  bad_handle: -4,
  bad_virt_addr: -5,
  bad_dev_addr: -6,
  no_device_space: -7,
  permission_denied: -8,
  bad_page: -9,
  bad_copy_arg: -10,
  address_too_big: -11,
  eagain: -12,
  no_space: -13,
} as const;

/** Name of a GNTST status, e.g. `GNTST_bad_gntref`. */
export function gntstName(status: number): string {
  const entry = Object.entries(GNTST).find(([, v]) => v === status);
  return entry ? `GNTST_${entry[0]}` : `GNTST_${String(status)}`;
}

/** A failed platform operation: `code` is a GNTST name or an errno name. */
export class PlatformError extends Error {
  override readonly name = 'PlatformError';

  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  /** Converts an error thrown by the native layer. */
  static fromNative(err: unknown): unknown {
    if (!(err instanceof Error)) return err;
    const m = /^(GNTST_[a-z_]+|E[A-Z0-9]+): (.*)$/s.exec(err.message);
    if (!m?.[1]) return err;
    return new PlatformError(m[1], m[2] ?? m[1]);
  }
}

/** Runs a native call, turning its failure into a PlatformError. */
export function platformCall<T>(run: () => T): T {
  try {
    return run();
  } catch (err) {
    throw PlatformError.fromNative(err);
  }
}

/** Async form of {@link platformCall}. */
export async function platformCallAsync<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw PlatformError.fromNative(err);
  }
}
