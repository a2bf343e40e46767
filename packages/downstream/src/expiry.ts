/**
 * The expiry and eviction index of a cache node: blobs expire `blobttl` after their last access, and the least
 * recently used ones are evicted when the cache holds more than `maxsize` bytes.
 *
 * The index is built for a million blobs without a million-entry map in memory and without a synchronous walk
 * at start-up. It keeps two facts on storage, using only the {@link StorageDriver} interface:
 *
 * - **Access journals**, one per time bucket: `/docker/registry/v2/_cascade_expiry/<start>-<length>.log`, one
 *   line `<digest> <size>` per blob accessed in `[start, start + length)`, at most once per blob per bucket.
 *   They say *which* blobs may expire when a bucket gets older than the TTL, and give the eviction order.
 * - **The blob's modification time**, set to the access time with `driver.touch` after the journal line is
 *   durable. It says *when* a blob was last accessed, so a line in an old journal whose blob has a newer time
 *   is known to be superseded by a line in a newer journal, with one `stat` and no index of every blob.
 *
 * Invariant: the journal whose range holds a blob's modification time has a line for that blob. Lines are
 * appended before times are set, so a crash in between leaves a line without its time (the blob expires from
 * its previous line, slightly early), never a time without a line. The exceptions (a crash between a fill's
 * commit and its journal flush, journals lost or deleted, blobs written by another program) are found by the
 * reconciliation walk, which runs in the background at start-up and then every `reconcileIntervalMs`.
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { Digest, isPathNotFound, paths, ROOT, type FileInfo, type FileWriter, type StorageDriver } from '@cascade/registry-core';

/**
 * Folder of the index's files. Below the registry root so that every driver accepts it, and named with a
 * leading `_` so that distribution, which skips such folders, never takes it for registry data.
 */
export const EXPIRY_DIRECTORY = `${ROOT}/_cascade_expiry`;

/** Longest default bucket: coarser would make expiry and LRU order too approximate for long TTLs. */
const MAX_DEFAULT_BUCKET_MS = 60 * 60 * 1000;
/** Shortest default bucket: finer would create a journal file per second for nothing. */
const MIN_DEFAULT_BUCKET_MS = 1000;
/** Default batching delay of journal appends: one fsync per window instead of one per access. */
const DEFAULT_FLUSH_DELAY_MS = 200;
/** Default cap of the per-bucket "already journaled" set (about 12 MB at the cap). */
const DEFAULT_MAX_TOUCHED_PER_BUCKET = 100_000;
/** Default reconciliation pace; about 8 minutes for a million blobs, a few syscalls per blob. */
const DEFAULT_RECONCILE_BLOBS_PER_SECOND = 2000;
/** Default period of the reconciliation walk after the start-up one. */
const DEFAULT_RECONCILE_INTERVAL_MS = 24 * 60 * 60 * 1000;
/** Lines handled together in a sweep: their stats and removals run concurrently. */
const SWEEP_BATCH = 256;
/** Concurrent `driver.touch` calls of a flush. */
const TOUCH_CONCURRENCY = 32;
/** Bloom filter bits per journal line (with 7 probes: about 1% false positives). */
const FILTER_BITS_PER_LINE = 10;
const FILTER_PROBES = 7;
/** Shortest possible journal line (`sha256:` + 64 hex + ` 0\n`), to size filters from file sizes. */
const MIN_LINE_BYTES = 73;

const STATE_PATH = `${EXPIRY_DIRECTORY}/state.json`;
const PROBE_PATH = `${EXPIRY_DIRECTORY}/touch-probe`;
const BLOBS_ROOT = `${ROOT}/blobs`;
const JOURNAL_NAME = /^(\d+)-(\d+)\.log$/;
const HEAD_NAME = /^(\d+)-(\d+)\.head$/;

/** The logger methods the index uses (a pino logger or child). */
export type ExpiryLogger = Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;

/** Options of {@link ExpiryIndex}. */
export interface ExpiryOptions {
  /** Where the blobs and the index live. The index writes only below {@link EXPIRY_DIRECTORY}. */
  driver: StorageDriver;
  /** A blob is removed this long after its last access, within one bucket and one sweep. Undefined: never by time. */
  ttlMs?: number;
  /** When the blobs total more bytes than this, the least recently used are evicted. Undefined: no quota. */
  maxSizeBytes?: number;
  /** Period of the automatic sweep (started by {@link ExpiryIndex.start}). */
  sweepIntervalMs: number;
  /**
   * Length of a journal bucket, the granularity of expiry and LRU order. Default `ttlMs / 24` clamped to
   * [1 s, 1 h], or 1 h without a TTL. Changing it between runs is safe: each journal's name carries its length.
   */
  bucketMs?: number;
  /** The clock, in epoch milliseconds (default `Date.now`); injectable for tests. Timers always use real time. */
  now?: () => number;
  /**
   * Deletes a blob. Called only for a blob that is neither pinned nor accessed since it was chosen. A
   * rejection with `PathNotFoundError` means the blob was already gone; any other rejection keeps the blob in
   * the index, to be retried at the next sweep. Resolving `false` means the owner keeps the blob (a mirror's
   * pushed blob): it is dropped from the index, not removed.
   */
  remove: (digest: Digest) => Promise<void | boolean>;
  logger?: ExpiryLogger;
  /** Longest wait before accesses are appended to the journal (default 200 ms). */
  flushDelayMs?: number;
  /**
   * Cap of the set of digests already journaled in the current bucket (default 100 000). Past it the set is
   * cleared, which costs duplicate journal lines, never missed ones.
   */
  maxTouchedPerBucket?: number;
  /** Pace of the reconciliation walk, in blobs per second (default 2000); `Infinity` for no throttling. */
  reconcileBlobsPerSecond?: number;
  /** Period of the reconciliation walk after the start-up one (default 24 h); `Infinity` for start-up only. */
  reconcileIntervalMs?: number;
  /**
   * Journal files above which the sweep merges the two smallest neighbours (default 256, or twice the
   * buckets of a TTL when more). Only matters without a TTL, where journals never expire on their own.
   */
  maxJournalFiles?: number;
}

/** What one {@link ExpiryIndex.sweep} did. */
export interface SweepResult {
  /** Blobs removed because their TTL passed. */
  expired: number;
  /** Blobs removed to get under the quota. */
  evicted: number;
  /** Bytes of the removed blobs (their size on storage when removed). */
  bytesFreed: number;
}

/** Counters of an {@link ExpiryIndex} since it was created (for logs and metrics). */
export interface ExpiryStats {
  /** Blobs removed to get under the quota. */
  evictions: number;
  /** Blobs removed because their TTL passed. */
  expirations: number;
  /** See {@link ExpiryIndex.totalBytes}. */
  totalBytes: number;
  /** Blobs found on storage with no journal line and journaled by the reconciliation walk. */
  adopted: number;
}

/** What one reconciliation walk found. */
export interface ReconcileResult {
  /** Blobs visited. */
  blobs: number;
  /** Their total size: what {@link ExpiryIndex.totalBytes} was reset from. */
  bytes: number;
  /** Blobs with no journal line, journaled now (they expire one TTL from now). */
  adopted: number;
  /** False when the walk was cancelled by {@link ExpiryIndex.stop} or failed. */
  completed: boolean;
  durationMs: number;
}

/** How a blob was accessed, for {@link ExpiryIndex.touch}. */
export type BlobAccess = 'hit' | 'fill';

interface JournalFile {
  readonly name: string;
  readonly start: number;
  /** Exclusive. */
  readonly end: number;
  readonly path: string;
  readonly headPath: string;
}

interface PendingTouch {
  readonly digest: Digest;
  readonly key: string;
  readonly size: number;
  readonly time: number;
}

interface JournalLine {
  readonly text: string;
  /** Byte offset just past the line's newline. */
  readonly end: number;
}

interface ParsedLine {
  readonly line: JournalLine;
  readonly digest: Digest | undefined;
  readonly key: string;
}

class StopRequested extends Error {}

/**
 * The expiry and eviction index of a cache node (see the module comment for the design).
 *
 * Contract:
 * - {@link touch} on every hit and fill; a blob is removed no earlier than `ttlMs` after its last touch (up to
 *   one bucket earlier when it was touched twice in one bucket, since only the first touch is journaled), and
 *   no later than `ttlMs + bucketMs + sweepIntervalMs` after it, once the journal of that touch exists.
 * - A blob is never removed while pinned ({@link pin}), nor between a {@link touch} and the moment that touch is
 *   on storage; a pinned blob that expired is removed at the first sweep after its release.
 * - The schedule survives restarts: it is on storage, and a new index over the same driver continues it.
 * - Memory does not grow with the number of blobs: the per-bucket dedup set, the pending batch and the pins
 *   are bounded by the access rate and concurrency; the reconciliation walk holds ~10 bits per journal line.
 */
export class ExpiryIndex {
  readonly #driver: StorageDriver;
  readonly #ttlMs: number | undefined;
  readonly #maxSizeBytes: number | undefined;
  readonly #sweepIntervalMs: number;
  readonly #bucketMs: number;
  readonly #now: () => number;
  readonly #remove: (digest: Digest) => Promise<void | boolean>;
  readonly #log: ExpiryLogger | undefined;
  readonly #flushDelayMs: number;
  readonly #maxTouchedPerBucket: number;
  readonly #reconcileRate: number;
  readonly #reconcileIntervalMs: number;
  readonly #maxJournalFiles: number;

  #totalBytes = 0;
  #evictions = 0;
  #expirations = 0;
  #adopted = 0;

  /** Digests already journaled in {@link #touchedBucket}; only dedups, never decides a removal. */
  #touched = new Set<string>();
  #touchedBucket = Number.NaN;
  /** Accesses not yet appended, by bucket start. */
  #pending = new Map<number, PendingTouch[]>();
  /** Digests with a touch not yet reflected in their modification time (pending or being flushed): not removable. */
  readonly #unsettled = new Map<string, number>();
  readonly #pins = new Map<string, number>();
  /**
   * Digests whose touch reached storage while the current sweep batch was being stat'ed: their stat may predate
   * the new time, so they are kept, not removed. Only set while a batch is in flight.
   */
  #settledDuringBatch: Set<string> | undefined;
  /** Journals whose end this process knows to be at a line boundary (no torn line from a crash). */
  readonly #clean = new Set<string>();

  #flushTimer: NodeJS.Timeout | undefined;
  #flushFailures = 0;
  #flushChain: Promise<void> = Promise.resolve();
  /** Serializes appends with the sweep's final step on a file (re-append, head move, delete). */
  #journalLock: Promise<void> = Promise.resolve();

  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping: Promise<SweepResult> | undefined;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #reconciling: Promise<ReconcileResult> | undefined;
  #lastReconcile: Promise<ReconcileResult> | undefined;
  /** Path of the last blob the running walk visited; deltas of blobs at or before it are the walk's to add. */
  #walkCursor: string | undefined;
  #walkDelta = 0;
  #started = false;
  #stopping = false;
  /** Aborted by {@link stop}, so that a throttled walk does not finish its sleep first. */
  readonly #stopController = new AbortController();

  constructor(options: ExpiryOptions) {
    const { ttlMs, maxSizeBytes } = options;
    if (ttlMs !== undefined && !(ttlMs > 0)) throw new RangeError(`ttlMs must be positive, got ${ttlMs}`);
    if (maxSizeBytes !== undefined && !(maxSizeBytes >= 0)) throw new RangeError(`maxSizeBytes must be >= 0, got ${maxSizeBytes}`);
    if (!(options.sweepIntervalMs > 0)) throw new RangeError(`sweepIntervalMs must be positive, got ${options.sweepIntervalMs}`);
    const bucketMs =
      options.bucketMs ??
      (ttlMs === undefined
        ? MAX_DEFAULT_BUCKET_MS
        : Math.min(MAX_DEFAULT_BUCKET_MS, Math.max(MIN_DEFAULT_BUCKET_MS, Math.round(ttlMs / 24))));
    if (!Number.isSafeInteger(bucketMs) || bucketMs <= 0) throw new RangeError(`bucketMs must be a positive integer, got ${bucketMs}`);
    this.#driver = options.driver;
    this.#ttlMs = ttlMs;
    this.#maxSizeBytes = maxSizeBytes;
    this.#sweepIntervalMs = options.sweepIntervalMs;
    this.#bucketMs = bucketMs;
    this.#now = options.now ?? Date.now;
    this.#remove = options.remove;
    this.#log = options.logger;
    this.#flushDelayMs = options.flushDelayMs ?? DEFAULT_FLUSH_DELAY_MS;
    this.#maxTouchedPerBucket = Math.max(1, options.maxTouchedPerBucket ?? DEFAULT_MAX_TOUCHED_PER_BUCKET);
    this.#reconcileRate = options.reconcileBlobsPerSecond ?? DEFAULT_RECONCILE_BLOBS_PER_SECOND;
    if (!(this.#reconcileRate > 0)) throw new RangeError(`reconcileBlobsPerSecond must be positive, got ${this.#reconcileRate}`);
    this.#reconcileIntervalMs = options.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
    const ttlBuckets = ttlMs === undefined ? 0 : Math.ceil(ttlMs / bucketMs);
    this.#maxJournalFiles = Math.max(2, options.maxJournalFiles ?? Math.max(256, 2 * ttlBuckets + 16));
  }

  /** Length of a journal bucket in ms (the configured or derived value). */
  get bucketMs(): number {
    return this.#bucketMs;
  }

  /**
   * Bytes of the cached blobs. Exact after a reconciliation walk completes (it sums the blobs on storage), kept
   * up to date by fills and removals in between; before the first walk completes it starts from the value saved
   * by the previous process. Fills count only when touched with `'fill'`.
   */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  /**
   * Loads the saved total, checks that the driver keeps modification times, starts the sweep timer and the
   * background reconciliation walk. Does not wait for the walk ({@link whenReconciled} does).
   * @throws Error when called twice.
   */
  async start(): Promise<void> {
    if (this.#started) throw new Error('ExpiryIndex already started');
    this.#started = true;
    await this.#loadState();
    await this.#probeTouch();
    this.#sweepTimer = setInterval(() => {
      this.sweep().catch((err: unknown) => this.#log?.error({ err }, 'expiry sweep failed'));
    }, this.#sweepIntervalMs);
    this.#sweepTimer.unref();
    this.#startReconcile();
    this.#log?.info(
      { ttlMs: this.#ttlMs, maxSizeBytes: this.#maxSizeBytes, bucketMs: this.#bucketMs, totalBytes: this.#totalBytes },
      'expiry index started',
    );
  }

  /**
   * Stops the timers, cancels a running reconciliation walk, waits for a running sweep, flushes pending accesses
   * and saves the total. Idempotent. The index is not reusable after it.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#stopController.abort();
    clearInterval(this.#sweepTimer);
    clearTimeout(this.#reconcileTimer);
    await this.#reconciling?.catch(() => undefined);
    await this.#sweeping?.catch(() => undefined);
    clearTimeout(this.#flushTimer);
    try {
      await this.flush();
    } catch (err) {
      this.#log?.error({ err }, 'expiry journal flush failed at stop; accesses since the last flush are lost');
    }
    if (this.#started) await this.#saveState();
  }

  /**
   * Records an access to a stored blob, at `now()`: it will not expire before `now() + ttlMs` and moves to the
   * most recently used end of the LRU order. Cheap and synchronous; the journal is appended within
   * `flushDelayMs`. `access` is `'fill'` when the blob was just stored: only then are its bytes added to
   * {@link totalBytes} (default `'hit'`). Ignored after {@link stop}.
   */
  touch(digest: Digest, size: number, access: BlobAccess = 'hit'): void {
    if (this.#stopping) return;
    const time = this.#now();
    const bucket = this.#bucketOf(time);
    if (bucket !== this.#touchedBucket) {
      this.#touched = new Set();
      this.#touchedBucket = bucket;
    }
    const key = digest.toString();
    if (access === 'fill') {
      this.#adjust(digest, size);
    } else if (this.#touched.has(key)) {
      return;
    }
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

  /**
   * Tells the index that a blob was deleted by someone else (not through `remove`), so that {@link totalBytes}
   * stays right. Its journal lines are dropped by later sweeps.
   */
  removed(digest: Digest, size: number): void {
    this.#adjust(digest, -size);
    this.#touched.delete(digest.toString());
  }

  /**
   * Protects a blob from removal until the returned function is called (idempotent). Pins nest. Pin for the
   * whole time a blob is served, or written at its data path.
   */
  pin(digest: Digest): () => void {
    const key = digest.toString();
    this.#pins.set(key, (this.#pins.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#pins.get(key) ?? 1) - 1;
      if (n <= 0) this.#pins.delete(key);
      else this.#pins.set(key, n);
    };
  }

  /**
   * Appends the pending accesses to their journals (durably) and sets the blobs' modification times. Rejects
   * when a journal cannot be written; the accesses stay pending and are retried by the next flush.
   */
  flush(): Promise<void> {
    const run = this.#flushChain.then(() => this.#flushNow());
    this.#flushChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Removes the expired blobs (journals older than the TTL, oldest first), then, while {@link totalBytes} is
   * above the quota, the least recently used blobs (oldest journals first, then journal order), then compacts
   * journals when there are too many. Concurrent calls share one run.
   */
  sweep(): Promise<SweepResult> {
    if (this.#sweeping) return this.#sweeping;
    const run = this.#sweepNow().finally(() => {
      this.#sweeping = undefined;
    });
    this.#sweeping = run;
    return run;
  }

  /**
   * The result of the running reconciliation walk, or of the last one; undefined before {@link start}.
   */
  whenReconciled(): Promise<ReconcileResult> | undefined {
    return this.#reconciling ?? this.#lastReconcile;
  }

  /** Counters since this index was created, and the current {@link totalBytes}. */
  stats(): ExpiryStats {
    return {
      evictions: this.#evictions,
      expirations: this.#expirations,
      totalBytes: this.#totalBytes,
      adopted: this.#adopted,
    };
  }

  // --- journal writes -------------------------------------------------------------------------------------

  #bucketOf(time: number): number {
    return Math.floor(time / this.#bucketMs) * this.#bucketMs;
  }

  #journal(start: number, length: number): JournalFile {
    const name = `${start}-${length}`;
    return {
      name,
      start,
      end: start + length,
      path: `${EXPIRY_DIRECTORY}/${name}.log`,
      headPath: `${EXPIRY_DIRECTORY}/${name}.head`,
    };
  }

  #scheduleFlush(delayMs: number): void {
    if (this.#flushTimer !== undefined || this.#stopping) return;
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
      const file = this.#journal(bucket, this.#bucketMs);
      const text = entries.map((e) => `${e.key} ${e.size}\n`).join('');
      try {
        await this.#locked(() => this.#append(file, text));
        written.push(...entries);
      } catch (err) {
        failure = err;
        this.#requeue(bucket, entries);
      }
    }
    // Times only after the lines are durable: a time without its line could never expire (see module comment).
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

  /** Runs `fn` holding the journal lock. */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#journalLock.then(fn);
    this.#journalLock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Appends complete lines to a journal, creating it if needed. Call with the journal lock held. */
  async #append(file: JournalFile, text: string): Promise<void> {
    let writer: FileWriter;
    try {
      writer = await this.#driver.writer(file.path, { append: true });
    } catch (err) {
      if (!isPathNotFound(err)) throw err;
      await this.#driver.putContent(file.path, Buffer.from(text));
      this.#clean.add(file.name);
      return;
    }
    // A crash may have left a torn last line; a newline first keeps it from swallowing our first line.
    const prefix = writer.size > 0 && !this.#clean.has(file.name) ? '\n' : '';
    this.#clean.delete(file.name);
    try {
      await writer.write(Buffer.from(prefix + text));
      await writer.commit();
    } catch (err) {
      // Never cancel(): on an appending writer it deletes the whole journal.
      await writer.close().catch(() => undefined);
      throw err;
    }
    this.#clean.add(file.name);
  }

  // --- sweep ----------------------------------------------------------------------------------------------

  async #sweepNow(): Promise<SweepResult> {
    const result: SweepResult = { expired: 0, evicted: 0, bytesFreed: 0 };
    try {
      await this.flush();
    } catch (err) {
      // Pending accesses stay unsettled, so their blobs are protected: sweeping without them is safe.
      this.#log?.warn({ err }, 'expiry journal flush failed before sweep');
    }
    const started = performance.now();
    let files = await this.#listJournals(true);
    const now = this.#now();
    if (this.#ttlMs !== undefined) {
      const horizon = now - this.#ttlMs;
      for (const file of files) {
        if (this.#stopping || file.end > horizon) break;
        await this.#processJournal(file, 'expire', now, result);
      }
    }
    const quota = this.#maxSizeBytes;
    if (quota !== undefined && this.#totalBytes > quota) {
      files = await this.#listJournals(false);
      for (const file of files) {
        if (this.#stopping || this.#totalBytes <= quota) break;
        await this.#processJournal(file, 'evict', now, result);
      }
      if (this.#totalBytes > quota) {
        this.#log?.warn({ totalBytes: this.#totalBytes, maxSizeBytes: quota }, 'cache above its quota: remaining blobs are pinned or just accessed');
      }
    }
    await this.#compact(now);
    if (result.expired + result.evicted > 0) {
      this.#log?.info({ ...result, totalBytes: this.#totalBytes, ms: Math.round(performance.now() - started) }, 'expiry sweep');
      await this.#saveState();
    }
    return result;
  }

  /**
   * Handles the lines of one journal from its head: drops those of missing or superseded blobs, removes the
   * expired (or, in `evict` mode, least recently used) ones, keeps the rest. Lines of pinned or just-accessed
   * blobs are re-appended to the same journal (still in its range), to be retried by the next sweep.
   */
  async #processJournal(file: JournalFile, mode: 'expire' | 'evict', now: number, result: SweepResult): Promise<void> {
    const head = await this.#readHead(file);
    let consumed = head;
    const keep: string[] = [];
    let reserved = 0;
    const quota = this.#maxSizeBytes ?? Infinity;
    lines: for await (const batch of readLines(this.#driver, file.path, head)) {
      if (this.#stopping) break;
      const parsed = batch.map(parseLine);
      const settled = new Set<string>();
      this.#settledDuringBatch = settled;
      let infos: (FileInfo | undefined)[];
      try {
        infos = await Promise.all(parsed.map((p) => (p.digest ? this.#statBlob(p.digest) : undefined)));
      } finally {
        this.#settledDuringBatch = undefined;
      }
      const removals: { parsed: ParsedLine; digest: Digest; size: number }[] = [];
      // A blob may have several lines in one batch (a restart journals again); its stat is shared, so only the
      // first may remove it, or its bytes would be counted twice.
      const chosen = new Set<string>();
      let stop = false;
      // Decisions are taken in line order and in one synchronous pass, so that a pin or touch cannot slip
      // between a check and the remove() call that follows it.
      for (const [i, p] of parsed.entries()) {
        if (mode === 'evict' && this.#totalBytes - reserved <= quota) {
          stop = true;
          break;
        }
        consumed = p.line.end;
        const info = infos[i];
        if (p.digest === undefined || info === undefined) continue; // torn line, or blob already gone
        const time = info.modTime.getTime();
        if (time >= file.end) continue; // accessed later: a newer journal has its line
        if (
          (mode === 'expire' && this.#ttlMs !== undefined && time + this.#ttlMs > now) ||
          this.#pins.has(p.key) ||
          this.#unsettled.has(p.key) ||
          settled.has(p.key)
        ) {
          keep.push(p.line.text);
          continue;
        }
        if (chosen.has(p.key)) continue;
        chosen.add(p.key);
        removals.push({ parsed: p, digest: p.digest, size: info.size });
        reserved += info.size;
      }
      await Promise.all(
        removals.map(async ({ parsed: p, digest, size }) => {
          let gone = false;
          try {
            if ((await this.#remove(digest)) === false) {
              // Kept by its owner: the line is consumed, the blob stays and keeps counting towards the total.
              reserved -= size;
              this.#touched.delete(p.key);
              return;
            }
          } catch (err) {
            if (!isPathNotFound(err)) {
              this.#log?.warn({ err, digest: p.key }, 'cannot remove blob; will retry');
              keep.push(p.line.text);
              reserved -= size;
              return;
            }
            gone = true; // deleted by someone else since the stat: its bytes are gone, but not freed by us
          }
          reserved -= size;
          this.#adjust(digest, -size);
          this.#touched.delete(p.key);
          if (gone) return;
          result.bytesFreed += size;
          if (mode === 'expire') {
            result.expired += 1;
            this.#expirations += 1;
          } else {
            result.evicted += 1;
            this.#evictions += 1;
          }
          this.#log?.debug({ digest: p.key, size, reason: mode }, 'blob removed');
        }),
      );
      if (stop) break lines;
    }
    await this.#locked(() => this.#finishJournal(file, head, consumed, keep));
  }

  /**
   * Ends a sweep of one journal: re-appends kept lines, then deletes the journal when nothing is left past
   * `consumed`, or records `consumed` as its head. Call with the journal lock held, so no append is half done.
   */
  async #finishJournal(file: JournalFile, head: number, consumed: number, keep: readonly string[]): Promise<void> {
    let size: number;
    try {
      size = (await this.#driver.stat(file.path)).size;
    } catch (err) {
      if (isPathNotFound(err)) return;
      throw err;
    }
    // Past what was read: lines appended meanwhile, or a torn line from a crash (no newline), which is garbage.
    const tailHasLines = size > consumed && (await containsNewline(this.#driver, file.path, consumed));
    if (!tailHasLines && keep.length === 0) {
      // The head first: a crash between the two deletes leaves a journal read again from 0, which is harmless;
      // the other order could leave a stale head applied to a new journal of the same name.
      await deleteIfExists(this.#driver, file.headPath);
      await deleteIfExists(this.#driver, file.path);
      this.#clean.delete(file.name);
      return;
    }
    if (keep.length > 0) await this.#append(file, keep.map((l) => `${l}\n`).join(''));
    if (consumed !== head) await this.#driver.putContent(file.headPath, Buffer.from(String(consumed)));
  }

  /** Where a journal's unprocessed lines start: its head file, or 0. */
  async #readHead(file: JournalFile): Promise<number> {
    let head: number;
    try {
      head = Number((await this.#driver.getContent(file.headPath)).toString('latin1'));
    } catch (err) {
      if (isPathNotFound(err)) return 0;
      throw err;
    }
    if (!Number.isSafeInteger(head) || head < 0) return 0;
    try {
      // A head past the end belongs to an older journal of the same name: start over (lines are idempotent).
      return head <= (await this.#driver.stat(file.path)).size ? head : 0;
    } catch (err) {
      if (isPathNotFound(err)) return 0;
      throw err;
    }
  }

  async #statBlob(digest: Digest): Promise<FileInfo | undefined> {
    try {
      const info = await this.#driver.stat(paths.blobData(digest));
      return info.isDir ? undefined : info;
    } catch (err) {
      if (isPathNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The journals, oldest first. With `tidy`, deletes head files whose journal is gone (left by a crash). */
  async #listJournals(tidy: boolean): Promise<JournalFile[]> {
    let names: string[];
    try {
      names = await this.#driver.list(EXPIRY_DIRECTORY);
    } catch (err) {
      if (isPathNotFound(err)) return [];
      throw err;
    }
    const files: JournalFile[] = [];
    const logs = new Set<string>();
    const heads: string[] = [];
    for (const path of names) {
      const base = path.slice(EXPIRY_DIRECTORY.length + 1);
      const log = JOURNAL_NAME.exec(base);
      if (log) {
        const start = Number(log[1]);
        const length = Number(log[2]);
        if (Number.isSafeInteger(start) && Number.isSafeInteger(length) && length > 0) {
          files.push(this.#journal(start, length));
          logs.add(`${start}-${length}`);
        }
        continue;
      }
      const head = HEAD_NAME.exec(base);
      if (head) heads.push(`${head[1]}-${head[2]}`);
    }
    if (tidy) {
      for (const name of heads) {
        if (!logs.has(name)) await deleteIfExists(this.#driver, `${EXPIRY_DIRECTORY}/${name}.head`);
      }
    }
    return files.sort((a, b) => a.start - b.start || a.end - b.end);
  }

  /**
   * Keeps the number of journals bounded by merging the two neighbouring past journals with the fewest bytes,
   * dropping the lines of missing or superseded blobs on the way. The merged journal spans both ranges, so the
   * invariant holds; its lines keep their order, so does the LRU order.
   */
  async #compact(now: number): Promise<void> {
    let files = await this.#listJournals(false);
    const current = this.#bucketOf(now);
    while (!this.#stopping && files.length > this.#maxJournalFiles) {
      const past = files.filter((f) => f.end <= current);
      if (past.length < 2) return;
      const sizes = await Promise.all(past.map((f) => this.#driver.stat(f.path).then((i) => i.size, () => 0)));
      let best = 0;
      for (let i = 1; i + 1 < past.length; i += 1) {
        if ((sizes[i] ?? 0) + (sizes[i + 1] ?? 0) < (sizes[best] ?? 0) + (sizes[best + 1] ?? 0)) best = i;
      }
      const a = past[best];
      const b = past[best + 1];
      if (a === undefined || b === undefined) return;
      await this.#merge(a, b);
      files = await this.#listJournals(false);
    }
  }

  async #merge(a: JournalFile, b: JournalFile): Promise<void> {
    const start = Math.min(a.start, b.start);
    const merged = this.#journal(start, Math.max(a.end, b.end) - start);
    const writer = await this.#driver.writer(merged.path);
    try {
      const consumed: number[] = [];
      let out: string[] = [];
      const emit = async (force: boolean): Promise<void> => {
        if (out.length === 0 || (!force && out.length < SWEEP_BATCH * 4)) return;
        await writer.write(Buffer.from(out.join('')));
        out = [];
      };
      for (const file of [a, b]) {
        let offset = await this.#readHead(file);
        for await (const batch of readLines(this.#driver, file.path, offset)) {
          const parsed = batch.map(parseLine);
          const infos = await Promise.all(parsed.map((p) => (p.digest ? this.#statBlob(p.digest) : undefined)));
          for (const [i, p] of parsed.entries()) {
            const info = infos[i];
            offset = p.line.end;
            if (p.digest === undefined || info === undefined || info.modTime.getTime() >= merged.end) continue;
            out.push(`${p.line.text}\n`);
          }
          await emit(false);
        }
        consumed.push(offset);
      }
      await emit(true);
      await this.#locked(async () => {
        // Lines appended to either journal after it was read are copied as they are.
        for (const [i, file] of [a, b].entries()) {
          const tail = await readTail(this.#driver, file.path, consumed[i] ?? 0);
          const complete = tail.lastIndexOf(10);
          if (complete >= 0) await writer.write(tail.subarray(0, complete + 1));
        }
        await writer.commit();
        for (const file of [a, b]) {
          if (file.name === merged.name) continue;
          await deleteIfExists(this.#driver, file.headPath);
          await deleteIfExists(this.#driver, file.path);
          this.#clean.delete(file.name);
        }
        if (merged.name === a.name || merged.name === b.name) await deleteIfExists(this.#driver, merged.headPath);
        this.#clean.add(merged.name);
      });
      this.#log?.debug({ merged: merged.name, from: [a.name, b.name] }, 'expiry journals merged');
    } catch (err) {
      await writer.cancel().catch(() => undefined);
      throw err;
    }
  }

  // --- totals and reconciliation --------------------------------------------------------------------------

  #adjust(digest: Digest, delta: number): void {
    this.#totalBytes = Math.max(0, this.#totalBytes + delta);
    // The running walk has counted (or will count) this blob as it finds it: keep only the deltas it cannot see.
    if (this.#walkCursor !== undefined && paths.blobData(digest) <= this.#walkCursor) this.#walkDelta += delta;
  }

  #startReconcile(): void {
    if (this.#stopping || this.#reconciling) return;
    const run = this.#reconcile().finally(() => {
      this.#reconciling = undefined;
      this.#lastReconcile = run;
      if (!this.#stopping && Number.isFinite(this.#reconcileIntervalMs)) {
        this.#reconcileTimer = setTimeout(() => this.#startReconcile(), this.#reconcileIntervalMs);
        this.#reconcileTimer.unref();
      }
    });
    this.#reconciling = run;
  }

  /**
   * Walks every blob, sums their sizes into {@link totalBytes}, and touches (journals now) each blob that no
   * journal accounts for: its modification time falls in no journal's range, or that journal has no line for it
   * (per a Bloom filter of the journals, read first). Blobs modified since the walk started are left alone:
   * their access is being journaled by this process.
   */
  async #reconcile(): Promise<ReconcileResult> {
    const started = performance.now();
    const walkStart = this.#now();
    const result: ReconcileResult = { blobs: 0, bytes: 0, adopted: 0, completed: false, durationMs: 0 };
    try {
      const journals = await this.#loadFilters();
      const maxSpan = journals.reduce((m, j) => Math.max(m, j.file.end - j.file.start), 0);
      const covered = (key: string, time: number): boolean => {
        // Binary search for the last journal starting at or before `time`, then back over overlapping ones.
        let lo = 0;
        let hi = journals.length;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if ((journals[mid]?.file.start ?? Infinity) <= time) lo = mid + 1;
          else hi = mid;
        }
        for (let i = lo - 1; i >= 0; i -= 1) {
          const j = journals[i];
          if (j === undefined || j.file.start < time - maxSpan) break;
          if (time < j.file.end && j.filter.has(key)) return true;
        }
        return false;
      };
      this.#walkCursor = '';
      this.#walkDelta = 0;
      const rate = this.#reconcileRate;
      const pace = performance.now();
      await this.#driver.walk(BLOBS_ROOT, async (info) => {
        if (this.#stopping) throw new StopRequested();
        const parts = info.path.slice(BLOBS_ROOT.length + 1).split('/');
        if (info.isDir) {
          const alg = parts[0];
          return (alg !== 'sha256' && alg !== 'sha512') || parts.length > 3 ? 'skip' : undefined;
        }
        if (parts.length !== 4 || parts[3] !== 'data') return undefined;
        const digest = Digest.tryParse(`${parts[0]}:${parts[2]}`);
        if (digest === undefined) return undefined;
        this.#walkCursor = info.path;
        result.blobs += 1;
        result.bytes += info.size;
        const time = info.modTime.getTime();
        const key = digest.toString();
        if (time < walkStart && !covered(key, time)) {
          result.adopted += 1;
          this.#adopted += 1;
          this.touch(digest, info.size, 'hit');
        }
        if (Number.isFinite(rate)) {
          // Sleeps of at least 10 ms: shorter ones cost more in timers than they save in I/O.
          const ahead = (result.blobs / rate) * 1000 - (performance.now() - pace);
          if (ahead >= 10) await sleep(ahead, undefined, { signal: this.#stopController.signal }).catch(() => undefined);
        }
        return undefined;
      }).catch((err: unknown) => {
        if (!isPathNotFound(err)) throw err; // no blobs folder yet: nothing to walk
      });
      this.#totalBytes = Math.max(0, result.bytes + this.#walkDelta);
      result.completed = true;
    } catch (err) {
      if (!(err instanceof StopRequested) && !this.#stopping) this.#log?.error({ err }, 'expiry reconciliation walk failed');
    } finally {
      this.#walkCursor = undefined;
      result.durationMs = Math.round(performance.now() - started);
    }
    if (result.completed) {
      this.#log?.info({ ...result, totalBytes: this.#totalBytes }, 'expiry reconciliation done');
      if (result.adopted > 0) await this.flush().catch((err: unknown) => this.#log?.warn({ err }, 'expiry journal flush failed'));
      await this.#saveState();
    }
    return result;
  }

  /** A Bloom filter of the digests of each journal, read from its head, for {@link #reconcile}. */
  async #loadFilters(): Promise<{ file: JournalFile; filter: DigestFilter }[]> {
    const out: { file: JournalFile; filter: DigestFilter }[] = [];
    // A random probe position per walk: a false positive for a blob this time is unlikely to recur next time.
    const seed = randomInt(0, 49);
    for (const file of await this.#listJournals(false)) {
      if (this.#stopping) throw new StopRequested();
      const head = await this.#readHead(file);
      let size = 0;
      try {
        size = (await this.#driver.stat(file.path)).size;
      } catch (err) {
        if (isPathNotFound(err)) continue;
        throw err;
      }
      const filter = new DigestFilter(Math.ceil((size - head) / MIN_LINE_BYTES) + 1, seed);
      for await (const batch of readLines(this.#driver, file.path, head)) {
        for (const line of batch) {
          const space = line.text.indexOf(' ');
          if (space > 0) filter.add(line.text.slice(0, space));
        }
      }
      out.push({ file, filter });
    }
    return out;
  }

  async #loadState(): Promise<void> {
    try {
      const state: unknown = JSON.parse((await this.#driver.getContent(STATE_PATH)).toString('utf8'));
      if (typeof state === 'object' && state !== null && 'totalBytes' in state) {
        const total = state.totalBytes;
        if (typeof total === 'number' && Number.isFinite(total) && total >= 0) this.#totalBytes = total;
      }
    } catch (err) {
      if (!isPathNotFound(err)) this.#log?.warn({ err }, 'unreadable expiry state; the reconciliation walk will recompute it');
    }
  }

  async #saveState(): Promise<void> {
    try {
      const state = { version: 1, totalBytes: this.#totalBytes, savedAt: new Date(this.#now()).toISOString() };
      await this.#driver.putContent(STATE_PATH, Buffer.from(JSON.stringify(state)));
    } catch (err) {
      this.#log?.warn({ err }, 'cannot save expiry state');
    }
  }

  /** Warns when the driver does not keep modification times: hits could not refresh a blob's expiry. */
  async #probeTouch(): Promise<void> {
    const probe = new Date(Date.UTC(2001, 0, 1));
    try {
      await this.#driver.putContent(PROBE_PATH, Buffer.alloc(0));
      await this.#driver.touch(PROBE_PATH, probe);
      const kept = Math.abs((await this.#driver.stat(PROBE_PATH)).modTime.getTime() - probe.getTime()) < 2000;
      await this.#driver.delete(PROBE_PATH);
      if (!kept) {
        this.#log?.warn(
          { driver: this.#driver.name },
          'storage driver does not keep modification times: blobs expire ttl after they were stored, hits do not extend it',
        );
      }
    } catch (err) {
      this.#log?.warn({ err }, 'cannot probe the storage driver for modification times');
    }
  }
}

/** A Bloom filter of digests, hashed from their own (uniformly random) hex: no hashing cost. */
class DigestFilter {
  readonly #bits: Uint32Array;
  readonly #size: number;

  constructor(
    expected: number,
    private readonly offset: number,
  ) {
    this.#size = Math.max(1024, expected * FILTER_BITS_PER_LINE);
    this.#bits = new Uint32Array(Math.ceil(this.#size / 32));
  }

  add(key: string): void {
    const [h1, h2] = this.#hashes(key);
    for (let i = 0; i < FILTER_PROBES; i += 1) {
      const bit = (h1 + i * h2) % this.#size;
      this.#bits[bit >>> 5] = (this.#bits[bit >>> 5] ?? 0) | (1 << (bit & 31));
    }
  }

  has(key: string): boolean {
    const [h1, h2] = this.#hashes(key);
    for (let i = 0; i < FILTER_PROBES; i += 1) {
      const bit = (h1 + i * h2) % this.#size;
      if (((this.#bits[bit >>> 5] ?? 0) & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  #hashes(key: string): [number, number] {
    const at = key.indexOf(':') + 1 + this.offset;
    const h1 = Number.parseInt(key.slice(at, at + 8), 16) || 0;
    const h2 = (Number.parseInt(key.slice(at + 8, at + 16), 16) || 0) | 1;
    return [h1, h2 >>> 0];
  }
}

function parseLine(line: JournalLine): ParsedLine {
  const space = line.text.indexOf(' ');
  const key = space > 0 ? line.text.slice(0, space) : line.text;
  const size = space > 0 ? Number(line.text.slice(space + 1)) : Number.NaN;
  const digest = Number.isSafeInteger(size) && size >= 0 ? Digest.tryParse(key) : undefined;
  return { line, digest, key };
}

/**
 * The complete lines of a file from `offset`, in batches. A last line without its newline (being appended, or
 * torn by a crash) is not returned, so `end` of the last line returned is where a later read must resume.
 */
async function* readLines(driver: StorageDriver, path: string, offset: number): AsyncGenerator<JournalLine[]> {
  let stream: Readable;
  try {
    stream = await driver.reader(path, { offset });
  } catch (err) {
    if (isPathNotFound(err)) return;
    throw err;
  }
  let carry = Buffer.alloc(0);
  let position = offset;
  let batch: JournalLine[] = [];
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const buffer = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
      let from = 0;
      for (let nl = buffer.indexOf(10, from); nl !== -1; nl = buffer.indexOf(10, from)) {
        // Empty lines (left by the newline written after a torn line) are returned too, so offsets advance.
        batch.push({ text: buffer.toString('latin1', from, nl), end: position + nl + 1 });
        from = nl + 1;
        if (batch.length >= SWEEP_BATCH) {
          yield batch;
          batch = [];
        }
      }
      carry = Buffer.from(buffer.subarray(from));
      position += from;
    }
  } finally {
    stream.destroy();
  }
  if (batch.length > 0) yield batch;
}

async function readTail(driver: StorageDriver, path: string, offset: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of (await driver.reader(path, { offset })) as AsyncIterable<Buffer>) parts.push(chunk);
  } catch (err) {
    if (isPathNotFound(err)) return Buffer.alloc(0);
    throw err;
  }
  return Buffer.concat(parts);
}

async function containsNewline(driver: StorageDriver, path: string, offset: number): Promise<boolean> {
  const stream = await driver.reader(path, { offset });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) if (chunk.includes(10)) return true;
    return false;
  } finally {
    stream.destroy();
  }
}

async function deleteIfExists(driver: StorageDriver, path: string): Promise<void> {
  try {
    await driver.delete(path);
  } catch (err) {
    if (!isPathNotFound(err)) throw err;
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
