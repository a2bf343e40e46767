/** Relaying a request to the origin and its answer back to the client, streaming both ways. */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Context } from 'koa';
import { forwardableHeaders, HOP_BY_HOP, type OriginClient } from './origin.js';

/** Options of {@link proxyToOrigin}. */
export interface ProxyOptions {
  /** Path and query to request (default: the client's). */
  readonly path?: string;
  /** Headers replacing the client's (default: the client's, minus hop-by-hop ones). */
  readonly headers?: OutgoingHttpHeaders;
  /** Send the client's body (default: for methods other than GET and HEAD). */
  readonly body?: boolean;
}

/**
 * Sends the client's request to the origin and answers with the origin's status, headers and body,
 * streamed. `Location` headers that point at the origin are made relative, so clients come back to the
 * server (upload sessions, redirects).
 */
export async function proxyToOrigin(ctx: Context, origin: OriginClient, options: ProxyOptions = {}): Promise<IncomingMessage> {
  const method = ctx.method;
  const sendBody = options.body ?? !(method === 'GET' || method === 'HEAD');
  const controller = new AbortController();
  // The response closing before it finished means the client went away (the request's own 'close' only
  // says its body was read).
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort();
  });
  const res = await origin.request({
    method,
    path: options.path ?? ctx.url,
    headers: options.headers ?? forwardableHeaders(ctx.headers),
    ...(sendBody ? { body: ctx.req } : {}),
    signal: controller.signal,
  });
  relayResponse(ctx, res, origin);
  return res;
}

/** Copies an origin response (status, headers, streamed body) to the Koa response. */
export function relayResponse(ctx: Context, res: IncomingMessage, origin: OriginClient): void {
  const status = res.statusCode ?? 502;
  const noBody = ctx.method === 'HEAD' || status === 204 || status === 304;
  // Koa's body setter drops Content-Type and Content-Length, so the body goes first and headers after.
  if (noBody) {
    res.resume();
    ctx.body = null;
  } else {
    ctx.body = res;
  }
  ctx.status = status;
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    ctx.set(name, name === 'location' ? relativeLocation(String(value), origin.base) : (value as string | string[]));
  }
}

function relativeLocation(location: string, base: URL): string {
  try {
    const url = new URL(location, base);
    return url.origin === base.origin ? `${url.pathname}${url.search}` : location;
  } catch {
    return location;
  }
}
