/**
 * The server's state, as the rest of the server sees it: the `content_caches` registry, user settings, the
 * default cache, namespace and network rules, and cache health. {@link StateRepository} is the only way in,
 * so a PostgreSQL implementation can sit next to the SQLite one; the validators here are shared by every
 * implementation, so both accept and reject exactly the same input.
 */
import { randomUUID } from 'node:crypto';
import { RegistryError, validateName } from '@cascade/registry-core';
import { formatCidr, parseCidr } from './select.js';

/** A content cache the server can redirect blob requests to (DTR's `content_caches` entry). */
export interface ContentCache {
  /** UUID v4, lower-case. */
  readonly id: string;
  /** Unique, compared case-insensitively. */
  readonly name: string;
  /** Normalized `http(s)://host[:port]`: no user info, path, query or fragment. */
  readonly host: string;
}

/** The fields of a new content cache. */
export interface NewContentCache {
  readonly name: string;
  readonly host: string;
}

/** A partial update of a content cache; absent fields stay as they are. */
export interface ContentCachePatch {
  readonly name?: string | undefined;
  readonly host?: string | undefined;
}

/** A user's settings (DTR's `UserSettings`); `null` means the user has not chosen a cache. */
export interface UserSettings {
  readonly contentCacheUUID: string | null;
}

/** The cache used for every repository under a namespace that has no more specific rule. */
export interface NamespaceRule {
  /** A repository prefix of whole path components, such as `team` or `team/sub`. */
  readonly namespace: string;
  readonly cacheId: string;
}

/** The cache used by clients whose address is in a network. */
export interface NetworkRule {
  /** Canonical IPv4 or IPv6 CIDR (host bits cleared), such as `10.0.0.0/8` or `2001:db8::/32`. */
  readonly cidr: string;
  readonly cacheId: string;
}

/** The caches that fetch every image pushed under a namespace (warm on push). */
export interface WarmRule {
  /** A repository prefix of whole path components, such as `team` or `team/sub`. */
  readonly namespace: string;
  /** The caches to warm: at least one, sorted, no duplicates. */
  readonly cacheIds: readonly string[];
}

/** One health check of a cache, as the server saw it. */
export interface HealthReport {
  readonly ok: boolean;
  /** Time the check took, in milliseconds (finite, not negative). */
  readonly latencyMs: number;
  /** Why the check failed; ignored when `ok`. */
  readonly error?: string | undefined;
  /** When the check was made. */
  readonly at: Date;
}

/** What the server knows about a cache's health. */
export interface CacheHealth {
  readonly cacheId: string;
  /** `unknown` until the first check is recorded. */
  readonly status: 'healthy' | 'unhealthy' | 'unknown';
  readonly checkedAt: Date | null;
  readonly latencyMs: number | null;
  readonly error: string | null;
  /** The last check that succeeded. */
  readonly lastOkAt: Date | null;
  /** Failed checks since the last success. */
  readonly consecutiveFailures: number;
}

/**
 * Everything the server stores. Every method is asynchronous so that an implementation over a network
 * database fits the same interface. Writes that reference a cache fail atomically when the cache does not
 * exist (no check-then-write race with a concurrent delete). Absent things are answered as `undefined` or
 * `false`; refused input throws {@link StateError}.
 */
export interface StateRepository {
  // Content caches

  /** Every cache, sorted by name (case-insensitively). */
  list(): Promise<ContentCache[]>;
  /** The cache with that id; undefined when there is none (including when `id` is not a UUID). */
  get(id: string): Promise<ContentCache | undefined>;
  /**
   * Adds a cache with a new UUID v4.
   * @throws StateError INVALID for a malformed name or host, CONFLICT when the name is taken.
   */
  create(cache: NewContentCache): Promise<ContentCache>;
  /**
   * Changes a cache's name and/or host; undefined when there is no such cache.
   * @throws StateError INVALID for a malformed name or host, CONFLICT when another cache has the name.
   */
  update(id: string, patch: ContentCachePatch): Promise<ContentCache | undefined>;
  /**
   * Deletes a cache and, in the same transaction, every reference to it: user settings, the default,
   * namespace and network rules, and its health. Users who had chosen it fall back to the next step of
   * the selection. False when there was no such cache.
   */
  delete(id: string): Promise<boolean>;

  // User settings

  /** A user's settings; `{contentCacheUUID: null}` for a user who never set them. */
  getSettings(user: string): Promise<UserSettings>;
  /**
   * Replaces a user's settings (`null` clears the choice) and answers them normalized.
   * @throws StateError INVALID when the cache does not exist or the user name is empty or too long.
   */
  setSettings(user: string, settings: UserSettings): Promise<UserSettings>;

  // Default cache

  /** The cache used when nothing more specific applies; undefined when none is set. */
  getDefaultCache(): Promise<ContentCache | undefined>;
  /**
   * Sets (or with `null` clears) the default cache.
   * @throws StateError INVALID when the cache does not exist.
   */
  setDefaultCache(id: string | null): Promise<void>;

  // Namespace rules (step 2 of the selection, see select.ts)

  /** Every namespace rule, sorted by namespace. */
  listNamespaceRules(): Promise<NamespaceRule[]>;
  /**
   * Creates or replaces the rule of `rule.namespace` and answers it normalized.
   * @throws StateError INVALID for a malformed namespace or a cache that does not exist.
   */
  setNamespaceRule(rule: NamespaceRule): Promise<NamespaceRule>;
  /** Deletes the rule of a namespace; false when there was none. */
  deleteNamespaceRule(namespace: string): Promise<boolean>;

  // Network rules (step 3 of the selection)

  /** Every network rule, sorted by CIDR text. */
  listNetworkRules(): Promise<NetworkRule[]>;
  /**
   * Creates or replaces the rule of `rule.cidr` (normalized first, so `10.1.2.3/8` replaces `10.0.0.0/8`)
   * and answers it normalized.
   * @throws StateError INVALID for a malformed CIDR or a cache that does not exist.
   */
  setNetworkRule(rule: NetworkRule): Promise<NetworkRule>;
  /** Deletes the rule of a network (normalized first); false when there was none or the CIDR is malformed. */
  deleteNetworkRule(cidr: string): Promise<boolean>;

  // Warm rules (which caches fetch a pushed image at once)

  /** Every warm rule, sorted by namespace. */
  listWarmRules(): Promise<WarmRule[]>;
  /**
   * Creates or replaces the rule of `rule.namespace` (its caches replaced as a whole) and answers it
   * normalized. Deleting a cache removes it from every rule; a rule left without caches is gone.
   * @throws StateError INVALID for a malformed namespace, no caches, or a cache that does not exist.
   */
  setWarmRule(rule: WarmRule): Promise<WarmRule>;
  /** Deletes the rule of a namespace (normalized first); false when there was none. */
  deleteWarmRule(namespace: string): Promise<boolean>;

  // Health

  /**
   * Records one health check of a cache. A report older than the one already recorded is ignored (checks
   * finishing out of order must not overwrite a newer state). False when the cache does not exist.
   * @throws StateError INVALID for a negative or non-finite latency or an invalid date.
   */
  recordHealth(id: string, report: HealthReport): Promise<boolean>;
  /** The health of a cache (status `unknown` before any check); undefined when the cache does not exist. */
  health(id: string): Promise<CacheHealth | undefined>;

  // Grant signing keys (with `grants.keystore: database`, for servers sharing the database)

  /** Every stored grant key. */
  listGrantKeys(): Promise<GrantKeyRecord[]>;
  /** Stores a grant key; nothing when its kid is stored already. */
  addGrantKey(key: GrantKeyRecord): Promise<void>;
  /** Deletes a grant key; false when there was none. */
  deleteGrantKey(kid: string): Promise<boolean>;

  /** Releases the database; the repository is unusable afterwards. */
  close(): Promise<void>;
}

/** A grant signing key as the state database keeps it. */
export interface GrantKeyRecord {
  /** The RFC 7638 thumbprint of its public key. */
  readonly kid: string;
  /** The private key, PKCS#8 PEM. */
  readonly pem: string;
  /** When it was created, epoch ms. */
  readonly createdAt: number;
}

/** Why a state operation was refused. */
export type StateErrorKind = 'INVALID' | 'CONFLICT';

/**
 * A refused state operation: `INVALID` input (malformed, or referencing a cache that does not exist), or a
 * `CONFLICT` with what is stored (a duplicate cache name). The API maps each kind to its error codes.
 */
export class StateError extends Error {
  readonly kind: StateErrorKind;

  constructor(kind: StateErrorKind, message: string) {
    super(message);
    this.name = 'StateError';
    this.kind = kind;
  }
}

/** Longest cache name accepted. */
export const CACHE_NAME_MAX_LENGTH = 128;
/** Longest user name accepted in settings (the origin's user names are far shorter in practice). */
export const USER_NAME_MAX_LENGTH = 255;
/** Longest stored health error; a longer one is cut, since it is diagnostic text and not evidence. */
export const HEALTH_ERROR_MAX_LENGTH = 1024;

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
// C0 and C1 control characters, and the Unicode line and paragraph separators: nothing a name displays.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** A new content cache id (UUID v4). */
export function newCacheId(): string {
  return randomUUID();
}

/**
 * The canonical (lower-case) form of a cache id, or undefined when `id` is not a UUID v4. Implementations
 * look ids up through this, so an upper-case id finds its cache and garbage never reaches the database.
 */
export function normalizeCacheId(id: string): string | undefined {
  const lower = id.toLowerCase();
  return UUID_V4.test(lower) ? lower : undefined;
}

/**
 * The id to store for a reference to a cache (a setting, the default, a rule).
 * @throws StateError INVALID when it cannot be a cache id.
 */
export function referencedCacheId(id: string): string {
  const normalized = normalizeCacheId(id);
  if (normalized === undefined) throw new StateError('INVALID', `no content cache with id ${JSON.stringify(id.slice(0, 100))}`);
  return normalized;
}

/** The health of a cache that was never checked. */
export function unknownHealth(cacheId: string): CacheHealth {
  return { cacheId, status: 'unknown', checkedAt: null, latencyMs: null, error: null, lastOkAt: null, consecutiveFailures: 0 };
}

/**
 * `check(value)`, or undefined when `value` does not pass it: a key that no row can have (a delete of it
 * removes nothing).
 */
export function keyOrNone(check: (value: string) => string, value: string): string | undefined {
  try {
    return check(value);
  } catch {
    return undefined;
  }
}

/**
 * Validates a cache name: 1 to {@link CACHE_NAME_MAX_LENGTH} characters, no control characters, no
 * leading or trailing white space (two names differing only by a trailing space would look identical).
 * @throws StateError INVALID with the reason.
 */
export function validateCacheName(name: string): string {
  if (name.length === 0) throw new StateError('INVALID', 'name must not be empty');
  if (name.length > CACHE_NAME_MAX_LENGTH) throw new StateError('INVALID', `name must be at most ${CACHE_NAME_MAX_LENGTH} characters`);
  if (CONTROL.test(name)) throw new StateError('INVALID', 'name must not contain control characters');
  if (name.trim() !== name) throw new StateError('INVALID', 'name must not start or end with white space');
  return name.normalize('NFC');
}

/**
 * The key that makes names unique regardless of case. Computed here rather than by a database collation so
 * that SQLite (whose NOCASE folds ASCII only) and PostgreSQL agree on which names collide.
 */
export function cacheNameKey(name: string): string {
  return name.normalize('NFC').toLowerCase();
}

/**
 * Validates and normalizes a cache host: an absolute `http:` or `https:` URL with a host name and no user
 * info, path, query or fragment. Answers `scheme://host[:port]` with the host name lower-cased and a
 * default port dropped. User info is refused because the host ends up in redirects sent to every client.
 * @throws StateError INVALID with the reason.
 */
export function normalizeCacheHost(host: string): string {
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    throw new StateError('INVALID', `host must be an absolute http or https URL, got ${JSON.stringify(host.slice(0, 200))}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new StateError('INVALID', `host must use http or https, not ${url.protocol.slice(0, -1)}`);
  if (url.hostname === '') throw new StateError('INVALID', 'host must name a host');
  if (url.username !== '' || url.password !== '') throw new StateError('INVALID', 'host must not contain user info');
  // An empty "?" or "#" leaves search and hash empty: the raw text is checked too.
  if (url.search !== '' || host.includes('?')) throw new StateError('INVALID', 'host must not have a query');
  if (url.hash !== '' || host.includes('#')) throw new StateError('INVALID', 'host must not have a fragment');
  // The parser turns "http://h:5000" into pathname "/", and removes dot segments ("http://h/." too): only a
  // bare "/" is accepted, in the text as in the parsed URL.
  if (url.pathname !== '/' || /^[a-z][a-z0-9+.-]*:\/\/[^/]*\/./i.test(host.trim())) throw new StateError('INVALID', 'host must not have a path');
  return `${url.protocol}//${url.host}`;
}

/**
 * Validates a namespace: a repository name prefix of whole path components (`team`, `team/sub`), with the
 * repository name grammar.
 * @throws StateError INVALID with the reason.
 */
export function validateNamespace(namespace: string): string {
  try {
    return validateName(namespace);
  } catch (err) {
    if (err instanceof RegistryError) throw new StateError('INVALID', err.message.replace(/^repository name/, 'namespace'));
    throw err;
  }
}

/** Most caches one warm rule may name. */
export const WARM_RULE_MAX_CACHES = 100;

/**
 * Validates a warm rule's namespace: a namespace as {@link validateNamespace} takes it, written with or
 * without one trailing slash (`team/` is `team`).
 * @throws StateError INVALID with the reason.
 */
export function validateWarmNamespace(namespace: string): string {
  return validateNamespace(namespace.endsWith('/') ? namespace.slice(0, -1) : namespace);
}

/**
 * Validates a warm rule and answers it normalized: the namespace, and the cache ids lower-cased, sorted,
 * without duplicates (at least one, at most {@link WARM_RULE_MAX_CACHES}).
 * @throws StateError INVALID with the reason.
 */
export function validateWarmRule(rule: WarmRule): WarmRule {
  const namespace = validateWarmNamespace(rule.namespace);
  if (!Array.isArray(rule.cacheIds) || rule.cacheIds.length === 0) throw new StateError('INVALID', 'a warm rule needs at least one content cache');
  if (rule.cacheIds.length > WARM_RULE_MAX_CACHES) throw new StateError('INVALID', `a warm rule names at most ${WARM_RULE_MAX_CACHES} content caches`);
  const cacheIds = [...new Set(rule.cacheIds.map((id) => referencedCacheId(String(id))))].sort();
  return { namespace, cacheIds };
}

/** Groups `(namespace, cache)` rows, sorted by namespace then cache, into warm rules. */
export function warmRulesOf(rows: readonly { namespace: string; content_cache_id: string }[]): WarmRule[] {
  const rules = new Map<string, string[]>();
  for (const row of rows) {
    const ids = rules.get(row.namespace) ?? [];
    ids.push(row.content_cache_id);
    rules.set(row.namespace, ids);
  }
  return [...rules].map(([namespace, cacheIds]) => ({ namespace, cacheIds }));
}

/**
 * Validates a CIDR and answers its canonical form (host bits cleared, IPv6 compressed, IPv4-mapped IPv6
 * written as IPv4). A bare address is a single-host network.
 * @throws StateError INVALID with the reason.
 */
export function normalizeCidr(cidr: string): string {
  const parsed = parseCidr(cidr);
  if (parsed === undefined) throw new StateError('INVALID', `cidr must be an IPv4 or IPv6 network such as 10.0.0.0/8 or 2001:db8::/32, got ${JSON.stringify(cidr.slice(0, 100))}`);
  return formatCidr(parsed);
}

/**
 * Validates a user name used as a settings key.
 * @throws StateError INVALID with the reason.
 */
export function validateUserName(user: string): string {
  if (user.length === 0) throw new StateError('INVALID', 'user name must not be empty');
  if (user.length > USER_NAME_MAX_LENGTH) throw new StateError('INVALID', `user name must be at most ${USER_NAME_MAX_LENGTH} characters`);
  return user;
}

/**
 * Validates a health report.
 * @throws StateError INVALID with the reason.
 */
export function validateHealthReport(report: HealthReport): HealthReport {
  if (!Number.isFinite(report.latencyMs) || report.latencyMs < 0) throw new StateError('INVALID', 'latencyMs must be a finite number, not negative');
  if (Number.isNaN(report.at.getTime())) throw new StateError('INVALID', 'at must be a valid date');
  const error = report.ok ? undefined : (report.error ?? 'check failed').slice(0, HEALTH_ERROR_MAX_LENGTH);
  return { ok: report.ok, latencyMs: report.latencyMs, error, at: report.at };
}
