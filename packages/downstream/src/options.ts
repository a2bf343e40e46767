/**
 * The options of the `downstream` registry middleware (a cache node), validated once at start-up by the
 * registry-core config loader. DTR's files must load unchanged, so both of DTR's forms are accepted, plus
 * the flat list of hosts that other cache configurations use:
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
 * Validation is written by hand rather than with zod: the forms overlap, and every message must name the
 * exact key a user has to edit (`upstreams[0].cas[1]`), which is simpler to say directly than to recover
 * from a schema's issue paths.
 */
import { isAbsolute } from 'node:path';
import { describeValue, parseDtrDuration, parseGoDuration, suggestKey, type MiddlewareOptionsValidator, type RegistryConfig } from '@cascade/registry-core';
import { validateCaFiles } from './ca-trust.js';

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
} as const satisfies { filltimeout: string; sweepinterval: string; auth: DownstreamAuthMode };

/** Every key the options may hold, in the order the documentation lists them. */
export const DOWNSTREAM_OPTION_KEYS = ['blobttl', 'upstreams', 'originhost', 'upstreamhosts', 'cas', 'maxsize', 'filltimeout', 'sweepinterval', 'auth', 'name', 'issuer', 'downstreams'] as const;

/** The keys of the one entry of the nested `upstreams` form. */
const UPSTREAM_ENTRY_KEYS = ['originhost', 'upstreamhosts', 'cas'] as const;

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
}

/** How {@link parseDownstreamOptions} checks the files the options name. */
export interface ParseDownstreamSettings {
  /** Read and check the `cas` files (default true); false only parses the options. */
  readonly checkCaFiles?: boolean;
  /** The time CA validity is checked against (default: now). */
  readonly now?: Date;
}

/**
 * Parses and validates the options of one `downstream` middleware entry. `key` is the dotted key of the
 * options (`middleware.registry[0].options`), used in every message; `config` is the rest of the
 * configuration, read for `storage.delete.enabled`.
 *
 * Every problem is reported, each as one message `<full key>: expected <what>, got <what>` (CA file
 * problems read `<key>: <file>: <reason>`); values of URLs with credentials are never echoed.
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
  const errors: string[] = [];
  const fail = (at: string, expected: string, got: string): undefined => {
    errors.push(`${at}: expected ${expected}, got ${got}`);
    return undefined;
  };
  const at = (name: string): string => `${key}.${name}`;

  for (const k of Object.keys(options)) {
    if (!isOneOf(k, DOWNSTREAM_OPTION_KEYS)) fail(at(k), `a key of ${key} (${DOWNSTREAM_OPTION_KEYS.join(', ')})`, unknownKeyGot(k, DOWNSTREAM_OPTION_KEYS));
  }

  const hosts = parseHosts(options, key, fail);

  const blobttl = valueOf(options, 'blobttl');
  const blobttlMs = blobttl === undefined ? undefined : parseBlobTtl(blobttl, at('blobttl'), fail);
  const maxsize = valueOf(options, 'maxsize');
  const maxsizeBytes = maxsize === undefined ? undefined : parseSize(maxsize, at('maxsize'), fail);
  const filltimeoutMs = parseGoDurationOption(valueOf(options, 'filltimeout') ?? DOWNSTREAM_DEFAULTS.filltimeout, at('filltimeout'), true, fail);
  const sweepintervalMs = parseGoDurationOption(valueOf(options, 'sweepinterval') ?? DOWNSTREAM_DEFAULTS.sweepinterval, at('sweepinterval'), false, fail);
  const auth = parseAuth(valueOf(options, 'auth') ?? DOWNSTREAM_DEFAULTS.auth, at('auth'), fail);
  const name = valueOf(options, 'name');
  if (name !== undefined && (typeof name !== 'string' || name.length === 0)) fail(at('name'), 'the cache name registered on the server, such as "region-eu"', describeValue(name));
  if (auth === 'grant' && name === undefined) fail(at('name'), 'the cache name registered on the server (auth: grant verifies that grants were issued for it)', 'nothing');
  const issuer = valueOf(options, 'issuer') ?? 'cascade';
  if (typeof issuer !== 'string' || issuer.length === 0) fail(at('issuer'), "the server's grants.issuer, such as \"cascade\"", describeValue(issuer));
  const downstreamsValue = valueOf(options, 'downstreams') ?? [];
  const downstreams = Array.isArray(downstreamsValue) && downstreamsValue.every((d) => typeof d === 'string' && d.length > 0) ? (downstreamsValue as string[]) : undefined;
  if (!downstreams) fail(at('downstreams'), 'a list of cache names', describeValue(downstreamsValue));

  // Both expire content by deleting blobs, which the storage refuses unless deletes are enabled.
  const deleting = [blobttl === undefined ? undefined : at('blobttl'), maxsize === undefined ? undefined : at('maxsize')].filter((k) => k !== undefined);
  if (deleting.length > 0 && !config.storage.delete.enabled) {
    fail(
      'storage.delete.enabled',
      `true because ${deleting.join(' and ')} ${deleting.length === 1 ? 'is' : 'are'} set (the cache deletes blobs when they expire or are evicted, and the storage refuses deletes unless they are enabled)`,
      'false',
    );
  }

  if (settings.checkCaFiles !== false) {
    for (const list of hosts.caLists) errors.push(...validateCaFiles(list.files, list.key, settings.now));
  }

  if (errors.length > 0 || filltimeoutMs === undefined || sweepintervalMs === undefined || auth === undefined) return { errors };
  return {
    errors,
    options: {
      ...(blobttlMs === undefined ? {} : { blobttlMs }),
      ...(hosts.originhost === undefined ? {} : { originhost: hosts.originhost }),
      upstreamhosts: hosts.upstreamhosts,
      cas: hosts.caLists.flatMap((l) => l.files),
      ...(maxsizeBytes === undefined ? {} : { maxsizeBytes }),
      filltimeoutMs,
      sweepintervalMs,
      auth,
      ...(typeof name === 'string' ? { name } : {}),
      issuer: typeof issuer === 'string' ? issuer : 'cascade',
      downstreams: downstreams ?? [],
    },
  };
}

/**
 * The validator to register with the config loader:
 * `loadConfig(file, env, { middleware: { downstream: validateDownstreamOptions } })`. It returns the
 * messages of {@link parseDownstreamOptions}, CA file checks included, so a cache with a missing or bad CA
 * file does not start.
 */
export const validateDownstreamOptions: MiddlewareOptionsValidator = (options, key, config) => parseDownstreamOptions(options, key, config).errors;

type Fail = (at: string, expected: string, got: string) => undefined;

/** The hosts and CA lists, from whichever form they were written in. */
interface Hosts {
  readonly originhost: string | undefined;
  readonly upstreamhosts: string[];
  /** Each list with its key, for messages; only lists whose every entry is an absolute path. */
  readonly caLists: Array<{ files: string[]; key: string }>;
}

function parseHosts(options: Record<string, unknown>, key: string, fail: Fail): Hosts {
  let originhost: { value: string | undefined; key: string } | undefined;
  let upstreamhosts: { value: string[]; key: string } | undefined;
  const caLists: Array<{ files: string[]; key: string }> = [];
  let reported = false;
  const failHost: Fail = (at, expected, got) => {
    reported = true;
    return fail(at, expected, got);
  };

  /** originhost and upstreamhosts may each be written in one place only, or which one wins would be a guess. */
  const setOrigin = (value: unknown, at: string): void => {
    if (originhost !== undefined) {
      failHost(at, `originhost in one place only (it is also set at ${originhost.key})`, 'a second one');
      return;
    }
    originhost = { value: parseHostUrl(value, at, failHost), key: at };
  };
  const setUpstreams = (value: string[], at: string): void => {
    if (upstreamhosts !== undefined) {
      failHost(at, `upstream hosts in one place only (they are also set at ${upstreamhosts.key})`, 'a second list');
      return;
    }
    upstreamhosts = { value, key: at };
  };
  const addCas = (value: unknown, at: string): void => {
    const files = parseCaList(value, at, fail);
    if (files !== undefined) caLists.push({ files, key: at });
  };

  const flatOrigin = valueOf(options, 'originhost');
  if (flatOrigin !== undefined) setOrigin(flatOrigin, `${key}.originhost`);
  const flatUpstreams = valueOf(options, 'upstreamhosts');
  if (flatUpstreams !== undefined) setUpstreams(parseHostList(flatUpstreams, `${key}.upstreamhosts`, failHost), `${key}.upstreamhosts`);
  const flatCas = valueOf(options, 'cas');
  if (flatCas !== undefined) addCas(flatCas, `${key}.cas`);

  const upstreamsKey = `${key}.upstreams`;
  const upstreams = valueOf(options, 'upstreams');
  const FORMS = 'a list holding either one upstream set ("- originhost: https://origin.example") or host URLs ("- https://cache.example")';
  let entryKey: string | undefined;
  if (upstreams !== undefined && !Array.isArray(upstreams)) {
    failHost(upstreamsKey, FORMS, isRecord(upstreams) ? 'a mapping (write the upstream set as a list item: "- originhost: ...")' : describeValue(upstreams));
  } else if (upstreams !== undefined && upstreams.length === 0) {
    failHost(upstreamsKey, FORMS, 'an empty list');
  } else if (upstreams !== undefined && isRecord(upstreams[0])) {
    // Form (a): DTR's nested upstream set.
    entryKey = `${upstreamsKey}[0]`;
    const entry = upstreams[0];
    for (const k of Object.keys(entry)) {
      if (isOneOf(k, UPSTREAM_ENTRY_KEYS)) continue;
      const got = isOneOf(k, DOWNSTREAM_OPTION_KEYS) ? `unknown key ${JSON.stringify(k)} (it belongs in ${key}, beside upstreams)` : unknownKeyGot(k, UPSTREAM_ENTRY_KEYS);
      failHost(`${entryKey}.${k}`, `a key of ${entryKey} (${UPSTREAM_ENTRY_KEYS.join(', ')})`, got);
    }
    const origin = valueOf(entry, 'originhost');
    if (origin !== undefined) setOrigin(origin, `${entryKey}.originhost`);
    const list = valueOf(entry, 'upstreamhosts');
    if (list !== undefined) setUpstreams(parseHostList(list, `${entryKey}.upstreamhosts`, failHost), `${entryKey}.upstreamhosts`);
    const cas = valueOf(entry, 'cas');
    if (cas !== undefined) addCas(cas, `${entryKey}.cas`);
    upstreams.slice(1).forEach((extra, i) => {
      failHost(
        `${upstreamsKey}[${i + 1}]`,
        `one upstream set per cache node (a cache fills from one origin; list several caches in ${upstreamsKey}[0].upstreamhosts, which are tried round-robin)`,
        isRecord(extra) ? 'another upstream set' : describeValue(extra),
      );
    });
  } else if (upstreams !== undefined) {
    // Form (c): every item is a host, used round-robin, and there is no separate origin.
    const hosts: string[] = [];
    upstreams.forEach((item, i) => {
      const itemKey = `${upstreamsKey}[${i}]`;
      if (isRecord(item)) {
        failHost(itemKey, `a host URL like ${upstreamsKey}[0] (${FORMS}, not both)`, 'a mapping');
        return;
      }
      const url = parseHostUrl(item, itemKey, failHost);
      if (url !== undefined) hosts.push(url);
    });
    reportDuplicates(upstreams, upstreamsKey, failHost);
    setUpstreams(hosts, upstreamsKey);
  }

  const origin = originhost?.value;
  const list = upstreamhosts?.value ?? [];
  if (!reported && origin === undefined && list.length === 0) {
    const where = entryKey ?? upstreamsKey;
    fail(
      where,
      `where to fetch missing blobs from: an originhost or upstreamhosts (${entryKey === undefined ? 'for example "upstreams: [{originhost: https://origin.example}]"' : 'for example "originhost: https://origin.example"'})`,
      entryKey === undefined ? 'nothing' : 'neither',
    );
  }
  return { originhost: origin, upstreamhosts: list, caLists };
}

const URL_EXPECTED = 'an absolute http:// or https:// URL without path, query or fragment, such as "https://origin.example"';

/** A host as its URL origin (`https://host[:port]`), the form requests are built from. */
function parseHostUrl(value: unknown, at: string, fail: Fail): string | undefined {
  if (typeof value !== 'string') return fail(at, URL_EXPECTED, describeValue(value));
  // Checked on the text first, and broadly (an `@` anywhere before a query): a URL that does not even
  // parse, such as one whose password holds a `/`, may still hold a password.
  if (/^[a-z][a-z0-9+.-]*:\/\/[^?#]*@/i.test(value)) {
    return fail(at, 'a URL without credentials (on a miss the cache forwards the client\'s own credentials; see the auth option)', 'a URL with a user name or password (not shown)');
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    const bare = /^[a-z0-9.-]+(:\d+)?(\/.*)?$/i.test(value) ? ` (add the scheme: "https://${value}")` : '';
    return fail(at, URL_EXPECTED, `${describeValue(value)}${bare}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    // `host:5000` parses with `host:` as its scheme.
    const bare = /^[a-z0-9.-]+:\d+$/i.test(value) ? ` (add the scheme: "https://${value}")` : '';
    return fail(at, URL_EXPECTED, `${describeValue(value)}${bare}`);
  }
  if (url.username !== '' || url.password !== '') {
    return fail(at, 'a URL without credentials (on a miss the cache forwards the client\'s own credentials; see the auth option)', 'a URL with a user name or password (not shown)');
  }
  if (url.pathname !== '/') return fail(at, `${URL_EXPECTED} (the cache adds /v2/... itself)`, describeValue(value));
  if (url.search !== '' || url.hash !== '' || /[?#]/.test(value)) return fail(at, URL_EXPECTED, describeValue(value));
  return url.origin;
}

function parseHostList(value: unknown, at: string, fail: Fail): string[] {
  if (!Array.isArray(value)) {
    fail(at, 'a list of http(s) URLs', describeValue(value));
    return [];
  }
  const hosts: string[] = [];
  value.forEach((item, i) => {
    const url = parseHostUrl(item, `${at}[${i}]`, fail);
    if (url !== undefined) hosts.push(url);
  });
  reportDuplicates(value, at, fail);
  return hosts;
}

/** A repeated host would silently take a bigger share of the round-robin. */
function reportDuplicates(items: readonly unknown[], at: string, fail: Fail): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    if (typeof item !== 'string') return;
    let origin: string;
    try {
      origin = new URL(item).origin;
    } catch {
      return;
    }
    const first = seen.get(origin);
    if (first === undefined) seen.set(origin, i);
    else fail(`${at}[${i}]`, `each host once (it is already ${at}[${first}])`, describeValue(item));
  });
}

/** Absolute paths only: the cache may be started from any directory, and DTR requires them too. */
function parseCaList(value: unknown, at: string, fail: Fail): string[] | undefined {
  if (!Array.isArray(value)) {
    fail(at, 'a list of absolute paths of PEM CA certificate files', describeValue(value));
    return undefined;
  }
  let ok = true;
  value.forEach((item, i) => {
    if (typeof item !== 'string' || item === '' || !isAbsolute(item)) {
      ok = false;
      fail(`${at}[${i}]`, 'an absolute path of a PEM CA certificate file, such as "/certs/origin-ca.pem"', describeValue(item));
    }
  });
  return ok ? value.filter((v): v is string => typeof v === 'string') : undefined;
}

/** Go's time.Duration limit: DTR, written in Go, could not hold a longer blobttl. */
const MAX_DURATION_NS = 9_223_372_036_854_775_807n;

const DTR_EXPECTED = 'a positive integer with an optional unit ns|us|ms|s|m|h (no unit means nanoseconds), such as "24h"';

function parseBlobTtl(value: unknown, at: string, fail: Fail): number | undefined {
  if (typeof value !== 'string' && typeof value !== 'number') return fail(at, DTR_EXPECTED, describeValue(value));
  let ns: bigint;
  try {
    ns = parseDtrDuration(value);
  } catch (e) {
    // registry-core's message says what a DTR duration is, including why a large number was refused.
    const expected = /^invalid duration .*?: expected (.+)$/s.exec(e instanceof Error ? e.message : '')?.[1] ?? DTR_EXPECTED;
    return fail(at, expected, `${describeValue(value)}${dtrHint(value)}`);
  }
  if (ns > MAX_DURATION_NS) return fail(at, 'a duration of at most 2562047h (about 292 years)', describeValue(value));
  if (ns < 1_000_000n) {
    const unitless = typeof value === 'number' || /^\d+$/.test(value);
    const meant = unitless ? `; no unit means nanoseconds: did you mean "${value}s"?` : '';
    return fail(at, 'a duration of at least 1ms', `${describeValue(value)}, which is ${ns} nanoseconds${meant}`);
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

function parseSize(value: unknown, at: string, fail: Fail): number | undefined {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value > 0) return value;
    return fail(at, SIZE_EXPECTED, describeValue(value));
  }
  if (typeof value !== 'string') return fail(at, SIZE_EXPECTED, describeValue(value));
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (m === null) return fail(at, SIZE_EXPECTED, describeValue(value));
  const [, amount = '', unit = ''] = m;
  const multiplier = unit === '' ? 1 : SIZE_UNITS[unit.toLowerCase()];
  if (multiplier === undefined) {
    const prefix = /^[kmgt]$/i.test(unit) ? `: did you mean "${unit.toUpperCase()}B" or "${unit.toUpperCase()}iB"?` : '';
    return fail(at, SIZE_EXPECTED, `${describeValue(value)} (unknown unit ${JSON.stringify(unit)}${prefix})`);
  }
  if (unit === '' && !/^\d+$/.test(amount)) return fail(at, SIZE_EXPECTED, `${describeValue(value)} (a number of bytes is a whole number)`);
  const bytes = Math.floor(Number(amount) * multiplier);
  if (bytes < 1 || !Number.isSafeInteger(bytes)) return fail(at, SIZE_EXPECTED, describeValue(value));
  return bytes;
}

const GO_DURATION_EXPECTED = 'a Go duration such as "10m", "90s" or "1h30m" (numbers with units ns, us, ms, s, m, h)';

/** A Go duration as distribution reads one: a string, or a YAML integer of nanoseconds. In milliseconds. */
function parseGoDurationOption(value: unknown, at: string, allowZero: boolean, fail: Fail): number | undefined {
  const expected = allowZero ? `${GO_DURATION_EXPECTED}, not negative` : `${GO_DURATION_EXPECTED}, greater than 0`;
  let ms: number | undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value)) ms = value / 1e6;
  else if (typeof value === 'string') {
    try {
      ms = parseGoDuration(value);
    } catch {
      ms = undefined;
    }
  }
  if (ms === undefined || ms < 0 || (ms === 0 && !allowZero)) return fail(at, expected, describeValue(value));
  return ms;
}

function parseAuth(value: unknown, at: string, fail: Fail): DownstreamAuthMode | undefined {
  if (typeof value === 'string' && isOneOf(value, DOWNSTREAM_AUTH_MODES)) return value;
  // The modes are few and dissimilar, so a looser match than for keys still points at the right one.
  const suggestion = typeof value === 'string' ? suggestKey(value, DOWNSTREAM_AUTH_MODES, Math.ceil(value.length / 3)) : undefined;
  return fail(
    at,
    `one of ${DOWNSTREAM_AUTH_MODES.map((m) => JSON.stringify(m)).join(', ')}`,
    `${describeValue(value)}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`,
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isOneOf<T extends string>(value: string, list: readonly T[]): value is T {
  return (list as readonly string[]).includes(value);
}

/** An own key's value; null (a key written without a value) counts as absent, as in the loader. */
function valueOf(record: Record<string, unknown>, k: string): unknown {
  const v = Object.hasOwn(record, k) ? record[k] : undefined;
  return v === null ? undefined : v;
}

function unknownKeyGot(k: string, known: readonly string[]): string {
  const suggestion = suggestKey(k, known);
  return `unknown key ${JSON.stringify(k)}${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
}
