/**
 * The origin registry as the server sees it: raw streaming requests (the server proxies manifests,
 * pushes and blobs without buffering) on downstream's one registry client, the origin's auth scheme, and
 * the server's own service credentials for filling caches that present a valid grant.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { basicAuthorization, RegistryClient, TokenCache, tokenRealmOf, type RegistryRequest, type TokenRealm } from '@cascade/downstream';
import { parseChallenge } from '@cascade/registry-core';
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

/** A request to the origin. */
export type OriginRequest = RegistryRequest;

/** The challenge the origin sends to anonymous requests. */
export type OriginChallenge = { scheme: 'none' } | { scheme: 'basic'; realm: string } | ({ scheme: 'bearer' } & TokenRealm);

/** Streaming client of the origin registry. */
export class OriginClient {
  readonly base: URL;
  private readonly client: RegistryClient;
  private challenge: Promise<OriginChallenge> | undefined;
  private readonly tokens = new TokenCache();

  constructor(private readonly options: OriginOptions) {
    this.client = new RegistryClient({
      url: options.url,
      name: 'the origin',
      ...(options.ca ? { ca: options.ca } : {}),
      ...(options.responseTimeoutMs !== undefined ? { responseTimeoutMs: options.responseTimeoutMs } : {}),
    });
    this.base = this.client.base;
  }

  /** Sends a request and resolves with the response once its headers arrive (the body is left to read). */
  request(req: OriginRequest): Promise<IncomingMessage> {
    return this.client.request(req);
  }

  /**
   * Sends a request to `url`: the origin, or its token service (which may be on another host), trusting the
   * origin's CAs; resolves once the response headers arrive.
   */
  requestUrl(url: URL, req: Omit<OriginRequest, 'path'>): Promise<IncomingMessage> {
    return this.client.requestUrl(url, req);
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
    const basic = basicAuthorization(username, password ?? '');
    if (challenge.scheme === 'basic') return basic;
    return `Bearer ${await this.tokens.get(challenge, scope, () => this.fetchToken(challenge, scope, basic))}`;
  }

  /** Closes idle connections. */
  close(): void {
    this.client.close();
  }

  private async fetchToken(challenge: TokenRealm, scope: string, basic: string): Promise<{ token: string; expiresIn?: number }> {
    const { status, url, answer } = await this.client.requestToken(challenge, scope, { authorization: basic });
    if (status !== 200 || !answer) throw new Error(`origin token endpoint ${url.origin}${url.pathname} refused the service account: HTTP ${status}`);
    if ('invalid' in answer) throw new Error(answer.invalid === 'not-json' ? `origin token endpoint ${url.origin}${url.pathname} sent no JSON` : 'origin token endpoint sent no token');
    return answer;
  }
}

/** The origin's scheme from its challenge to an anonymous request (a Bearer one without a realm counts as Basic). */
export function originChallengeOf(header: string): OriginChallenge {
  const bearer = tokenRealmOf(header);
  if (bearer) return { scheme: 'bearer', realm: bearer.realm, ...(bearer.service ? { service: bearer.service } : {}) };
  return { scheme: 'basic', realm: parseChallenge(header)?.params.realm ?? '' };
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
