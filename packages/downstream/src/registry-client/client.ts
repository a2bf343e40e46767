/**
 * One client of a registry: streaming requests to its base URL (and to its token service, which may be on
 * another host) over keep-alive connections that trust the configured CAs, and token requests read with a
 * bound. The mirror's remotes and the server's origin use it; what each does with a token (the flow, the
 * realm checks, the messages) is theirs.
 */
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { RegistryError } from '@cascade/registry-core';
import { describeError } from '../upstream.js';
import { readBounded } from './body.js';
import { tokenUrl, type TokenRealm } from './realm.js';
import { tokenAnswerOf, type TokenAnswer } from './tokens.js';

/** Options of {@link RegistryClient}. */
export interface RegistryClientOptions {
  /** Base URL of the registry, e.g. `https://registry.example:5000`. */
  readonly url: string;
  /** Extra CA certificates (PEM) trusted for https, besides Node's roots. */
  readonly ca?: readonly string[];
  /** False: `ca` replaces Node's roots instead of joining them (`cascade prefetch --ca`). Default true. */
  readonly systemRoots?: boolean;
  /** Connections kept to the registry's host (default 128). */
  readonly maxSockets?: number;
  /** How long the registry may take to answer once a request is sent (default 30 s). */
  readonly responseTimeoutMs?: number;
  /** A connection silent this long, before or during the answer, is given up (default: no limit). */
  readonly idleTimeoutMs?: number;
  /** The registry as error messages name it (default `the registry`): `the origin`, `remote`. */
  readonly name?: string;
}

/** How long a registry may take to send its response headers once a request is sent. */
const DEFAULT_RESPONSE_TIMEOUT_MS = 30_000;

/** Largest token answer read (a JWT with its claims is a few KiB). */
export const TOKEN_MAX_BYTES = 1 << 20;

/** A request to a registry. */
export interface RegistryRequest {
  readonly method: string;
  /** Path and query, e.g. `/v2/team/app/manifests/v1`. */
  readonly path: string;
  readonly headers?: OutgoingHttpHeaders;
  /** A body to stream (uploads). */
  readonly body?: Readable;
  readonly signal?: AbortSignal;
}

/** A token service's answer: its status, the URL asked, and for a 200 the token read from it. */
export interface TokenResponse {
  readonly status: number;
  readonly url: URL;
  /** The body (an error's explanation, for another status). */
  readonly body: Buffer;
  /** Read from a 200's body. */
  readonly answer?: TokenAnswer;
}

/** Streaming client of one registry and its token service. */
export class RegistryClient {
  readonly base: URL;
  private readonly agent: HttpAgent | HttpsAgent;
  private realmAgent: HttpsAgent | undefined;

  constructor(private readonly options: RegistryClientOptions) {
    this.base = new URL(options.url);
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 128, scheduling: 'lifo' as const };
    this.agent = this.base.protocol === 'https:' ? new HttpsAgent({ ...agentOptions, ...this.tlsTrust() }) : new HttpAgent(agentOptions);
  }

  /** Sends a request and resolves with the response once its headers arrive (the body is left to read). */
  request(req: RegistryRequest): Promise<IncomingMessage> {
    return this.requestUrl(registryUrl(this.base, req.path), req);
  }

  /**
   * Sends a request to `url`: the registry, or its token service (which may be on another host), trusting the
   * configured CAs; resolves once the response headers arrive.
   * @throws RegistryError UPSTREAM_FAILED when the host cannot be reached or its answer cannot be parsed.
   */
  requestUrl(url: URL, req: Omit<RegistryRequest, 'path'>): Promise<IncomingMessage> {
    const https = url.protocol === 'https:';
    const agent = url.origin === this.base.origin ? this.agent : https ? (this.realmAgent ??= new HttpsAgent({ keepAlive: true, ...this.tlsTrust() })) : undefined;
    const send = https ? httpsRequest : httpRequest;
    const headers = { ...(req.headers ?? {}) };
    if (!req.body) {
      // No body goes out: a client's Content-Length (a GET with a body) would make the registry wait for bytes
      // that never come, and the next request on this pooled connection, maybe another user's, would be
      // read as that body.
      delete headers['content-length'];
      delete headers['transfer-encoding'];
    }
    const responseTimeoutMs = this.options.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS;
    const name = this.options.name ?? 'the registry';
    return new Promise((resolve, reject) => {
      const body = req.body;
      let timer: NodeJS.Timeout | undefined;
      const out = send(url, { method: req.method, headers, ...(agent ? { agent } : {}), ...(req.signal ? { signal: req.signal } : {}) }, (res) => {
        clearTimeout(timer);
        // The registry answered without reading the whole body (a 401 to an upload): the rest is not worth
        // sending, and a body the client never finishes would hold this connection forever.
        if (body) res.once('end', () => endUnfinished(out, body));
        resolve(res);
      });
      const idle = this.options.idleTimeoutMs;
      if (idle !== undefined) out.setTimeout(idle, () => out.destroy(Object.assign(new Error(`no data from ${url.origin} for ${idle / 1000} s`), { code: 'ETIMEDOUT' })));
      // The clock for the answer starts once the request is sent (an upload may take long to send).
      out.once('finish', () => {
        timer = setTimeout(() => out.destroy(new Error(`no answer within ${responseTimeoutMs / 1000} s`)), responseTimeoutMs);
        timer.unref();
      });
      // Failing to reach the registry, or an answer Node cannot parse (a cut before the headers, a huge or
      // malformed header), is the registry's failure: 502, never a 500 of this node.
      out.on('error', (err) => {
        clearTimeout(timer);
        reject(err instanceof RegistryError ? err : new RegistryError('UPSTREAM_FAILED', `${name} ${url.origin} failed: ${describeError(err)}`, { cause: err }));
      });
      if (body) {
        body.pipe(out);
        // A client that goes away, or lied about its length, before its body is complete: the request to the
        // registry ends too (a pooled connection otherwise waits for the missing bytes, and the pool runs dry).
        body.once('close', () => endUnfinished(out, body));
      } else out.end();
    });
  }

  /**
   * Asks the token service `realm` for a token for `scope` (none: the service's default), with `headers`
   * (Basic credentials in `authorization`, or none for an anonymous token). The answer's body is read up to
   * {@link TOKEN_MAX_BYTES}; a 200's token is in `answer`, any other status is the caller's to judge. With
   * `timeoutMs`, the whole exchange (connecting included) has that long.
   * @throws RegistryError UPSTREAM_FAILED when the service cannot be reached in time or its answer is too
   *   large or cut (the network's error is its cause).
   * @throws TypeError when the realm is not a URL.
   */
  async requestToken(realm: TokenRealm, scope: string | undefined, headers: OutgoingHttpHeaders = {}, timeoutMs?: number): Promise<TokenResponse> {
    const url = tokenUrl(realm, scope);
    const deadline = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
    try {
      const res = await this.requestUrl(url, { method: 'GET', headers, ...(deadline ? { signal: deadline } : {}) });
      const body = await readBounded(res, TOKEN_MAX_BYTES, `the token from ${url.origin}`);
      const status = res.statusCode ?? 0;
      return { status, url, body, ...(status === 200 ? { answer: tokenAnswerOf(body) } : {}) };
    } catch (err) {
      if (!deadline?.aborted) throw err;
      const late = Object.assign(new Error(`no answer within ${(timeoutMs as number) / 1000} s`), { code: 'ETIMEDOUT' });
      throw new RegistryError('UPSTREAM_FAILED', `the token service ${url.origin} failed: ${describeError(late)}`, { cause: late });
    }
  }

  /** The CAs https connections trust: Node's roots plus `ca` (or `ca` alone); Node's defaults when none is given. */
  private tlsTrust(): { ca?: string[] } {
    const { ca, systemRoots = true } = this.options;
    if (!ca?.length) return {};
    return { ca: systemRoots ? [...rootCertificates, ...ca] : [...ca] };
  }

  /** Closes idle connections. */
  close(): void {
    this.agent.destroy();
    this.realmAgent?.destroy();
  }
}

/**
 * The URL of `path` (path and query, from a client's request) on the registry `base`. The scheme, host and
 * port come from `base` alone, whatever `path` holds: resolving it as a relative reference would let
 * `http://other/...` (absolute form) or `//other/...` (a scheme-relative path) name another host.
 * @throws RegistryError REQUEST_INVALID when `path` does not start with `/`.
 */
export function registryUrl(base: URL, path: string): URL {
  if (!path.startsWith('/')) throw new RegistryError('REQUEST_INVALID', 'the request target must be a path');
  // After the origin, a path that starts with '/' can only be a path: the authority ends at that '/'.
  return new URL(`${base.origin}${path}`);
}

/**
 * Stops sending `body` when `out` has not ended: `out` is destroyed (its connection cannot be reused), and
 * the rest of `body` is read and dropped, so that the client's connection reaches its next request (Node
 * does not drain a body that was being piped, and a paused one would stall it for good).
 */
function endUnfinished(out: ClientRequest, body: Readable): void {
  if (out.writableEnded) return;
  body.unpipe(out);
  body.resume();
  out.destroy();
}
