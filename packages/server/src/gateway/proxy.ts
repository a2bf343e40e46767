/** Relaying a request to the origin and its answer back to the client, streaming both ways. */
import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { pipeline, Transform, type TransformCallback } from 'node:stream';
import type { Context } from 'koa';
import { clientGone, Digest, matchRoute } from '@cascade/registry-core';
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
 * server (upload sessions, redirects). A whole blob or manifest is checked against its digest on the way
 * (see {@link relayResponse}).
 */
export async function proxyToOrigin(ctx: Context, origin: OriginClient, options: ProxyOptions = {}): Promise<IncomingMessage> {
  const method = ctx.method;
  const sendBody = options.body ?? !(method === 'GET' || method === 'HEAD');
  const path = options.path ?? ctx.url;
  const res = await origin.request({
    method,
    path,
    headers: options.headers ?? forwardableHeaders(ctx.headers),
    ...(sendBody ? { body: ctx.req } : {}),
    signal: clientGone(ctx),
  });
  relayResponse(ctx, res, origin, path);
  return res;
}

/**
 * Copies an origin response (status, headers, streamed body) to the Koa response. The body of a `200` to a
 * GET of a blob or of a manifest by digest (from `path`), or of a manifest whose `Docker-Content-Digest` the
 * origin gave, is hashed as it passes, and its last byte is held back until the digest matches: bytes that
 * do not match (a flipped byte, a wrong length) reach the client as a cut transfer, never as a clean 200.
 */
export function relayResponse(ctx: Context, res: IncomingMessage, origin: OriginClient, path?: string): void {
  const status = res.statusCode ?? 502;
  const noBody = ctx.method === 'HEAD' || status === 204 || status === 304;
  // Koa's body setter drops Content-Type and Content-Length, so the body goes first and headers after.
  if (noBody) {
    res.resume();
    ctx.body = null;
  } else {
    const expected = status === 200 && path !== undefined ? expectedDigest(path, res) : undefined;
    ctx.body = expected ? pipeline(res, new DigestCheck(expected), () => undefined) : res;
  }
  ctx.status = status;
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    ctx.set(name, name === 'location' ? relativeLocation(String(value), origin.base) : (value as string | string[]));
  }
}

/** The digest a whole `200` body of `path` must have: the blob's or manifest's in the path, else the origin's `Docker-Content-Digest` of a manifest. */
function expectedDigest(path: string, res: IncomingMessage): Digest | undefined {
  const match = matchRoute(path.split('?')[0] ?? '');
  if (match?.route.name === 'blob') return Digest.tryParse(match.params.digest ?? '');
  if (match?.route.name !== 'manifest') return undefined;
  const reference = match.params.reference ?? '';
  if (Digest.looksLikeDigest(reference)) return Digest.tryParse(reference);
  const header = res.headers['docker-content-digest'];
  return typeof header === 'string' ? Digest.tryParse(header) : undefined;
}

/** Passes bytes through while hashing them; the last byte leaves only once the whole body hashes to `expected`. */
class DigestCheck extends Transform {
  private readonly hash: Hash;
  private held: Buffer | undefined;

  constructor(private readonly expected: Digest) {
    super();
    this.hash = createHash(expected.algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length === 0) return callback();
    this.hash.update(chunk);
    if (this.held) this.push(this.held);
    this.push(chunk.subarray(0, chunk.length - 1));
    this.held = chunk.subarray(chunk.length - 1);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    const actual = Digest.fromHash(this.expected.algorithm, this.hash);
    if (!actual.equals(this.expected)) return callback(new Error(`the origin sent content with digest ${actual.toString()}, not ${this.expected.toString()}: cut before its last byte`));
    if (this.held) this.push(this.held);
    callback();
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
