/**
 * Warm jobs: one image (a repository and a manifest reference) to be fetched by one cache. A job resolves the
 * image at the origin (an index expanded to its platform manifests; config and distributable layers), then
 * asks the cache to fill each blob it lacks, a few at a time per cache; the bytes go from the origin to the
 * cache (through its chain), never back to the server. A job whose cache is down, or whose fills fail, is
 * retried with a doubling backoff, and reported failed after its last attempt. Jobs are kept in memory:
 * those in flight, and the last finished ones (`warm.history`).
 *
 * Dependencies are passed in (how to resolve an image, how to ask a cache, which caches exist), so the unit
 * tests drive the warmer with a fake cache.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { pause } from '@cascade/registry-core';
import type { ContentCache } from '../state/repository.js';

/** A blob of an image, as its manifest describes it. */
export interface WarmBlob {
  readonly digest: string;
  readonly size: number;
}

/** An image resolved at the origin: its manifest digest and the blobs a pull of it needs. */
export interface ResolvedImage {
  readonly digest: string;
  readonly blobs: readonly WarmBlob[];
}

/** A cache's answer to one blob's warm request. */
export interface BlobWarmed {
  /** The blob was already there (nothing fetched). */
  readonly present: boolean;
  readonly size: number;
}

/** A job's state: waiting for its turn, working, waiting for its next attempt, or over. */
export type WarmJobState = 'queued' | 'running' | 'retrying' | 'done' | 'failed';

/** What started a job. */
export type WarmTrigger = { readonly kind: 'push'; readonly event: string } | { readonly kind: 'manual'; readonly user: string };

/** A warm job as the API shows it. */
export interface WarmJob {
  readonly id: string;
  readonly cache: { readonly id: string; readonly name: string };
  readonly repository: string;
  /** The reference asked for (a digest for a push, a tag or digest by hand). */
  readonly reference: string;
  /** The manifest digest, once resolved at the origin. */
  digest: string | null;
  readonly trigger: WarmTrigger;
  state: WarmJobState;
  readonly createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  attempts: number;
  blobsTotal: number | null;
  blobsDone: number;
  /** Of `blobsDone`, those the cache already had. */
  blobsPresent: number;
  bytesTotal: number | null;
  bytesDone: number;
  /** Why the last attempt failed (kept when a later attempt succeeds); null before any failure. */
  lastError: string | null;
  /** When the next attempt starts (state `retrying`). */
  nextAttemptAt: Date | null;
}

/** Options of {@link Warmer}. */
export interface WarmerOptions {
  /** The image at the origin. */
  readonly resolve: (repository: string, reference: string, signal: AbortSignal) => Promise<ResolvedImage>;
  /** Asks `cache` to hold `blob` of `repository`; resolves once it does. */
  readonly warmBlob: (cache: ContentCache, repository: string, blob: WarmBlob, signal: AbortSignal) => Promise<BlobWarmed>;
  /** The cache with this id as stored now (undefined once deleted). */
  readonly cacheById: (id: string) => Promise<ContentCache | undefined>;
  readonly logger: Logger;
  /** Blob warm requests in flight per cache (default 2). */
  readonly concurrency?: number;
  /** Attempts per job (default 8). */
  readonly attempts?: number;
  /** Wait before the first retry, doubling each time (default 5 s), up to `maxBackoffMs` (default 5 min). */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Finished jobs kept (default 1000). */
  readonly history?: number;
}

/** The warmer's counters since the server started. */
export interface WarmerStats {
  jobsDone: number;
  jobsFailed: number;
  blobsFilled: number;
  blobsPresent: number;
  bytesFilled: number;
  /** Attempts that failed (each retry counts), by cache name. */
  attemptFailures: Record<string, number>;
}

/** The longest error kept on a job. */
const ERROR_MAX_LENGTH = 1024;

/** Runs warm jobs; see the module comment. */
export class Warmer {
  private readonly jobs = new Map<string, WarmJob>();
  /** Unfinished jobs by cache, repository and reference: the same image is never warmed twice at once. */
  private readonly active = new Map<string, WarmJob>();
  private readonly slots = new Map<string, Slots>();
  private readonly controller = new AbortController();
  private readonly running = new Set<Promise<void>>();
  readonly stats: WarmerStats = { jobsDone: 0, jobsFailed: 0, blobsFilled: 0, blobsPresent: 0, bytesFilled: 0, attemptFailures: {} };

  constructor(private readonly options: WarmerOptions) {}

  /**
   * Starts a job warming `repository` at `reference` on `cache`, unless the same one is in flight, whose job
   * is answered instead (`joined: true`). Never waits for the work.
   */
  enqueue(cache: ContentCache, repository: string, reference: string, trigger: WarmTrigger): { job: WarmJob; joined: boolean } {
    const key = `${cache.id} ${repository}@${reference}`;
    const existing = this.active.get(key);
    if (existing) return { job: existing, joined: true };
    const job: WarmJob = {
      id: randomUUID(),
      cache: { id: cache.id, name: cache.name },
      repository,
      reference,
      digest: reference.includes(':') ? reference : null,
      trigger,
      state: 'queued',
      createdAt: new Date(),
      startedAt: null,
      finishedAt: null,
      attempts: 0,
      blobsTotal: null,
      blobsDone: 0,
      blobsPresent: 0,
      bytesTotal: null,
      bytesDone: 0,
      lastError: null,
      nextAttemptAt: null,
    };
    this.jobs.set(job.id, job);
    this.active.set(key, job);
    // Started on a later tick: the caller answers the job as queued, and never waits for its work.
    const run = Promise.resolve()
      .then(() => this.run(job))
      .catch((err: unknown) => this.finish(job, 'failed', message(err)))
      .finally(() => {
        this.active.delete(key);
        this.running.delete(run);
        this.trim();
      });
    this.running.add(run);
    return { job, joined: false };
  }

  /** A job by id. */
  get(id: string): WarmJob | undefined {
    return this.jobs.get(id);
  }

  /** Every job kept, newest first. */
  list(): WarmJob[] {
    return [...this.jobs.values()].reverse();
  }

  /** Jobs not yet over, on every cache. */
  get pending(): number {
    return this.active.size;
  }

  /** Jobs of `cacheId` not yet over (queued, running or waiting to retry). */
  inFlight(cacheId: string): number {
    let n = 0;
    for (const job of this.active.values()) if (job.cache.id === cacheId) n += 1;
    return n;
  }

  /** Jobs by state, for the metrics. */
  countByState(): Record<WarmJobState, number> {
    const counts: Record<WarmJobState, number> = { queued: 0, running: 0, retrying: 0, done: 0, failed: 0 };
    for (const job of this.jobs.values()) counts[job.state] += 1;
    return counts;
  }

  /** Stops every job (shutdown) and waits for them to end. */
  async close(): Promise<void> {
    this.controller.abort(new Error('the server is shutting down'));
    await Promise.allSettled([...this.running]);
  }

  private async run(job: WarmJob): Promise<void> {
    const { signal } = this.controller;
    const attempts = this.options.attempts ?? 8;
    let image: ResolvedImage | undefined;
    const done = new Set<string>();
    for (;;) {
      job.attempts += 1;
      job.nextAttemptAt = null;
      job.state = 'running';
      job.startedAt ??= new Date();
      let problem: string | undefined;
      try {
        const cache = await this.options.cacheById(job.cache.id);
        if (!cache) return this.finish(job, 'failed', 'the content cache was deleted');
        image ??= await this.options.resolve(job.repository, job.reference, signal);
        job.digest = image.digest;
        job.blobsTotal = image.blobs.length;
        job.bytesTotal = image.blobs.reduce((sum, b) => sum + b.size, 0);
        const failures: string[] = [];
        const slots = this.slotsOf(cache.id);
        await Promise.all(
          image.blobs
            .filter((b) => !done.has(b.digest))
            .map((blob) =>
              slots.run(async () => {
                if (signal.aborted) throw signal.reason;
                const answer = await this.options.warmBlob(cache, job.repository, blob, signal);
                done.add(blob.digest);
                job.blobsDone += 1;
                job.bytesDone += blob.size;
                if (answer.present) {
                  job.blobsPresent += 1;
                  this.stats.blobsPresent += 1;
                } else {
                  this.stats.blobsFilled += 1;
                  this.stats.bytesFilled += answer.size;
                }
              }).catch((err: unknown) => {
                failures.push(`${blob.digest}: ${message(err)}`);
              }),
            ),
        );
        if (failures.length === 0) return this.finish(job, 'done');
        problem = failures.length === 1 ? (failures[0] as string) : `${failures.length} blobs failed; first: ${failures[0] as string}`;
      } catch (err) {
        problem = message(err);
      }
      if (signal.aborted) return this.finish(job, 'failed', 'the server shut down');
      job.lastError = problem.slice(0, ERROR_MAX_LENGTH);
      this.stats.attemptFailures[job.cache.name] = (this.stats.attemptFailures[job.cache.name] ?? 0) + 1;
      if (job.attempts >= attempts) return this.finish(job, 'failed', problem);
      const delay = Math.min((this.options.backoffMs ?? 5000) * 2 ** (job.attempts - 1), this.options.maxBackoffMs ?? 300_000);
      job.state = 'retrying';
      job.nextAttemptAt = new Date(Date.now() + delay);
      this.options.logger.warn({ job: job.id, cache: job.cache.name, repository: job.repository, reference: job.reference, attempt: job.attempts, retryInMs: delay, reason: job.lastError }, 'warm attempt failed: retrying');
      await pause(delay, signal);
    }
  }

  private finish(job: WarmJob, state: 'done' | 'failed', error?: string): void {
    if (job.state === 'done' || job.state === 'failed') return;
    job.state = state;
    job.finishedAt = new Date();
    job.nextAttemptAt = null;
    const fields = { job: job.id, cache: job.cache.name, repository: job.repository, digest: job.digest ?? job.reference, attempts: job.attempts, blobs: job.blobsDone, present: job.blobsPresent, bytes: job.bytesDone };
    if (state === 'done') {
      this.stats.jobsDone += 1;
      this.options.logger.info(fields, 'warm job done');
    } else {
      job.lastError = (error ?? job.lastError ?? 'failed').slice(0, ERROR_MAX_LENGTH);
      this.stats.jobsFailed += 1;
      this.options.logger.error({ ...fields, reason: job.lastError }, 'warm job failed');
    }
  }

  /** Drops the oldest finished jobs beyond the history. */
  private trim(): void {
    const keep = this.options.history ?? 1000;
    let finished = 0;
    for (const job of this.jobs.values()) if (job.state === 'done' || job.state === 'failed') finished += 1;
    for (const [id, job] of this.jobs) {
      if (finished <= keep) break;
      if (job.state !== 'done' && job.state !== 'failed') continue;
      this.jobs.delete(id);
      finished -= 1;
    }
  }

  private slotsOf(cacheId: string): Slots {
    let slots = this.slots.get(cacheId);
    if (!slots) {
      slots = new Slots(this.options.concurrency ?? 2);
      this.slots.set(cacheId, slots);
    }
    return slots;
  }
}

/** At most `limit` tasks at once, the others waiting in order. */
class Slots {
  private busy = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.busy >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.busy += 1;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.busy -= 1;
    }
  }
}


function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Counters of the events endpoint, by action (push, pull, mount, delete, other) and result. */
export type EventCounts = Map<string, number>;

/** Registers the warm metrics on `registry`, read from `warmer` and the events counts at scrape time. */
export function observeWarmer(registry: Registry, warmer: Warmer, events: EventCounts): void {
  const registers = [registry];
  new Gauge({
    name: 'cascade_server_warm_jobs',
    help: 'Warm jobs the server keeps, by state (queued, running, retrying; done and failed within the kept history).',
    labelNames: ['state'],
    registers,
    collect() {
      this.reset();
      for (const [state, n] of Object.entries(warmer.countByState())) this.set({ state }, n);
    },
  });
  new Counter({
    name: 'cascade_server_warm_jobs_total',
    help: 'Warm jobs finished since the server started, by result (done, failed).',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      this.inc({ result: 'done' }, warmer.stats.jobsDone);
      this.inc({ result: 'failed' }, warmer.stats.jobsFailed);
    },
  });
  new Counter({
    name: 'cascade_server_warm_blobs_total',
    help: 'Blobs warm jobs made caches hold, by result: filled (fetched through the chain) or present (already there).',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      this.inc({ result: 'filled' }, warmer.stats.blobsFilled);
      this.inc({ result: 'present' }, warmer.stats.blobsPresent);
    },
  });
  new Counter({
    name: 'cascade_server_warm_bytes_total',
    help: 'Bytes of the blobs warm jobs made caches fetch.',
    registers,
    collect() {
      this.reset();
      this.inc(warmer.stats.bytesFilled);
    },
  });
  new Counter({
    name: 'cascade_server_warm_attempt_failures_total',
    help: 'Warm attempts that failed (a cache down, a fill failing, the origin failing), by cache; each retry counts.',
    labelNames: ['cache'],
    registers,
    collect() {
      this.reset();
      for (const [cache, n] of Object.entries(warmer.stats.attemptFailures)) this.inc({ cache }, n);
    },
  });
  new Counter({
    name: 'cascade_server_events_total',
    help: 'Events received from the origin at /api/v0/events, by action and result (warm, no_rule, ignored, duplicate, dropped).',
    labelNames: ['action', 'result'],
    registers,
    collect() {
      this.reset();
      for (const [key, n] of events) {
        const [action = '', result = ''] = key.split(' ');
        this.inc({ action, result }, n);
      }
    },
  });
}
