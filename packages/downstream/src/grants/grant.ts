/**
 * Grants: the short-lived tokens with which the server lets one user fetch one blob of one repository from
 * one cache. The server signs them ({@link GrantSigner}); caches verify them ({@link GrantVerifier}) with the
 * server's public keys, which they get from a {@link JwksSource}: {@link RemoteJwks} on a cache (the keys
 * fetched through the chain), {@link LocalJwks} on the server itself.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import got, { type Got, type Response } from 'got';
import type { Logger } from 'pino';
import { decodeJws, Digest, importPublicJwk, JwsError, RegistryError, signJws, validateName, verifyJwsSignature, type DecodedJws, type Jwks, type PublicJwk } from '@cascade/registry-core';
import { MAX_GRANT_TTL_SECONDS, type GrantKeyStore, type SigningKey } from './keys.js';

/** The JWS `typ` of a grant, so that no other token signed with the same keys can pass for one (RFC 8725 3.11). */
export const GRANT_TYPE = 'cascade-grant+jwt';

/** The realm of the `WWW-Authenticate: Bearer` challenge of a cache that needs a grant. */
export const GRANT_REALM = 'cascade-grant';

/** Default grant lifetime, in seconds: long enough for a client to follow the redirect, and retry once. */
export const DEFAULT_GRANT_TTL_SECONDS = 60;

/** Path of the key set below a server's or cache's base URL. */
export const JWKS_PATH = '/api/v0/keys';

/** The claims of a grant. */
export interface GrantClaims {
  /** The server that issued it. */
  iss: string;
  /** The user it was issued to (empty for an anonymous pull). */
  sub: string;
  /** The name of the cache it was issued for. */
  aud: string;
  /** The repository. */
  repo: string;
  /** The blob's digest, `algorithm:hex`. */
  digest: string;
  /** Issued at, epoch seconds. The grant is not valid before. */
  iat: number;
  /** Expiry, epoch seconds. */
  exp: number;
  /** Unique id, for tracing one grant through the logs of every hop. */
  jti: string;
}

/** What a grant is for. */
export interface GrantRequest {
  readonly user: string;
  /** Name of the cache the client is redirected to. */
  readonly cache: string;
  readonly repo: string;
  readonly digest: string;
  /** Lifetime, 1 to {@link MAX_GRANT_TTL_SECONDS} (default {@link DEFAULT_GRANT_TTL_SECONDS}). */
  readonly ttlSeconds?: number;
}

/** Options of {@link GrantSigner}. */
export interface GrantSignerOptions {
  /** The server's identity, as caches are configured to expect it (its base URL, say). */
  readonly issuer: string;
  /** Where the active signing key comes from, usually a {@link GrantKeyStore}. */
  readonly keys: { active(): SigningKey };
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
}

/** Signs grants with the key store's active key. */
export class GrantSigner {
  private readonly now: () => number;

  constructor(private readonly options: GrantSignerOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * A grant for `user` to fetch `digest` of `repo` from `cache`, as a compact JWS.
   * @throws RegistryError NAME_INVALID / DIGEST_INVALID for a bad repository or digest; Error for a bad
   * cache name or lifetime (programming errors: the server builds these itself).
   */
  sign(request: GrantRequest): string {
    const ttl = request.ttlSeconds ?? DEFAULT_GRANT_TTL_SECONDS;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_GRANT_TTL_SECONDS) {
      throw new Error(`grant: ttlSeconds must be an integer from 1 to ${MAX_GRANT_TTL_SECONDS}, got ${ttl}`);
    }
    if (typeof request.cache !== 'string' || request.cache.length === 0) throw new Error('grant: cache name must not be empty');
    validateName(request.repo);
    const iat = Math.floor(this.now() / 1000);
    const claims: GrantClaims = {
      iss: this.options.issuer,
      sub: request.user,
      aud: request.cache,
      repo: request.repo,
      digest: Digest.parse(request.digest).toString(),
      iat,
      exp: iat + ttl,
      jti: randomBytes(16).toString('base64url'),
    };
    return signJws(claims, this.options.keys.active(), GRANT_TYPE);
  }
}

/** Where a verifier finds the server's public keys. */
export interface JwksSource {
  /** The ES256 public key `kid`, or undefined when the server does not (or no longer) publish it. */
  getKey(kid: string): Promise<KeyObject | undefined>;
}

/** Options of {@link GrantVerifier}. */
export interface GrantVerifierOptions {
  /** The `iss` grants must carry. */
  readonly issuer: string;
  /**
   * The audiences accepted: this cache's name, and the names of the caches that fill through it (a grant
   * issued for a downstream cache travels up the chain with that cache's misses). At the server, the caches
   * registered now: none is a valid state (every grant is then refused, as any other invalid one).
   */
  readonly acceptAudiences: readonly string[];
  readonly keys: JwksSource;
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
  /** Clock skew tolerated on `iat` and `exp`, in seconds (default 30). */
  readonly leewaySeconds?: number;
}

/**
 * Verifies grants. Statuses follow what the client can do about it: 401 UNAUTHORIZED when the grant is
 * malformed, forged, signed with an unknown key or out of its validity (get a new one from the server),
 * 403 DENIED when it is genuine but for another repository, blob or cache (no grant for this request
 * exists). Messages say which, and never contain the token.
 */
export class GrantVerifier {
  private readonly now: () => number;
  private readonly leeway: number;
  private readonly audiences: ReadonlySet<string>;

  constructor(private readonly options: GrantVerifierOptions) {
    this.now = options.now ?? Date.now;
    this.leeway = options.leewaySeconds ?? 30;
    this.audiences = new Set(options.acceptAudiences);
  }

  /**
   * The claims of `token` when it is a valid grant for `repo` and `digest` to be served here.
   * @throws RegistryError UNAUTHORIZED or DENIED, as described on the class.
   */
  async verify(token: string, expected: { readonly repo: string; readonly digest: string }): Promise<GrantClaims> {
    const claims = await this.verifyToken(token);
    if (claims.repo !== expected.repo) throw denied(`the grant is for another repository, not ${expected.repo}`);
    if (claims.digest !== expected.digest) throw denied(`the grant is for another blob of ${expected.repo}, not ${expected.digest}`);
    return claims;
  }

  /**
   * The claims of `token` when it is a genuine, current grant for an accepted audience, whatever repository
   * and blob it names (for `/v2/`, which names neither).
   * @throws RegistryError UNAUTHORIZED or DENIED (another audience).
   */
  async verifyToken(token: string): Promise<GrantClaims> {
    let jws: DecodedJws;
    try {
      jws = decodeJws(token);
    } catch (err) {
      throw unauthorized(`invalid grant: ${err instanceof JwsError ? err.message : 'malformed'}`);
    }
    if (jws.header.typ !== GRANT_TYPE) throw unauthorized('invalid grant: the token is not a Cascade grant (typ)');
    const key = await this.options.keys.getKey(jws.header.kid);
    if (key === undefined) throw unauthorized(`invalid grant: signed with a key the server does not publish (kid ${jws.header.kid}); it is forged, or its key was retired`);
    let valid: boolean;
    try {
      valid = verifyJwsSignature(jws, key);
    } catch {
      valid = false;
    }
    if (!valid) throw unauthorized('invalid grant: the signature does not verify (forged or altered)');
    const claims = readClaims(jws.payload);
    if (claims.iss !== this.options.issuer) throw unauthorized('invalid grant: issued by another server');
    const now = Math.floor(this.now() / 1000);
    if (claims.exp <= claims.iat || claims.exp - claims.iat > MAX_GRANT_TTL_SECONDS) {
      throw unauthorized(`invalid grant: its lifetime is not between 1 and ${MAX_GRANT_TTL_SECONDS} seconds`);
    }
    if (now >= claims.exp + this.leeway) throw unauthorized(`grant expired ${now - claims.exp} s ago: ask the server again`);
    if (claims.iat > now + this.leeway) throw unauthorized(`grant is not valid yet (issued ${claims.iat - now} s in the future): check the clocks of the server and this cache`);
    if (!this.audiences.has(claims.aud)) throw denied('the grant was issued for another cache');
    return claims;
  }
}

function readClaims(payload: Readonly<Record<string, unknown>>): GrantClaims {
  const text = (name: keyof GrantClaims): string => {
    const value = payload[name];
    if (typeof value !== 'string') throw unauthorized(`invalid grant: claim ${name} is missing or not a string`);
    return value;
  };
  const integer = (name: keyof GrantClaims): number => {
    const value = payload[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw unauthorized(`invalid grant: claim ${name} is missing or not an integer`);
    return value;
  };
  return { iss: text('iss'), sub: text('sub'), aud: text('aud'), repo: text('repo'), digest: text('digest'), iat: integer('iat'), exp: integer('exp'), jti: text('jti') };
}

function unauthorized(message: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', message, { headers: { 'WWW-Authenticate': `Bearer realm="${GRANT_REALM}",error="invalid_token"` } });
}

function denied(message: string): RegistryError {
  return new RegistryError('DENIED', message);
}

/** The server's own keys, for the server's verifier (the last hop of a chain fetches from it with the grant). */
export class LocalJwks implements JwksSource {
  constructor(private readonly store: Pick<GrantKeyStore, 'publicKey'>) {}

  /** The key while the store publishes it. */
  async getKey(kid: string): Promise<KeyObject | undefined> {
    return this.store.publicKey(kid);
  }
}

/** Options of {@link RemoteJwks}. */
export interface RemoteJwksOptions {
  /**
   * Base URLs to fetch `/api/v0/keys` from, tried in order: the cache's upstreams, then its origin (the
   * server). A cache re-publishes its upstream's keys, so any hop of the chain serves the server's set.
   */
  readonly urls: readonly string[];
  /**
   * Least time between two fetches, in ms (default 10 s). A grant with an unknown kid causes a fetch (the
   * server may have rotated), and this bounds what forged kids can cost the upstream.
   */
  readonly minRefetchMs?: number;
  /** Age after which the set is refreshed in the background on the next use, in ms (default 5 min). */
  readonly maxAgeMs?: number;
  /** Timeout of one fetch, in ms (default 5 s). */
  readonly timeoutMs?: number;
  /** PEM CA certificates trusted in addition to the public roots (the cache's `cas`). */
  readonly ca?: readonly string[];
  readonly logger?: Logger;
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
}

/** Largest key set read, in bytes; a real one is a few hundred. */
const JWKS_MAX_BYTES = 64 * 1024;
/** Most keys read from one set. */
const JWKS_MAX_KEYS = 32;

/**
 * The server's public keys as fetched from upstream, cached. A known kid is answered from the cache (and the
 * set refreshed in the background once older than `maxAgeMs`); an unknown kid causes one fetch, at most every
 * `minRefetchMs` whatever the number of requests. When no upstream answers, the last good set is kept and
 * used: a cache whose upstream is down still verifies grants for the blobs it holds.
 */
export class RemoteJwks implements JwksSource {
  private keys: Map<string, { key: KeyObject; jwk: PublicJwk }> | undefined;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private attemptedAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<boolean> | undefined;
  private readonly client: Got;
  private readonly now: () => number;
  private readonly minRefetchMs: number;
  private readonly maxAgeMs: number;
  /** Counters, for metrics and tests. */
  readonly stats = { fetches: 0, failures: 0 };

  constructor(private readonly options: RemoteJwksOptions) {
    if (options.urls.length === 0) throw new Error('grant keys: RemoteJwks needs at least one upstream URL');
    this.now = options.now ?? Date.now;
    this.minRefetchMs = options.minRefetchMs ?? 10_000;
    this.maxAgeMs = options.maxAgeMs ?? 300_000;
    // Node's `ca` option replaces the public roots; `cas` adds to them, as for the upstream pool.
    const ca = options.ca && options.ca.length > 0 ? [...rootCertificates, ...options.ca] : undefined;
    this.client = got.extend({
      retry: { limit: 0 },
      throwHttpErrors: false,
      // The keys come from configured upstreams only: a redirect elsewhere is a failure.
      followRedirect: false,
      timeout: { request: options.timeoutMs ?? 5000 },
      headers: { 'user-agent': 'cascade-downstream', accept: 'application/json' },
      ...(ca ? { https: { certificateAuthority: ca } } : {}),
    });
  }

  /** The key `kid`, fetching the set when the kid is unknown (at most once per `minRefetchMs`). */
  async getKey(kid: string): Promise<KeyObject | undefined> {
    const known = this.keys?.get(kid);
    if (known !== undefined) {
      if (this.now() - this.fetchedAt >= this.maxAgeMs && this.mayFetch()) void this.refresh();
      return known.key;
    }
    if (this.mayFetch()) await this.refresh();
    return this.keys?.get(kid)?.key;
  }

  /**
   * The set as this cache knows it, for re-publishing at the cache's own `/api/v0/keys` (fetched first when
   * none is known yet or it is stale). Empty when no upstream has ever answered.
   */
  async jwks(): Promise<Jwks> {
    if ((this.keys === undefined || this.now() - this.fetchedAt >= this.maxAgeMs) && this.mayFetch()) await this.refresh();
    return { keys: [...(this.keys?.values() ?? [])].map((k) => k.jwk) };
  }

  /**
   * Fetches the set now (joining a fetch in flight). Resolves true when an upstream answered with a usable
   * set, false otherwise (the previous set is kept). Never rejects.
   */
  refresh(): Promise<boolean> {
    if (this.inflight !== undefined) return this.inflight;
    this.attemptedAt = this.now();
    this.inflight = this.fetchSet().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private mayFetch(): boolean {
    return this.inflight !== undefined || this.now() - this.attemptedAt >= this.minRefetchMs;
  }

  private async fetchSet(): Promise<boolean> {
    this.stats.fetches++;
    const failures: string[] = [];
    for (const base of this.options.urls) {
      const url = `${base.replace(/\/+$/, '')}${JWKS_PATH}`;
      try {
        const keys = parseJwks(await this.get(url));
        this.keys = keys;
        this.fetchedAt = this.now();
        this.options.logger?.debug({ url, kids: [...keys.keys()] }, 'grant keys fetched');
        return true;
      } catch (err) {
        failures.push(`${url}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.stats.failures++;
    this.options.logger?.warn({ failures, keeping: this.keys?.size ?? 0 }, 'grant keys: no upstream answered; keeping the last good set');
    return false;
  }

  private async get(url: string): Promise<unknown> {
    const request = this.client.get(url, { responseType: 'text' });
    request.on('downloadProgress', (progress: { transferred: number }) => {
      if (progress.transferred > JWKS_MAX_BYTES) request.cancel();
    });
    let res: Response<string>;
    try {
      res = await request;
    } catch (err) {
      if (request.isCanceled) throw new Error(`key set larger than ${JWKS_MAX_BYTES} bytes`);
      throw err;
    }
    if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
    try {
      return JSON.parse(res.body);
    } catch {
      throw new Error('key set is not JSON');
    }
  }
}

/** Reads a fetched JWKS: usable ES256 keys by kid; throws when it holds none. Unusable entries are skipped. */
function parseJwks(body: unknown): Map<string, { key: KeyObject; jwk: PublicJwk }> {
  const list = typeof body === 'object' && body !== null && 'keys' in body ? body.keys : undefined;
  if (!Array.isArray(list)) throw new Error('key set has no "keys" array');
  const keys = new Map<string, { key: KeyObject; jwk: PublicJwk }>();
  for (const entry of list.slice(0, JWKS_MAX_KEYS)) {
    try {
      const { kid, key, jwk } = importPublicJwk(entry);
      keys.set(kid, { key, jwk });
    } catch {
      // Another kind of key (a future algorithm) is not an error: this cache just cannot use it.
    }
  }
  if (keys.size === 0) throw new Error('key set holds no ES256 key');
  return keys;
}
