/**
 * The server's own config file (`server.yml`), validated once at start-up. Relative paths are relative to
 * the file. Every error names the file, the key and what was expected.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError, parseGoDuration, readConfigFile, type ConfigIssue } from '@cascade/registry-core';

const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((v, ctx) => {
      try {
        return parseGoDuration(String(v));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    });

const httpUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password;
  } catch {
    return false;
  }
}, 'an http(s) URL without credentials');

/** The schema of `server.yml`. */
export const serverConfigSchema = z.strictObject({
  version: z.union([z.literal('0.1'), z.literal(0.1)]).optional(),
  log: z.strictObject({ level: z.enum(['error', 'warn', 'info', 'debug']).default('info'), fields: z.record(z.string(), z.unknown()).optional() }).prefault({}),
  http: z
    .strictObject({
      addr: z.string().default(':8443'),
      tls: z.strictObject({ certificate: z.string(), key: z.string() }).optional(),
      /** The server's URL as clients reach it (behind a load balancer); default: from each request. */
      publicurl: httpUrl.optional(),
    })
    .prefault({}),
  origin: z.strictObject({
    url: httpUrl,
    /** The service account that fills caches: it needs pull on every repository. */
    username: z.string().min(1).optional(),
    /** Its password; `CASCADE_ORIGIN_PASSWORD` in the environment takes precedence. */
    password: z.string().optional(),
    cas: z.array(z.string()).default([]),
  }),
  grants: z
    .strictObject({
      keysdir: z.string().default('keys'),
      ttl: duration('60s'),
      issuer: z.string().min(1).default('cascade'),
      /** Where the signing keys are: files in `keysdir`, or the state database (servers sharing PostgreSQL). */
      keystore: z.enum(['folder', 'database']).default('folder'),
      /** A new signing key once the newest is this old; 0: never. */
      rotate: duration('720h').refine((ms) => ms === 0 || ms >= 3_600_000, { message: 'expected 0 (never) or at least 1h' }),
    })
    .prefault({}),
  database: z
    .strictObject({
      /** The SQLite file (default `cascade.db` beside the config), or `:memory:`. */
      sqlite: z.string().min(1).optional(),
      /** A PostgreSQL connection URL, for servers that share their state. */
      postgres: z.string().min(1).optional(),
    })
    .refine((d) => d.sqlite === undefined || d.postgres === undefined, { message: 'either sqlite or postgres, not both' })
    .prefault({}),
  admins: z.array(z.string().min(1)).default([]),
  authorization: z
    .strictObject({
      cachettl: duration('5s'),
      /** Clients get tokens through the server (`/auth/token`), not from the origin's token service. */
      tokenproxy: z.boolean().default(true),
    })
    .prefault({}),
  healthcheck: z.strictObject({ interval: duration('15s') }).prefault({}),
  /** The origin's notifications (warm on push): who may post them to `/api/v0/events`. */
  events: z
    .strictObject({
      /** Secrets the origin sends as `Authorization: Bearer <secret>`; `CASCADE_EVENTS_TOKEN` adds one. */
      tokens: z.array(z.string().min(16, 'a secret of at least 16 characters')).default([]),
      /** A file of secrets, one per line (read at start-up), instead of or besides `tokens`. */
      tokenfile: z.string().min(1).optional(),
    })
    .prefault({}),
  /** How the server warms caches (on push, by the warm rules, or by hand). */
  warm: z
    .strictObject({
      /** Blob warm requests in flight per cache. */
      concurrency: z.number().int().min(1).max(64).default(2),
      /** Attempts per job before it is reported failed (a cache down, a fill failing). */
      attempts: z.number().int().min(1).max(100).default(8),
      /** The wait before the first retry; it doubles each time, up to `maxbackoff`. */
      backoff: duration('5s'),
      maxbackoff: duration('5m'),
      /** How long one blob's warm request may take (the cache answers once the blob is stored). */
      timeout: duration('30m'),
      /** Finished jobs kept in memory for the API and the web page. */
      history: z.number().int().min(1).max(100_000).default(1000),
    })
    .prefault({}),
});

/** Where the server keeps its state: exactly one of a SQLite file and a PostgreSQL URL. */
export type DatabaseConfig = { readonly sqlite: string; readonly postgres?: undefined } | { readonly postgres: string; readonly sqlite?: undefined };

/** A validated server config, with paths made absolute. */
export type ServerConfig = Omit<z.output<typeof serverConfigSchema>, 'database'> & { readonly database: DatabaseConfig; readonly file: string };

/**
 * Reads and validates `file`. `CASCADE_ORIGIN_PASSWORD` overrides `origin.password`, and
 * `CASCADE_DATABASE_URL` overrides the `database` section with that PostgreSQL URL, and `CASCADE_EVENTS_TOKEN`
 * adds an events secret (so secrets need not be in the file, and one file serves a single server and a shared
 * database).
 * @throws ConfigError with every problem, one per line.
 */
export function loadServerConfig(file: string, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  return parseServerConfig(readConfigFile(file), file, env);
}

/** Validates server config text; `file` names it in messages and anchors relative paths. */
export function parseServerConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  let doc: unknown;
  try {
    doc = YAML.parse(text) ?? {};
  } catch (err) {
    const reason = (err as Error).message.split('\n')[0] ?? 'syntax error';
    throw new ConfigError(file, [{ key: '', expected: 'valid YAML', got: reason, message: `${file}: expected valid YAML, got ${reason}` }]);
  }
  const parsed = serverConfigSchema.safeParse(doc);
  if (!parsed.success) {
    const issues: ConfigIssue[] = parsed.error.issues.map((issue) => {
      const key = issue.path.map(String).join('.');
      const expected = issue.code === 'unrecognized_keys' ? `no key ${issue.keys.map((k) => JSON.stringify(k)).join(', ')} (not a server.yml key)` : issue.message;
      return { key, expected, got: '', message: `${file}: ${key || '(top level)'}: ${expected}` };
    });
    throw new ConfigError(file, issues);
  }
  const base = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const config = parsed.data;
  const password = env.CASCADE_ORIGIN_PASSWORD ?? config.origin.password;
  const postgres = env.CASCADE_DATABASE_URL || config.database.postgres;
  if (postgres !== undefined) {
    const problem = postgresUrlProblem(postgres);
    const key = env.CASCADE_DATABASE_URL ? 'CASCADE_DATABASE_URL' : 'database.postgres';
    if (problem) throw new ConfigError(file, [{ key, expected: 'a postgres:// URL', got: problem, message: `${file}: ${key}: expected a postgres://user@host/database URL, got ${problem}` }]);
  }
  const sqlite = config.database.sqlite ?? 'cascade.db';
  const database: DatabaseConfig = postgres !== undefined ? { postgres } : { sqlite: sqlite === ':memory:' ? ':memory:' : abs(sqlite) };
  return {
    ...config,
    file,
    origin: { ...config.origin, ...(password !== undefined ? { password } : {}), cas: config.origin.cas.map(abs) },
    grants: { ...config.grants, keysdir: abs(config.grants.keysdir) },
    database,
    events: {
      tokens: [...config.events.tokens, ...(env.CASCADE_EVENTS_TOKEN ? [env.CASCADE_EVENTS_TOKEN] : [])],
      ...(config.events.tokenfile !== undefined ? { tokenfile: abs(config.events.tokenfile) } : {}),
    },
    ...(config.http.tls ? { http: { ...config.http, tls: { certificate: abs(config.http.tls.certificate), key: abs(config.http.tls.key) } } } : {}),
  };
}

/** Why `url` is not a PostgreSQL connection URL (without echoing a password); undefined when it is one. */
function postgresUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'a string that is not a URL';
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') return `a ${u.protocol} URL`;
  if (!u.hostname && !u.searchParams.get('host')) return 'a URL without a host';
  return undefined;
}
