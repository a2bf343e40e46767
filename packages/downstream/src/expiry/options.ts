/**
 * The options of the expiry index, their defaults and their checks: {@link resolveOptions} turns what a caller
 * gives into the {@link ExpirySettings} every part of the index reads.
 */
import type { Logger } from 'pino';
import { CASCADE_DIRS, type Digest, type StorageDriver } from '@cascade/registry-core';

/**
 * Folder of the index's files. Below the registry root so that every driver accepts it, and named with a
 * leading `_` so that distribution, which skips such folders, never takes it for registry data.
 */
export const EXPIRY_DIRECTORY = CASCADE_DIRS.expiry;

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
  /** The region this node belongs to (several nodes on one storage folder). */
  region?: ExpiryRegion;
}

/**
 * What the index needs from a region of nodes on one shared storage folder (see `region/coordinator.ts`): each
 * node journals into its own files, one node at a time sweeps, pins hold region-wide, and the byte total is the
 * region's.
 */
export interface ExpiryRegion {
  /** Tags this node's journal files (letters and digits). */
  readonly journalTag: string;
  /** Runs `sweep` if this node is the region's sweeper now; undefined when it is not (or Redis is away). */
  exclusiveSweep<T>(intervalMs: number, sweep: () => Promise<T>): Promise<T | undefined>;
  /** Of `keys` (digests as text), those a node of the region pins; undefined when unknown. */
  pinned(keys: readonly string[]): Promise<Set<string> | undefined>;
  addBytes(delta: number): void;
  setBytes(bytes: number): void;
  /** The region's byte total; undefined when unknown. */
  bytes(): Promise<number | undefined>;
}

/** {@link ExpiryOptions} checked, with every default applied. */
export interface ExpirySettings {
  readonly driver: StorageDriver;
  readonly ttlMs: number | undefined;
  readonly maxSizeBytes: number | undefined;
  readonly sweepIntervalMs: number;
  readonly bucketMs: number;
  readonly now: () => number;
  readonly remove: ExpiryOptions['remove'];
  readonly log: ExpiryLogger | undefined;
  readonly flushDelayMs: number;
  readonly maxTouchedPerBucket: number;
  readonly reconcileBlobsPerSecond: number;
  readonly reconcileIntervalMs: number;
  readonly maxJournalFiles: number;
  readonly region: ExpiryRegion | undefined;
}

/**
 * Checks `options` and applies the defaults.
 * @throws RangeError for a non-positive TTL, sweep interval, bucket or reconciliation pace, or a negative quota.
 */
export function resolveOptions(options: ExpiryOptions): ExpirySettings {
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
  const reconcileBlobsPerSecond = options.reconcileBlobsPerSecond ?? DEFAULT_RECONCILE_BLOBS_PER_SECOND;
  if (!(reconcileBlobsPerSecond > 0)) throw new RangeError(`reconcileBlobsPerSecond must be positive, got ${reconcileBlobsPerSecond}`);
  const ttlBuckets = ttlMs === undefined ? 0 : Math.ceil(ttlMs / bucketMs);
  return {
    driver: options.driver,
    ttlMs,
    maxSizeBytes,
    sweepIntervalMs: options.sweepIntervalMs,
    bucketMs,
    now: options.now ?? Date.now,
    remove: options.remove,
    log: options.logger,
    flushDelayMs: options.flushDelayMs ?? DEFAULT_FLUSH_DELAY_MS,
    maxTouchedPerBucket: Math.max(1, options.maxTouchedPerBucket ?? DEFAULT_MAX_TOUCHED_PER_BUCKET),
    reconcileBlobsPerSecond,
    reconcileIntervalMs: options.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS,
    maxJournalFiles: Math.max(2, options.maxJournalFiles ?? Math.max(256, 2 * ttlBuckets + 16)),
    region: options.region,
  };
}
