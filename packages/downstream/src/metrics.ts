/**
 * Prometheus metrics and readiness of cache nodes and mirrors. The counters the cache keeps anyway
 * (`CacheMetrics`, the upstream pool's stats, the expiry index's) are read at scrape time, so the
 * serving path pays nothing for them; upstream latency is a histogram fed by the pool.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import type { NodeObservability } from '@cascade/registry-core';
import type { CacheNamespace } from './cache.js';
import type { ExpiryIndex } from './expiry.js';
import type { MirrorMetrics } from './mirror/namespace.js';
import type { UpstreamHost, UpstreamPool } from './upstream.js';

const UPSTREAM_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A histogram of upstream response times, and the callback that feeds it (give it to `UpstreamPool`). */
export function upstreamLatency(obs: NodeObservability): (host: UpstreamHost, outcome: 'ok' | 'error', seconds: number) => void {
  const histogram = new Histogram({
    name: 'cascade_upstream_request_duration_seconds',
    help: 'Time to the response headers of requests to upstream hosts (or to their failure).',
    labelNames: ['upstream', 'outcome'],
    buckets: UPSTREAM_BUCKETS,
    registers: [obs.registry],
  });
  return (host, outcome, seconds) => histogram.labels(host.url, outcome).observe(seconds);
}

/** What {@link observeCache} reads. */
export interface ObservedCache {
  readonly cache: CacheNamespace;
  readonly pools: readonly UpstreamPool[];
  readonly expiry?: ExpiryIndex;
  readonly mirror?: MirrorMetrics;
  /** A cache node needs an upstream to be useful (critical); a mirror serves its store without one. */
  readonly upstreamCritical: boolean;
}

/** Registers the cache's metrics and its upstream readiness check. */
export function observeCache(obs: NodeObservability, o: ObservedCache): void {
  const registers = [obs.registry];
  const m = o.cache.metrics;
  counter(obs, 'cascade_cache_blob_requests_total', 'Blob reads by result: hit (served from disk) or miss (filled from upstream).', ['result'], (set) => {
    set({ result: 'hit' }, m.hits);
    set({ result: 'miss' }, m.misses);
  });
  new Gauge({
    name: 'cascade_cache_hit_ratio',
    help: 'Hits divided by hits and misses since the process started (0 before the first read).',
    registers,
    collect() {
      const total = m.hits + m.misses;
      this.set(total === 0 ? 0 : m.hits / total);
    },
  });
  counter(obs, 'cascade_cache_bytes_total', 'Blob bytes served from disk, and received from upstream by fills.', ['source'], (set) => {
    set({ source: 'disk' }, m.bytesFromDisk);
    set({ source: 'upstream' }, m.bytesFromUpstream);
  });
  counter(obs, 'cascade_cache_fill_pumped_bytes_total', 'Bytes fills received through the native pump (read, hashed and written off the JavaScript thread); counted in cascade_cache_bytes_total{source="upstream"} too.', [], (set) => set({}, m.bytesPumped));
  // What the node sent (hits and misses): with the bytes received from upstream, what it saved its upstream.
  counter(obs, 'cascade_cache_bytes_served_total', 'Blob bytes sent to clients in complete answers, from disk or from a fill.', [], (set) => set({}, m.bytesServed));
  counter(obs, 'cascade_cache_fills_total', 'Fills from upstream, by result (failed: nothing was stored).', ['result'], (set) => {
    set({ result: 'completed' }, m.fillsCompleted);
    set({ result: 'failed' }, m.fillsFailed);
  });
  counter(obs, 'cascade_cache_storage_errors_total', 'Fills that failed on this node\'s own storage (disk full, I/O error); counted in the failed fills too, and never against an upstream.', [], (set) => set({}, m.storageErrors));
  counter(obs, 'cascade_cache_range_passthrough_total', 'Range reads far ahead of a running fill, fetched from upstream directly.', [], (set) => set({}, m.rangePassthrough));
  new Gauge({
    name: 'cascade_cache_fills_in_flight',
    help: 'Fills running now.',
    registers,
    collect() {
      this.set(o.cache.fills.inFlight);
    },
  });
  const stats = () => o.pools.flatMap((p) => p.stats());
  counter(obs, 'cascade_upstream_requests_total', 'Requests sent to each upstream host.', ['upstream'], (set) => {
    for (const s of stats()) set({ upstream: s.url }, s.requests);
  });
  counter(obs, 'cascade_upstream_errors_total', 'Failed requests to each upstream host (connection errors, timeouts, 5xx, 429, cut streams).', ['upstream'], (set) => {
    for (const s of stats()) set({ upstream: s.url }, s.errors);
  });
  new Gauge({
    name: 'cascade_upstream_up',
    help: '1 when the upstream host is not marked down after failures.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      for (const s of stats()) this.labels(s.url).set(s.down ? 0 : 1);
    },
  });
  const expiry = o.expiry;
  if (expiry) {
    counter(obs, 'cascade_cache_removals_total', 'Blobs removed, by reason: ttl (unused for the TTL) or quota (evicted, least recently used first).', ['reason'], (set) => {
      const s = expiry.stats();
      set({ reason: 'ttl' }, s.expirations);
      set({ reason: 'quota' }, s.evictions);
    });
    new Gauge({
      name: 'cascade_cache_disk_bytes',
      help: 'Bytes of the blobs in the cache (exact after the start-up walk, kept up to date by fills and removals).',
      registers,
      collect() {
        this.set(expiry.totalBytes);
      },
    });
  }
  const mirror = o.mirror;
  if (mirror) {
    counter(obs, 'cascade_mirror_tags_total', 'Tag requests by outcome: checked with the remote, fresh (within revalidate), stale (remote down, stored tag served).', ['outcome'], (set) => {
      set({ outcome: 'checked' }, mirror.tagChecks);
      set({ outcome: 'fresh' }, mirror.tagFresh);
      set({ outcome: 'stale' }, mirror.tagStale);
    });
    counter(obs, 'cascade_mirror_manifests_total', 'Manifest reads by source: disk (stored) or remote (fetched and stored).', ['source'], (set) => {
      set({ source: 'disk' }, mirror.manifestHits);
      set({ source: 'remote' }, mirror.manifestFetches);
    });
    counter(obs, 'cascade_mirror_refused_total', 'Requests refused: a registry that is not a remote, a name with no remote, a private remote for an anonymous client.', [], (set) => set({}, mirror.refused));
    counter(obs, 'cascade_mirror_loops_total', 'Requests that came back to this mirror (508).', [], (set) => set({}, mirror.loops));
  }
  obs.addReadyCheck({
    name: 'upstream reachable',
    critical: o.upstreamCritical,
    async check() {
      const results = (await Promise.all(o.pools.map((p) => p.probe()))).flat();
      if (results.some((r) => r.ok)) return undefined;
      return results.map((r) => `${r.url}: ${r.detail ?? 'unreachable'}`).join('; ');
    },
  });
}

/** A counter whose values are read from elsewhere at scrape time. */
function counter(obs: NodeObservability, name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void) => void): void {
  new Counter({
    name,
    help,
    labelNames,
    registers: [obs.registry],
    collect() {
      this.reset();
      // Every series is set, zero included, so that it exists from the first scrape.
      read((labels, value) => this.inc(labels, value));
    },
  });
}
