// Waiting for the user to stop a foreground command.

/**
 * Resolves with the signal's name on the first SIGINT or SIGTERM, keeping the
 * process alive until then; resolves with `undefined` if `abort` fires first.
 */
export function untilStopped(abort?: AbortSignal): Promise<NodeJS.Signals | undefined> {
  return new Promise((resolve) => {
    const keepalive = setInterval(() => undefined, 2 ** 31 - 1);
    let done = false;
    const finish = (signal: NodeJS.Signals | undefined): void => {
      if (done) return;
      done = true;
      clearInterval(keepalive);
      abort?.removeEventListener('abort', onAbort);
      // Stay listening until this signal's dispatch is over: a listener that
      // checks whether anyone handles the signal (as tsx's does) must still
      // see us, or it re-raises the signal and kills the process.
      setImmediate(() => {
        process.off('SIGINT', finish);
        process.off('SIGTERM', finish);
      });
      resolve(signal);
    };
    const onAbort = (): void => finish(undefined);
    process.on('SIGINT', finish);
    process.on('SIGTERM', finish);
    if (abort?.aborted) finish(undefined);
    else abort?.addEventListener('abort', onAbort);
  });
}
