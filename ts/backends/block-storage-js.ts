// A disk's storage implemented in TypeScript. The Rust data path serves the
// guest's ring and hands the storage's requests over in batches (one napi
// call per batch); each request is answered on its own, when its promise
// settles. Handlers compose: an object that wraps another handler and
// forwards to it is a handler too.
import { native } from '../native.js';
import type { NativeBlkStorage } from '../native.js';

/** What a storage implemented in TypeScript offers and does. Offsets and lengths are in bytes. */
export interface BlockStorageHandler {
  /** Size in 512-byte sectors. */
  readonly sectors: number;
  /** Writes and discards are refused (and never reach the handler). */
  readonly readOnly?: boolean;
  /**
   * Completed writes may sit in a volatile cache until {@link flush}: the
   * guest is offered `feature-flush-cache`. Default: whether `flush` exists.
   */
  readonly flushCache?: boolean;
  /** The guest is offered discard. Default: whether `discard` exists. */
  readonly discardable?: boolean;
  /**
   * The guest is offered secure discard too (`discard-secure`): a discard
   * with `secure` set must leave the data unrecoverable. Default false: a
   * secure discard is then refused before it reaches the handler.
   */
  readonly discardSecure?: boolean;
  /** Exactly `length` bytes from `offset`. */
  read(offset: number, length: number): Promise<Buffer> | Buffer;
  /** Stores `data` at `offset`. */
  write(offset: number, data: Buffer): Promise<void> | void;
  /** Makes every completed write durable; called only after those writes completed. */
  flush?(): Promise<void> | void;
  /** Forgets `length` bytes from `offset`. */
  discard?(offset: number, length: number, secure: boolean): Promise<void> | void;
}

type BatchRequest = Parameters<Parameters<typeof native.NativeBlkJsStorage.create>[1]>[0][number];

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The native storage of a handler: the batch callback calls the handler
 * for each request and answers it. Requests run concurrently, except that a
 * flush waits for every write and discard received before it.
 */
export function customStorage(handler: BlockStorageHandler): NativeBlkStorage {
  if (!Number.isSafeInteger(handler.sectors) || handler.sectors < 1) {
    throw new RangeError(`a disk has a positive whole number of sectors, got ${String(handler.sectors)}`);
  }
  // Writes and discards not finished yet: what a flush waits for.
  const unfinished = new Set<Promise<unknown>>();

  // `before`: for a flush, the writes and discards received before it.
  const serve = async (req: BatchRequest, before: readonly Promise<unknown>[]): Promise<Buffer | undefined> => {
    switch (req.op) {
      case 'read': {
        const data = await handler.read(req.offset, req.length);
        if (data.length !== req.length) throw new Error(`the read returned ${String(data.length)} bytes, ${String(req.length)} were asked for`);
        return data;
      }
      case 'write':
        await handler.write(req.offset, req.data ?? Buffer.alloc(0));
        return undefined;
      case 'discard':
        if (!handler.discard) throw new Error('discard is not supported');
        await handler.discard(req.offset, req.length, req.secure ?? false);
        return undefined;
      case 'flush':
        await Promise.allSettled(before);
        // Without a volatile cache, completed writes are durable already.
        await handler.flush?.();
        return undefined;
    }
  };

  const onRequests = (requests: BatchRequest[]): void => {
    for (const req of requests) {
      // A handler that throws synchronously fails its request alone.
      const before = req.op === 'flush' ? [...unfinished] : [];
      const done = Promise.resolve().then(() => serve(req, before));
      if (req.op === 'write' || req.op === 'discard') {
        unfinished.add(done);
        void done.finally(() => unfinished.delete(done)).catch(() => undefined);
      }
      done.then(
        (data) => storage.complete(req.tag, undefined, data),
        (err: unknown) => storage.complete(req.tag, message(err)),
      );
    }
  };

  const storage = native.NativeBlkJsStorage.create(
    {
      sectors: handler.sectors,
      readOnly: handler.readOnly ?? false,
      flush: handler.flushCache ?? handler.flush !== undefined,
      discard: handler.discardable ?? handler.discard !== undefined,
      discardSecure: handler.discardSecure ?? false,
    },
    onRequests,
  );
  return storage.storage();
}
