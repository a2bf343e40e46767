/**
 * The server's `/api/v0` API: DTR's content caches and user settings, and what DTR lacked (a default cache,
 * namespace and network rules, cache health, warm on push: the origin's events, warm rules, warm jobs). Routes are data: {@link API_RESOURCES} lists each resource
 * with the operations it has; each operation is a @koa/router route that authenticates, authorizes and runs
 * its handler. Failures are thrown as {@link ApiError}s, which the HTTP kit's error mapper (in the app the
 * API is mounted on) answers with the `{"errors":[...]}` envelope. docs/server-api.md is the reference for
 * clients.
 */
import Router, { type RouterContext } from '@koa/router';
import type { Context, Middleware } from 'koa';
import { Digest, isValidTag, RegistryError, serveRoutes, validateName } from '@cascade/registry-core';
import {
  normalizeCidr,
  StateError,
  validateNamespace,
  type CacheHealth,
  type ContentCache,
  type StateRepository,
} from '../state/repository.js';
import { API_BODY_LIMIT, onlyFields, readJsonObject, type JsonObject } from './body.js';
import { EVENTS_BODY_LIMIT, eventsEnvelopeSchema, type EventsTokens } from '../warm/events.js';
import type { WarmService } from '../warm/service.js';
import type { WarmJob } from '../warm/warmer.js';
import { ApiError, type ApiErrorCode } from './errors.js';

/** Where the API is mounted. */
export const API_PREFIX = '/api/v0';

/** The authenticated caller. */
export interface ApiIdentity {
  readonly user: string;
}

/** What {@link createApiRouter} needs; everything is injected so tests can fake it. */
export interface ApiRouterOptions {
  readonly state: StateRepository;
  /** True when `user` may write caches, rules, the default, and anyone's settings. */
  readonly isAdmin: (user: string) => boolean;
  /**
   * Checks the request's credentials (the server asks the origin registry). Undefined means 401: the
   * function may set `WWW-Authenticate` on `ctx` first (the origin's challenge), else `Basic` is sent. It
   * may throw an {@link ApiError} to answer with another code.
   */
  readonly authenticate: (ctx: Context) => Promise<ApiIdentity | undefined>;
  /** Largest request body, in bytes (default 64 KiB). */
  readonly bodyLimit?: number;
  /**
   * What the health checker knows beyond the stored checks (metrics of the cache, last error). When given,
   * the health answer has these fields too; `cascade server` always gives it.
   */
  readonly liveHealth?: (id: string) => CacheLiveHealth;
  /**
   * The cache tree (tree.ts's `buildCacheTree`), with the upstream URLs that name no registered cache only
   * for an admin. Without it, `GET /content_caches_tree` answers 404; `cascade server` always gives it.
   */
  readonly cacheTree?: (admin: boolean) => Promise<unknown>;
  /** Warm on push and manual warms; without it the warm routes answer 404 `NOT_FOUND`. */
  readonly warm?: WarmService;
  /** The secrets the origin's notifications carry to `/api/v0/events` (none: every post is refused). */
  readonly eventsTokens?: EventsTokens;
}

/** A cache's figures from its `/metrics` and its last error, as the health checker keeps them in memory. */
export interface CacheLiveHealth {
  /** Blob reads served from disk divided by all blob reads since the cache started; null when unknown or no read yet. */
  readonly hitRatio: number | null;
  /** Bytes of the blobs the cache keeps (`cascade_cache_disk_bytes`, only for caches with `blobttl` or `maxsize`). */
  readonly diskBytes: number | null;
  /** Free and total bytes of the file system that holds the cache's storage. */
  readonly storageFreeBytes: number | null;
  readonly storageCapacityBytes: number | null;
  /** When the figures above were read. */
  readonly metricsAt: Date | null;
  /** The last failed check since the server started (kept after the cache recovers). */
  readonly lastError: string | null;
  readonly lastErrorAt: Date | null;
}

/** Who may call an operation (`events`: the origin, with an events secret instead of user credentials). */
export type ApiAccess = 'user' | 'admin' | 'owner-or-admin' | 'events';

/** The methods operations are defined for; HEAD is answered as GET (@koa/router does). */
export type ApiMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** One operation's description in {@link API_RESOURCES}. */
export interface ApiOperationSpec {
  /** `user`: any authenticated user; `admin`; `owner-or-admin`: the user named by `:username`, or an admin. */
  readonly access: ApiAccess;
  /** The code answered for refused input (a malformed body, an unknown cache in a reference). */
  readonly invalid?: ApiErrorCode;
  /** The success status. */
  readonly status: 200 | 201 | 202 | 204;
  /** The largest body, when not the API's default. */
  readonly bodyLimit?: number;
}

/** One resource: a path under {@link API_PREFIX} (in @koa/router syntax) and its operations. */
export interface ApiResourceSpec {
  readonly path: string;
  readonly operations: Readonly<Partial<Record<ApiMethod, ApiOperationSpec>>>;
}

/** The API's resources, in matching order. Handlers are bound to these in {@link createApiRouter}. */
export const API_RESOURCES = {
  contentCaches: {
    path: '/content_caches',
    operations: {
      GET: { access: 'user', status: 200 },
      POST: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE', status: 201 },
    },
  },
  contentCache: {
    path: '/content_caches/:id',
    operations: {
      GET: { access: 'user', status: 200 },
      PATCH: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE', status: 200 },
      DELETE: { access: 'admin', status: 204 },
    },
  },
  contentCacheHealth: {
    path: '/content_caches/:id/health',
    operations: { GET: { access: 'user', status: 200 } },
  },
  // How the caches chain, with their figures over the last hour (the web page's tree).
  contentCachesTree: {
    path: '/content_caches_tree',
    operations: { GET: { access: 'user', status: 200 } },
  },
  // Who the caller is (the web page shows admin tools to admins): before the settings, same prefix.
  me: {
    path: '/accounts/me',
    operations: { GET: { access: 'user', status: 200 } },
  },
  userSettings: {
    path: '/accounts/:username/settings',
    operations: {
      GET: { access: 'owner-or-admin', status: 200 },
      PATCH: { access: 'owner-or-admin', invalid: 'INVALID_USER_SETTINGS', status: 200 },
    },
  },
  defaultCache: {
    path: '/content_caches_default',
    operations: {
      GET: { access: 'user', status: 200 },
      PUT: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE_DEFAULT', status: 200 },
    },
  },
  rules: {
    path: '/content_cache_rules',
    operations: { GET: { access: 'user', status: 200 } },
  },
  // Namespaces contain slashes: a wildcard takes `team/sub` as well as `team%2Fsub`.
  namespaceRule: {
    path: '/content_cache_rules/namespaces/*namespace',
    operations: {
      PUT: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE_RULE', status: 200 },
      DELETE: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE_RULE', status: 204 },
    },
  },
  // A CIDR has a slash too: `10.0.0.0%2F8` and `10.0.0.0/8` both work.
  networkRule: {
    path: '/content_cache_rules/networks/*cidr',
    operations: {
      PUT: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE_RULE', status: 200 },
      DELETE: { access: 'admin', invalid: 'INVALID_CONTENT_CACHE_RULE', status: 204 },
    },
  },
  // Warm on push: the origin's notifications, the rules, manual warms and the jobs.
  events: {
    path: '/events',
    operations: { POST: { access: 'events', invalid: 'INVALID_EVENTS', status: 200, bodyLimit: EVENTS_BODY_LIMIT } },
  },
  warmRules: {
    path: '/warm_rules',
    operations: { GET: { access: 'user', status: 200 } },
  },
  warmRule: {
    path: '/warm_rules/*namespace',
    operations: {
      PUT: { access: 'admin', invalid: 'INVALID_WARM_RULE', status: 200 },
      DELETE: { access: 'admin', invalid: 'INVALID_WARM_RULE', status: 204 },
    },
  },
  contentCacheWarm: {
    path: '/content_caches/:id/warm',
    operations: { POST: { access: 'admin', invalid: 'INVALID_WARM_REQUEST', status: 202 } },
  },
  warmJobs: {
    path: '/warm_jobs',
    operations: { GET: { access: 'admin', status: 200 } },
  },
  warmJob: {
    path: '/warm_jobs/:id',
    operations: { GET: { access: 'admin', status: 200 } },
  },
} as const satisfies Record<string, ApiResourceSpec>;

type Resources = typeof API_RESOURCES;

/** What an operation's handler gets: the caller, the path parameters, and the body on demand. */
interface Call {
  readonly user: string;
  param(name: string): string;
  body(): Promise<JsonObject>;
}

/** A handler answers the response body (undefined for 204). */
type Handler = (call: Call, ctx: RouterContext) => Promise<unknown>;

/** A handler for every operation of every resource: the compiler checks that none is missing. */
type Handlers = { [R in keyof Resources]: { [M in keyof Resources[R]['operations']]: Handler } };

/** The JSON of a content cache: DTR's `{id, name, host}`. */
function cacheJson(cache: ContentCache): { id: string; name: string; host: string } {
  return { id: cache.id, name: cache.name, host: cache.host };
}

/** The JSON of a cache's health (with the live figures when known); times as ISO 8601. */
function healthJson(health: CacheHealth, live?: CacheLiveHealth) {
  return {
    contentCacheUUID: health.cacheId,
    status: health.status,
    checkedAt: health.checkedAt?.toISOString() ?? null,
    latencyMs: health.latencyMs,
    error: health.error,
    lastOkAt: health.lastOkAt?.toISOString() ?? null,
    consecutiveFailures: health.consecutiveFailures,
    ...(live
      ? {
          lastError: live.lastError,
          lastErrorAt: live.lastErrorAt?.toISOString() ?? null,
          hitRatio: live.hitRatio,
          diskBytes: live.diskBytes,
          storageFreeBytes: live.storageFreeBytes,
          storageCapacityBytes: live.storageCapacityBytes,
          metricsAt: live.metricsAt?.toISOString() ?? null,
        }
      : {}),
  };
}

/** The JSON of a warm job; times as ISO 8601. */
export function warmJobJson(job: WarmJob) {
  return {
    id: job.id,
    contentCacheUUID: job.cache.id,
    contentCacheName: job.cache.name,
    repository: job.repository,
    reference: job.reference,
    digest: job.digest,
    trigger: job.trigger,
    state: job.state,
    attempts: job.attempts,
    blobsTotal: job.blobsTotal,
    blobsDone: job.blobsDone,
    blobsPresent: job.blobsPresent,
    bytesTotal: job.bytesTotal,
    bytesDone: job.bytesDone,
    lastError: job.lastError,
    createdAt: job.createdAt.toISOString(),
    startedAt: job.startedAt?.toISOString() ?? null,
    finishedAt: job.finishedAt?.toISOString() ?? null,
    nextAttemptAt: job.nextAttemptAt?.toISOString() ?? null,
  };
}

/**
 * Reads a string field that may be absent (undefined).
 * @throws ApiError `invalid` when present and not a string.
 */
function optionalString(body: JsonObject, field: string, invalid: ApiErrorCode): string | undefined {
  const value = body[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new ApiError(invalid, `${field} must be a string`);
  return value;
}

/**
 * Reads a required string field.
 * @throws ApiError `invalid` when missing or not a string.
 */
function requiredString(body: JsonObject, field: string, invalid: ApiErrorCode): string {
  const value = optionalString(body, field, invalid);
  if (value === undefined) throw new ApiError(invalid, `${field} is required`);
  return value;
}

/**
 * Reads a `contentCacheUUID` that may be cleared: a string, or `null` or `""` (DTR's UI sends an empty
 * string for "no cache"), which answer null. Undefined when absent.
 * @throws ApiError `invalid` for any other type.
 */
function cacheReference(body: JsonObject, invalid: ApiErrorCode): string | null | undefined {
  const value = body['contentCacheUUID'];
  if (value === undefined) return undefined;
  if (value === null || value === '') return null;
  if (typeof value !== 'string') throw new ApiError(invalid, 'contentCacheUUID must be a string or null');
  return value;
}

/**
 * Builds the `/api/v0` API as a Koa middleware, for an app on the HTTP kit (its error mapper answers what the
 * API throws). It answers every path under the prefix itself: unknown paths with 404 `NOT_FOUND`, a known
 * path with another method with 405 `METHOD_NOT_ALLOWED` and `Allow` (OPTIONS: 200 with `Allow`), through
 * @koa/router's `allowedMethods`; other paths go on to `next`.
 *
 * @example
 * const app = new Koa();
 * app.use(errorMapper(logger));
 * app.use(createApiRouter({
 *   state: new SqliteStateRepository('state.db'),
 *   isAdmin: (user) => user === 'admin',
 *   authenticate: async (ctx) => (await origin.check(ctx.get('authorization'))) ?? undefined,
 * }));
 */
export function createApiRouter(options: ApiRouterOptions): Middleware {
  const { state } = options;
  const limit = options.bodyLimit ?? API_BODY_LIMIT;

  const noSuchCache = (id: string) => new ApiError('NO_SUCH_CONTENT_CACHE', `no content cache with id ${JSON.stringify(id.slice(0, 100))}`);
  const noSuchRule = (what: string) => new ApiError('NO_SUCH_CONTENT_CACHE_RULE', `no content cache rule for ${what}`);

  const warm = (): WarmService => {
    if (!options.warm) throw new ApiError('NOT_FOUND', 'warming is not set up on this server');
    return options.warm;
  };
  const noSuchJob = (id: string) => new ApiError('NO_SUCH_WARM_JOB', `no warm job with id ${JSON.stringify(id.slice(0, 100))}`);

  const handlers: Handlers = {
    contentCaches: {
      GET: async () => (await state.list()).map(cacheJson),
      POST: async (call, ctx) => {
        const body = await call.body();
        onlyFields(body, ['name', 'host'], 'INVALID_CONTENT_CACHE');
        const name = requiredString(body, 'name', 'INVALID_CONTENT_CACHE');
        const host = requiredString(body, 'host', 'INVALID_CONTENT_CACHE');
        const cache = await state.create({ name, host });
        ctx.set('Location', `${API_PREFIX}/content_caches/${cache.id}`);
        return cacheJson(cache);
      },
    },
    contentCache: {
      GET: async (call) => {
        const cache = await state.get(call.param('id'));
        if (cache === undefined) throw noSuchCache(call.param('id'));
        return cacheJson(cache);
      },
      PATCH: async (call) => {
        const body = await call.body();
        onlyFields(body, ['name', 'host'], 'INVALID_CONTENT_CACHE');
        const name = optionalString(body, 'name', 'INVALID_CONTENT_CACHE');
        const host = optionalString(body, 'host', 'INVALID_CONTENT_CACHE');
        const cache = await state.update(call.param('id'), { name, host });
        if (cache === undefined) throw noSuchCache(call.param('id'));
        return cacheJson(cache);
      },
      DELETE: async (call) => {
        if (!(await state.delete(call.param('id')))) throw noSuchCache(call.param('id'));
        return undefined;
      },
    },
    contentCacheHealth: {
      GET: async (call) => {
        const health = await state.health(call.param('id'));
        if (health === undefined) throw noSuchCache(call.param('id'));
        return healthJson(health, options.liveHealth?.(health.cacheId));
      },
    },
    contentCachesTree: {
      GET: async (call) => {
        if (!options.cacheTree) throw new ApiError('NOT_FOUND', 'this server does not keep a cache tree');
        return options.cacheTree(options.isAdmin(call.user));
      },
    },
    me: {
      GET: async (call) => ({ user: call.user, admin: options.isAdmin(call.user) }),
    },
    userSettings: {
      GET: async (call) => state.getSettings(call.param('username')),
      PATCH: async (call) => {
        const body = await call.body();
        onlyFields(body, ['contentCacheUUID'], 'INVALID_USER_SETTINGS');
        const user = call.param('username');
        const contentCacheUUID = cacheReference(body, 'INVALID_USER_SETTINGS');
        // PATCH: an absent field leaves the setting as it is.
        if (contentCacheUUID === undefined) return state.getSettings(user);
        return state.setSettings(user, { contentCacheUUID });
      },
    },
    defaultCache: {
      GET: async () => ({ contentCacheUUID: (await state.getDefaultCache())?.id ?? null }),
      PUT: async (call) => {
        const body = await call.body();
        onlyFields(body, ['contentCacheUUID'], 'INVALID_CONTENT_CACHE_DEFAULT');
        const contentCacheUUID = cacheReference(body, 'INVALID_CONTENT_CACHE_DEFAULT');
        if (contentCacheUUID === undefined) throw new ApiError('INVALID_CONTENT_CACHE_DEFAULT', 'contentCacheUUID is required (null clears the default)');
        await state.setDefaultCache(contentCacheUUID);
        return { contentCacheUUID: (await state.getDefaultCache())?.id ?? null };
      },
    },
    rules: {
      GET: async () => ({
        namespaces: (await state.listNamespaceRules()).map((r) => ({ namespace: r.namespace, contentCacheUUID: r.cacheId })),
        networks: (await state.listNetworkRules()).map((r) => ({ cidr: r.cidr, contentCacheUUID: r.cacheId })),
      }),
    },
    namespaceRule: {
      PUT: async (call) => {
        const body = await call.body();
        onlyFields(body, ['contentCacheUUID'], 'INVALID_CONTENT_CACHE_RULE');
        const cacheId = requiredString(body, 'contentCacheUUID', 'INVALID_CONTENT_CACHE_RULE');
        const rule = await state.setNamespaceRule({ namespace: call.param('namespace'), cacheId });
        return { namespace: rule.namespace, contentCacheUUID: rule.cacheId };
      },
      DELETE: async (call) => {
        const namespace = validateNamespace(call.param('namespace'));
        if (!(await state.deleteNamespaceRule(namespace))) throw noSuchRule(`namespace ${namespace}`);
        return undefined;
      },
    },
    networkRule: {
      PUT: async (call) => {
        const body = await call.body();
        onlyFields(body, ['contentCacheUUID'], 'INVALID_CONTENT_CACHE_RULE');
        const cacheId = requiredString(body, 'contentCacheUUID', 'INVALID_CONTENT_CACHE_RULE');
        const rule = await state.setNetworkRule({ cidr: call.param('cidr'), cacheId });
        return { cidr: rule.cidr, contentCacheUUID: rule.cacheId };
      },
      DELETE: async (call) => {
        const cidr = normalizeCidr(call.param('cidr'));
        if (!(await state.deleteNetworkRule(cidr))) throw noSuchRule(`network ${cidr}`);
        return undefined;
      },
    },
    events: {
      POST: async (call) => {
        const parsed = eventsEnvelopeSchema.safeParse(await call.body());
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          throw new ApiError('INVALID_EVENTS', `not a notification envelope: ${issue ? `${issue.path.join('.') || '(top level)'}: ${issue.message}` : 'invalid'}`);
        }
        return warm().receive(parsed.data.events);
      },
    },
    warmRules: {
      GET: async () => (await state.listWarmRules()).map((r) => ({ namespace: r.namespace, contentCacheUUIDs: r.cacheIds })),
    },
    warmRule: {
      PUT: async (call) => {
        const body = await call.body();
        onlyFields(body, ['contentCacheUUIDs'], 'INVALID_WARM_RULE');
        const ids = body['contentCacheUUIDs'];
        if (!Array.isArray(ids) || !ids.every((id): id is string => typeof id === 'string')) throw new ApiError('INVALID_WARM_RULE', 'contentCacheUUIDs must be a list of content cache ids');
        const rule = await state.setWarmRule({ namespace: call.param('namespace'), cacheIds: ids });
        return { namespace: rule.namespace, contentCacheUUIDs: rule.cacheIds };
      },
      DELETE: async (call) => {
        const namespace = call.param('namespace');
        if (!(await state.deleteWarmRule(namespace))) throw new ApiError('NO_SUCH_WARM_RULE', `no warm rule for namespace ${JSON.stringify(namespace.slice(0, 300))}`);
        return undefined;
      },
    },
    contentCacheWarm: {
      POST: async (call, ctx) => {
        const body = await call.body();
        onlyFields(body, ['repository', 'reference'], 'INVALID_WARM_REQUEST');
        const repository = requiredString(body, 'repository', 'INVALID_WARM_REQUEST');
        const reference = requiredString(body, 'reference', 'INVALID_WARM_REQUEST');
        try {
          validateName(repository);
          if (Digest.looksLikeDigest(reference)) Digest.parse(reference);
          else if (!isValidTag(reference)) throw new RegistryError('TAG_INVALID', `${JSON.stringify(reference.slice(0, 200))} is neither a tag nor a digest`);
        } catch (err) {
          if (err instanceof RegistryError) throw new ApiError('INVALID_WARM_REQUEST', err.message);
          throw err;
        }
        const service = warm();
        const cache = await state.get(call.param('id'));
        if (cache === undefined) throw noSuchCache(call.param('id'));
        const job = service.warmByHand(cache, repository, reference, call.user);
        ctx.set('Location', `${API_PREFIX}/warm_jobs/${job.id}`);
        return warmJobJson(job);
      },
    },
    warmJobs: {
      GET: async () => warm().warmer.list().map(warmJobJson),
    },
    warmJob: {
      GET: async (call) => {
        const job = warm().warmer.get(call.param('id'));
        if (job === undefined) throw noSuchJob(call.param('id'));
        return warmJobJson(job);
      },
    },
  };

  /** Runs one operation for an authenticated, authorized caller, and answers its result. */
  async function run(ctx: RouterContext, spec: ApiOperationSpec, handler: Handler): Promise<void> {
    let user: string;
    if (spec.access === 'events') {
      // The origin's notifications carry a shared secret, not a user's credentials.
      if (!options.eventsTokens?.accepts(ctx.get('authorization'))) {
        ctx.set('WWW-Authenticate', 'Bearer realm="cascade-events"');
        throw new ApiError('UNAUTHORIZED', options.eventsTokens?.configured ? 'the events secret is missing or wrong' : 'no events secret is configured (events.tokens in server.yml)');
      }
      user = '';
    } else {
      const identity = await options.authenticate(ctx);
      if (identity === undefined) {
        if (!ctx.response.get('WWW-Authenticate')) ctx.set('WWW-Authenticate', 'Basic realm="cascade"');
        throw new ApiError('UNAUTHORIZED');
      }
      authorize(spec.access, identity.user, ctx.params['username'], options.isAdmin);
      user = identity.user;
    }
    const call: Call = {
      user,
      param: (name) => ctx.params[name] ?? '',
      body: () => readJsonObject(ctx.req, spec.invalid ?? 'INVALID_JSON', spec.bodyLimit ?? limit),
    };
    let result: unknown;
    try {
      result = await handler(call, ctx);
    } catch (err) {
      if (err instanceof StateError) {
        if (err.kind === 'CONFLICT') throw new ApiError('CONTENT_CACHE_NAME_CONFLICT', err.message, { cause: err });
        throw new ApiError(spec.invalid ?? 'UNKNOWN', err.message, { cause: err });
      }
      throw err;
    }
    ctx.status = spec.status;
    if (spec.status !== 204) ctx.body = result;
  }

  const router = new Router({ prefix: API_PREFIX });
  for (const key of Object.keys(API_RESOURCES) as (keyof Resources)[]) {
    const resource: ApiResourceSpec = API_RESOURCES[key];
    const bound: Partial<Record<ApiMethod, Handler>> = handlers[key];
    for (const [method, spec] of Object.entries(resource.operations) as [ApiMethod, ApiOperationSpec][]) {
      const handler = bound[method];
      if (handler !== undefined) router.register(resource.path, [method], (ctx) => run(ctx, spec, handler));
    }
  }
  const served = serveRoutes(router, (method, allow) => new ApiError('METHOD_NOT_ALLOWED', `${method} is not allowed here; allowed: ${allow}`, { headers: { Allow: allow } }));

  return async (ctx, next) => {
    // Everything under the prefix is the API's, so that no /api/v0 path falls through to the registry.
    if (ctx.path !== API_PREFIX && !ctx.path.startsWith(`${API_PREFIX}/`)) return next();
    // Per-user answers (settings) must not be kept by a shared cache.
    ctx.set('Cache-Control', 'no-store');
    await served(ctx, async () => {
      throw new ApiError('NOT_FOUND', `${ctx.path} is not part of the ${API_PREFIX} API`);
    });
  };
}

/**
 * Checks the caller may run an operation.
 * @throws ApiError DENIED
 */
function authorize(access: Exclude<ApiAccess, 'events'>, user: string, owner: string | undefined, isAdmin: (user: string) => boolean): void {
  if (access === 'user') return;
  if (access === 'owner-or-admin' && owner !== undefined && owner === user) return;
  if (isAdmin(user)) return;
  throw new ApiError('DENIED', access === 'admin' ? 'only an admin may do this' : 'only the user themself or an admin may do this');
}
