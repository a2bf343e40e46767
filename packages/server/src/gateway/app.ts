/**
 * The server's gateway, its `/v2/` front door in the DTR role: every `/v2/` request is authorized by the origin with the user's
 * own credentials; manifests and everything else are proxied to the origin (never stale); an authorized
 * blob GET is redirected to the user's cache with a signed grant, or streamed from the origin when the
 * user has no usable cache; a cache presenting a valid grant gets the blob streamed from the origin with
 * the server's service credentials. The app is the HTTP kit's middleware, a list of routes outside `/v2/`
 * on @koa/router (ops, grant keys, token relay, web page), the `/api/v0` API, and the `/v2/` gateway.
 */
import { createHash } from 'node:crypto';
import Koa from 'koa';
import type { Logger } from 'pino';
import { Counter, Histogram } from 'prom-client';
import { accessLog, clientGone, Digest, errorMapper, matchRoute, onResponseError, RegistryError, requestId, routeLabel, routerOf, serveRoutes, validateName, type ExtraRoute, type NodeObservability } from '@cascade/registry-core';
import { GRANT_HEADER, GRANT_QUERY_PARAMETER, GrantVerifier, JWKS_PATH, type GrantSigner, type Jwks, type JwksSource } from '@cascade/downstream';
import { userOf } from './identity.js';
import type { OriginClient } from './origin.js';
import { proxyToOrigin } from './proxy.js';

/** A cache a blob can be redirected to. */
export interface RedirectTarget {
  readonly id: string;
  readonly name: string;
  /** Base URL, e.g. `https://cache-eu.example:5000`. */
  readonly host: string;
}

/** Options of {@link createGatewayApp}. */
export interface GatewayOptions {
  readonly origin: OriginClient;
  readonly logger: Logger;
  /** The cache for this user, repository and client, or undefined to serve the blob from the server. */
  readonly selectCache: (request: { user: string | undefined; repository: string; clientIp: string }) => RedirectTarget | undefined | Promise<RedirectTarget | undefined>;
  /** Names of the registered caches (grants presented to the server must be for one of them). */
  readonly cacheNames: () => readonly string[] | Promise<readonly string[]>;
  readonly signer: GrantSigner;
  readonly keys: JwksSource;
  readonly jwks: () => Jwks;
  /** The `iss` of the grants. */
  readonly issuer: string;
  readonly grantTtlSeconds: number;
  /** How long the origin's "yes" to a user's blob request is remembered (0: ask every time). */
  readonly authorizationCacheMs: number;
  /** The `/api/v0` API (`createApiRouter`): it answers the paths under its prefix, and passes on the others. */
  readonly api?: Koa.Middleware;
  /** The web page: `/` (a redirect), `/ui` and `/ui/...`, with every method (it answers its own 405). */
  readonly ui?: Koa.Middleware;
  /** `/metrics`, `/health`, `/ready`, and where request and authorization timings go. */
  readonly observability?: NodeObservability;
  /**
   * Clients get Bearer tokens through the server: the origin's challenges name the server's
   * {@link TOKEN_PATH} as their realm, and that path relays to the origin's token service.
   */
  readonly tokenProxy?: boolean;
  /** The server's URL as clients reach it; default: the request's scheme and Host. */
  readonly publicUrl?: string;
}

/** Where the server relays token requests to the origin's token service (with `tokenProxy`). */
export const TOKEN_PATH = '/auth/token';

/** The web page's paths: `/`, `/ui` and everything under `/ui/`. */
const UI_PATHS = /^\/(?:ui(?:\/.*)?)?$/;

/** The request headers a token request carries to the origin's token service. */
const TOKEN_REQUEST_HEADERS = ['authorization', 'content-type', 'content-length', 'accept', 'user-agent'];
/** The response headers of the token service relayed to the client. */
const TOKEN_RESPONSE_HEADERS = ['content-type', 'content-length', 'cache-control', 'www-authenticate', 'docker-distribution-api-version'];

/**
 * `header` with the realm of a Bearer challenge replaced by `realm` when it is `originRealm` (the origin's
 * token service); other challenges (Basic, a grant's) unchanged.
 */
export function withRealm(header: string, realm: string, originRealm: string): string {
  if (!/^\s*bearer\s/i.test(header)) return header;
  return header.replace(/realm="([^"]*)"/i, (whole, current: string) => (current === originRealm ? `realm="${realm}"` : whole));
}

/** Counters of the gateway, for logs and metrics. */
export interface GatewayMetrics {
  redirects: Record<string, number>;
  servedByServer: number;
  grantFills: number;
  authorizationsAsked: number;
  authorizationsCached: number;
}

/** Builds the server's Koa application. */
export function createGatewayApp(options: GatewayOptions): Koa & { metrics: GatewayMetrics } {
  const app = new Koa();
  const { origin, logger: log } = options;
  const metrics: GatewayMetrics = { redirects: {}, servedByServer: 0, grantFills: 0, authorizationsAsked: 0, authorizationsCached: 0 };
  const allowed = new Map<string, number>();
  const obs = options.observability;
  const authorizationSeconds = obs ? observeGateway(obs, metrics) : undefined;

  app.on('error', onResponseError(log));
  app.use(requestId());
  app.use(accessLog({ logger: log, ...(obs ? { observability: obs } : {}), route: (ctx) => routeLabel(ctx.path), fields: (ctx) => (ctx.state.redirectedTo ? { redirectedTo: ctx.state.redirectedTo } : {}) }));
  // The origin's Bearer challenges (relayed, or in an error) name the server's token relay: this runs after
  // the error mapper below has answered.
  app.use(async (ctx, next) => {
    ctx.set('Docker-Distribution-API-Version', 'registry/2.0');
    await next();
    // The origin's Bearer challenges send clients to the server for their tokens.
    const challenge = ctx.response.get('WWW-Authenticate');
    if (options.tokenProxy && typeof challenge === 'string' && challenge && ctx.path !== TOKEN_PATH) {
      // The origin's scheme is known by now (its challenge is what is being relayed): a cached answer.
      const originChallenge = await origin.scheme().catch(() => undefined);
      if (originChallenge?.scheme === 'bearer') {
        const base = (options.publicUrl ?? `${ctx.protocol}://${ctx.host}`).replace(/\/+$/, '');
        ctx.set('WWW-Authenticate', withRealm(challenge, `${base}${TOKEN_PATH}`, originChallenge.realm));
      }
    }
  });
  app.use(errorMapper(log));

  // The routes outside /v2/; the web page answers every method of its paths itself.
  const routes: ExtraRoute[] = [
    ...(obs?.routes() ?? []),
    { method: 'GET', path: JWKS_PATH, handler: jwks },
    ...(options.tokenProxy ? ['GET', 'POST'].map((method) => ({ method, path: TOKEN_PATH, handler: relayToken })) : []),
  ];
  const router = routerOf(routes);
  if (options.ui) router.all(UI_PATHS, options.ui);
  app.use(serveRoutes(router));
  if (options.api) app.use(options.api);

  app.use(async (ctx) => {
    if (!ctx.path.startsWith('/v2')) throw new RegistryError('NOT_FOUND', `${ctx.path.slice(0, 200)} is not part of the registry API`);
    const match = matchRoute(ctx.path);
    if (match?.route.name === 'blob' && ctx.method === 'GET') {
      const name = validateName(match.params.name ?? '');
      const digest = Digest.parse(match.params.digest ?? '');
      const grant = ctx.query[GRANT_QUERY_PARAMETER] ?? ctx.get(GRANT_HEADER);
      if (typeof grant === 'string' && grant.length > 0) return fillForCache(ctx, name, digest, grant);
      return redirectBlob(ctx, name, digest);
    }
    ctx.state.user = userOf(ctx.get('authorization'));
    await proxyToOrigin(ctx, origin);
  });

  /** The grant keys, for caches to verify grants with (GET, and HEAD). */
  async function jwks(ctx: Koa.Context): Promise<void> {
    ctx.body = options.jwks();
    ctx.set('Cache-Control', 'max-age=60');
  }

  /** A cache (or a chain of caches) fills a miss: check the grant, stream with the service account. */
  async function fillForCache(ctx: Koa.Context, name: string, digest: Digest, grant: string): Promise<void> {
    const verifier = new GrantVerifier({ issuer: options.issuer, acceptAudiences: await options.cacheNames(), keys: options.keys });
    const claims = await verifier.verify(grant, { repo: name, digest: digest.toString() });
    ctx.state.user = claims.sub || undefined;
    metrics.grantFills += 1;
    const authorization = await origin.serviceAuthorization(`repository:${name}:pull`);
    const headers: Record<string, string> = {};
    if (authorization) headers.authorization = authorization;
    const range = ctx.get('range');
    if (range) headers.range = range;
    log.debug({ repo: name, digest: digest.toString(), cache: claims.aud, jti: claims.jti }, 'grant fill');
    await proxyToOrigin(ctx, origin, { path: `/v2/${name}/blobs/${digest.toString()}`, headers, body: false });
  }

  /** A client asks for a blob: authorize through the origin, then redirect to its cache or serve it. */
  async function redirectBlob(ctx: Koa.Context, name: string, digest: Digest): Promise<void> {
    const authorization = ctx.get('authorization');
    const user = userOf(authorization);
    ctx.state.user = user;
    const key = createHash('sha256').update(`${authorization}\n${name}`).digest('hex');
    const cachedUntil = allowed.get(key);
    if (cachedUntil !== undefined && cachedUntil > Date.now()) {
      metrics.authorizationsCached += 1;
    } else {
      metrics.authorizationsAsked += 1;
      const asked = process.hrtime.bigint();
      const res = await origin.request({ method: 'HEAD', path: `/v2/${name}/blobs/${digest.toString()}`, headers: authorization ? { authorization } : {}, signal: clientGone(ctx) });
      res.resume();
      authorizationSeconds?.(res.statusCode === 200 ? 'allowed' : 'refused', Number(process.hrtime.bigint() - asked) / 1e9);
      if (res.statusCode !== 200) {
        // The origin's answer stands: its challenge goes back to the client, and no byte is served.
        // Any other answer (a 5xx, a redirect, a 2xx that is not 200) is no authorization, and the origin's
        // failure: 502, not the origin's status relayed as if it were the answer to the client's request.
        const status = res.statusCode ?? 502;
        const code = status === 401 ? 'UNAUTHORIZED' : status === 403 ? 'DENIED' : status === 404 ? 'BLOB_UNKNOWN' : undefined;
        if (code === undefined) throw new RegistryError('UPSTREAM_FAILED', `the origin answered ${status} to the authorization request`);
        const challenge = res.headers['www-authenticate'];
        throw new RegistryError(code, `the origin answered ${status}`, { headers: typeof challenge === 'string' ? { 'WWW-Authenticate': challenge } : {} });
      }
      if (options.authorizationCacheMs > 0) {
        if (allowed.size > 10_000) allowed.clear();
        allowed.set(key, Date.now() + options.authorizationCacheMs);
      }
    }
    const cache = await options.selectCache({ user, repository: name, clientIp: ctx.req.socket.remoteAddress ?? '' });
    if (!cache) {
      metrics.servedByServer += 1;
      await proxyToOrigin(ctx, origin, { body: false });
      return;
    }
    const token = options.signer.sign({ user: user ?? '', cache: cache.name, repo: name, digest: digest.toString(), ttlSeconds: options.grantTtlSeconds });
    const location = `${cache.host.replace(/\/+$/, '')}/v2/${name}/blobs/${digest.toString()}?${GRANT_QUERY_PARAMETER}=${encodeURIComponent(token)}`;
    metrics.redirects[cache.name] = (metrics.redirects[cache.name] ?? 0) + 1;
    ctx.state.redirectedTo = cache.name;
    ctx.body = null;
    ctx.status = 307;
    ctx.set('Location', location);
    ctx.set('Cache-Control', 'no-store');
  }

  /**
   * Relays a token request (GET with the query, or an OAuth2 POST form; HEAD as HEAD) to the origin's token
   * service, the realm of the origin's own challenge (never a URL the client names), and its answer back.
   */
  async function relayToken(ctx: Koa.Context): Promise<void> {
    const challenge = await origin.scheme();
    if (challenge.scheme !== 'bearer') throw new RegistryError('NOT_FOUND', 'the origin does not use the token flow: there is no token service to ask');
    const url = new URL(challenge.realm);
    for (const [key, value] of new URLSearchParams(ctx.querystring)) url.searchParams.append(key, value);
    const headers: Record<string, string> = {};
    for (const name of TOKEN_REQUEST_HEADERS) {
      const value = ctx.get(name);
      if (value) headers[name] = value;
    }
    ctx.state.user = userOf(ctx.get('authorization'));
    const res = await origin.requestUrl(url, { method: ctx.method, headers, ...(ctx.method === 'POST' ? { body: ctx.req } : {}) });
    ctx.body = res;
    ctx.status = res.statusCode ?? 502;
    for (const name of TOKEN_RESPONSE_HEADERS) {
      const value = res.headers[name];
      if (value !== undefined) ctx.set(name, value as string | string[]);
    }
    ctx.set('Cache-Control', 'no-store');
  }

  return Object.assign(app, { metrics });
}

/** The server's own metrics; returns the observer of authorization latency. */
function observeGateway(obs: NodeObservability, metrics: GatewayMetrics): (result: 'allowed' | 'refused', seconds: number) => void {
  const registers = [obs.registry];
  new Counter({
    name: 'cascade_server_redirects_total',
    help: 'Blob GETs redirected to a cache, by cache name.',
    labelNames: ['cache'],
    registers,
    collect() {
      this.reset();
      for (const [cache, n] of Object.entries(metrics.redirects)) this.inc({ cache }, n);
    },
  });
  new Counter({
    name: 'cascade_server_blobs_served_total',
    help: 'Blob GETs the server streamed itself (no cache selected, or the cache is down).',
    registers,
    collect() {
      this.reset();
      this.inc(metrics.servedByServer);
    },
  });
  new Counter({
    name: 'cascade_server_grant_fills_total',
    help: 'Blob GETs from caches presenting a grant, streamed from the origin with the service account.',
    registers,
    collect() {
      this.reset();
      this.inc(metrics.grantFills);
    },
  });
  new Counter({
    name: 'cascade_server_authorizations_total',
    help: 'Blob authorizations, by source: origin (asked) or cache (a recent yes, authorization.cachettl).',
    labelNames: ['source'],
    registers,
    collect() {
      this.reset();
      this.inc({ source: 'origin' }, metrics.authorizationsAsked);
      this.inc({ source: 'cache' }, metrics.authorizationsCached);
    },
  });
  const histogram = new Histogram({
    name: 'cascade_server_authorization_duration_seconds',
    help: 'Time the origin took to authorize a blob GET with the user\'s credentials, by result.',
    labelNames: ['result'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  return (result, seconds) => histogram.labels(result).observe(seconds);
}
