/**
 * The reconciliation walk of the expiry index, in the background at start-up and then every
 * `reconcileIntervalMs`: it walks every blob, sums their sizes into the total, and journals now (adopts) each
 * blob that no journal accounts for, which the index's invariant otherwise assumes: blobs filled just before a
 * crash, blobs whose journals were lost or deleted, blobs written by another program. A blob adopted this way
 * expires one TTL from now.
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Digest, isPathNotFound, ROOT } from '@cascade/registry-core';
import { DigestFilter } from './digest-filter.js';
import type { JournalFile, Journals } from './journal.js';
import type { ExpirySettings } from './options.js';
import type { AccessRecorder } from './recorder.js';
import type { StateFile } from './state-file.js';
import type { Totals } from './totals.js';

const BLOBS_ROOT = `${ROOT}/blobs`;
/** Shortest possible journal line (`sha256:` + 64 hex + ` 0\n`), to size filters from file sizes. */
const MIN_LINE_BYTES = 73;

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

/** What a {@link Reconciler} needs: the settings it reads, and the parts of the index it consults and updates. */
export interface ReconcilerOptions {
  readonly settings: Pick<ExpirySettings, 'driver' | 'now' | 'log' | 'reconcileBlobsPerSecond' | 'reconcileIntervalMs'>;
  readonly journals: Journals;
  /** Records the adopted blobs' accesses. */
  readonly recorder: AccessRecorder;
  /** Reset from the walk; counts the adopted blobs. */
  readonly totals: Totals;
  /** Saved after a completed walk. */
  readonly state: StateFile;
  /** Aborted when the index stops: the walk is cancelled, and no other is scheduled. */
  readonly signal: AbortSignal;
}

interface JournalDigests {
  readonly file: JournalFile;
  readonly filter: DigestFilter;
}

class StopRequested extends Error {}

/** Runs the walks, one at a time, and schedules the next one after each. */
export class Reconciler {
  readonly #parts: ReconcilerOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<ReconcileResult> | undefined;
  #last: Promise<ReconcileResult> | undefined;

  constructor(options: ReconcilerOptions) {
    this.#parts = options;
  }

  /** The running walk, if any. */
  get running(): Promise<ReconcileResult> | undefined {
    return this.#running;
  }

  /** The running walk, or else the last one; undefined before the first {@link start}. */
  whenReconciled(): Promise<ReconcileResult> | undefined {
    return this.#running ?? this.#last;
  }

  /** Starts a walk now, unless one is running or the index stopped; the next is scheduled when it ends. */
  start(): void {
    if (this.#parts.signal.aborted || this.#running) return;
    const run = this.#reconcile().finally(() => {
      this.#running = undefined;
      this.#last = run;
      if (!this.#parts.signal.aborted && Number.isFinite(this.#parts.settings.reconcileIntervalMs)) {
        this.#timer = setTimeout(() => this.start(), this.#parts.settings.reconcileIntervalMs);
        this.#timer.unref();
      }
    });
    this.#running = run;
  }

  /** Cancels the scheduled walk, if any (a running one ends when the index's signal is aborted). */
  cancelTimer(): void {
    clearTimeout(this.#timer);
  }

  /**
   * Walks every blob, sums their sizes into the total, and records an access to each blob that no journal
   * accounts for: its modification time falls in no journal's range, or that journal has no line for it (per a
   * Bloom filter of the journals, read first). Blobs modified since the walk started are left alone: their
   * access is being journaled by this process.
   */
  async #reconcile(): Promise<ReconcileResult> {
    const { settings, recorder, totals, state, signal } = this.#parts;
    const { driver, log } = settings;
    const started = performance.now();
    const walkStart = settings.now();
    const result: ReconcileResult = { blobs: 0, bytes: 0, adopted: 0, completed: false, durationMs: 0 };
    try {
      const covered = coverage(await this.#loadFilters());
      totals.beginWalk();
      const rate = settings.reconcileBlobsPerSecond;
      const pace = performance.now();
      await driver.walk(BLOBS_ROOT, async (info) => {
        if (signal.aborted) throw new StopRequested();
        const parts = info.path.slice(BLOBS_ROOT.length + 1).split('/');
        if (info.isDir) {
          const alg = parts[0];
          return (alg !== 'sha256' && alg !== 'sha512') || parts.length > 3 ? 'skip' : undefined;
        }
        if (parts.length !== 4 || parts[3] !== 'data') return undefined;
        const digest = Digest.tryParse(`${parts[0]}:${parts[2]}`);
        if (digest === undefined) return undefined;
        totals.walked(info.path);
        result.blobs += 1;
        result.bytes += info.size;
        const time = info.modTime.getTime();
        if (time < walkStart && !covered(digest.toString(), time)) {
          result.adopted += 1;
          totals.adopted += 1;
          recorder.record(digest, info.size, 'hit');
        }
        if (Number.isFinite(rate)) {
          // Sleeps of at least 10 ms: shorter ones cost more in timers than they save in I/O.
          const ahead = (result.blobs / rate) * 1000 - (performance.now() - pace);
          if (ahead >= 10) await sleep(ahead, undefined, { signal: signal }).catch(() => undefined);
        }
        return undefined;
      }).catch((err: unknown) => {
        if (!isPathNotFound(err)) throw err; // no blobs folder yet: nothing to walk
      });
      totals.completeWalk(result.bytes);
      result.completed = true;
    } catch (err) {
      if (!(err instanceof StopRequested) && !signal.aborted) log?.error({ err }, 'expiry reconciliation walk failed');
    } finally {
      totals.endWalk();
      result.durationMs = Math.round(performance.now() - started);
    }
    if (result.completed) {
      log?.info({ ...result, totalBytes: totals.bytes }, 'expiry reconciliation done');
      if (result.adopted > 0) await recorder.flush().catch((err: unknown) => log?.warn({ err }, 'expiry journal flush failed'));
      await state.save(totals.bytes);
    }
    return result;
  }

  /** A Bloom filter of the digests of each journal, read from its head. */
  async #loadFilters(): Promise<JournalDigests[]> {
    const { settings, journals, signal } = this.#parts;
    const { driver } = settings;
    const out: JournalDigests[] = [];
    // A random probe position per walk: a false positive for a blob this time is unlikely to recur next time.
    const seed = randomInt(0, 49);
    for (const file of await journals.list(false)) {
      if (signal.aborted) throw new StopRequested();
      const head = await journals.readHead(file);
      let size = 0;
      try {
        size = (await driver.stat(file.path)).size;
      } catch (err) {
        if (isPathNotFound(err)) continue;
        throw err;
      }
      const filter = new DigestFilter(Math.ceil((size - head) / MIN_LINE_BYTES) + 1, seed);
      for await (const batch of journals.lines(file, head)) {
        for (const line of batch) {
          const space = line.text.indexOf(' ');
          if (space > 0) filter.add(line.text.slice(0, space));
        }
      }
      out.push({ file, filter });
    }
    return out;
  }
}

/**
 * Whether a blob (digest as text) accessed at `time` has a line in a journal whose range holds `time`, given
 * the journals' filters, oldest first.
 */
function coverage(journals: readonly JournalDigests[]): (key: string, time: number) => boolean {
  const maxSpan = journals.reduce((m, j) => Math.max(m, j.file.end - j.file.start), 0);
  return (key, time) => {
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
}
