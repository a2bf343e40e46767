/**
 * The origin registry as the server sees it: raw streaming requests (the server proxies manifests,
 * pushes and blobs without buffering), the origin's auth scheme, and the server's own service credentials
 * for filling caches that present a valid grant.
 */
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { describeError, readLimited } from '@cascade/downstream';
import { parseChallenge, RegistryError } from '@cascade/registry-core';
import type { Logger } from 'pino';

/** Options of {@link OriginClient}. */
export interface OriginOptions {
  /** Base URL of the origin registry, e.g. `https://registry.example:5000`. */
  readonly url: string;
  /** Service account used to fill caches (needs pull on every repository). */
  readonly username?: string;
  readonly password?: string;
  /** Extra CA certificates (PEM) trusted for the origin's TLS. */
  readonly ca?: readonly string[];
  readonly logger: Logger;
  /** How long the origin may take to answer once a request is sent (default 30 s). */
  readonly responseTimeoutMs?: number;
}

/** How long the origin may take to send its response headers once a request is sent. */
const DEFAULT_RESPONSE_TIMEOUT_MS = 30_000;

/** A request to the origin. */
export interface OriginRequest {
  readonly method: string;
  /** Path and query, e.g. `/v2/team/app/manifests/v1`. */
  readonly path: string;
  readonly headers?: OutgoingHttpHeaders;
  /** A body to stream (uploads). */
  readonly body?: Readable;
  readonly signal?: AbortSignal;
}

/** The challenge the origin sends to anonymous requests. */
export type OriginChallenge = { scheme: 'none' } | { scheme: 'basic'; realm: string } | { scheme: 'bearer'; realm: string; service?: string };

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Streaming client of the origin registry. */
export class OriginClient {
  readonly base: URL;
  private readonly agent: HttpAgent | HttpsAgent;
  private challenge: Promise<OriginChallenge> | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private realmAgent: HttpsAgent | undefined;

  constructor(private readonly options: OriginOptions) {
    this.base = new URL(options.url);
    const agentOptions = { keepAlive: true, maxSockets: 128, scheduling: 'lifo' as const };
    this.agent = this.base.protocol === 'https:' ? new HttpsAgent({ ...agentOptions, ...this.tlsTrust() }) : new HttpAgent(agentOptions);
  }

  /** Sends a request and resolves with the response once its headers arrive (the body is left to read). */
  request(req: OriginRequest): Promise<IncomingMessage> {
    return this.requestUrl(originUrl(this.base, req.path), req);
  }

  /**
   * Sends a request to `url`: the origin, or its token service (which may be on another host), trusting the
   * origin's CAs; resolves once the response headers arrive.
   */
  requestUrl(url: URL, req: Omit<OriginRequest, 'path'>): Promise<IncomingMessage> {
    const https = url.protocol === 'https:';
    const agent = url.origin === this.base.origin ? this.agent : https ? (this.realmAgent ??= new HttpsAgent({ keepAlive: true, ...this.tlsTrust() })) : undefined;
    const send = https ? httpsRequest : httpRequest;
    const headers = { ...(req.headers ?? {}) };
    if (!req.body) {
      // No body goes out: a client's Content-Length (a GET with a body) would make the origin wait for bytes
      // that never come, and the next request on this pooled connection, maybe another user's, would be
      // read as that body.
      delete headers['content-length'];
      delete headers['transfer-encoding'];
    }
    const responseTimeoutMs = this.options.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const body = req.body;
      let timer: NodeJS.Timeout | undefined;
      const out = send(url, { method: req.method, headers, ...(agent ? { agent } : {}), ...(req.signal ? { signal: req.signal } : {}) }, (res) => {
        clearTimeout(timer);
        // The origin answered without reading the whole body (a 401 to an upload): the rest is not worth
        // sending, and a body the client never finishes would hold this connection forever.
        if (body) res.once('end', () => endUnfinished(out, body));
        resolve(res);
      });
      // The clock for the answer starts once the request is sent (an upload may take long to send).
      out.once('finish', () => {
        timer = setTimeout(() => out.destroy(new Error(`no answer within ${responseTimeoutMs / 1000} s`)), responseTimeoutMs);
        timer.unref();
      });
      // Failing to reach the origin, or an answer Node cannot parse (a cut before the headers, a huge or
      // malformed header), is the origin's failure: 502, never a 500 of this server.
      out.on('error', (err) => {
        clearTimeout(timer);
        reject(err instanceof RegistryError ? err : new RegistryError('UPSTREAM_FAILED', `the origin ${url.origin} failed: ${describeError(err)}`, { cause: err }));
      });
      if (body) {
        body.pipe(out);
        // A client that goes away, or lied about its length, before its body is complete: the request to the
        // origin ends too (a pooled connection otherwise waits for the missing bytes, and the pool runs dry).
        body.once('close', () => endUnfinished(out, body));
      } else out.end();
    });
  }

  /** The origin's auth scheme, learned from its answer to an anonymous `GET /v2/` (cached). */
  scheme(): Promise<OriginChallenge> {
    this.challenge ??= this.request({ method: 'GET', path: '/v2/' })
      .then((res) => {
        res.resume();
        if (res.statusCode !== 401) return { scheme: 'none' } as const;
        return originChallengeOf(String(res.headers['www-authenticate'] ?? ''));
      })
      .catch((err: unknown) => {
        this.challenge = undefined;
        throw err;
      });
    return this.challenge;
  }

  /**
   * The Authorization header of the server's service account for `scope` (e.g. `repository:team/app:pull`):
   * Basic credentials, or a Bearer token from the origin's token endpoint (cached until shortly before it
   * expires). Undefined when the origin needs no auth or no service account is configured.
   */
  async serviceAuthorization(scope: string): Promise<string | undefined> {
    const { username, password } = this.options;
    const challenge = await this.scheme();
    if (challenge.scheme === 'none' || username === undefined) return undefined;
    const basic = `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`;
    if (challenge.scheme === 'basic') return basic;
    const cached = this.tokens.get(scope);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    const token = await this.fetchToken(challenge, scope, basic);
    this.tokens.set(scope, token);
    return `Bearer ${token.token}`;
  }

  /** The CAs https connections trust: Node's roots plus `ca` (Node's defaults alone when none is given). */
  private tlsTrust(): { ca?: string[] } {
    return this.options.ca?.length ? { ca: [...rootCertificates, ...this.options.ca] } : {};
  }

  /** Closes idle connections. */
  close(): void {
    this.agent.destroy();
    this.realmAgent?.destroy();
  }

  private async fetchToken(challenge: { realm: string; service?: string }, scope: string, basic: string): Promise<CachedToken> {
    const url = tokenUrl(challenge, scope);
    const res = await this.requestUrl(url, { method: 'GET', headers: { authorization: basic } });
    const raw = await readLimited(res, TOKEN_MAX_BYTES);
    if (res.statusCode !== 200) throw new Error(`origin token endpoint ${url.origin}${url.pathname} refused the service account: HTTP ${res.statusCode}`);
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(raw.toString('utf8')) as typeof body;
    } catch {
      throw new Error(`origin token endpoint ${url.origin}${url.pathname} sent no JSON`);
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new Error('origin token endpoint sent no token');
    // Renew 10 s early so a token never expires between fetch and use.
    return { token, expiresAt: Date.now() + Math.max(0, (body.expires_in ?? 60) - 10) * 1000 };
  }
}

/**
 * The URL of `path` (path and query, from a client's request) on the origin `base`. The origin's scheme, host
 * and port come from `base` alone, whatever `path` holds: resolving it as a relative reference would let
 * `http://other/...` (absolute form) or `//other/...` (a scheme-relative path) name another host.
 * @throws RegistryError REQUEST_INVALID when `path` does not start with `/`.
 */
export function originUrl(base: URL, path: string): URL {
  if (!path.startsWith('/')) throw new RegistryError('REQUEST_INVALID', 'the request target must be a path');
  // After the origin, a path that starts with '/' can only be a path: the authority ends at that '/'.
  return new URL(`${base.origin}${path}`);
}

/** The token request URL of a Bearer challenge: its realm with its service and, when given, a scope. */
export function tokenUrl(challenge: { realm: string; service?: string }, scope?: string): URL {
  const url = new URL(challenge.realm);
  if (challenge.service) url.searchParams.set('service', challenge.service);
  if (scope !== undefined) url.searchParams.set('scope', scope);
  return url;
}

/** Largest token answer read (a JWT with its claims is a few KiB). */
const TOKEN_MAX_BYTES = 1 << 20;

/** The origin's scheme from its challenge to an anonymous request (a Bearer one without a realm counts as Basic). */
export function originChallengeOf(header: string): OriginChallenge {
  const challenge = parseChallenge(header);
  const realm = challenge?.params.realm;
  if (challenge?.scheme === 'bearer' && realm) return { scheme: 'bearer', realm, ...(challenge.params.service ? { service: challenge.params.service } : {}) };
  return { scheme: 'basic', realm: realm ?? '' };
}

/**
 * Stops sending `body` to the origin when `out` has not ended: `out` is destroyed (its connection cannot be
 * reused), and the rest of `body` is read and dropped, so that the client's connection reaches its next
 * request (Node does not drain a body that was being piped, and a paused one would stall it for good).
 */
function endUnfinished(out: ClientRequest, body: Readable): void {
  if (out.writableEnded) return;
  body.unpipe(out);
  body.resume();
  out.destroy();
}

/** Hop-by-hop headers, never relayed by a proxy (RFC 9110 §7.6.1). */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

/** The request headers relayed to the origin. */
export function forwardableHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || name === 'x-forwarded-for') continue;
    out[name] = value;
  }
  return out;
}
