/**
 * What every role exposes for operations, on its own listener:
 *
 * - `GET /metrics`: Prometheus text format (prom-client): requests by route, method and status, their
 *   latency, the process (memory, CPU, event loop), and whatever the role registers (a cache's hit ratio,
 *   bytes by source, upstream latency; the server's redirects per cache).
 * - `GET /health`: liveness: 200 as long as the process answers.
 * - `GET /ready`: readiness: 200 when every critical check passes (storage writable, an upstream or the
 *   origin reachable), else 503; the body lists every check.
 *
 * Route labels are the API's route names (`blob`, `manifest`, ...), never repository names, so the number
 * of series stays bounded.
 */
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { Context } from 'koa';
import type { ExtraRoute } from './http/app.js';
import { matchRoute } from './http/routes.js';

/** One readiness check: resolves undefined when fine, or the reason it is not. */
export interface ReadyCheck {
  readonly name: string;
  /** A failed critical check makes `/ready` answer 503; others are reported only. */
  readonly critical: boolean;
  check(): Promise<string | undefined>;
}

/** The result of one readiness check. */
export interface ReadyResult {
  readonly name: string;
  readonly ok: boolean;
  readonly critical: boolean;
  readonly detail?: string;
}

/** Paths served outside the registry API by every role. */
export const OPS_PATHS = { metrics: '/metrics', health: '/health', ready: '/ready' } as const;

/** Latency buckets in seconds, from a cached manifest (ms) to a cold multi-GiB blob (minutes). */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The metrics registry and readiness checks of one running role. */
export class NodeObservability {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly duration: Histogram<'route' | 'method'>;
  private readonly checks: ReadyCheck[] = [];

  constructor(readonly role: string) {
    this.registry.setDefaultLabels({ role });
    collectDefaultMetrics({ register: this.registry, prefix: 'cascade_' });
    // prom-client names these gauges `_total`, which Prometheus reserves for counters (promtool flags them).
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      this.registry.removeSingleMetric(`cascade_${name}`);
    }
    this.requests = new Counter({
      name: 'cascade_http_requests_total',
      help: 'HTTP requests answered, by route, method and status (499: the client left first).',
      labelNames: ['route', 'method', 'status'],
      registers: [this.registry],
    });
    this.duration = new Histogram({
      name: 'cascade_http_request_duration_seconds',
      help: 'Time from the request to the end of the response, by route and method.',
      labelNames: ['route', 'method'],
      buckets: DURATION_BUCKETS,
      registers: [this.registry],
    });
  }

  /** Records one answered request. */
  observeRequest(route: string, method: string, status: number, seconds: number): void {
    this.requests.labels(route, method, String(status)).inc();
    this.duration.labels(route, method).observe(seconds);
  }

  addReadyCheck(check: ReadyCheck): void {
    this.checks.push(check);
  }

  /** Runs every readiness check (each bounded by `timeoutMs`). */
  async ready(timeoutMs = 3000): Promise<{ ready: boolean; checks: ReadyResult[] }> {
    const checks = await Promise.all(
      this.checks.map(async (c): Promise<ReadyResult> => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<string>((resolve) => {
          timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs);
        });
        const detail = await Promise.race([c.check().catch((err: unknown) => (err instanceof Error ? err.message : String(err))), timeout]);
        clearTimeout(timer);
        return { name: c.name, ok: detail === undefined, critical: c.critical, ...(detail !== undefined ? { detail } : {}) };
      }),
    );
    return { ready: checks.every((c) => c.ok || !c.critical), checks };
  }

  /** `/metrics`, `/health` and `/ready`, for the role's HTTP app. */
  routes(): ExtraRoute[] {
    return [
      {
        method: 'GET',
        path: OPS_PATHS.metrics,
        handler: async (ctx: Context) => {
          ctx.body = await this.registry.metrics();
          ctx.type = this.registry.contentType;
        },
      },
      {
        method: 'GET',
        path: OPS_PATHS.health,
        handler: async (ctx: Context) => {
          ctx.body = { status: 'ok', role: this.role };
        },
      },
      {
        method: 'GET',
        path: OPS_PATHS.ready,
        handler: async (ctx: Context) => {
          const { ready, checks } = await this.ready();
          ctx.body = { status: ready ? 'ready' : 'not ready', role: this.role, checks };
          ctx.status = ready ? 200 : 503;
        },
      },
    ];
  }
}

/** The route label of a request path: the API route's name, an ops path, or `other`. */
export function routeLabel(path: string, prefix = ''): string {
  for (const p of Object.values(OPS_PATHS)) if (path === p) return p.slice(1);
  if (path.startsWith('/api/')) return 'api';
  const api = prefix && path.startsWith(prefix) ? path.slice(prefix.length) : path;
  return matchRoute(api)?.route.name ?? 'other';
}
