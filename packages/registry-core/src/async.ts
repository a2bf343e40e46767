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

/**
 * Runs functions one at a time, in the order they were given (a lock for a section that does I/O: appends to a
 * journal or a queue); a function that fails does not stop the next.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn);
    this.#tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}
