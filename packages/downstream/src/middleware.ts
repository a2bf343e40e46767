/**
 * The `downstream` registry middleware: turns a registry into a cache node of its upstreams.
 *
 *     middleware:
 *       registry:
 *         - name: downstream
 *           options: {blobttl: 24h, upstreams: [{originhost: https://origin, upstreamhosts: [...], cas: [...]}]}
 */
import type { Logger } from 'pino';
import { paths, type ExtraRoute, type NamespaceMiddleware } from '@cascade/registry-core';
import { GrantAuthorizer } from './grants/authorizer.js';
import { GrantVerifier, JWKS_PATH, RemoteJwks } from './grants/grant.js';
import { CacheNamespace, type AccessTracker } from './cache.js';
import { CaStore } from './ca-trust.js';
import { ExpiryIndex } from './expiry.js';
import type { DownstreamOptions, RegionOptions } from './options.js';
import { UpstreamPool } from './upstream.js';
import { observeCache, upstreamLatency } from './metrics.js';
import type { CacheWarmTarget } from './warm.js';
import { RegionCoordinator } from './region/coordinator.js';
import { observeRegion } from './region/metrics.js';

/** The middleware name in config files. */
export const DOWNSTREAM = 'downstream';

/** How often the cache logs its counters (when they changed). */
const METRICS_INTERVAL_MS = 60_000;

/**
 * The registry middleware of a cache node with `options`; the CA files' certificates come from `cas`. `warm`
 * receives the namespace once built (the node's warm route fills into it).
 */
export function downstreamMiddleware(options: DownstreamOptions, cas: CaStore = new CaStore(), warm?: CacheWarmTarget): NamespaceMiddleware {
  return async (_inner, { logger, driver, observability }) => {
    const log = logger.child({ component: 'downstream' });
    const ca = cas.pem(options.cas);
    const upstreams = new UpstreamPool({
      upstreamhosts: options.upstreamhosts,
      ...(options.originhost ? { originhost: options.originhost } : {}),
      ...(ca ? { ca } : {}),
      logger: log,
      onResult: upstreamLatency(observability),
    });
    const region = await joinRegion(options.region, log);
    const expiry =
      options.blobttlMs !== undefined || options.maxsizeBytes !== undefined
        ? new ExpiryIndex({
            driver,
            ...(region ? { region } : {}),
            ...(options.blobttlMs !== undefined ? { ttlMs: options.blobttlMs } : {}),
            ...(options.maxsizeBytes !== undefined ? { maxSizeBytes: options.maxsizeBytes } : {}),
            sweepIntervalMs: options.sweepintervalMs,
            logger: log,
            remove: async (digest) => {
              await driver.delete(paths.blobDir(digest));
            },
          })
        : undefined;
    const cache = new CacheNamespace({
      driver,
      upstreams,
      logger: log,
      fillTimeoutMs: options.filltimeoutMs,
      ...(expiry ? { tracker: region ? regionTracker(expiry, region) : expiry } : {}),
      ...(region ? { region } : {}),
      forwardAuthorization: options.auth === 'passthrough',
    });
    await cache.recover();
    warm?.attach(cache);
    await expiry?.start();
    observeCache(observability, { cache, pools: [upstreams], ...(expiry ? { expiry } : {}), upstreamCritical: true });
    if (region) observeRegion(observability, region);
    log.info(
      {
        upstreams: upstreams.hosts.map((h) => `${h.role}:${h.url}`),
        blobttlMs: options.blobttlMs,
        maxsizeBytes: options.maxsizeBytes,
        auth: options.auth,
        ...(region ? { region: region.prefix, node: region.nodeId, redisUp: region.up } : {}),
      },
      'cache node ready',
    );
    const timer = setInterval(() => logMetrics(log, cache, upstreams, expiry), METRICS_INTERVAL_MS);
    timer.unref();
    let last = '';
    function logMetrics(l: Logger, c: CacheNamespace, u: UpstreamPool, e: ExpiryIndex | undefined): void {
      const snapshot = { ...c.metrics, inFlight: c.fills.inFlight, upstreams: u.stats(), ...(e ? { expiry: e.stats() } : {}), ...(region ? { region: { ...region.stats, redisUp: region.up } } : {}) };
      const text = JSON.stringify(snapshot);
      if (text === last) return;
      last = text;
      l.info(snapshot, 'cache metrics');
    }
    return {
      repository: (name, ctx) => cache.repository(name, ctx),
      catalog: () => cache.catalog(),
      ping: (ctx) => cache.ping(ctx),
      async close(): Promise<void> {
        clearInterval(timer);
        logMetrics(log, cache, upstreams, expiry);
        await cache.close();
        await expiry?.stop();
        await region?.close();
      },
    };
  };
}

/** The coordinator of the region of `options` (a cache node's `region`, a mirror's `proxy.region`), started. */
export async function joinRegion(options: RegionOptions | undefined, logger: Logger): Promise<RegionCoordinator | undefined> {
  if (!options) return undefined;
  const region = new RegionCoordinator({ redis: options.redis, storageRoot: options.storageRoot, logger, ...(options.name ? { name: options.name } : {}) });
  await region.start();
  return region;
}

/** The expiry index's accesses, with pins held region-wide too (the sweeper of any node leaves them alone). */
export function regionTracker(expiry: ExpiryIndex, region: RegionCoordinator): AccessTracker {
  return {
    touch: (digest, size, access) => expiry.touch(digest, size, access),
    pin(digest) {
      const local = expiry.pin(digest);
      const shared = region.pin(digest);
      return () => {
        local();
        shared();
      };
    },
  };
}

/**
 * The authorizer and key route of a cache in `auth: grant` mode: grants are verified with the server's
 * keys, fetched from the upstreams' `/api/v0/keys` (each cache re-publishes its upstream's set, so the
 * keys travel down the chain like the blobs), and this cache publishes them at its own `/api/v0/keys`.
 */
export function grantAuthorizationOf(options: DownstreamOptions, logger: Logger, cas: CaStore = new CaStore()): { authorizer: GrantAuthorizer; verifier: GrantVerifier; routes: ExtraRoute[] } {
  const ca = cas.pem(options.cas);
  const keys = new RemoteJwks({
    urls: [...options.upstreamhosts, ...(options.originhost ? [options.originhost] : [])],
    ...(ca ? { ca } : {}),
    logger: logger.child({ component: 'grant-keys' }),
  });
  const audiences = [options.name ?? '', ...options.downstreams].filter(Boolean);
  if (audiences.length === 0) throw new Error('downstream: auth: grant needs the name of this cache (name)');
  const verifier = new GrantVerifier({ issuer: options.issuer, acceptAudiences: audiences, keys });
  return {
    authorizer: new GrantAuthorizer(verifier),
    verifier,
    routes: [
      {
        method: 'GET',
        path: JWKS_PATH,
        handler: async (ctx) => {
          ctx.body = await keys.jwks();
          ctx.set('Cache-Control', 'max-age=60');
        },
      },
    ],
  };
}
