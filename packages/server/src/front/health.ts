/**
 * Cache health as the server sees it: every interval, each registered cache's `/v2/` is asked (any HTTP
 * answer, 401 included, means the cache is up). A cache that failed its last check is "down", and blobs
 * are then served by the server instead of being redirected there.
 */
import type { Logger } from 'pino';
import type { StateRepository } from '../state/repository.js';

/** Options of {@link HealthChecker}. */
export interface HealthCheckerOptions {
  readonly state: StateRepository;
  readonly intervalMs: number;
  readonly logger: Logger;
  /** Per-check timeout (default 5 s). */
  readonly timeoutMs?: number;
}

/** Probes the registered caches periodically. */
export class HealthChecker {
  private readonly down = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: HealthCheckerOptions) {}

  /** True when the cache failed its last check. */
  isDown(id: string): boolean {
    return this.down.has(id);
  }

  start(): void {
    void this.checkAll();
    this.timer = setInterval(() => void this.checkAll(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Checks every cache once. */
  async checkAll(): Promise<void> {
    const caches = await this.options.state.list();
    await Promise.all(caches.map((c) => this.check(c.id, c.host)));
  }

  private async check(id: string, host: string): Promise<void> {
    const started = Date.now();
    let ok = false;
    let error: string | undefined;
    try {
      const res = await fetch(`${host.replace(/\/+$/, '')}/v2/`, { signal: AbortSignal.timeout(this.options.timeoutMs ?? 5000) });
      await res.arrayBuffer();
      ok = true;
    } catch (err) {
      error = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    const latencyMs = Date.now() - started;
    const wasDown = this.down.has(id);
    if (ok) this.down.delete(id);
    else this.down.add(id);
    if (wasDown !== !ok) this.options.logger[ok ? 'info' : 'warn']({ cache: id, host, error }, ok ? 'cache up' : 'cache down');
    try {
      await this.options.state.recordHealth(id, { ok, latencyMs, ...(error ? { error } : {}), at: new Date() });
    } catch {
      // the cache was deleted meanwhile
    }
  }
}
