/**
 * A mirror's credentials for one remote: anonymous, Basic, or the Bearer token flow of the distribution
 * spec (a 401 names a realm, a service and a scope; the token is fetched from the realm, with the
 * configured Basic credentials when there are any, and reused for that scope until it expires, by every
 * request).
 *
 * The realm is where the credentials go, so it must be on the remote's host or its registrable domain
 * (`auth.docker.io` for `registry-1.docker.io`), over https unless the remote itself is plain http: a
 * remote cannot send the mirror's password anywhere else.
 */
import { isIP } from 'node:net';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import got, { type Got } from 'got';
import type { Logger } from 'pino';
import { parseChallenge, RegistryError } from '@cascade/registry-core';
import { describeError, type UpstreamAuth, type UpstreamHost, type UpstreamRequest } from '../upstream.js';

/** The registrable domain of a host name, approximately (`auth.docker.io` -> `docker.io`, `a.b.co.uk` -> `b.co.uk`). */
export function registrableDomain(hostname: string): string {
  const labels = hostname.toLowerCase().replace(/\.$/, '').split('.');
  if (labels.length <= 2) return labels.join('.');
  const tld = labels[labels.length - 1] as string;
  const sld = labels[labels.length - 2] as string;
  const keep = tld.length === 2 && (sld.length <= 3 || ['co', 'com', 'net', 'org', 'gov', 'edu', 'ac'].includes(sld)) ? 3 : 2;
  return labels.slice(-keep).join('.');
}

/** Why a token realm may not receive the mirror's credentials for `remote`, or undefined when it may. */
export function realmRefusal(realm: URL, remote: URL): string | undefined {
  if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && remote.protocol === 'http:')) {
    return `the realm is ${realm.protocol.replace(':', '')} while the remote is https`;
  }
  const a = realm.hostname.toLowerCase();
  const b = remote.hostname.toLowerCase();
  if (a === b) return undefined;
  if (isIP(a.replace(/^\[|\]$/g, '')) || isIP(b.replace(/^\[|\]$/g, ''))) return `the realm's host ${a} is not the remote's host ${b}`;
  if (registrableDomain(a) === registrableDomain(b)) return undefined;
  return `the realm's host ${a} is not on the remote's domain ${registrableDomain(b)}`;
}

/** The scope a request needs: pull on the repository of its path. */
export function scopeOf(path: string): string | undefined {
  const m = /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(path);
  return m ? `repository:${m[1]}:pull` : undefined;
}

/** Options of {@link RemoteAuth}. */
export interface RemoteAuthOptions {
  /** The remote's base URL. */
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
  /** Extra CA certificates (PEM) for the realm's TLS. */
  readonly ca?: readonly string[];
  readonly logger: Logger;
  readonly now?: () => number;
  /** Token request timeout (default 10 s). */
  readonly timeoutMs?: number;
}

interface CachedToken {
  readonly token: string;
  readonly expiresAt: number;
}

/** Counters of one remote's credentials, for metrics. */
export interface RemoteAuthStats {
  readonly scheme: 'none' | 'basic' | 'bearer';
  readonly tokensFetched: number;
  readonly tokensCached: number;
}

/** The credentials of one remote, shared by all requests to it. */
export class RemoteAuth implements UpstreamAuth {
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private realm: { url: string; service?: string } | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  private readonly client: Got;
  private readonly agent: HttpsAgent;
  private readonly now: () => number;
  private fetched = 0;

  constructor(private readonly options: RemoteAuthOptions) {
    this.now = options.now ?? Date.now;
    const ca = options.ca && options.ca.length > 0 ? [...rootCertificates, ...options.ca] : undefined;
    this.agent = new HttpsAgent({ keepAlive: true, maxSockets: 8, ...(ca ? { ca } : {}) });
    this.client = got.extend({
      retry: { limit: 0 },
      throwHttpErrors: false,
      followRedirect: false,
      timeout: { request: options.timeoutMs ?? 10_000 },
      agent: { https: this.agent },
      ...(ca ? { https: { certificateAuthority: ca } } : {}),
    });
  }

  private get basic(): string | undefined {
    const { username, password } = this.options;
    if (username === undefined || password === undefined) return undefined;
    return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  }

  async headers(request: UpstreamRequest): Promise<Record<string, string>> {
    if (this.scheme === 'basic') {
      const basic = this.basic;
      return basic ? { authorization: basic } : {};
    }
    if (this.scheme === 'bearer') {
      const scope = scopeOf(request.path) ?? '';
      return { authorization: `Bearer ${await this.token(scope)}` };
    }
    return {};
  }

  async challenge(header: string | undefined, request: UpstreamRequest, host: UpstreamHost, sent: Readonly<Record<string, string>> = {}): Promise<boolean> {
    const challenge = parseChallenge(header);
    if (!challenge) return false;
    if (challenge.scheme === 'basic') {
      // Refused although it carried the credentials: final. (Concurrent requests sent before the first
      // challenge was seen carry none, and are retried with them.)
      if (!this.basic || sent['authorization'] === this.basic) return false;
      this.scheme = 'basic';
      return true;
    }
    const realm = challenge.params['realm'];
    if (!realm) return false;
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new RegistryError('UPSTREAM_FAILED', `remote ${host.url} named a token realm that is not a URL`);
    }
    const refusal = realmRefusal(realmUrl, new URL(this.options.url));
    if (refusal) {
      this.options.logger.warn({ realm: `${realmUrl.protocol}//${realmUrl.host}${realmUrl.pathname}`, reason: refusal }, 'token realm refused: no credentials sent');
      throw new RegistryError('UPSTREAM_FAILED', `remote ${host.url} asked for a token from ${realmUrl.host}, which this mirror refuses: ${refusal}`);
    }
    this.scheme = 'bearer';
    this.realm = { url: realm, ...(challenge.params['service'] ? { service: challenge.params['service'] } : {}) };
    // The token we sent (if any) was refused: get a new one for the retry.
    this.tokens.delete(scopeOf(request.path) ?? '');
    return true;
  }

  stats(): RemoteAuthStats {
    return { scheme: this.scheme, tokensFetched: this.fetched, tokensCached: this.tokens.size };
  }

  close(): void {
    this.agent.destroy();
  }

  /** A valid token for `scope`: cached, being fetched by another request, or fetched now. */
  private token(scope: string): Promise<string> {
    const cached = this.tokens.get(scope);
    if (cached && cached.expiresAt > this.now()) return Promise.resolve(cached.token);
    const running = this.pending.get(scope);
    if (running) return running;
    const p = this.fetchToken(scope).finally(() => this.pending.delete(scope));
    this.pending.set(scope, p);
    return p;
  }

  private async fetchToken(scope: string): Promise<string> {
    const realm = this.realm as { url: string; service?: string };
    const url = new URL(realm.url);
    if (realm.service) url.searchParams.set('service', realm.service);
    if (scope) url.searchParams.set('scope', scope);
    const basic = this.basic;
    const started = this.now();
    let res;
    try {
      res = await this.client.get(url, { headers: { 'user-agent': 'cascade-mirror', ...(basic ? { authorization: basic } : {}) } });
    } catch (err) {
      throw new RegistryError('UPSTREAM_FAILED', `cannot get a token from ${url.host}: ${describeError(err)}`);
    }
    const log = this.options.logger;
    log.info({ realm: `${url.protocol}//${url.host}${url.pathname}`, scope, status: res.statusCode, duration: this.now() - started }, 'token request');
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new RegistryError('DENIED', `the token service of ${this.options.url} refused ${basic ? 'the configured credentials' : 'an anonymous token'} for ${scope || 'this request'}`);
    }
    if (res.statusCode !== 200) {
      throw new RegistryError('UPSTREAM_FAILED', `the token service of ${this.options.url} answered ${res.statusCode}`);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(res.body) as typeof body;
    } catch {
      throw new RegistryError('UPSTREAM_FAILED', `the token service of ${this.options.url} did not answer JSON`);
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (!token) throw new RegistryError('UPSTREAM_FAILED', `the token service of ${this.options.url} sent no token`);
    // The spec's default lifetime is 60 s; renew a little early so a token does not expire in flight.
    const lifetimeMs = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60) * 1000;
    const margin = Math.min(10_000, lifetimeMs / 10);
    this.tokens.set(scope, { token, expiresAt: started + lifetimeMs - margin });
    this.fetched += 1;
    if (this.tokens.size > 10_000) this.prune();
    return token;
  }

  private prune(): void {
    const now = this.now();
    for (const [scope, t] of this.tokens) if (t.expiresAt <= now) this.tokens.delete(scope);
  }
}
