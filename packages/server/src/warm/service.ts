/**
 * Warm on push, put together: the origin's events (checked envelope, `push` of a manifest) are matched
 * against the warm rules (`namespace` -> caches, in the state database), and each chosen cache gets a
 * {@link Warmer} job. The endpoint answers as soon as the jobs are queued: the warm never runs inline, so the
 * origin's notifications (and the pushes behind them) never wait for it. Events are deduplicated by id (the
 * origin retries a batch it thinks failed), jobs by cache and image while in flight.
 */
import type { Logger } from 'pino';
import type { ContentCache, StateRepository } from '../state/repository.js';
import { coveredBy, KNOWN_ACTIONS, verdictOf, type RegistryEvent } from './events.js';
import type { EventCounts, Warmer, WarmJob } from './warmer.js';

/** Event ids remembered, to ignore an event the origin sends again. */
const SEEN_EVENTS_MAX = 10_000;
/** Jobs not yet over beyond which pushes start no more warms (they are counted `dropped` and logged). */
export const PENDING_JOBS_MAX = 10_000;

/** The caches the warm rules choose for `repository`: those of every rule whose namespace covers it. */
export function warmCachesFor(rules: readonly { namespace: string; cacheIds: readonly string[] }[], repository: string): string[] {
  const ids = new Set<string>();
  for (const rule of rules) if (coveredBy(repository, rule.namespace)) for (const id of rule.cacheIds) ids.add(id);
  return [...ids];
}

/** What the events endpoint answers: how many events it read, and the jobs they started or joined. */
export interface EventsReceipt {
  readonly events: number;
  readonly jobs: string[];
}

/** Options of {@link WarmService}. */
export interface WarmServiceOptions {
  readonly state: StateRepository;
  readonly warmer: Warmer;
  readonly logger: Logger;
}

/** The events endpoint's work, and manual warms. */
export class WarmService {
  /** Events by `action result`, for the metrics. */
  readonly eventCounts: EventCounts = new Map();
  private readonly seen = new Set<string>();

  constructor(private readonly options: WarmServiceOptions) {}

  get warmer(): Warmer {
    return this.options.warmer;
  }

  /** Queues the warms the events ask for; answers once queued. */
  async receive(events: readonly RegistryEvent[]): Promise<EventsReceipt> {
    const jobs: string[] = [];
    let rules: Awaited<ReturnType<StateRepository['listWarmRules']>> | undefined;
    for (const e of events) {
      const action = KNOWN_ACTIONS.has(e.action) ? e.action : 'other';
      if (this.seen.has(e.id)) {
        this.count(action, 'duplicate');
        continue;
      }
      const verdict = verdictOf(e);
      if (verdict.kind === 'ignored') {
        this.remember(e.id);
        this.count(action, 'ignored');
        continue;
      }
      rules ??= await this.options.state.listWarmRules();
      const ids = warmCachesFor(rules, verdict.repository);
      const caches = (await Promise.all(ids.map((id) => this.options.state.get(id)))).filter((c): c is ContentCache => c !== undefined);
      // Remembered once its warms are queued: a failure before that lets the origin's retry through.
      this.remember(e.id);
      if (caches.length === 0) {
        this.count(action, 'no_rule');
        continue;
      }
      if (this.options.warmer.pending >= PENDING_JOBS_MAX) {
        // A flood of pushes (or of events) must not grow the server's memory without bound.
        this.count(action, 'dropped');
        this.options.logger.warn({ event: e.id, repository: verdict.repository, pending: this.options.warmer.pending }, 'push received, but too many warm jobs are pending: not warming it');
        continue;
      }
      for (const cache of caches) jobs.push(this.options.warmer.enqueue(cache, verdict.repository, verdict.digest, { kind: 'push', event: e.id }).job.id);
      this.count(action, 'warm');
      this.options.logger.info({ event: e.id, repository: verdict.repository, digest: verdict.digest, tag: verdict.tag, caches: caches.map((c) => c.name) }, 'push received: warming');
    }
    return { events: events.length, jobs };
  }

  /** A warm of `repository` at `reference` (tag or digest) on `cache`, asked by `user`. */
  warmByHand(cache: ContentCache, repository: string, reference: string, user: string): WarmJob {
    return this.options.warmer.enqueue(cache, repository, reference, { kind: 'manual', user }).job;
  }

  private count(action: string, result: string): void {
    const key = `${action} ${result}`;
    this.eventCounts.set(key, (this.eventCounts.get(key) ?? 0) + 1);
  }

  private remember(id: string): void {
    if (this.seen.size >= SEEN_EVENTS_MAX) {
      // The oldest id goes first (a Set iterates in insertion order).
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    this.seen.add(id);
  }
}
