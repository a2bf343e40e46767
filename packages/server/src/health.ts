/**
 * Cache health as the server sees it: every interval, each registered cache's `/v2/` is asked (any HTTP
 * answer, 401 included, means the cache is up). A cache that failed its last check is "down", and blobs
 * are then served by the server instead of being redirected there.
 *
 * A cache that answers is also asked for its `/metrics` (Prometheus text format), for its hit ratio and
 * the bytes it keeps on disk: what the web page and `GET /api/v0/content_caches/{id}/health` show. Those
 * figures, and the last error seen, are kept in memory (the database keeps the check results), and so are
 * the counters read over the last hour, for the cache tree (tree.ts).
 *
 * Requests go through node:http(s) with the origin's extra CAs (`origin.cas`), so a cache whose
 * certificate is signed by the same private CA as the origin is not taken for down.
 */
import { request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { Logger } from 'pino';
import type { CacheLiveHealth } from './api/router.js';
import type { ContentCache, StateRepository } from './state/repository.js';
import { CacheHistory, sampleOf, type CacheSample, type TreeCacheInput } from './tree.js';

export type { CacheLiveHealth };

/** Options of {@link HealthChecker}. */
export interface HealthCheckerOptions {
  readonly state: StateRepository;
  readonly intervalMs: number;
  readonly logger: Logger;
  /** Per-check timeout (default 5 s). */
  readonly timeoutMs?: number;
  /** Extra CA certificates (PEM) trusted for caches served over https (the server's `origin.cas`). */
  readonly ca?: readonly string[];
}

const NO_LIVE_HEALTH: CacheLiveHealth = {
  hitRatio: null,
  diskBytes: null,
  storageFreeBytes: null,
  storageCapacityBytes: null,
  metricsAt: null,
  lastError: null,
  lastErrorAt: null,
};

/** Largest `/metrics` body read (a cache's is a few KiB). */
const METRICS_MAX_BYTES = 1 << 20;

/** Probes the registered caches periodically. */
export class HealthChecker {
  private readonly down = new Set<string>();
  private readonly live = new Map<string, CacheLiveHealth>();
  /** The counters read from each cache over the last hour, for the cache tree. */
  private readonly history = new CacheHistory();
  private readonly httpsAgent: HttpsAgent | undefined;
  private timer: NodeJS.Timeout | undefined;
  private known: ContentCache[] | undefined;
  private stateDown = false;

  constructor(private readonly options: HealthCheckerOptions) {
    // Without extra CAs, node's defaults apply (NODE_EXTRA_CA_CERTS included).
    this.httpsAgent = options.ca?.length ? new HttpsAgent({ ca: [...rootCertificates, ...options.ca], keepAlive: false }) : undefined;
  }

  /** True when the cache failed its last check. */
  isDown(id: string): boolean {
    return this.down.has(id);
  }

  /** The cache's metrics and last error, as far as known (every field null before the first check). */
  liveHealth(id: string): CacheLiveHealth {
    return this.live.get(id) ?? NO_LIVE_HEALTH;
  }

  /** A registered cache as the cache tree shows it: its last check and its figures over the last hour. */
  treeInput(cache: ContentCache, now = Date.now()): TreeCacheInput {
    const live = this.live.get(cache.id);
    const status = this.down.has(cache.id) ? 'down' : live ? 'up' : 'unknown';
    return {
      id: cache.id,
      name: cache.name,
      host: cache.host,
      health: { status, lastError: live?.lastError ?? null, lastErrorAt: live?.lastErrorAt ?? null },
      diskBytes: live?.diskBytes ?? null,
      latest: this.history.latest(cache.id) ?? null,
      figures: this.history.figures(cache.id, now) ?? null,
    };
  }

  start(): void {
    void this.checkAll();
    this.timer = setInterval(() => void this.checkAll(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.httpsAgent?.destroy();
  }

  /** The caches as last read from the state database (undefined before the first read). */
  lastKnownCaches(): readonly ContentCache[] | undefined {
    return this.known;
  }

  /** Checks every cache once. Without the state database it checks nothing, and says so once per outage. */
  async checkAll(): Promise<void> {
    let caches: ContentCache[];
    try {
      caches = await this.options.state.list();
    } catch (err) {
      if (!this.stateDown) this.options.logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'health checks paused: the state database cannot be read');
      this.stateDown = true;
      return;
    }
    if (this.stateDown) this.options.logger.info({}, 'health checks resumed: the state database answers again');
    this.stateDown = false;
    this.known = caches;
    const ids = new Set(caches.map((c) => c.id));
    for (const id of this.live.keys()) if (!ids.has(id)) this.live.delete(id);
    for (const id of this.down) if (!ids.has(id)) this.down.delete(id);
    this.history.keep(ids);
    await Promise.all(caches.map((c) => this.check(c.id, c.host)));
  }

  private async check(id: string, host: string): Promise<void> {
    const base = host.replace(/\/+$/, '');
    const timeoutMs = this.options.timeoutMs ?? 5000;
    const started = Date.now();
    let ok = false;
    let error: string | undefined;
    try {
      await this.get(`${base}/v2/`, timeoutMs, 0);
      ok = true;
    } catch (err) {
      error = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    const at = new Date();
    const latencyMs = Date.now() - started;
    const wasDown = this.down.has(id);
    if (ok) this.down.delete(id);
    else this.down.add(id);
    if (wasDown !== !ok) this.options.logger[ok ? 'info' : 'warn']({ cache: id, host, error }, ok ? 'cache up' : 'cache down');
    const previous = this.live.get(id) ?? NO_LIVE_HEALTH;
    let live: CacheLiveHealth = ok ? previous : { ...previous, lastError: error ?? 'check failed', lastErrorAt: at };
    let sample: CacheSample | undefined;
    if (ok) {
      try {
        const res = await this.get(`${base}/metrics`, timeoutMs, METRICS_MAX_BYTES);
        // A cache without /metrics (another registry, an older Cascade) shows n/a.
        const metrics = res.status === 200 ? parsePrometheusText(res.body) : new Map<string, MetricSample[]>();
        live = { ...live, ...cacheFigures(metrics), metricsAt: at };
        sample = sampleOf(metrics, at.getTime());
      } catch (err) {
        this.options.logger.debug({ cache: id, host, err }, 'cache metrics unavailable');
        live = { ...live, ...cacheFigures(new Map()), metricsAt: at };
      }
    }
    try {
      const recorded = await this.options.state.recordHealth(id, { ok, latencyMs, ...(error ? { error } : {}), at });
      if (recorded) {
        this.live.set(id, live);
        if (sample) this.history.add(id, sample);
      }
    } catch {
      // the cache was deleted meanwhile
    }
  }

  /** GET `url`; resolves with the status and up to `maxBytes` of the body (the rest is dropped). */
  private get(url: string, timeoutMs: number, maxBytes: number): Promise<{ status: number; body: string }> {
    const https = url.startsWith('https:');
    const send = https ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      // A new connection for each request (the agents keep none): behind a balancer that spreads connections
      // over a region's nodes, successive checks reach every node, whose counters the tree keeps apart.
      const req = send(url, { method: 'GET', agent: https && this.httpsAgent ? this.httpsAgent : false }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (size >= maxBytes) return;
          size += chunk.length;
          chunks.push(chunk);
        });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).subarray(0, maxBytes).toString('utf8') });
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end();
    });
  }
}

/** One sample of a metric: its labels and value. */
export interface MetricSample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * Parses the Prometheus text exposition format, minimally: samples by metric name (comments, timestamps
 * and malformed lines are skipped).
 */
export function parsePrometheusText(text: string): Map<string, MetricSample[]> {
  const out = new Map<string, MetricSample[]>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line.trim());
    if (!m) continue;
    const value = parseSampleValue(m[3] as string);
    if (value === undefined) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const name = m[1] as string;
    const samples = out.get(name) ?? [];
    samples.push({ labels, value });
    out.set(name, samples);
  }
  return out;
}

function parseSampleValue(text: string): number | undefined {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  const value = Number(text);
  return Number.isNaN(value) ? undefined : value;
}

/** A cache's hit ratio and disk figures from its metrics; null for what it does not expose. */
export function cacheFigures(metrics: Map<string, MetricSample[]>): Pick<CacheLiveHealth, 'hitRatio' | 'diskBytes' | 'storageFreeBytes' | 'storageCapacityBytes'> {
  const sum = (name: string, where: (labels: Readonly<Record<string, string>>) => boolean = () => true): number | null => {
    const samples = metrics.get(name)?.filter((s) => where(s.labels) && Number.isFinite(s.value));
    return samples?.length ? samples.reduce((a, s) => a + s.value, 0) : null;
  };
  let hitRatio: number | null = null;
  const hits = sum('cascade_cache_blob_requests_total', (l) => l.result === 'hit');
  const misses = sum('cascade_cache_blob_requests_total', (l) => l.result === 'miss');
  if (hits !== null || misses !== null) {
    // The gauge says 0 before the first read; no read yet is "unknown", not 0 %.
    const total = (hits ?? 0) + (misses ?? 0);
    hitRatio = total > 0 ? (hits ?? 0) / total : null;
  } else {
    hitRatio = sum('cascade_cache_hit_ratio');
  }
  return {
    hitRatio,
    diskBytes: sum('cascade_cache_disk_bytes'),
    storageFreeBytes: sum('cascade_storage_free_bytes'),
    storageCapacityBytes: sum('cascade_storage_capacity_bytes'),
  };
}
