/**
 * A mirror's credentials for one remote: anonymous, Basic, or the Bearer token flow of the distribution
 * spec (a 401 names a realm, a service and a scope; the token is fetched from the realm, with the
 * configured Basic credentials when there are any, and reused for that scope until it expires, by every
 * request), on the one registry client (`../registry-client/`).
 *
 * The realm is where the credentials go, so it must be on the remote's host or its registrable domain
 * (`auth.docker.io` for `registry-1.docker.io`), over https unless the remote itself is plain http: a
 * remote cannot send the mirror's password anywhere else (`realmRefusal`).
 */
import type { Logger } from 'pino';
import { parseChallenge, RegistryError } from '@cascade/registry-core';
import { describeError, type UpstreamAuth, type UpstreamHost, type UpstreamRequest } from '../upstream.js';
import { basicAuthorization, realmRefusal, RegistryClient, scopeOf, TokenCache, type TokenRealm } from '../registry-client/index.js';

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

/** Counters of one remote's credentials, for metrics. */
export interface RemoteAuthStats {
  readonly scheme: 'none' | 'basic' | 'bearer';
  readonly tokensFetched: number;
  readonly tokensCached: number;
}

/** The credentials of one remote, shared by all requests to it. */
export class RemoteAuth implements UpstreamAuth {
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private realm: TokenRealm | undefined;
  private readonly tokens: TokenCache;
  private readonly client: RegistryClient;
  private readonly now: () => number;
  private fetched = 0;

  constructor(private readonly options: RemoteAuthOptions) {
    this.now = options.now ?? Date.now;
    this.tokens = new TokenCache(this.now);
    this.client = new RegistryClient({ url: options.url, maxSockets: 8, ...(options.ca ? { ca: options.ca } : {}) });
  }

  private get basic(): string | undefined {
    const { username, password } = this.options;
    return username === undefined || password === undefined ? undefined : basicAuthorization(username, password);
  }

  async headers(request: UpstreamRequest): Promise<Record<string, string>> {
    if (this.scheme === 'basic') {
      const basic = this.basic;
      return basic ? { authorization: basic } : {};
    }
    if (this.scheme === 'bearer') {
      const scope = scopeOf(request.path) ?? '';
      const realm = this.realm as TokenRealm;
      return { authorization: `Bearer ${await this.tokens.get(realm, scope, () => this.fetchToken(realm, scope))}` };
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
    this.realm = { realm, ...(challenge.params['service'] ? { service: challenge.params['service'] } : {}) };
    // The token we sent (if any) was refused: get a new one for the retry.
    this.tokens.delete(this.realm, scopeOf(request.path) ?? '');
    return true;
  }

  stats(): RemoteAuthStats {
    return { scheme: this.scheme, tokensFetched: this.fetched, tokensCached: this.tokens.size };
  }

  close(): void {
    this.client.close();
  }

  private async fetchToken(realm: TokenRealm, scope: string): Promise<{ token: string; expiresIn?: number }> {
    const basic = this.basic;
    const started = this.now();
    const url = new URL(realm.realm);
    let res;
    try {
      res = await this.client.requestToken(realm, scope || undefined, { 'user-agent': 'cascade-mirror', ...(basic ? { authorization: basic } : {}) }, this.options.timeoutMs ?? 10_000);
    } catch (err) {
      throw new RegistryError('UPSTREAM_FAILED', `cannot get a token from ${url.host}: ${describeError(err instanceof RegistryError && err.cause !== undefined ? err.cause : err)}`);
    }
    this.options.logger.info({ realm: `${url.protocol}//${url.host}${url.pathname}`, scope, status: res.status, duration: this.now() - started }, 'token request');
    if (res.status === 401 || res.status === 403) {
      throw new RegistryError('DENIED', `the token service of ${this.options.url} refused ${basic ? 'the configured credentials' : 'an anonymous token'} for ${scope || 'this request'}`);
    }
    if (res.status !== 200 || !res.answer) throw new RegistryError('UPSTREAM_FAILED', `the token service of ${this.options.url} answered ${res.status}`);
    const answer = res.answer;
    if ('invalid' in answer) {
      throw new RegistryError('UPSTREAM_FAILED', `the token service of ${this.options.url} ${answer.invalid === 'not-json' ? 'did not answer JSON' : 'sent no token'}`);
    }
    this.fetched += 1;
    return answer;
  }
}
