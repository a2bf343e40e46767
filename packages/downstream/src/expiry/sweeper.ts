/**
 * The sweep of the expiry index: it removes the blobs whose TTL passed (journals older than the TTL, oldest
 * first), then, while the cache is above its quota, the least recently used ones (oldest journals first, then
 * journal order), then has the journals compacted when there are too many.
 *
 * A journal line names a blob; the blob's stat says whether the line still counts: a blob that is gone, or
 * whose modification time is past the journal's range (a newer journal has its line), is dropped.
 */
import { performance } from 'node:perf_hooks';
import { isPathNotFound, type Digest, type FileInfo } from '@cascade/registry-core';
import type { JournalFile, Journals } from './journal.js';
import { parseLine, statBlob, type ParsedLine } from './lines.js';
import type { ExpirySettings } from './options.js';
import type { Pins } from './pins.js';
import type { AccessRecorder } from './recorder.js';
import type { StateFile } from './state-file.js';
import type { Totals } from './totals.js';

/** What one {@link ExpiryIndex.sweep} did. */
export interface SweepResult {
  /** Blobs removed because their TTL passed. */
  expired: number;
  /** Blobs removed to get under the quota. */
  evicted: number;
  /** Bytes of the removed blobs (their size on storage when removed). */
  bytesFreed: number;
}

/** What a {@link Sweeper} needs: the settings it reads, and the parts of the index it consults and updates. */
export interface SweeperOptions {
  readonly settings: Pick<ExpirySettings, 'driver' | 'ttlMs' | 'maxSizeBytes' | 'now' | 'remove' | 'log' | 'region' | 'sweepIntervalMs'>;
  readonly journals: Journals;
  /** Flushed before a sweep; its unsettled accesses protect their blobs. */
  readonly recorder: AccessRecorder;
  readonly pins: Pins;
  readonly totals: Totals;
  /** Saved after a sweep that removed blobs. */
  readonly state: StateFile;
  /** Aborted when the index stops: the sweep ends after the batch at hand. */
  readonly signal: AbortSignal;
}

/** Runs sweeps, one at a time, on demand or on a timer. */
export class Sweeper {
  readonly #parts: SweeperOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<SweepResult> | undefined;

  constructor(options: SweeperOptions) {
    this.#parts = options;
  }

  /** The running sweep, if any. */
  get running(): Promise<SweepResult> | undefined {
    return this.#running;
  }

  /** Sweeps every `intervalMs` (the timer does not keep the process alive). */
  startTimer(intervalMs: number): void {
    this.#timer = setInterval(() => {
      this.sweep().catch((err: unknown) => this.#parts.settings.log?.error({ err }, 'expiry sweep failed'));
    }, intervalMs);
    this.#timer.unref();
  }

  cancelTimer(): void {
    clearInterval(this.#timer);
  }

  /**
   * Sweeps now (see the module comment); concurrent calls share one run. In a region, only when this node is
   * the region's sweeper for this interval (see `ExpiryRegion.exclusiveSweep`); otherwise nothing is removed.
   */
  sweep(): Promise<SweepResult> {
    if (this.#running) return this.#running;
    const region = this.#parts.settings.region;
    const work = region ? this.#regionSweep(region) : this.#sweepNow();
    const run = work.finally(() => {
      this.#running = undefined;
    });
    this.#running = run;
    return run;
  }

  /** A sweep of the region's storage, if this node is the region's sweeper now, with the region's byte total. */
  async #regionSweep(region: NonNullable<ExpirySettings['region']>): Promise<SweepResult> {
    const { totals, settings } = this.#parts;
    // Every node takes the region's total before each sweep interval; a Redis that lost it gets this node's.
    const bytes = await region.bytes();
    if (bytes !== undefined) totals.bytes = bytes;
    else region.setBytes(totals.bytes);
    return (await region.exclusiveSweep(settings.sweepIntervalMs, () => this.#sweepNow())) ?? { expired: 0, evicted: 0, bytesFreed: 0 };
  }

  async #sweepNow(): Promise<SweepResult> {
    const { settings, journals, recorder, totals, state, signal } = this.#parts;
    const { ttlMs, maxSizeBytes: quota, log } = settings;
    const result: SweepResult = { expired: 0, evicted: 0, bytesFreed: 0 };
    try {
      await recorder.flush();
    } catch (err) {
      // Pending accesses stay unsettled, so their blobs are protected: sweeping without them is safe.
      log?.warn({ err }, 'expiry journal flush failed before sweep');
    }
    const started = performance.now();
    let files = await journals.list(true);
    const now = settings.now();
    if (ttlMs !== undefined) {
      const horizon = now - ttlMs;
      for (const file of files) {
        if (signal.aborted || file.end > horizon) break;
        await this.#processJournal(file, 'expire', now, result);
      }
    }
    if (quota !== undefined && totals.bytes > quota) {
      files = await journals.list(false);
      for (const file of files) {
        if (signal.aborted || totals.bytes <= quota) break;
        await this.#processJournal(file, 'evict', now, result);
      }
      if (totals.bytes > quota) {
        log?.warn({ totalBytes: totals.bytes, maxSizeBytes: quota }, 'cache above its quota: remaining blobs are pinned or just accessed');
      }
    }
    await journals.compact(now);
    if (result.expired + result.evicted > 0) {
      log?.info({ ...result, totalBytes: totals.bytes, ms: Math.round(performance.now() - started) }, 'expiry sweep');
      await state.save(totals.bytes);
    }
    return result;
  }

  /**
   * Handles the lines of one journal from its head: drops those of missing or superseded blobs, removes the
   * expired (or, in `evict` mode, least recently used) ones, keeps the rest. Lines of pinned or just-accessed
   * blobs are re-appended to the same journal (still in its range), to be retried by the next sweep.
   */
  async #processJournal(file: JournalFile, mode: 'expire' | 'evict', now: number, result: SweepResult): Promise<void> {
    const { settings, journals, recorder, pins, totals, signal } = this.#parts;
    const { driver, ttlMs } = settings;
    const head = await journals.readHead(file);
    let consumed = head;
    const keep: string[] = [];
    let reserved = 0;
    const quota = settings.maxSizeBytes ?? Infinity;
    lines: for await (const batch of journals.lines(file, head)) {
      if (signal.aborted) break;
      const parsed = batch.map(parseLine);
      const settled = new Set<string>();
      const unwatch = recorder.watchSettled(settled);
      let infos: (FileInfo | undefined)[];
      try {
        infos = await Promise.all(parsed.map((p) => (p.digest ? statBlob(driver, p.digest) : undefined)));
      } finally {
        unwatch();
      }
      // In a region, a blob another node serves or fills is pinned there; when Redis cannot say, every blob is.
      const region = settings.region;
      const keys = parsed.flatMap((p) => (p.digest ? [p.key] : []));
      const regionPins = region ? ((await region.pinned(keys)) ?? new Set(keys)) : undefined;
      const removals: { parsed: ParsedLine; digest: Digest; size: number }[] = [];
      // A blob may have several lines in one batch (a restart journals again); its stat is shared, so only the
      // first may remove it, or its bytes would be counted twice.
      const chosen = new Set<string>();
      let stop = false;
      // Decisions are taken in line order and in one synchronous pass, so that a pin or touch cannot slip
      // between a check and the remove() call that follows it.
      for (const [i, p] of parsed.entries()) {
        if (mode === 'evict' && totals.bytes - reserved <= quota) {
          stop = true;
          break;
        }
        consumed = p.line.end;
        const info = infos[i];
        if (p.digest === undefined || info === undefined) continue; // torn line, or blob already gone
        const time = info.modTime.getTime();
        if (time >= file.end) continue; // accessed later: a newer journal has its line
        if (
          (mode === 'expire' && ttlMs !== undefined && time + ttlMs > now) ||
          pins.has(p.key) ||
          regionPins?.has(p.key) === true ||
          recorder.isUnsettled(p.key) ||
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
          const outcome = await this.#remove(digest, p.key);
          reserved -= size;
          if (outcome === 'failed') {
            keep.push(p.line.text);
            return;
          }
          recorder.forget(p.key);
          if (outcome === 'kept') return; // the line is consumed, the blob stays and keeps counting
          totals.adjust(digest, -size);
          if (outcome === 'gone') return; // deleted by someone else since the stat: gone, but not freed by us
          result.bytesFreed += size;
          if (mode === 'expire') {
            result.expired += 1;
            totals.expirations += 1;
          } else {
            result.evicted += 1;
            totals.evictions += 1;
          }
          settings.log?.debug({ digest: p.key, size, reason: mode }, 'blob removed');
        }),
      );
      if (stop) break lines;
    }
    await journals.consume(file, head, consumed, keep);
  }

  /** Asks the owner to remove a blob: removed, kept by its owner, already gone, or failed (logged). */
  async #remove(digest: Digest, key: string): Promise<'removed' | 'kept' | 'gone' | 'failed'> {
    try {
      return (await this.#parts.settings.remove(digest)) === false ? 'kept' : 'removed';
    } catch (err) {
      if (isPathNotFound(err)) return 'gone';
      this.#parts.settings.log?.warn({ err, digest: key }, 'cannot remove blob; will retry');
      return 'failed';
    }
  }
}
