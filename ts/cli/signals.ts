// Waiting for the user to stop a foreground command.

/**
 * Resolves with the signal's name on the first SIGINT or SIGTERM, keeping the
 * process alive until then; resolves with `undefined` if `abort` fires first.
 */
export function untilStopped(abort?: AbortSignal): Promise<NodeJS.Signals | undefined> {
  return new Promise((resolve) => {
    const keepalive = setInterval(() => undefined, 2 ** 31 - 1);
    const finish = (signal: NodeJS.Signals | undefined): void => {
      clearInterval(keepalive);
      process.off('SIGINT', finish);
      process.off('SIGTERM', finish);
      abort?.removeEventListener('abort', onAbort);
      resolve(signal);
    };
    const onAbort = (): void => finish(undefined);
    process.on('SIGINT', finish);
    process.on('SIGTERM', finish);
    if (abort?.aborted) finish(undefined);
    else abort?.addEventListener('abort', onAbort);
  });
}
