/**
 * The HTTP kit every Cascade app is built on (the registry, cache and mirror app in `http/app.ts`, the
 * server's front): one request id, one access log with its metrics, one error mapper, each a Koa middleware,
 * and @koa/router for the routes outside `/v2/` (`routes.ts`). This file: the request id and the access log.
 */
import { randomUUID } from 'node:crypto';
import type Koa from 'koa';
import type { Logger } from 'pino';
import type { NodeObservability } from '../../metrics.js';

/** What a client may send as its own request id (anything else is replaced by a UUID). */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Sets `ctx.state.reqId` (the client's `X-Request-Id` when well formed, else a UUID) and answers it. */
export function requestId(): Koa.Middleware {
  return async (ctx, next) => {
    const incoming = ctx.get('x-request-id');
    const reqId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.reqId = reqId;
    ctx.set('X-Request-Id', reqId);
    await next();
  };
}

/**
 * An AbortSignal that fires when the client goes away before its response finished (the request's own
 * 'close' only says its body was read), so that work done for it alone stops.
 */
export function clientGone(ctx: Koa.Context): AbortSignal {
  const controller = new AbortController();
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort();
  });
  return controller.signal;
}

/** Options of {@link accessLog}. */
export interface AccessLogOptions {
  readonly logger: Logger;
  /** Where request counts and latencies go (`/metrics`). */
  readonly observability?: NodeObservability;
  /** The route label of a request, for metrics (a bounded set: never names or digests). */
  readonly route: (ctx: Koa.Context) => string;
  /** Log a line per request (`log.accesslog.disabled` turns it off; metrics are kept). */
  readonly enabled?: boolean;
  /** Fields a role adds to the line (the server: the cache a blob was redirected to). */
  readonly fields?: (ctx: Koa.Context) => Record<string, unknown>;
}

/**
 * One `request` log line and one metrics observation per request, once its response closed: the status
 * (499, nginx's "client closed request", when the client left before any answer), the bytes sent
 * (sendfile's counted too), the duration, the user, and the query with bearer secrets redacted.
 */
export function accessLog(options: AccessLogOptions): Koa.Middleware {
  const { logger: log } = options;
  return async (ctx, next) => {
    const started = process.hrtime.bigint();
    const socket = ctx.req.socket;
    const written0 = socket.bytesWritten;
    ctx.res.once('close', () => {
      const finished = ctx.res.writableFinished;
      const status = ctx.res.headersSent ? ctx.res.statusCode : finished ? ctx.status : 499;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      options.observability?.observeRequest(options.route(ctx), ctx.method, status, seconds);
      if (options.enabled === false) return;
      const declared = Number(ctx.res.getHeader('content-length'));
      const sendfileBytes = (ctx.state as { sendfileBytes?: number }).sendfileBytes ?? 0;
      const bytes = ctx.method === 'HEAD' ? 0 : finished && Number.isFinite(declared) ? declared : socket.bytesWritten - written0 + sendfileBytes;
      log.info(
        {
          reqId: ctx.state.reqId,
          method: ctx.method,
          path: ctx.path,
          query: redactQuery(ctx.querystring),
          status,
          bytes,
          duration: seconds * 1000,
          user: ctx.state.user,
          remote: socket.remoteAddress,
          ...(options.fields?.(ctx) ?? {}),
          ...(finished ? {} : { aborted: true }),
        },
        'request',
      );
    });
    await next();
  };
}

/** The query string for the access log, with grants and upload state (bearer secrets) replaced. */
export function redactQuery(query: string): string | undefined {
  if (!query) return undefined;
  return query.replace(/(^|&)(grant|_state)=[^&]*/g, '$1$2=[redacted]');
}
