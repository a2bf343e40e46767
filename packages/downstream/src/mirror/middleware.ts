/**
 * Mirror mode: a registry with a `proxy` section becomes a pull-through mirror of its remotes (see
 * namespace.ts), with the cache node's fills and expiry for blobs, and in a region (`proxy.region`) the cache
 * node's coordination: one fill per blob for the region, one expiry state and sweeper, pins held region-wide.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { isPathNotFound, paths, type Authorizer, type NamespaceMiddleware } from '@cascade/registry-core';
import { CacheNamespace } from '../cache.js';
import { CaStore } from '../ca-trust.js';
import { ExpiryIndex } from '../expiry.js';
import { UpstreamPool } from '../upstream.js';
import type { FillSource } from '../fill.js';
import { observeCache, upstreamLatency } from '../metrics.js';
import { joinRegion, regionTracker } from '../middleware.js';
import { observeRegion } from '../region/metrics.js';
import { localBlobMarker, MirrorNamespace, type RemoteRuntime } from './namespace.js';
import type { MirrorGrants, MirrorOptions } from './options.js';
import { GrantAuthorizer, GrantOrAuthorizer } from '../grants/authorizer.js';
import { GrantVerifier, RemoteJwks } from '../grants/grant.js';
import { RemoteAuth } from './remote-auth.js';

/** How often the mirror logs its counters (when they changed). */
const METRICS_INTERVAL_MS = 60_000;

/** Settings of the mirror that are not in the config file. */
export interface MirrorSettings {
  /** This node's id in `X-Cascade-Via` (default: random per process). */
  readonly nodeId?: string;
  /** How often expiry runs (default 1 min). */
  readonly sweepIntervalMs?: number;
  /** How long a fill runs on with no client (default 10 min). */
  readonly fillTimeoutMs?: number;
  /** The clock of expiry and tag revalidation, in epoch milliseconds (default `Date.now`); for tests. */
  readonly now?: () => number;
  /** The CA files' certificates, read when the config was loaded (default: read here, once). */
  readonly cas?: CaStore;
}

/** The registry middleware of a mirror with `options`; `onReady` receives the namespace (for tests and metrics). */
export function mirrorMiddleware(options: MirrorOptions, settings: MirrorSettings = {}, onReady?: (mirror: MirrorNamespace) => void): NamespaceMiddleware {
  return async (storage, { logger, driver, observability }) => {
    const log = logger.child({ component: 'mirror' });
    const onResult = upstreamLatency(observability);
    const cas = settings.cas ?? new CaStore();
    const runtimes: RemoteRuntime[] = options.remotes.map((remote) => {
      const ca = cas.pem(remote.cas);
      const rlog = log.child({ remote: remote.name });
      const auth = new RemoteAuth({
        url: remote.url,
        ...(remote.username !== undefined && remote.password !== undefined ? { username: remote.username, password: remote.password } : {}),
        ...(ca ? { ca } : {}),
        logger: rlog,
      });
      const pool = new UpstreamPool({ upstreamhosts: [], originhost: remote.url, ...(ca ? { ca } : {}), logger: rlog, auth, onResult });
      return { remote, pool, auth, checked: new Map(), checking: new Map() };
    });
    const region = await joinRegion(options.region, log);
    const expiry =
      options.ttlMs !== undefined
        ? new ExpiryIndex({
            driver,
            ...(region ? { region } : {}),
            ttlMs: options.ttlMs,
            sweepIntervalMs: settings.sweepIntervalMs ?? 60_000,
            ...(settings.now ? { now: settings.now } : {}),
            logger: log,
            remove: async (digest) => {
              // Pushed to a local repository: not the cache's to remove.
              try {
                await driver.stat(localBlobMarker(digest));
                return false;
              } catch (err) {
                if (!isPathNotFound(err)) throw err;
              }
              await driver.delete(paths.blobDir(digest));
              return true;
            },
          })
        : undefined;
    const cache = new CacheNamespace({
      driver,
      // Every fill of a mirror names its remote's pool; this one is only the default.
      upstreams: (runtimes[0] as RemoteRuntime).pool,
      logger: log,
      ...(settings.fillTimeoutMs !== undefined ? { fillTimeoutMs: settings.fillTimeoutMs } : {}),
      ...(expiry ? { tracker: region ? regionTracker(expiry, region) : expiry } : {}),
      ...(region ? { region, resolveSource: (key: string) => sourceOf(runtimes, key) } : {}),
      forwardAuthorization: false,
    });
    await cache.recover();
    await expiry?.start();
    const mirror = new MirrorNamespace({
      options,
      storage,
      driver,
      cache,
      remotes: runtimes,
      nodeId: settings.nodeId ?? randomBytes(6).toString('hex'),
      logger: log,
      ...(settings.now ? { now: settings.now } : {}),
      ...(expiry ? { expiry } : {}),
    });
    log.info(
      {
        remotes: options.remotes.map((r) => ({ name: r.name, url: r.url, hosts: r.hosts, credentials: r.username !== undefined, revalidateMs: r.revalidateMs })),
        default: options.defaultRemote?.name,
        local: options.local,
        ttlMs: options.ttlMs,
        ...(region ? { region: region.prefix, node: region.nodeId, redisUp: region.up } : {}),
      },
      'mirror ready',
    );
    observeCache(observability, { cache, pools: runtimes.map((r) => r.pool), ...(expiry ? { expiry } : {}), mirror: mirror.metrics, upstreamCritical: false });
    if (region) observeRegion(observability, region);
    onReady?.(mirror);
    let last = '';
    const logMetrics = (l: Logger) => {
      const snapshot = {
        ...cache.metrics,
        ...mirror.metrics,
        inFlight: cache.fills.inFlight,
        remotes: runtimes.map((r) => ({ name: r.remote.name, ...r.auth.stats(), upstream: r.pool.stats()[0] })),
        ...(expiry ? { expiry: expiry.stats() } : {}),
        ...(region ? { region: { ...region.stats, redisUp: region.up } } : {}),
      };
      const text = JSON.stringify(snapshot);
      if (text === last) return;
      last = text;
      l.info(snapshot, 'mirror metrics');
    };
    const timer = setInterval(() => logMetrics(log), METRICS_INTERVAL_MS);
    timer.unref();
    return {
      repository: (name, ctx) => mirror.repository(name, ctx),
      catalog: (n, lastName) => mirror.catalog(n, lastName),
      async close(): Promise<void> {
        clearInterval(timer);
        logMetrics(log);
        await cache.close();
        for (const r of runtimes) {
          r.pool.close();
          r.auth.close();
        }
        await expiry?.stop();
        await region?.close();
      },
    };
  };
}

/**
 * The remote and repository a fill's key names (`<remote name>/<repository>`; a remote's name is one path
 * component): a node of the region taking over another node's fill fetches from there.
 */
function sourceOf(runtimes: readonly RemoteRuntime[], key: string): { name: string; source: FillSource } | undefined {
  const slash = key.indexOf('/');
  const runtime = slash > 0 ? runtimes.find((r) => r.remote.name === key.slice(0, slash)) : undefined;
  return runtime ? { name: key.slice(slash + 1), source: { upstreams: runtime.pool, key } } : undefined;
}

/**
 * The authorizer of a mirror with `proxy.grants`: the server's grants for blob GETs (keys fetched from the
 * server's `/api/v0/keys`), the mirror's own `auth` for everything else.
 */
export function mirrorGrantAuthorizer(grants: MirrorGrants, otherwise: Authorizer, logger: Logger, cas: CaStore = new CaStore()): Authorizer {
  const ca = cas.pem(grants.cas);
  const keys = new RemoteJwks({ urls: [grants.keys], ...(ca ? { ca } : {}), logger: logger.child({ component: 'grant-keys' }) });
  const verifier = new GrantVerifier({ issuer: grants.issuer, acceptAudiences: [grants.name], keys });
  return new GrantOrAuthorizer(new GrantAuthorizer(verifier), otherwise);
}
