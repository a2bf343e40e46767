/**
 * Scale measurements of the expiry index (a script, not a unit test):
 *
 *     npx tsc -b packages/downstream && node packages/downstream/dist/test/bench/expiry-scale.js [touches] [buckets]
 *
 * 1. Index overhead at 1M blobs: 1,000,000 `touch(…, 'fill')` across 1000 buckets, flushed per bucket, with the
 *    journals on a real filesystem and the blobs simulated by {@link SyntheticBlobDriver} (so the heap measured
 *    is the index's, not the blobs'); then a sweep that expires the oldest 100,000 entries.
 * 2. A sweep of real blobs: N small blob files on the filesystem driver, touched, expired, removed.
 *
 * The synthetic driver is exported for the unit test's smaller scale check.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  Digest,
  FilesystemDriver,
  PathNotFoundError,
  paths,
  ROOT,
  type FileInfo,
  type FileWriter,
  type ReadOptions,
  type StorageDriver,
} from '@cascade/registry-core';
import { ExpiryIndex } from '../../src/expiry.js';

const BLOBS = `${ROOT}/blobs/`;

/**
 * A digest whose first 16 hex digits encode `time`: {@link SyntheticBlobDriver} reads the blob's modification
 * time back from it, so a million blobs need no storage and no map.
 */
export function syntheticDigest(time: number, i: number): Digest {
  const rest = createHash('sha256').update(`${time}/${i}`).digest('hex').slice(0, 48);
  return Digest.parse(`sha256:${time.toString(16).padStart(16, '0')}${rest}`);
}

/**
 * A driver that stores the index's files in `inner` and pretends every blob exists, with a fixed size and the
 * modification time encoded in its digest ({@link syntheticDigest}). `touch` and `delete` of blobs only count.
 */
export class SyntheticBlobDriver implements StorageDriver {
  readonly name = 'synthetic';
  blobTouches = 0;
  blobDeletes = 0;

  constructor(
    private readonly inner: StorageDriver,
    private readonly blobSize = 1000,
  ) {}

  getContent(path: string): Promise<Buffer> {
    return this.inner.getContent(path);
  }
  putContent(path: string, content: Uint8Array): Promise<void> {
    return this.inner.putContent(path, content);
  }
  reader(path: string, options?: ReadOptions): Promise<Readable> {
    return this.inner.reader(path, options);
  }
  writer(path: string, options?: { append?: boolean }): Promise<FileWriter> {
    return this.inner.writer(path, options);
  }
  async stat(path: string): Promise<FileInfo> {
    if (!path.startsWith(BLOBS)) return this.inner.stat(path);
    const hex = path.split('/').at(-2);
    if (hex === undefined || hex.length < 16) throw new PathNotFoundError(path);
    return { path, size: this.blobSize, modTime: new Date(Number.parseInt(hex.slice(0, 16), 16)), isDir: false };
  }
  list(path: string): Promise<string[]> {
    return this.inner.list(path);
  }
  move(source: string, dest: string): Promise<void> {
    return this.inner.move(source, dest);
  }
  async delete(path: string): Promise<void> {
    if (path.startsWith(BLOBS)) {
      this.blobDeletes += 1;
      return;
    }
    await this.inner.delete(path);
  }
  async walk(path: string, visit: (info: FileInfo) => Promise<void | 'skip'> | void | 'skip'): Promise<void> {
    if (`${path}/`.startsWith(BLOBS)) return; // no real blobs to walk
    await this.inner.walk(path, visit);
  }
  async touch(path: string, time: Date): Promise<void> {
    if (path.startsWith(BLOBS)) {
      this.blobTouches += 1;
      return;
    }
    await this.inner.touch(path, time);
  }
  recover(): Promise<void> {
    return this.inner.recover();
  }
}

/** A full garbage collection, also without `--expose-gc`. */
export function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Heap in use after a full collection, in MiB. */
export function heapMiB(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

/** What {@link measureIndexScale} measured. */
export interface IndexScaleResult {
  touches: number;
  buckets: number;
  touchAndFlushMs: number;
  heapBeforeMiB: number;
  heapAfterMiB: number;
  sweptEntries: number;
  sweepMs: number;
  heapAfterSweepMiB: number;
}

/**
 * `touches` fills spread evenly over `buckets` one-second buckets (flushed at the end of each, as the timer
 * would), then a sweep at the time when the first `expireBuckets` buckets are past the TTL.
 */
export async function measureIndexScale(touches: number, buckets: number, expireBuckets: number): Promise<IndexScaleResult> {
  const root = await mkdtemp(join(tmpdir(), 'cascade-expiry-scale-'));
  try {
    const driver = new SyntheticBlobDriver(new FilesystemDriver({ rootDirectory: root }));
    const bucketMs = 1000;
    const t0 = Date.UTC(2030, 0, 1);
    let now = t0;
    const ttlMs = buckets * bucketMs; // long enough that nothing expires while touching
    let removed = 0;
    const index = new ExpiryIndex({
      driver,
      ttlMs,
      bucketMs,
      sweepIntervalMs: 3_600_000,
      now: () => now,
      remove: async (digest) => {
        removed += 1;
        await driver.delete(paths.blobDir(digest));
      },
      reconcileIntervalMs: Infinity,
      reconcileBlobsPerSecond: Infinity,
    });
    await index.start();
    await index.whenReconciled();
    const perBucket = Math.ceil(touches / buckets);
    const heapBeforeMiB = heapMiB();
    let started = performance.now();
    let done = 0;
    for (let b = 0; b < buckets && done < touches; b += 1) {
      now = t0 + b * bucketMs;
      for (let j = 0; j < perBucket && done < touches; j += 1, done += 1) index.touch(syntheticDigest(now, j), 1000, 'fill');
      await index.flush();
    }
    const touchAndFlushMs = performance.now() - started;
    const heapAfterMiB = heapMiB();
    now = t0 + expireBuckets * bucketMs + ttlMs;
    started = performance.now();
    const result = await index.sweep();
    const sweepMs = performance.now() - started;
    const heapAfterSweepMiB = heapMiB();
    await index.stop();
    if (result.expired !== removed) throw new Error(`sweep reported ${result.expired} but removed ${removed}`);
    return { touches: done, buckets, touchAndFlushMs, heapBeforeMiB, heapAfterMiB, sweptEntries: result.expired, sweepMs, heapAfterSweepMiB };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** What {@link measureRealSweep} measured. */
export interface RealSweepResult {
  blobs: number;
  createMs: number;
  touchAndFlushMs: number;
  reconcileMs: number;
  sweepMs: number;
  expired: number;
}

/** `blobs` real blob files on the filesystem driver: journaled, walked by a restart, then expired and removed. */
export async function measureRealSweep(blobs: number): Promise<RealSweepResult> {
  const root = await mkdtemp(join(tmpdir(), 'cascade-expiry-real-'));
  try {
    const t0 = Date.UTC(2030, 0, 1);
    let now = t0;
    const options = {
      ttlMs: 3_600_000,
      sweepIntervalMs: 3_600_000,
      now: () => now,
      reconcileIntervalMs: Infinity,
      reconcileBlobsPerSecond: Infinity,
    };
    let started = performance.now();
    const digests: Digest[] = [];
    // Written with fs directly: the driver's fsync per file would measure the disk, not the index.
    for (let i = 0; i < blobs; i += 1) {
      const content = `blob ${i}`;
      const digest = Digest.of(content);
      const file = join(root, paths.blobData(digest));
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, content);
      await utimes(file, new Date(t0), new Date(t0));
      digests.push(digest);
    }
    const createMs = performance.now() - started;
    let driver = new FilesystemDriver({ rootDirectory: root });
    const first = new ExpiryIndex({ ...options, driver, remove: (d) => driver.delete(paths.blobDir(d)) });
    started = performance.now();
    for (const digest of digests) first.touch(digest, 10, 'fill');
    await first.flush();
    const touchAndFlushMs = performance.now() - started;
    await first.stop();
    // A restart: the walk stats every blob and finds them all journaled.
    driver = new FilesystemDriver({ rootDirectory: root });
    const second = new ExpiryIndex({ ...options, driver, remove: (d) => driver.delete(paths.blobDir(d)) });
    await second.start();
    const reconciled = await second.whenReconciled();
    if (reconciled?.adopted !== 0 || reconciled.blobs !== blobs) throw new Error(`unexpected walk: ${JSON.stringify(reconciled)}`);
    now = t0 + 2 * 3_600_000;
    started = performance.now();
    const result = await second.sweep();
    const sweepMs = performance.now() - started;
    await second.stop();
    return { blobs, createMs, touchAndFlushMs, reconcileMs: reconciled.durationMs, sweepMs, expired: result.expired };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const touches = Number(process.argv[2] ?? 1_000_000);
  const buckets = Number(process.argv[3] ?? 1000);
  const expireBuckets = Math.ceil((100_000 / touches) * buckets);
  const scale = await measureIndexScale(touches, buckets, expireBuckets);
  const round = (n: number): number => Math.round(n * 10) / 10;
  console.log(
    `index: ${scale.touches} touches over ${scale.buckets} buckets in ${round(scale.touchAndFlushMs)} ms; ` +
      `heap ${round(scale.heapBeforeMiB)} -> ${round(scale.heapAfterMiB)} MiB (+${round(scale.heapAfterMiB - scale.heapBeforeMiB)}); ` +
      `sweep of ${scale.sweptEntries} expired entries in ${round(scale.sweepMs)} ms; heap after sweep ${round(scale.heapAfterSweepMiB)} MiB`,
  );
  const real = await measureRealSweep(Number(process.env.REAL_BLOBS ?? 20_000));
  console.log(
    `filesystem: ${real.blobs} blobs; touch+flush ${round(real.touchAndFlushMs)} ms; restart walk ${real.reconcileMs} ms; ` +
      `sweep removing ${real.expired} blobs in ${round(real.sweepMs)} ms`,
  );
}

// `node --test dist/test/` also runs files below test/: do nothing there, this is a script.
if (process.env.NODE_TEST_CONTEXT === undefined && process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
