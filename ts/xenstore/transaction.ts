// Transactions with retry on EAGAIN.
import { setTimeout as sleep } from 'node:timers/promises';

import type { NativeXsClient } from '../native.js';
import { isXenStoreError } from './errors.js';
import { NodeOps, call } from './ops.js';

/** Node operations inside one XenStore transaction. */
export class Transaction extends NodeOps {
  /** @internal */
  constructor(
    protected readonly native: NativeXsClient,
    protected readonly tx: number,
  ) {
    super();
  }
}

/** How a transaction is retried when its commit conflicts (EAGAIN). */
export interface RetryOptions {
  /**
   * Attempts in all, the first included (default: unbounded, as libxl
   * retries a conflicting transaction until it commits). A conflict means
   * another writer made progress, so retrying cannot livelock the store;
   * set a bound where giving up is better than waiting.
   */
  readonly maxAttempts?: number;
  /** Upper bound of the first wait, in ms (default 1); doubles each retry. */
  readonly baseDelayMs?: number;
  /** Longest wait between attempts, in ms (default 200). */
  readonly maxDelayMs?: number;
  /** Source of randomness for the jitter, in [0, 1) (default Math.random). */
  readonly random?: () => number;
}

/**
 * Runs `body` in a transaction and commits it. On EAGAIN (a conflicting
 * change, at commit or anywhere in the body) the whole body runs again after
 * a bounded, jittered wait ("full jitter": uniform between 0 and the doubled
 * bound, at most `maxDelayMs`), until it commits or `maxAttempts` is reached;
 * then the EAGAIN error is thrown. Any other error aborts the transaction
 * and is thrown as is.
 */
export async function runTransaction<T>(
  native: NativeXsClient,
  body: (tx: Transaction) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const maxAttempts = options.maxAttempts ?? Number.POSITIVE_INFINITY;
  const base = options.baseDelayMs ?? 1;
  const cap = options.maxDelayMs ?? 200;
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    const handle = await call('transaction start', () => native.transactionStart());
    let result: T;
    try {
      result = await body(new Transaction(native, handle));
    } catch (err) {
      await native.transactionEnd(handle, false).catch(() => undefined);
      if (!isXenStoreError(err, 'EAGAIN') || attempt >= maxAttempts) throw err;
      await sleep(random() * Math.min(cap, base * 2 ** Math.min(attempt - 1, 30)));
      continue;
    }
    try {
      await call('transaction commit', () => native.transactionEnd(handle, true));
      return result;
    } catch (err) {
      if (!isXenStoreError(err, 'EAGAIN') || attempt >= maxAttempts) throw err;
      await sleep(random() * Math.min(cap, base * 2 ** Math.min(attempt - 1, 30)));
    }
  }
}
