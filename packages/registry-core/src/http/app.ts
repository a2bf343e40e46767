/**
 * The `/v2/` HTTP application: access log, error envelope, configured headers and the dispatcher, plus the
 * few endpoints outside `/v2/` a role adds (the token endpoint of `auth.token`).
 */
import { randomUUID } from 'node:crypto';
import Koa, { type Context } from 'koa';
import type { Logger } from 'pino';
import { allowAll, type Authorizer } from '../auth/authorizer.js';
import { errorEnvelope, isClientFault, RegistryError } from '../errors.js';
import type { Namespace } from '../registry.js';
import { dispatch } from './dispatch.js';
import { emptyResponse } from './respond.js';
import type { Sendfile } from './sendfile.js';
import { routeLabel, type NodeObservability } from '../metrics.js';

/**
 * A handler for one method and exact path outside `/v2/`, such as the token endpoint. It runs after the
 * access log and inside the error envelope, so a thrown RegistryError becomes an OCI error response.
 */
export interface ExtraRoute {
  /** Upper-case HTTP method. */
  readonly method: string;
  /** The exact request path, matched before `http.prefix` is applied; it must not be under `/v2/`. */
  readonly path: string;
  readonly handler: (ctx: Context) => Promise<void>;
}

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
  /** Endpoints outside `/v2/` (the token endpoint of `auth.token`); every other path is the registry API's. */
  readonly extraRoutes?: readonly ExtraRoute[];
  /** Where request counts and latencies go (`/metrics`). */
  readonly observability?: NodeObservability;
  /** Blob bodies read from files go out with sendfile(2) (see `http/sendfile.ts`). */
  readonly sendfile?: Sendfile;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * Builds the Koa application that serves the distribution API over `options.namespace`.
 *
 * @throws Error when an extra route would shadow the registry API (a path under `/v2/`).
 */
export function createRegistryApp(options: RegistryAppOptions): Koa {
  const app = new Koa();
  app.proxy = false;
  const prefix = (options.prefix ?? '').replace(/\/+$/, '');
  const extraRoutes = new Map<string, ExtraRoute[]>();
  for (const route of options.extraRoutes ?? []) {
    const api = route.path.startsWith(prefix) ? route.path.slice(prefix.length) : '';
    if (api === '/v2' || api.startsWith('/v2/')) throw new Error(`${route.path}: an extra route cannot be served inside the registry API (/v2/)`);
    extraRoutes.set(route.path, [...(extraRoutes.get(route.path) ?? []), route]);
  }
  const log = options.logger;
  const dispatcherOptions = {
    namespace: options.namespace,
    authorizer: options.authorizer ?? allowAll,
    deleteEnabled: options.deleteEnabled ?? false,
    prefix,
    catalogMaxEntries: options.catalogMaxEntries ?? 1000,
    ...(options.sendfile ? { sendfile: options.sendfile } : {}),
    onBodyError: (err: Error) => log.warn({ err: { code: (err as { code?: string }).code, message: err.message } }, 'blob body failed'),
  };

  // Errors escaping Koa's own handling (a stream that fails after the headers went out) are logged here.
  app.on('error', (err: Error & { status?: number }, ctx?: Koa.Context) => {
    if (err.status !== undefined && err.status < 500) return;
    if (isClientFault(err)) log.warn({ reqId: ctx?.state.reqId, code: (err as { code?: string }).code, reason: err.message }, 'response failed: the client went away or sent a malformed body');
    else log.error({ err, reqId: ctx?.state.reqId }, 'response failed');
  });

  app.use(async (ctx, next) => {
    const started = process.hrtime.bigint();
    const incoming = ctx.get('x-request-id');
    const reqId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.reqId = reqId;
    ctx.set('X-Request-Id', reqId);
    ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    for (const [name, values] of Object.entries(options.headers ?? {})) ctx.set(name, values);
    const socket = ctx.req.socket;
    const written0 = socket.bytesWritten;
    ctx.res.once('close', () => {
      const finished = ctx.res.writableFinished;
      const status = ctx.res.headersSent ? ctx.res.statusCode : finished ? ctx.status : 499;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      options.observability?.observeRequest(routeLabel(ctx.path, prefix), ctx.method, status, seconds);
      if (options.accessLog !== false) {
        const declared = Number(ctx.res.getHeader('content-length'));
        const sendfileBytes = (ctx.state as { sendfileBytes?: number }).sendfileBytes ?? 0;
        const bytes = ctx.method === 'HEAD' ? 0 : finished && Number.isFinite(declared) ? declared : socket.bytesWritten - written0 + sendfileBytes;
        log.info(
          {
            reqId,
            method: ctx.method,
            path: ctx.path,
            query: redactQuery(ctx.querystring),
            // A client that left before any answer gets 499 (nginx's "client closed request"), not Koa's default 404.
            status,
            bytes,
            duration: seconds * 1000,
            user: ctx.state.user,
            remote: ctx.req.socket.remoteAddress,
            ...(finished ? {} : { aborted: true }),
          },
          'request',
        );
      }
    });
    await next();
  });

  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      const registryError = toRegistryError(err);
      // Expected failures (an upstream down) are one warning line; only unexpected errors carry a stack.
      if (err instanceof RegistryError && registryError.status >= 500) log.warn({ reqId: ctx.state.reqId, code: registryError.code, reason: registryError.message }, 'request failed');
      else if (registryError.status >= 500 && isClientFault(err)) log.warn({ reqId: ctx.state.reqId, code: (err as { code?: string }).code, reason: (err as Error).message }, 'request failed: the client went away or sent a malformed body');
      else if (registryError.status >= 500) log.error({ err, reqId: ctx.state.reqId }, 'request failed');
      // Drain what the client sent so the connection can be reused.
      if (!ctx.req.readableEnded) ctx.req.resume();
      if (ctx.method === 'HEAD') emptyResponse(ctx, registryError.status);
      else {
        ctx.body = errorEnvelope(registryError);
        ctx.status = registryError.status;
      }
      for (const [name, value] of Object.entries(registryError.headers)) ctx.set(name, value);
    }
  });

  app.use(async (ctx) => {
    const extra = extraRoutes.get(ctx.path);
    if (extra !== undefined) {
      const route = extra.find((r) => r.method === ctx.method);
      if (route === undefined) {
        throw new RegistryError('UNSUPPORTED', `${ctx.method} is not supported on this resource`, { headers: { Allow: extra.map((r) => r.method).join(', ') } });
      }
      await route.handler(ctx);
      return;
    }
    let path = ctx.path;
    if (prefix) {
      if (!path.startsWith(`${prefix}/`)) throw new RegistryError('NOT_FOUND', `${path.slice(0, 200)} is not part of the registry API`);
      path = path.slice(prefix.length);
    }
    await dispatch(ctx, path, dispatcherOptions);
  });

  return app;
}

/** Maps any thrown value to a registry error (ENOSPC and friends become 507/503, the rest 500 UNKNOWN). */
export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  const code = (err as { code?: string }).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new RegistryError('STORAGE_FULL', 'insufficient storage');
  if (code === 'PATH_NOT_FOUND') return new RegistryError('NOT_FOUND', 'not found');
  return new RegistryError('UNKNOWN', 'internal error; see the registry log');
}

/** The query string for the access log, with grants and upload state (bearer secrets) replaced. */
export function redactQuery(query: string): string | undefined {
  if (!query) return undefined;
  return query.replace(/(^|&)(grant|_state)=[^&]*/g, '$1$2=[redacted]');
}
