/** Small asynchronous building blocks shared by the roles (retry loops, one-at-a-time sections). */

/**
 * Resolves after `ms`, or at once when `signal` aborts (never rejects): a retry loop's wait that a shutdown
 * cuts short, the loop then seeing `signal.aborted`.
 */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
