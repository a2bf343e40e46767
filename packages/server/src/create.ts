/**
 * The server role (the DTR front) assembled in one place, from a validated `server.yml`: the state database,
 * the origin client, the grant keys and their rotation, the cache health checks, the `/api/v0` router, the web
 * page and the gateway app, listening. `cascade server` and `cascade up` start it through {@link createServer}.
 *
 * @example
 * const config = loadServerConfig('/etc/cascade/server.yml');
 * const server = await createServer({ config });
 * // ... server.close(drainMs)
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Context } from 'koa';
import type { Logger } from 'pino';
import { createLogger, listen, NodeObservability, type RunningServer } from '@cascade/registry-core';
import { GrantKeyStore, GrantSigner, LocalJwks, tokenUrl } from '@cascade/downstream';
import { createApiRouter } from './api/router.js';
import { selectCache } from './state/select.js';
import { StateKeyBackend } from './state/keys.js';
import { PostgresStateRepository } from './state/postgres.js';
import { SqliteStateRepository } from './state/sqlite.js';
import type { StateRepository } from './state/repository.js';
import { createGatewayApp, type GatewayMetrics } from './gateway/app.js';
import type { ServerConfig } from './config.js';
import { HealthChecker } from './health.js';
import { buildCacheTree, serverUrls } from './tree.js';
import { userOf } from './gateway/identity.js';
import { OriginClient } from './gateway/origin.js';
import { createUiMiddleware } from './web/ui.js';
import { EventsTokens, tokensOfFile } from './warm/events.js';
import { CacheWarmClient, resolveAtOrigin } from './warm/fetch.js';
import { WarmService } from './warm/service.js';
import { observeWarmer, Warmer } from './warm/warmer.js';

/**
 * How long a new grant key is published before it signs: every server sharing the keys (a folder or the
 * state database) re-reads them (every minute), and caches down a chain refresh their key sets (every 5
 * minutes, per hop) before the first grant it signs arrives.
 */
export const KEY_ACTIVATION_DELAY_MS = 15 * 60_000;
/** How often the server re-reads its keys, rotates on schedule and deletes retired keys. */
const KEY_MAINTENANCE_INTERVAL_MS = 60_000;

/** A running server. */
export interface RunningCascadeServer extends RunningServer {
  readonly logger: Logger;
  readonly state: StateRepository;
  readonly metrics: GatewayMetrics;
  /** Warm jobs (`warmer.inFlight(cacheId)`: a cache's jobs not yet over). */
  readonly warmer: Warmer;
}

/** What {@link createServer} takes. */
export interface ServerOptions {
  /** The validated `server.yml` (`loadServerConfig`, `parseServerConfig`). */
  readonly config: ServerConfig;
  /** Where the server logs (default: a logger made from `config.log`). */
  readonly logger?: Logger;
}

/** Assembles the server role from `options` and resolves once it listens. */
export async function createServer(options: ServerOptions): Promise<RunningCascadeServer> {
  const { config } = options;
  const logger = options.logger ?? createLogger({ level: config.log.level, ...(config.log.fields ? { fields: config.log.fields } : {}) });
  const state = await openState(config, logger);
  const originCas = config.origin.cas.map((f) => readFileSync(f, 'utf8'));
  const origin = new OriginClient({
    url: config.origin.url,
    ...(config.origin.username !== undefined ? { username: config.origin.username } : {}),
    ...(config.origin.password !== undefined ? { password: config.origin.password } : {}),
    ca: originCas,
    logger: logger.child({ component: 'origin' }),
  });
  const keys = await GrantKeyStore.open({
    ...(config.grants.keystore === 'database' ? { backend: new StateKeyBackend(state) } : { dir: config.grants.keysdir }),
    maxGrantTtlMs: config.grants.ttl,
    activationDelayMs: KEY_ACTIVATION_DELAY_MS,
    ...(config.grants.rotate > 0 ? { rotateAfterMs: config.grants.rotate } : {}),
  });
  // Rotation on schedule, keys other servers (or an operator) put in the folder, retired keys deleted.
  const keyLog = logger.child({ component: 'grant-keys' });
  const keyTimer = setInterval(() => {
    keys.maintain().then(
      ({ created, retired }) => {
        if (created) keyLog.info({ kid: created, signsInMs: KEY_ACTIVATION_DELAY_MS }, 'grant key created: published now, signing after the activation delay');
        if (retired.length > 0) keyLog.info({ kids: retired }, 'grant keys retired');
      },
      (err: unknown) => keyLog.warn({ reason: err instanceof Error ? err.message : String(err) }, 'grant keys unreadable: keeping the keys loaded'),
    );
  }, KEY_MAINTENANCE_INTERVAL_MS);
  keyTimer.unref();
  const signer = new GrantSigner({ issuer: config.grants.issuer, keys });
  const admins = new Set(config.admins);
  // Caches are trusted with the origin's CAs too (one private CA usually signs every node).
  const health = new HealthChecker({ state, intervalMs: config.healthcheck.interval, logger: logger.child({ component: 'health' }), ca: originCas });

  // The URLs caches may use for this server, for the cache tree: known once it listens (the system may
  // choose the port).
  let ownUrls: string[] = [];

  // Warm on push: the origin's events (with a secret), the warm rules, jobs that make caches fetch blobs.
  const eventsTokens = new EventsTokens(readEventsTokens(config));
  const warmClient = new CacheWarmClient({ signer, grantTtlSeconds: Math.max(1, Math.round(config.grants.ttl / 1000)), ca: originCas, timeoutMs: config.warm.timeout });
  const warmer = new Warmer({
    resolve: (repository, reference, signal) => resolveAtOrigin(origin, repository, reference, signal),
    warmBlob: (cache, repository, blob, signal) => warmClient.warmBlob(cache, repository, blob, signal),
    cacheById: (id) => state.get(id),
    logger: logger.child({ component: 'warm' }),
    concurrency: config.warm.concurrency,
    attempts: config.warm.attempts,
    backoffMs: config.warm.backoff,
    maxBackoffMs: config.warm.maxbackoff,
    history: config.warm.history,
  });
  const warm = new WarmService({ state, warmer, logger: logger.child({ component: 'warm' }) });

  const api = createApiRouter({
    state,
    isAdmin: (user: string) => admins.has(user),
    authenticate: (ctx: Context) => authenticateThroughOrigin(origin, ctx.get('authorization')),
    liveHealth: (id: string) => health.liveHealth(id),
    cacheTree: async (admin: boolean) =>
      buildCacheTree({
        originUrl: config.origin.url,
        serverUrls: ownUrls,
        caches: (await state.list()).map((c) => health.treeInput(c)),
        admin,
        warmJobsInFlight: (id: string) => warmer.inFlight(id),
      }),
    warm,
    eventsTokens,
  });
  const observability = new NodeObservability('server');
  observeWarmer(observability.registry, warmer, warm.eventCounts);
  observability.addReadyCheck({
    name: 'origin reachable',
    critical: true,
    async check() {
      const res = await origin.request({ method: 'GET', path: '/v2/', headers: {} });
      res.resume();
      return res.statusCode === 200 || res.statusCode === 401 ? undefined : `the origin answered ${res.statusCode} on /v2/`;
    },
  });
  observability.addReadyCheck({
    name: 'database',
    critical: true,
    async check() {
      await state.list();
      return undefined;
    },
  });
  let lastTroubleLog = 0;
  /** Logs a state database failure on the pull path, at most once per 10 s. */
  const stateTrouble = (err: unknown, msg: string) => {
    if (Date.now() - lastTroubleLog < 10_000) return;
    lastTroubleLog = Date.now();
    logger.warn({ reason: err instanceof Error ? err.message : String(err) }, msg);
  };
  const app = createGatewayApp({
    observability,
    origin,
    logger,
    selectCache: async (req) => {
      let cache;
      try {
        cache = await selectCache(state, req);
      } catch (err) {
        // Pulls do not depend on the state database: without it, the server serves the blob itself.
        stateTrouble(err, 'state database unavailable: serving blobs from the server, without redirects');
        return undefined;
      }
      if (!cache) return undefined;
      // A cache the health checker finds down is skipped: the server serves the blob itself.
      return health.isDown(cache.id) ? undefined : cache;
    },
    cacheNames: async () => {
      try {
        return (await state.list()).map((c) => c.name);
      } catch (err) {
        // Caches filling a miss with a grant keep working on the caches the health checks last read (a
        // grant lives a minute; a cache deleted just before the outage may be accepted until it ends).
        const known = health.lastKnownCaches();
        if (known === undefined) throw err;
        stateTrouble(err, 'state database unavailable: checking grant fills against the caches last read');
        return known.map((c) => c.name);
      }
    },
    signer,
    keys: new LocalJwks(keys),
    jwks: () => keys.jwks(),
    issuer: config.grants.issuer,
    grantTtlSeconds: Math.max(1, Math.round(config.grants.ttl / 1000)),
    authorizationCacheMs: config.authorization.cachettl,
    tokenProxy: config.authorization.tokenproxy,
    ...(config.http.publicurl ? { publicUrl: config.http.publicurl } : {}),
    api: (ctx, next) => api(ctx as never, next),
    ui: createUiMiddleware(),
  });
  const running = await listen(app.callback(), { addr: config.http.addr, ...(config.http.tls ? { tls: config.http.tls } : {}), role: 'server' }, logger);
  ownUrls = serverUrls(running.url, config.http.publicurl, config.http.addr);
  health.start();
  logger.info({ origin: config.origin.url, admins: [...admins], events: eventsTokens.configured, database: config.database.postgres !== undefined ? 'postgres' : config.database.sqlite }, 'server ready');
  return {
    ...running,
    logger,
    state,
    metrics: app.metrics,
    warmer,
    async close(drainMs?: number) {
      clearInterval(keyTimer);
      health.stop();
      await running.close(drainMs);
      await warmer.close();
      warmClient.close();
      origin.close();
      await state.close();
    },
  };
}

/**
 * Checks credentials with the origin (the server stores no passwords): Basic credentials are tried on
 * the origin's `/v2/`, or exchanged at its token endpoint when it uses the token flow; a Bearer token is
 * tried on `/v2/` as it is. Resolves with the user name, or undefined when the origin refuses.
 */
export async function authenticateThroughOrigin(origin: OriginClient, authorization: string): Promise<{ user: string } | undefined> {
  const user = userOf(authorization);
  if (!user) return undefined;
  const challenge = await origin.scheme();
  if (challenge.scheme === 'bearer' && authorization.toLowerCase().startsWith('basic ')) {
    // Through the origin client: an https token service is trusted with origin.cas, as the origin is.
    const res = await origin.requestUrl(tokenUrl(challenge), { method: 'GET', headers: { authorization } });
    res.resume();
    return res.statusCode === 200 ? { user } : undefined;
  }
  const res = await origin.request({ method: 'GET', path: '/v2/', headers: { authorization } });
  res.resume();
  return res.statusCode === 200 ? { user } : undefined;
}

/**
 * The events secrets: `events.tokens` (with `CASCADE_EVENTS_TOKEN`) and the lines of `events.tokenfile`.
 * @throws Error when the file cannot be read or holds a secret shorter than 16 characters.
 */
function readEventsTokens(config: ServerConfig): string[] {
  const { tokenfile } = config.events;
  // CASCADE_EVENTS_TOKEN did not go through the schema's check.
  if (config.events.tokens.some((t) => t.length < 16)) throw new Error('CASCADE_EVENTS_TOKEN: expected a secret of at least 16 characters');
  if (tokenfile === undefined) return [...config.events.tokens];
  let text: string;
  try {
    text = readFileSync(tokenfile, 'utf8');
  } catch (err) {
    throw new Error(`${config.file}: events.tokenfile: cannot read ${tokenfile}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const fromFile = tokensOfFile(text);
  if (fromFile.some((t) => t.length < 16)) throw new Error(`${config.file}: events.tokenfile: ${tokenfile} holds a secret shorter than 16 characters`);
  return [...config.events.tokens, ...fromFile];
}

/** Opens the state database the config names (creating a SQLite file's folder), and says which one. */
async function openState(config: ServerConfig, logger: Logger): Promise<StateRepository> {
  const { database } = config;
  if (database.postgres !== undefined) {
    const state = await PostgresStateRepository.open({ url: database.postgres });
    logger.info({ database: 'postgres', where: state.where, schema: await state.schemaVersion() }, 'state database ready');
    return state;
  }
  if (database.sqlite !== ':memory:') mkdirSync(dirname(database.sqlite), { recursive: true });
  const state = new SqliteStateRepository(database.sqlite);
  logger.info({ database: 'sqlite', where: database.sqlite, schema: state.schemaVersion() }, 'state database ready');
  return state;
}
