/**
 * The registry, cache and mirror HTTP application: the HTTP kit (request id, access log and metrics, error
 * mapper), configured headers, the routes outside `/v2/` a role adds (the token endpoint of `auth.token`,
 * `/metrics`, a cache's `/api/v0/keys`) on @koa/router, and the `/v2/` dispatcher for everything else.
 */
import Koa from 'koa';
import type { Logger } from 'pino';
import { allowAll, type Authorizer } from '../auth/authorizer.js';
import { RegistryError } from '../errors.js';
import type { Namespace } from '../registry.js';
import { dispatch } from './dispatch.js';
import { accessLog, errorMapper, onResponseError, requestId, routerOf, serveRoutes, type ExtraRoute } from './kit/index.js';
import type { Sendfile } from './sendfile.js';
import type { EventSink } from '../notifications/event.js';
import { routeLabel, type NodeObservability } from '../metrics.js';

export type { ExtraRoute } from './kit/index.js';

/** Options of {@link createRegistryApp}. */
export interface RegistryAppOptions {
  readonly namespace: Namespace;
  readonly logger: Logger;
  readonly authorizer?: Authorizer;
  /** `storage.delete.enabled`. */
  readonly deleteEnabled?: boolean;
  /** `http.headers`: added to every response. */
  readonly headers?: Record<string, string[]>;
  /** `http.prefix`, e.g. `/registry`. */
  readonly prefix?: string;
  /** Default and largest `_catalog` page (default 1000). */
  readonly catalogMaxEntries?: number;
  /** `log.accesslog.disabled`. */
  readonly accessLog?: boolean;
  /**
   * Endpoints outside `/v2/` (the token endpoint of `auth.token`, `/metrics`), at their exact paths, before
   * `http.prefix` applies; every other path is the registry API's.
   */
  readonly extraRoutes?: readonly ExtraRoute[];
  /** Where request counts and latencies go (`/metrics`). */
  readonly observability?: NodeObservability;
  /** Blob bodies read from files go out with sendfile(2) (see `http/sendfile.ts`). */
  readonly sendfile?: Sendfile;
  /** Where notification events go (`notifications`). */
  readonly events?: EventSink;
}

/**
 * Builds the Koa application that serves the distribution API over `options.namespace`.
 *
 * @throws Error when an extra route would shadow the registry API (a path under `/v2/`).
 */
export function createRegistryApp(options: RegistryAppOptions): Koa {
  const app = new Koa();
  app.proxy = false;
  const prefix = (options.prefix ?? '').replace(/\/+$/, '');
  const extraRoutes: readonly ExtraRoute[] = options.extraRoutes ?? [];
  for (const route of extraRoutes) {
    const api = route.path.startsWith(prefix) ? route.path.slice(prefix.length) : '';
    if (api === '/v2' || api.startsWith('/v2/')) throw new Error(`${route.path}: an extra route cannot be served inside the registry API (/v2/)`);
  }
  const log = options.logger;
  const dispatcherOptions = {
    namespace: options.namespace,
    authorizer: options.authorizer ?? allowAll,
    deleteEnabled: options.deleteEnabled ?? false,
    prefix,
    catalogMaxEntries: options.catalogMaxEntries ?? 1000,
    ...(options.sendfile ? { sendfile: options.sendfile } : {}),
    ...(options.events ? { events: options.events } : {}),
    onBodyError: (err: Error) => log.warn({ err: { code: (err as { code?: string }).code, message: err.message } }, 'blob body failed'),
  };

  app.on('error', onResponseError(log));
  app.use(requestId());
  app.use(accessLog({ logger: log, ...(options.observability ? { observability: options.observability } : {}), route: (ctx) => routeLabel(ctx.path, prefix), enabled: options.accessLog !== false }));
  app.use(async (ctx, next) => {
    ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    for (const [name, values] of Object.entries(options.headers ?? {})) ctx.set(name, values);
    await next();
  });
  app.use(errorMapper(log));

  app.use(serveRoutes(routerOf(extraRoutes)));

  app.use(async (ctx) => {
    let path = ctx.path;
    if (prefix) {
      if (!path.startsWith(`${prefix}/`)) throw new RegistryError('NOT_FOUND', `${path.slice(0, 200)} is not part of the registry API`);
      path = path.slice(prefix.length);
    }
    await dispatch(ctx, path, dispatcherOptions);
  });

  return app;
}
