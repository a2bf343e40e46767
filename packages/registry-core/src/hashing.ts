/**
 * A digest computed beside the JavaScript thread: a cold fill hashes every byte it receives, and SHA-256 was two
 * thirds of its main thread's work. The native addon (`native/hash.c`) runs OpenSSL's digest (Node's own) on
 * libuv's thread pool, straight from the caller's buffers: no copy, no worker isolate. Updates queued while one
 * runs go to the pool together, in order. Without the addon (not built) the same interface hashes on the calling
 * thread with node:crypto.
 */
import { createHash } from 'node:crypto';
import { Digest, type DigestAlgorithm } from './digest.js';
import { loadAddon } from './native.js';

/** A running digest of a stream of buffers. */
export interface StreamHash {
  /**
   * Hashes `chunks` after everything given before. Resolves once they are hashed: until then the buffers must
   * neither change nor be reused.
   */
  update(chunks: readonly Buffer[]): Promise<void>;
  /** Hashes `chunk` now, on this thread (no update may be pending). */
  updateSync(chunk: Buffer): void;
  /** The digest of everything hashed (no update may be pending); the hash is finished. */
  digest(): Digest;
}

/** @internal The addon `cascade_hash` (src/pump.ts uses its pump). */
export interface HashAddon {
  create(algorithm: string): object;
  update(handle: object, chunks: readonly Buffer[], done: (err: Error | null) => void): void;
  updateSync(handle: object, chunk: Buffer): void;
  digest(handle: object): string;
  pump(
    handle: object,
    socketFd: number,
    fileFd: number,
    position: number,
    length: number,
    idleMs: number,
    gatherMs: number,
    maxDelayMs: number,
    batchBytes: number,
    onProgress: (bytes: number) => void,
    onDone: (result: { received: number; written: number; where?: string; message?: string; errno?: number }) => void,
  ): object;
  pumpStop(pump: object): void;
}

let loaded: HashAddon | string | undefined;

function load(): HashAddon | string {
  return (loaded ??= loadAddon<HashAddon>('cascade_hash'));
}

/** @internal The addon and the native handle behind `hash`, when it runs on the pool (src/pump.ts). */
export function nativeHash(hash: StreamHash): { addon: HashAddon; handle: object } | undefined {
  return hash instanceof PoolHash ? hash.native() : undefined;
}

/** Why digests are computed on the calling thread, or undefined when they go to the thread pool. */
export function whyHashingOnThread(): string | undefined {
  const addon = load();
  return typeof addon === 'string' ? addon : undefined;
}

/** A new stream hash: on the thread pool when the addon is built, else on this thread. */
export function streamHash(algorithm: DigestAlgorithm, where: 'pool' | 'thread' = 'pool'): StreamHash {
  const native = where === 'pool' ? load() : undefined;
  return native !== undefined && typeof native !== 'string' ? new PoolHash(native, algorithm) : new ThreadHash(algorithm);
}

class PoolHash implements StreamHash {
  private readonly handle: object;
  private running = false;
  private queue: { chunks: readonly Buffer[]; resolve: () => void; reject: (err: Error) => void }[] = [];
  private failed: Error | undefined;

  constructor(
    private readonly addon: HashAddon,
    private readonly algorithm: DigestAlgorithm,
  ) {
    this.handle = addon.create(algorithm);
  }

  update(chunks: readonly Buffer[]): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ chunks, resolve, reject });
      if (!this.running) this.next();
    });
  }

  /** Sends every queued update to the pool as one job. */
  private next(): void {
    const batch = this.queue.splice(0);
    const buffers = batch.flatMap((u) => u.chunks);
    this.running = true;
    const fail = (err: Error) => {
      this.failed = err;
      for (const u of [...batch, ...this.queue.splice(0)]) u.reject(err);
    };
    try {
      this.addon.update(this.handle, buffers, (err) => {
        this.running = false;
        if (err) return fail(err);
        for (const u of batch) u.resolve();
        if (this.queue.length > 0) this.next();
      });
    } catch (err) {
      // Refused at once (a finished hash, no memory): nothing went to the pool.
      this.running = false;
      fail(err as Error);
    }
  }

  updateSync(chunk: Buffer): void {
    this.idle();
    this.addon.updateSync(this.handle, chunk);
  }

  native(): { addon: HashAddon; handle: object } {
    // A pump refuses the handle while an update runs (the addon's own check).
    return { addon: this.addon, handle: this.handle };
  }

  digest(): Digest {
    this.idle();
    return Digest.parse(`${this.algorithm}:${this.addon.digest(this.handle)}`);
  }

  private idle(): void {
    if (this.failed) throw this.failed;
    if (this.running || this.queue.length > 0) throw new Error('an update of this hash is still pending');
  }
}

class ThreadHash implements StreamHash {
  private readonly hash;

  constructor(private readonly algorithm: DigestAlgorithm) {
    this.hash = createHash(algorithm);
  }

  update(chunks: readonly Buffer[]): Promise<void> {
    for (const c of chunks) this.hash.update(c);
    return Promise.resolve();
  }

  updateSync(chunk: Buffer): void {
    this.hash.update(chunk);
  }

  digest(): Digest {
    return Digest.fromHash(this.algorithm, this.hash);
  }
}
