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
 *
 * The parts, each in its file: `options.ts` (options, defaults, checks), `journal.ts` and `lines.ts` (the
 * journal files: append, consume, compact; reading lines), `recorder.ts` (accesses batched into journals and
 * blob times), `sweeper.ts` (TTL expiry and LRU eviction), `reconciler.ts` with `digest-filter.ts` (the walk),
 * `totals.ts` (the byte total and counters), `pins.ts`, `state-file.ts` (the saved total), `probe.ts` (the
 * start-up check of modification times). {@link ExpiryIndex}, below, composes them.
 */
import type { Digest } from '@cascade/registry-core';
import { Journals } from './journal.js';
import { resolveOptions, type ExpiryOptions, type ExpirySettings } from './options.js';
import { Pins } from './pins.js';
import { probeTouch } from './probe.js';
import { Reconciler, type ReconcileResult } from './reconciler.js';
import { AccessRecorder, type BlobAccess } from './recorder.js';
import { StateFile } from './state-file.js';
import { Sweeper, type SweepResult } from './sweeper.js';
import { Totals } from './totals.js';

export { EXPIRY_DIRECTORY, type ExpiryLogger, type ExpiryOptions } from './options.js';
export type { BlobAccess } from './recorder.js';
export type { ReconcileResult } from './reconciler.js';
export type { SweepResult } from './sweeper.js';

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
  readonly #settings: ExpirySettings;
  /** Aborted by {@link stop}: every part stops starting work, and a throttled walk does not finish its sleep. */
  readonly #stop = new AbortController();
  readonly #totals = new Totals();
  readonly #pins = new Pins();
  readonly #state: StateFile;
  readonly #recorder: AccessRecorder;
  readonly #sweeper: Sweeper;
  readonly #reconciler: Reconciler;
  #started = false;

  constructor(options: ExpiryOptions) {
    const settings = resolveOptions(options);
    const { driver, now, log } = settings;
    const signal = this.#stop.signal;
    this.#settings = settings;
    const region = settings.region;
    const journals = new Journals({ driver, bucketMs: settings.bucketMs, maxFiles: settings.maxJournalFiles, signal, log, ...(region ? { tag: region.journalTag } : {}) });
    if (region) this.#totals.listener = { adjusted: (d) => region.addBytes(d), walked: (b) => region.setBytes(b) };
    this.#state = new StateFile(driver, now, log);
    this.#recorder = new AccessRecorder({
      driver,
      journals,
      flushDelayMs: settings.flushDelayMs,
      maxTouchedPerBucket: settings.maxTouchedPerBucket,
      now,
      signal,
      log,
    });
    const parts = { journals, recorder: this.#recorder, totals: this.#totals, state: this.#state, signal };
    this.#sweeper = new Sweeper({ settings, pins: this.#pins, ...parts });
    this.#reconciler = new Reconciler({ settings, ...parts });
  }

  /** Length of a journal bucket in ms (the configured or derived value). */
  get bucketMs(): number {
    return this.#settings.bucketMs;
  }

  /**
   * Bytes of the cached blobs. Exact after a reconciliation walk completes (it sums the blobs on storage), kept
   * up to date by fills and removals in between; before the first walk completes it starts from the value saved
   * by the previous process. Fills count only when touched with `'fill'`.
   */
  get totalBytes(): number {
    return this.#totals.bytes;
  }

  /**
   * Loads the saved total, checks that the driver keeps modification times, starts the sweep timer and the
   * background reconciliation walk. Does not wait for the walk ({@link whenReconciled} does).
   * @throws Error when called twice.
   */
  async start(): Promise<void> {
    if (this.#started) throw new Error('ExpiryIndex already started');
    this.#started = true;
    const saved = await this.#state.load();
    if (saved !== undefined) this.#totals.bytes = saved;
    await probeTouch(this.#settings.driver, this.#settings.log);
    this.#sweeper.startTimer(this.#settings.sweepIntervalMs);
    this.#reconciler.start();
    const { ttlMs, maxSizeBytes, bucketMs } = this.#settings;
    this.#settings.log?.info({ ttlMs, maxSizeBytes, bucketMs, totalBytes: this.#totals.bytes }, 'expiry index started');
  }

  /**
   * Stops the timers, cancels a running reconciliation walk, waits for a running sweep, flushes pending accesses
   * and saves the total. Idempotent. The index is not reusable after it.
   */
  async stop(): Promise<void> {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    this.#sweeper.cancelTimer();
    this.#reconciler.cancelTimer();
    await this.#reconciler.running?.catch(() => undefined);
    await this.#sweeper.running?.catch(() => undefined);
    this.#recorder.cancelTimer();
    try {
      await this.flush();
    } catch (err) {
      this.#settings.log?.error({ err }, 'expiry journal flush failed at stop; accesses since the last flush are lost');
    }
    if (this.#started) await this.#state.save(this.#totals.bytes);
  }

  /**
   * Records an access to a stored blob, at `now()`: it will not expire before `now() + ttlMs` and moves to the
   * most recently used end of the LRU order. Cheap and synchronous; the journal is appended within
   * `flushDelayMs`. `access` is `'fill'` when the blob was just stored: only then are its bytes added to
   * {@link totalBytes} (default `'hit'`). Ignored after {@link stop}.
   */
  touch(digest: Digest, size: number, access: BlobAccess = 'hit'): void {
    if (this.#stop.signal.aborted) return;
    if (access === 'fill') this.#totals.adjust(digest, size);
    this.#recorder.record(digest, size, access);
  }

  /**
   * Tells the index that a blob was deleted by someone else (not through `remove`), so that {@link totalBytes}
   * stays right. Its journal lines are dropped by later sweeps.
   */
  removed(digest: Digest, size: number): void {
    this.#totals.adjust(digest, -size);
    this.#recorder.forget(digest.toString());
  }

  /**
   * Protects a blob from removal until the returned function is called (idempotent). Pins nest. Pin for the
   * whole time a blob is served, or written at its data path.
   */
  pin(digest: Digest): () => void {
    return this.#pins.pin(digest);
  }

  /**
   * Appends the pending accesses to their journals (durably) and sets the blobs' modification times. Rejects
   * when a journal cannot be written; the accesses stay pending and are retried by the next flush.
   */
  flush(): Promise<void> {
    return this.#recorder.flush();
  }

  /**
   * Removes the expired blobs (journals older than the TTL, oldest first), then, while {@link totalBytes} is
   * above the quota, the least recently used blobs (oldest journals first, then journal order), then compacts
   * journals when there are too many. Concurrent calls share one run.
   */
  sweep(): Promise<SweepResult> {
    return this.#sweeper.sweep();
  }

  /**
   * The result of the running reconciliation walk, or of the last one; undefined before {@link start}.
   */
  whenReconciled(): Promise<ReconcileResult> | undefined {
    return this.#reconciler.whenReconciled();
  }

  /** Counters since this index was created, and the current {@link totalBytes}. */
  stats(): ExpiryStats {
    const { evictions, expirations, bytes: totalBytes, adopted } = this.#totals;
    return { evictions, expirations, totalBytes, adopted };
  }
}
