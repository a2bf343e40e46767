/**
 * A body received, hashed and written off the JavaScript thread: the native pump (`native/pump.c`, in the
 * `cascade_hash` addon). A cold fill hands it the rest of a plain-HTTP body once the head and the first bytes
 * went through JavaScript: one thread reads the socket into 2 MiB batches, one hashes them and one writes them
 * to the partial file, and JavaScript only hears of each written batch (its followers send it). The JavaScript
 * way (a ring of receive buffers, an event per read, the hash and the writes as jobs on libuv's pool) costs a hop
 * at 1 Gbit/s, where reads are many and small, about twice the CPU per GiB; on loopback the two cost the same,
 * the pump being a little faster for its thread per step (docs/performance.md).
 */
import { getSystemErrorName } from 'node:util';
import { type StreamHash, nativeHash } from './hashing.js';

/** What {@link pumpBody} reads from and writes to. */
export interface PumpOptions {
  /** The connection's descriptor: non-blocking, its reading stopped in Node; left open. */
  readonly socketFd: number;
  /** The file's descriptor, written with pwrite from `position` on; left open. */
  readonly fileFd: number;
  readonly position: number;
  /** Body bytes to read: never more (the connection stays usable). */
  readonly length: number;
  /** The transfer fails after this long without a byte. */
  readonly idleTimeoutMs: number;
  /** Bytes gathered into one write. */
  readonly batchBytes: number;
  /** A batch not full is written once no byte came for this long (the upstream paused, or the body's tail)... */
  readonly gatherMs: number;
  /** ...or this long after its first byte came (a slow upstream: followers wait no longer for bytes received). */
  readonly maxDelayMs: number;
  /** Called on this thread for each stretch written, in order. */
  readonly onProgress: (bytes: number) => void;
  /** Stops the pump; it still ends with what it received written. */
  readonly signal?: AbortSignal;
}

/**
 * How a pump ended. Every byte received was hashed and written (`received === written`) unless a write failed.
 * `where`: undefined when the whole body came; `read` (the connection ended, failed or went idle), `write` (the
 * file), `hash` (OpenSSL or memory), `stopped` (the signal).
 */
export interface PumpResult {
  readonly received: number;
  readonly written: number;
  readonly where?: 'read' | 'write' | 'hash' | 'stopped';
  readonly error?: Error & { code?: string; errno?: number };
}

/**
 * Pumps running at most at once: each has three threads and 6 MiB of batches. A fill that finds them all busy
 * receives on the JavaScript path.
 */
export const MAX_PUMPS = 64;
let running = 0;

/** True when `hash` can drive a pump now (the addon is built, the hash runs on it, and a pump is free). */
export function canPump(hash: StreamHash): boolean {
  return running < MAX_PUMPS && nativeHash(hash) !== undefined;
}

/**
 * Runs the pump to the body's end, a failure or a stop. `hash` goes on over the bytes (no update may be pending;
 * none may be started until this settles). Rejects only when the pump cannot start.
 */
export function pumpBody(hash: StreamHash, options: PumpOptions): Promise<PumpResult> {
  const native = nativeHash(hash);
  if (!native) return Promise.reject(new Error('the native pump is not available for this hash'));
  const { addon, handle } = native;
  const { signal } = options;
  return new Promise<PumpResult>((resolve, reject) => {
    let pump: object | undefined;
    // A failing progress callback stops the pump: its error is the result's.
    let failure: Error | undefined;
    const onAbort = () => {
      if (pump) addon.pumpStop(pump);
    };
    const onProgress = (bytes: number) => {
      if (failure) return;
      try {
        options.onProgress(bytes);
      } catch (err) {
        failure = err as Error;
        onAbort();
      }
    };
    try {
      pump = addon.pump(
        handle,
        options.socketFd,
        options.fileFd,
        options.position,
        options.length,
        options.idleTimeoutMs,
        options.gatherMs,
        options.maxDelayMs,
        options.batchBytes,
        onProgress,
        (r) => {
          running--;
          signal?.removeEventListener('abort', onAbort);
          const where = r.where as PumpResult['where'];
          const error = where ? Object.assign(new Error(r.message ?? `the pump failed (${where})`), r.errno ? { code: getSystemErrorName(-r.errno), errno: r.errno } : {}) : undefined;
          resolve({
            received: r.received,
            written: r.written,
            ...(failure ? { where: 'stopped' as const, error: failure } : where ? { where, error } : {}),
          });
        },
      );
    } catch (err) {
      reject(err as Error);
      return;
    }
    running++;
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}
