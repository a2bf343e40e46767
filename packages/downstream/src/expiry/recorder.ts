/**
 * Recording blob accesses: {@link AccessRecorder.record} is cheap and synchronous; the accesses are batched and
 * flushed within `flushDelayMs`, first as journal lines (durably), then as the blobs' modification times. In
 * that order, so a crash in between leaves a line without its time, never a time without a line.
 *
 * Until its time is set, an access is *unsettled*: a sweep must not remove its blob, since the blob's stat does
 * not show the access yet.
 */
import { isPathNotFound, paths, type Digest, type StorageDriver } from '@cascade/registry-core';
import type { Journals } from './journal.js';
import type { ExpiryLogger } from './options.js';

/** Concurrent `driver.touch` calls of a flush. */
const TOUCH_CONCURRENCY = 32;

/** How a blob was accessed, for {@link ExpiryIndex.touch}. */
export type BlobAccess = 'hit' | 'fill';

interface PendingTouch {
  readonly digest: Digest;
  readonly key: string;
  readonly size: number;
  readonly time: number;
}

/** What an {@link AccessRecorder} needs. */
export interface AccessRecorderOptions {
  readonly driver: StorageDriver;
  readonly journals: Journals;
  /** Longest wait before accesses are appended to their journal. */
  readonly flushDelayMs: number;
  /** Cap of the set of digests already journaled in the current bucket. */
  readonly maxTouchedPerBucket: number;
  readonly now: () => number;
  /** Aborted when the index stops: accesses are ignored and no flush is scheduled any more. */
  readonly signal: AbortSignal;
  readonly log: ExpiryLogger | undefined;
}

/** Journals accesses and sets the blobs' times (see the module comment). */
export class AccessRecorder {
  readonly #driver: StorageDriver;
  readonly #journals: Journals;
  readonly #flushDelayMs: number;
  readonly #maxTouchedPerBucket: number;
  readonly #now: () => number;
  readonly #signal: AbortSignal;
  readonly #log: ExpiryLogger | undefined;

  /** Digests already journaled in {@link #touchedBucket}; only dedups, never decides a removal. */
  #touched = new Set<string>();
  #touchedBucket = Number.NaN;
  /** Accesses not yet appended, by bucket start. */
  #pending = new Map<number, PendingTouch[]>();
  /** Digests with a touch not yet reflected in their modification time (pending or being flushed). */
  readonly #unsettled = new Map<string, number>();
  /** Where settled digests are also recorded while a sweep batch is being stat'ed ({@link watchSettled}). */
  #settledDuringBatch: Set<string> | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushFailures = 0;
  #flushChain: Promise<void> = Promise.resolve();

  constructor(options: AccessRecorderOptions) {
    this.#driver = options.driver;
    this.#journals = options.journals;
    this.#flushDelayMs = options.flushDelayMs;
    this.#maxTouchedPerBucket = options.maxTouchedPerBucket;
    this.#now = options.now;
    this.#signal = options.signal;
    this.#log = options.log;
  }

  /**
   * Records an access at `now()`, to be flushed within `flushDelayMs`. A hit is journaled once per bucket; a
   * fill always. Ignored once the index stops.
   */
  record(digest: Digest, size: number, access: BlobAccess): void {
    if (this.#signal.aborted) return;
    const time = this.#now();
    const bucket = this.#journals.bucketOf(time);
    if (bucket !== this.#touchedBucket) {
      this.#touched = new Set();
      this.#touchedBucket = bucket;
    }
    const key = digest.toString();
    if (access !== 'fill' && this.#touched.has(key)) return;
    // Past the cap the set is dropped, not made LRU: a cleared set costs duplicate lines, never lost ones.
    if (this.#touched.size >= this.#maxTouchedPerBucket) this.#touched = new Set();
    this.#touched.add(key);
    this.#unsettled.set(key, (this.#unsettled.get(key) ?? 0) + 1);
    let batch = this.#pending.get(bucket);
    if (batch === undefined) {
      batch = [];
      this.#pending.set(bucket, batch);
    }
    batch.push({ digest, key, size, time });
    this.#scheduleFlush(this.#flushDelayMs);
  }

  /** Forgets that a blob was journaled in this bucket (it is gone), so that its next access is journaled. */
  forget(key: string): void {
    this.#touched.delete(key);
  }

  /** Whether an access to the blob is not yet reflected in its modification time. */
  isUnsettled(key: string): boolean {
    return this.#unsettled.has(key);
  }

  /**
   * From now until the returned function is called, adds to `settled` the digests whose time gets set: a stat
   * taken meanwhile may predate the new time. One watch at a time (the sweep's).
   */
  watchSettled(settled: Set<string>): () => void {
    this.#settledDuringBatch = settled;
    return () => {
      this.#settledDuringBatch = undefined;
    };
  }

  /**
   * Appends the pending accesses to their journals and sets the blobs' times. Rejects when a journal cannot be
   * written; the accesses stay pending and are retried by a later flush. Flushes run one after the other.
   */
  flush(): Promise<void> {
    const run = this.#flushChain.then(() => this.#flushNow());
    this.#flushChain = run.catch(() => undefined);
    return run;
  }

  /** Cancels the scheduled flush, if any. */
  cancelTimer(): void {
    clearTimeout(this.#flushTimer);
  }

  #scheduleFlush(delayMs: number): void {
    if (this.#flushTimer !== undefined || this.#signal.aborted) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.flush().catch((err: unknown) => this.#log?.error({ err }, 'expiry journal flush failed; will retry'));
    }, delayMs);
    this.#flushTimer.unref();
  }

  async #flushNow(): Promise<void> {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#pending.size === 0) return;
    const batches = this.#pending;
    this.#pending = new Map();
    const written: PendingTouch[] = [];
    let failure: unknown;
    for (const [bucket, entries] of [...batches].sort((a, b) => a[0] - b[0])) {
      if (failure !== undefined) {
        this.#requeue(bucket, entries);
        continue;
      }
      const text = entries.map((e) => `${e.key} ${e.size}\n`).join('');
      try {
        await this.#journals.append(this.#journals.forBucket(bucket), text);
        written.push(...entries);
      } catch (err) {
        failure = err;
        this.#requeue(bucket, entries);
      }
    }
    // Times only after the lines are durable: a time without its line could never expire.
    await forEachLimit(written, TOUCH_CONCURRENCY, async (entry) => {
      try {
        await this.#driver.touch(paths.blobData(entry.digest), new Date(entry.time));
      } catch (err) {
        // A missing blob was removed meanwhile; its line is dropped by the sweep.
        if (!isPathNotFound(err)) this.#log?.debug({ err, digest: entry.key }, 'cannot set blob access time');
      } finally {
        this.#settle(entry.key);
      }
    });
    if (failure !== undefined) {
      this.#flushFailures += 1;
      this.#scheduleFlush(Math.min(30_000, this.#flushDelayMs * 2 ** this.#flushFailures));
      throw failure;
    }
    this.#flushFailures = 0;
  }

  #requeue(bucket: number, entries: PendingTouch[]): void {
    const later = this.#pending.get(bucket);
    this.#pending.set(bucket, later ? [...entries, ...later] : entries);
  }

  #settle(key: string): void {
    this.#settledDuringBatch?.add(key);
    const n = (this.#unsettled.get(key) ?? 1) - 1;
    if (n <= 0) this.#unsettled.delete(key);
    else this.#unsettled.set(key, n);
  }
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next] as T;
      next += 1;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
