/**
 * The options of the `downstream` registry middleware (a cache node): one zod schema
 * ({@link downstreamOptionsSchema}), parsed once when the config is loaded into the typed
 * {@link DownstreamOptions} the node is built from. DTR's files must load unchanged, so both of DTR's forms
 * are accepted, plus the flat list of hosts that other cache configurations use:
 *
 * ```yaml
 * # (a) DTR, nested: one upstream set
 * options:
 *   blobttl: 24h
 *   upstreams:
 *     - originhost: https://origin.example
 *       upstreamhosts: [https://cache-a.example, https://cache-b.example]
 *       cas: [/certs/origin-ca.pem]
 *
 * # (b) DTR's parameter table: the same keys at options level
 * options:
 *   originhost: https://origin.example
 *   upstreamhosts: [https://cache-a.example]
 *   cas: [/certs/origin-ca.pem]
 *
 * # (c) a flat list of hosts, all used round-robin, with no separate origin
 * options:
 *   upstreams: [https://cache-a.example, https://cache-b.example]
 * ```
 *
 * Every message names the exact key a user has to edit (`upstreams[0].cas[1]`) and reads `<key>: expected
 * <what>, got <what>`, as the registry config's do. Each value has its schema; where the hosts come from is
 * checked across the forms once each key was read (the schema's building blocks are in `option-schema.ts`).
 */
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { describeValue, parseDtrDuration, parseGoDuration, suggestKey, type MiddlewareOptionsValidator, type RegistryConfig } from '@cascade/registry-core';
import { ALWAYS, fail, keyAt, leaf, listOf, optional, optionMessages, parseAt, readCaFiles, Refusal, withDefault, type CaFileSettings, type KeyPath, type OptionCtx } from './option-schema.js';

/** How a cache authenticates to its upstream when it fills a miss. */
export const DOWNSTREAM_AUTH_MODES = ['passthrough', 'none', 'grant'] as const;

/** One of {@link DOWNSTREAM_AUTH_MODES}. */
export type DownstreamAuthMode = (typeof DOWNSTREAM_AUTH_MODES)[number];

/**
 * Defaults of the optional options, in the syntax a user writes, so the documentation and the code cannot
 * disagree about them.
 */
export const DOWNSTREAM_DEFAULTS = {
  filltimeout: '10m',
  sweepinterval: '1m',
  auth: 'passthrough',
  issuer: 'cascade',
} as const satisfies { filltimeout: string; sweepinterval: string; auth: DownstreamAuthMode; issuer: string };

/** Every key the options may hold, in the order the documentation lists them. */
export const DOWNSTREAM_OPTION_KEYS = ['blobttl', 'upstreams', 'originhost', 'upstreamhosts', 'cas', 'maxsize', 'filltimeout', 'sweepinterval', 'auth', 'name', 'issuer', 'downstreams', 'region'] as const;

/** The environment variable that supplies `region.redis`, or overrides the one in the file. */
export const REGION_REDIS_ENV = 'CASCADE_REGION_REDIS';

/** The keys of the one entry of the nested `upstreams` form. */
const UPSTREAM_ENTRY_KEYS = ['originhost', 'upstreamhosts', 'cas'] as const;

/** The order messages come in: the keys as the schema reads them, where blobs come from first. */
const MESSAGE_ORDER = ['originhost', 'upstreamhosts', 'cas', 'upstreams', 'blobttl', 'maxsize', 'filltimeout', 'sweepinterval', 'auth', 'name', 'issuer', 'downstreams', 'region'];

/** The validated options of a cache node, whatever form they were written in. */
export interface DownstreamOptions {
  /**
   * How long a blob stays after it was last served, in milliseconds (at least 1); absent means blobs never
   * expire. Requires `storage.delete.enabled`.
   */
  readonly blobttlMs?: number;
  /** The origin registry, as a URL origin (`https://origin.example`, no trailing slash); fetched from last. */
  readonly originhost?: string;
  /**
   * Upstream caches, as URL origins, tried in round-robin order before the origin. Empty when the cache
   * fetches from the origin directly. At least one of this and `originhost` is set.
   */
  readonly upstreamhosts: readonly string[];
  /**
   * Absolute paths of the PEM CA files to trust for the upstreams' TLS, options-level ones first, then
   * those of the `upstreams` entry. Empty: only the default roots are trusted.
   */
  readonly cas: readonly string[];
  /** Disk quota in bytes beyond which least recently used blobs are evicted; absent means no quota. Requires `storage.delete.enabled`. */
  readonly maxsizeBytes?: number;
  /** How long a fill may keep running after every client reading it has gone, in milliseconds (0: stop at once). */
  readonly filltimeoutMs: number;
  /** How often expiry and eviction run, in milliseconds (greater than 0). */
  readonly sweepintervalMs: number;
  /**
   * `passthrough`: a miss is fetched with the client's own `Authorization` header, so the upstream decides
   * what the client may read. `none`: fetched without credentials (a mirror of public content).
   * `grant`: the cache serves blobs only with a grant signed by the Cascade server (see docs/cache.md).
   */
  readonly auth: DownstreamAuthMode;
  /** `auth: grant`: this cache's name, as registered on the server (grants are issued for it). */
  readonly name?: string;
  /** `auth: grant`: the issuer the grants must carry (the server's `grants.issuer`, default `cascade`). */
  readonly issuer: string;
  /** `auth: grant`: names of the caches that fill through this one (their grants travel up with misses). */
  readonly downstreams: readonly string[];
  /**
   * The region this node belongs to: the nodes with the same Redis and the same (shared) storage folder fill
   * each blob once, share one expiry state and one sweeper (see docs/cache.md, "A region of several nodes").
   */
  readonly region?: RegionOptions;
}

/** `region`: the Redis that coordinates the nodes of a region. */
export interface RegionOptions {
  /** `redis://` or `rediss://` URL (password and TLS as Redis URLs allow). */
  readonly redis: string;
  /** Names the region's keys in Redis (default: derived from the storage folder's path). */
  readonly name?: string;
  /** The shared storage folder (`storage.filesystem.rootdirectory`). */
  readonly storageRoot: string;
}

/** How {@link parseDownstreamOptions} checks the files the options name, and the environment it reads. */
export interface ParseDownstreamSettings extends CaFileSettings {
  /** Read for {@link REGION_REDIS_ENV} (default: none). */
  readonly env?: NodeJS.ProcessEnv;
}
export type { CaFileSettings } from './option-schema.js';

/**
 * The schema of the options of one `downstream` middleware entry. `key` is where they are in the file
 * (`middleware.registry[0].options`), which messages that point at another key name; `config` is the rest of
 * the configuration, read for `storage.delete.enabled`; `settings` say how CA files are checked. Parse with
 * {@link parseDownstreamOptions}, which turns the issues into messages.
 */
export function downstreamOptionsSchema(key: string, config: RegistryConfig, settings: ParseDownstreamSettings = {}) {
  const at = (...path: KeyPath): string => keyAt(key, path);
  const envRedis = regionRedisFromEnv(settings.env);
  return z
    .preprocess((raw) => withRegionEnv(raw, envRedis), z.looseObject({
      originhost: optional(hostUrl),
      upstreamhosts: optional(hostList(at('upstreamhosts'))),
      cas: optional(caList),
      upstreams: optional(upstreamsSchema(key)),
      blobttl: optional(leaf(blobTtlMs)),
      maxsize: optional(leaf(sizeBytes)),
      filltimeout: withDefault(leaf(goDurationMs(true)), DOWNSTREAM_DEFAULTS.filltimeout),
      sweepinterval: withDefault(leaf(goDurationMs(false)), DOWNSTREAM_DEFAULTS.sweepinterval),
      auth: withDefault(leaf(authMode), DOWNSTREAM_DEFAULTS.auth),
      name: optional(leaf((v) => (typeof v === 'string' && v !== '' ? v : new Refusal('the cache name registered on the server, such as "region-eu"')))),
      issuer: withDefault(leaf((v) => (typeof v === 'string' && v !== '' ? v : new Refusal('the server\'s grants.issuer, such as "cascade"'))), DOWNSTREAM_DEFAULTS.issuer),
      downstreams: withDefault(
        leaf((v) => (Array.isArray(v) && v.every((d): d is string => typeof d === 'string' && d !== '') ? v : new Refusal('a list of cache names'))),
        [],
      ),
      region: optional(regionSchema(envRedis !== undefined)),
    }))
    .superRefine((o, ctx) => {
      for (const k of Object.keys(o)) {
        if (!isOneOf(k, DOWNSTREAM_OPTION_KEYS)) fail(ctx, o[k], `a key of ${key} (${DOWNSTREAM_OPTION_KEYS.join(', ')})`, unknownKeyGot(k, DOWNSTREAM_OPTION_KEYS), { path: [k], unknownKey: true });
      }
      checkHosts(o, ctx, key);
      if (o.auth === 'grant' && o.name === undefined) {
        fail(ctx, undefined, 'the cache name registered on the server (auth: grant verifies that grants were issued for it)', 'nothing', { path: ['name'] });
      }
      // Both expire content by deleting blobs, which the storage refuses unless deletes are enabled.
      const deleting = (['blobttl', 'maxsize'] as const).filter((k) => o[k] !== undefined).map((k) => at(k));
      if (deleting.length > 0 && !config.storage.delete.enabled) {
        const why = `${deleting.join(' and ')} ${deleting.length === 1 ? 'is' : 'are'} set (the cache deletes blobs when they expire or are evicted, and the storage refuses deletes unless they are enabled)`;
        fail(ctx, false, `true because ${why}`, 'false', { key: 'storage.delete.enabled', after: 'keys' });
      }
      if (isRecord(o.region)) checkRegionStorage(ctx, at('region'), config.storage);
      if (settings.checkCaFiles === false) return;
      const entryCas = isUpstreamSet(o.upstreams) ? o.upstreams.cas : undefined;
      for (const [path, files] of [[['cas'], o.cas], [['upstreams', 0, 'cas'], entryCas]] as const) {
        if (isStringList(files)) readCaFiles(ctx, path, files, settings);
      }
    }, ALWAYS)
    .transform((o): DownstreamOptions => {
      const set = isUpstreamSet(o.upstreams) ? o.upstreams : undefined;
      const originhost = o.originhost ?? set?.originhost;
      return {
        ...(o.blobttl === undefined ? {} : { blobttlMs: o.blobttl }),
        ...(originhost === undefined ? {} : { originhost }),
        upstreamhosts: o.upstreamhosts ?? set?.upstreamhosts ?? (o.upstreams?.form === 'hosts' ? o.upstreams.hosts : []),
        cas: [...(o.cas ?? []), ...(set?.cas ?? [])],
        ...(o.maxsize === undefined ? {} : { maxsizeBytes: o.maxsize }),
        filltimeoutMs: o.filltimeout,
        sweepintervalMs: o.sweepinterval,
        auth: o.auth,
        ...(o.name === undefined ? {} : { name: o.name }),
        issuer: o.issuer,
        downstreams: o.downstreams,
        ...(o.region === undefined ? {} : { region: regionOptionsOf(o.region, config.storage) }),
      };
    });
}

/**
 * Parses and validates the options of one `downstream` middleware entry. `key` is the dotted key of the
 * options (`middleware.registry[0].options`), used in every message; `config` is the rest of the
 * configuration, read for `storage.delete.enabled`.
 *
 * Every problem is reported, each as one message `<full key>: expected <what>, got <what>` (CA file
 * problems read `<key>: <file>: <reason>`), in a fixed order: unknown keys, then where blobs come from (as
 * written), the other options in turn, `storage.delete.enabled`, and the CA files last. Values of URLs with
 * credentials are never echoed.
 *
 * @returns `options` when, and only when, `errors` is empty.
 * @example
 * const { options, errors } = parseDownstreamOptions(entry.options, 'middleware.registry[0].options', config);
 */
export function parseDownstreamOptions(
  options: Record<string, unknown>,
  key: string,
  config: RegistryConfig,
  settings: ParseDownstreamSettings = {},
): { options?: DownstreamOptions; errors: string[] } {
  const result = downstreamOptionsSchema(key, config, settings).safeParse(options);
  return result.success ? { errors: [], options: result.data } : { errors: optionMessages(result.error.issues, key, MESSAGE_ORDER) };
}

/**
 * The validator to register with the config loader:
 * `loadConfig(file, env, { middleware: { downstream: validateDownstreamOptions } })`. It returns the
 * messages of {@link parseDownstreamOptions}, CA file checks included, so a cache with a missing or bad CA
 * file does not start.
 */
export const validateDownstreamOptions: MiddlewareOptionsValidator = (options, key, config) => parseDownstreamOptions(options, key, config).errors;

// --- The region (a cache node's `region`, a mirror's `proxy.region`: one schema for both) ---

/** {@link REGION_REDIS_ENV} of `env`, when set (and not empty). */
export function regionRedisFromEnv(env: NodeJS.ProcessEnv | undefined): string | undefined {
  const value = env?.[REGION_REDIS_ENV];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * The mapping that holds `region` (a cache node's options, a mirror's `proxy` section) with `region.redis` set
 * from the environment, when it is (the environment wins over the file; it also sets a region the file has not).
 */
export function withRegionEnv(raw: unknown, envRedis: string | undefined): unknown {
  if (envRedis === undefined || envRedis === '' || !isRecord(raw)) return raw;
  const region = isRecord(raw['region']) ? raw['region'] : {};
  return { ...raw, region: { ...region, redis: envRedis } };
}

const REDIS_EXPECTED = 'a redis:// or rediss:// URL such as "redis://redis.example:6379/0"';

/** `region.redis`: a Redis URL, never echoed (it may hold a password). */
function redisUrl(fromEnv: boolean) {
  const source = fromEnv ? ` (from ${REGION_REDIS_ENV})` : '';
  return leaf((value): string | Refusal => {
    const shown = typeof value === 'string' ? `"${safeText(value)}"${source}` : `${describeValue(value)}${source}`;
    if (typeof value !== 'string' || !URL.canParse(value)) return new Refusal(REDIS_EXPECTED, shown);
    const url = new URL(value);
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') return new Refusal(REDIS_EXPECTED, shown);
    if (url.hostname === '') return new Refusal(`${REDIS_EXPECTED} (with a host)`, shown);
    if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d+$/.test(url.pathname)) return new Refusal(`${REDIS_EXPECTED} (the path is a database number)`, shown);
    return value;
  });
}

/** A URL's text for a message: its credentials masked, whether it parses or not. */
function safeText(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@');
}

const REGION_KEYS = ['redis', 'name'] as const;

/**
 * The nodes of a region share one folder: a storage of this process's memory cannot be shared. `regionKey` names
 * the region's key in the message (`middleware.registry[0].options.region`, `proxy.region`).
 */
export function checkRegionStorage(ctx: OptionCtx, regionKey: string, storage: RegistryConfig['storage']): void {
  if (storage.filesystem !== undefined) return;
  const driver = storage.inmemory !== undefined ? 'inmemory' : 'no filesystem storage';
  fail(ctx, driver, `storage.filesystem (a folder every node of the region mounts) because ${regionKey} is set`, driver, { key: 'storage', after: 'keys' });
}

/** The options of a checked `region`, with the shared folder of `storage`. */
export function regionOptionsOf(region: { redis: string; name?: string }, storage: RegistryConfig['storage']): RegionOptions {
  return { ...region, storageRoot: storage.filesystem?.rootdirectory ?? '' };
}

/** `region`: `{redis, name?}`; `fromEnv` when `redis` came from {@link REGION_REDIS_ENV} (messages say so). */
export function regionSchema(fromEnv: boolean) {
  const redis = redisUrl(fromEnv);
  const name = leaf((v) => (typeof v === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(v) ? v : new Refusal('a region name of letters, digits, ".", "_" and "-" (at most 64)')));
  return z.unknown().transform((value, ctx): { redis: string; name?: string } => {
    if (!isRecord(value)) return fail(ctx, value, `a mapping such as "{redis: redis://redis.example:6379/0}" (or set ${REGION_REDIS_ENV})`);
    for (const k of Object.keys(value)) {
      if (!isOneOf(k, REGION_KEYS)) fail(ctx, value[k], `a key of region (${REGION_KEYS.join(', ')})`, unknownKeyGot(k, REGION_KEYS), { path: [k], unknownKey: true });
    }
    if (value['redis'] === undefined || value['redis'] === null) return fail(ctx, undefined, `${REDIS_EXPECTED} (or set ${REGION_REDIS_ENV})`, 'nothing', { path: ['redis'] });
    const url = parseAt(redis, value['redis'], ['redis'], ctx);
    const n = value['name'] === undefined || value['name'] === null ? undefined : parseAt(name, value['name'], ['name'], ctx);
    if (url === undefined) return z.NEVER;
    return { redis: url, ...(n === undefined ? {} : { name: n }) };
  });
}

// --- Where blobs come from: the three forms ---

/** What `upstreams` held: DTR's upstream set (form a), or a list of hosts (form c). */
type Upstreams = UpstreamSet | { readonly form: 'hosts'; readonly hosts: string[] };

/** The entry of form (a): its keys as written, and the values of those that are valid. */
interface UpstreamSet {
  readonly form: 'set';
  readonly written: ReadonlySet<string>;
  readonly originhost?: string;
  readonly upstreamhosts?: string[];
  readonly cas?: string[];
}

function isUpstreamSet(value: unknown): value is UpstreamSet {
  return isRecord(value) && value['form'] === 'set';
}

const FORMS = 'a list holding either one upstream set ("- originhost: https://origin.example") or host URLs ("- https://cache.example")';

/** `upstreams`, in either of its forms; `key` is the options' key. */
function upstreamsSchema(key: string) {
  const upstreamsKey = keyAt(key, ['upstreams']);
  const entryKey = `${upstreamsKey}[0]`;
  const entryHosts = hostList(`${entryKey}.upstreamhosts`);
  // Form (c): every item is a host, used round-robin, and there is no separate origin.
  const hostItems = hostList(
    upstreamsKey,
    leaf((v) => (isRecord(v) ? new Refusal(`a host URL like ${upstreamsKey}[0] (${FORMS}, not both)`, 'a mapping') : hostOrigin(v))),
  );
  return z.unknown().transform((value, ctx): Upstreams => {
    if (!Array.isArray(value)) return fail(ctx, value, FORMS, isRecord(value) ? 'a mapping (write the upstream set as a list item: "- originhost: ...")' : describeValue(value));
    if (value.length === 0) return fail(ctx, value, FORMS, 'an empty list');
    const [entry, ...extra] = value as unknown[];
    if (!isRecord(entry)) return { form: 'hosts', hosts: parseAt(hostItems, value, [], ctx) ?? [] };
    // Form (a): DTR's nested upstream set.
    for (const k of Object.keys(entry)) {
      if (isOneOf(k, UPSTREAM_ENTRY_KEYS)) continue;
      const got = isOneOf(k, DOWNSTREAM_OPTION_KEYS) ? `unknown key ${JSON.stringify(k)} (it belongs in ${key}, beside upstreams)` : unknownKeyGot(k, UPSTREAM_ENTRY_KEYS);
      fail(ctx, entry[k], `a key of ${entryKey} (${UPSTREAM_ENTRY_KEYS.join(', ')})`, got, { path: [0, k], unknownKey: true });
    }
    const written = new Set(UPSTREAM_ENTRY_KEYS.filter((k) => entry[k] !== undefined && entry[k] !== null));
    const field = <T>(schema: z.ZodType<T>, k: (typeof UPSTREAM_ENTRY_KEYS)[number]) => (written.has(k) ? parseAt(schema, entry[k], [0, k], ctx) : undefined);
    const set: UpstreamSet = {
      form: 'set',
      written,
      ...definedOnly({ originhost: field(hostUrl, 'originhost'), upstreamhosts: field(entryHosts, 'upstreamhosts'), cas: field(caList, 'cas') }),
    };
    extra.forEach((item, i) => {
      const expected = `one upstream set per cache node (a cache fills from one origin; list several caches in ${entryKey}.upstreamhosts, which are tried round-robin)`;
      fail(ctx, item, expected, isRecord(item) ? 'another upstream set' : describeValue(item), { path: [i + 1] });
    });
    return set;
  });
}

/**
 * The checks across the forms: originhost and the upstream hosts are each written in one place only (or
 * which one wins would be a guess), and at least one of them is given, unless a host key was already
 * refused (its message says more).
 */
function checkHosts(o: { originhost?: unknown; upstreamhosts?: unknown; upstreams?: unknown }, ctx: OptionCtx, key: string): void {
  const u = o.upstreams;
  const set = isUpstreamSet(u) ? u : undefined;
  if (set?.written.has('originhost') && o.originhost !== undefined) {
    fail(ctx, undefined, `originhost in one place only (it is also set at ${keyAt(key, ['originhost'])})`, 'a second one', { path: ['upstreams', 0, 'originhost'], supersedes: true });
  }
  const secondList = set?.written.has('upstreamhosts') ? ['upstreams', 0, 'upstreamhosts'] : isRecord(u) && u['form'] === 'hosts' ? ['upstreams'] : undefined;
  if (secondList && o.upstreamhosts !== undefined) {
    fail(ctx, undefined, `upstream hosts in one place only (they are also set at ${keyAt(key, ['upstreamhosts'])})`, 'a second list', { path: secondList });
  }
  if (ctx.issues.some((i) => isHostKey(i.path ?? []))) return;
  const origin = typeof o.originhost === 'string' ? o.originhost : set?.originhost;
  const hosts = isStringList(o.upstreamhosts) ? o.upstreamhosts : (set?.upstreamhosts ?? (isRecord(u) && isStringList(u['hosts']) ? u['hosts'] : []));
  if (origin !== undefined || hosts.length > 0) return;
  const example = set ? 'for example "originhost: https://origin.example"' : 'for example "upstreams: [{originhost: https://origin.example}]"';
  fail(ctx, undefined, `where to fetch missing blobs from: an originhost or upstreamhosts (${example})`, set ? 'neither' : 'nothing', { path: set ? ['upstreams', 0] : ['upstreams'] });
}

/** A key about hosts (a CA list is not one). */
function isHostKey(path: readonly PropertyKey[]): boolean {
  return path[0] === 'originhost' || path[0] === 'upstreamhosts' || (path[0] === 'upstreams' && path[2] !== 'cas');
}

// --- The values ---

const URL_EXPECTED = 'an absolute http:// or https:// URL without path, query or fragment, such as "https://origin.example"';
const NO_CREDENTIALS = "a URL without credentials (on a miss the cache forwards the client's own credentials; see the auth option)";
const CREDENTIALS_GOT = 'a URL with a user name or password (not shown)';

/** A host as its URL origin (`https://host[:port]`), the form requests are built from. */
function hostOrigin(value: unknown): string | Refusal {
  if (typeof value !== 'string') return new Refusal(URL_EXPECTED);
  // Checked on the text first, and broadly (an `@` anywhere before a query): a URL that does not even
  // parse, such as one whose password holds a `/`, may still hold a password.
  if (/^[a-z][a-z0-9+.-]*:\/\/[^?#]*@/i.test(value)) return new Refusal(NO_CREDENTIALS, CREDENTIALS_GOT);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    const bare = /^[a-z0-9.-]+(:\d+)?(\/.*)?$/i.test(value) ? ` (add the scheme: "https://${value}")` : '';
    return new Refusal(URL_EXPECTED, `${describeValue(value)}${bare}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    // `host:5000` parses with `host:` as its scheme.
    const bare = /^[a-z0-9.-]+:\d+$/i.test(value) ? ` (add the scheme: "https://${value}")` : '';
    return new Refusal(URL_EXPECTED, `${describeValue(value)}${bare}`);
  }
  if (url.username !== '' || url.password !== '') return new Refusal(NO_CREDENTIALS, CREDENTIALS_GOT);
  if (url.pathname !== '/') return new Refusal(`${URL_EXPECTED} (the cache adds /v2/... itself)`);
  if (url.search !== '' || url.hash !== '' || /[?#]/.test(value)) return new Refusal(URL_EXPECTED);
  return url.origin;
}

const hostUrl = leaf(hostOrigin);

/** A list of hosts, each once: a repeated host would silently take a bigger share of the round-robin. */
function hostList(listKey: string, item: z.ZodType<string> = hostUrl) {
  return listOf(item, 'a list of http(s) URLs', (items, ctx) => {
    const seen = new Map<string, number>();
    items.forEach((host, i) => {
      if (typeof host !== 'string' || !URL.canParse(host)) return;
      const origin = new URL(host).origin;
      const first = seen.get(origin);
      if (first === undefined) seen.set(origin, i);
      else fail(ctx, host, `each host once (it is already ${listKey}[${first}])`, describeValue(host), { path: [i] });
    });
  });
}

/** Absolute paths only: the cache may be started from any directory, and DTR requires them too. */
const caList = listOf(
  leaf((v) => (typeof v === 'string' && v !== '' && isAbsolute(v) ? v : new Refusal('an absolute path of a PEM CA certificate file, such as "/certs/origin-ca.pem"'))),
  'a list of absolute paths of PEM CA certificate files',
);

/** Go's time.Duration limit: DTR, written in Go, could not hold a longer blobttl. */
const MAX_DURATION_NS = 9_223_372_036_854_775_807n;

const DTR_EXPECTED = 'a positive integer with an optional unit ns|us|ms|s|m|h (no unit means nanoseconds), such as "24h"';

/** `blobttl`, in DTR's syntax, as milliseconds. */
function blobTtlMs(value: unknown): number | Refusal {
  if (typeof value !== 'string' && typeof value !== 'number') return new Refusal(DTR_EXPECTED);
  let ns: bigint;
  try {
    ns = parseDtrDuration(value);
  } catch (e) {
    // registry-core's message says what a DTR duration is, including why a large number was refused.
    const expected = /^invalid duration .*?: expected (.+)$/s.exec(e instanceof Error ? e.message : '')?.[1] ?? DTR_EXPECTED;
    return new Refusal(expected, `${describeValue(value)}${dtrHint(value)}`);
  }
  if (ns > MAX_DURATION_NS) return new Refusal('a duration of at most 2562047h (about 292 years)');
  if (ns < 1_000_000n) {
    const unitless = typeof value === 'number' || /^\d+$/.test(value);
    const meant = unitless ? `; no unit means nanoseconds: did you mean "${value}s"?` : '';
    return new Refusal('a duration of at least 1ms', `${describeValue(value)}, which is ${ns} nanoseconds${meant}`);
  }
  return Number(ns) / 1e6;
}

/** Why a value that looks like a duration is not a DTR one, and how to write it. */
function dtrHint(value: string | number): string {
  if (typeof value === 'number') return '';
  const days = /^(\d+)d$/.exec(value);
  if (days !== null) return ` (there is no unit "d": write "${Number(days[1]) * 24}h")`;
  if (value.startsWith('-')) return ' (a duration must be positive)';
  let ms: number;
  try {
    ms = parseGoDuration(value);
  } catch {
    return '';
  }
  if (ms <= 0) return '';
  const ns = Math.round(ms * 1e6);
  const [unit, per] = DTR_UNITS_LARGEST_FIRST.find(([, n]) => ns % n === 0) ?? ['ns', 1];
  return ` (durations with several units or a fraction are not DTR syntax: write "${ns / per}${unit}")`;
}

/** DTR's units with their nanoseconds, to write a duration in the largest unit that keeps it whole. */
const DTR_UNITS_LARGEST_FIRST: ReadonlyArray<readonly [string, number]> = [
  ['h', 3.6e12],
  ['m', 6e10],
  ['s', 1e9],
  ['ms', 1e6],
  ['us', 1e3],
  ['ns', 1],
];

/** Multipliers of `maxsize` units, by lower-case unit: SI units are powers of 1000, IEC units powers of 1024. */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

const SIZE_EXPECTED = 'a positive number of bytes, or a size with a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), such as "50GiB"';

/** `maxsize`, in bytes. */
function sizeBytes(value: unknown): number | Refusal {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : new Refusal(SIZE_EXPECTED);
  if (typeof value !== 'string') return new Refusal(SIZE_EXPECTED);
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (m === null) return new Refusal(SIZE_EXPECTED);
  const [, amount = '', unit = ''] = m;
  const multiplier = unit === '' ? 1 : SIZE_UNITS[unit.toLowerCase()];
  if (multiplier === undefined) {
    const prefix = /^[kmgt]$/i.test(unit) ? `: did you mean "${unit.toUpperCase()}B" or "${unit.toUpperCase()}iB"?` : '';
    return new Refusal(SIZE_EXPECTED, `${describeValue(value)} (unknown unit ${JSON.stringify(unit)}${prefix})`);
  }
  if (unit === '' && !/^\d+$/.test(amount)) return new Refusal(SIZE_EXPECTED, `${describeValue(value)} (a number of bytes is a whole number)`);
  const bytes = Math.floor(Number(amount) * multiplier);
  return bytes >= 1 && Number.isSafeInteger(bytes) ? bytes : new Refusal(SIZE_EXPECTED);
}

const GO_DURATION_EXPECTED = 'a Go duration such as "10m", "90s" or "1h30m" (numbers with units ns, us, ms, s, m, h)';

/** A Go duration as distribution reads one: a string, or a YAML integer of nanoseconds. In milliseconds. */
function goDurationMs(allowZero: boolean): (value: unknown) => number | Refusal {
  const expected = allowZero ? `${GO_DURATION_EXPECTED}, not negative` : `${GO_DURATION_EXPECTED}, greater than 0`;
  return (value) => {
    let ms: number | undefined;
    if (typeof value === 'number' && Number.isSafeInteger(value)) ms = value / 1e6;
    else if (typeof value === 'string') {
      try {
        ms = parseGoDuration(value);
      } catch {
        ms = undefined;
      }
    }
    return ms === undefined || ms < 0 || (ms === 0 && !allowZero) ? new Refusal(expected) : ms;
  };
}

function authMode(value: unknown): DownstreamAuthMode | Refusal {
  if (typeof value === 'string' && isOneOf(value, DOWNSTREAM_AUTH_MODES)) return value;
  // The modes are few and dissimilar, so a looser match than for keys still points at the right one.
  const suggestion = typeof value === 'string' ? suggestKey(value, DOWNSTREAM_AUTH_MODES, Math.ceil(value.length / 3)) : undefined;
  return new Refusal(
    `one of ${DOWNSTREAM_AUTH_MODES.map((m) => JSON.stringify(m)).join(', ')}`,
    `${describeValue(value)}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`,
  );
}

function definedOnly<T extends Record<string, unknown>>(record: T): Partial<T> {
  return Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isOneOf<T extends string>(value: string, list: readonly T[]): value is T {
  return (list as readonly string[]).includes(value);
}

function unknownKeyGot(k: string, known: readonly string[]): string {
  const suggestion = suggestKey(k, known);
  return `unknown key ${JSON.stringify(k)}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
}
