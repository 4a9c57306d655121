// Platform errors: grant operations fail with Xen's GNTST names, event
// channels with errno names, as Linux's Xen devices report them.
import { lazyNative, native } from '../native.js';
import type { GntSt as NativeGntSt } from '../native.js';

/** GNTST status codes (grant_table.h), as the native core defines them: `GntSt.BadGntref` is -3. */
export const GntSt: typeof native.GntSt = lazyNative((binding) => binding.GntSt);
export type GntSt = NativeGntSt;

/** Name of a GNTST status, e.g. `GNTST_bad_gntref` (`GNTST_<n>` if unknown). */
export function gntstName(status: number): string {
  return native.gntstName(status);
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

  /** Converts an error thrown by the native layer (its `code` is a GNTST or errno name). */
  static fromNative(err: unknown): unknown {
    if (!(err instanceof Error)) return err;
    const code = (err as Error & { code?: unknown }).code;
    if (typeof code !== 'string' || !/^(GNTST_[a-z_]+|E[A-Z0-9]+)$/.test(code)) return err;
    return new PlatformError(code, err.message);
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
