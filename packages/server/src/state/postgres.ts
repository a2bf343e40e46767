/**
 * The {@link StateRepository} for servers that share their state: PostgreSQL through node-postgres (`pg`).
 *
 * Several `cascade server` processes may use one database (for several machines behind a load balancer):
 * every operation is one statement or one transaction, nothing is cached in the process, so what one
 * server writes the next request to any server reads. The schema is the SQLite one's, in PostgreSQL's
 * types; it is created and upgraded at start-up by numbered migrations recorded in `schema_migrations`,
 * under an advisory lock so that servers starting together apply each migration once.
 */
import pg from 'pg';
import {
  cacheNameKey,
  keyOrNone,
  newCacheId,
  normalizeCacheHost,
  normalizeCacheId,
  normalizeCidr,
  referencedCacheId,
  StateError,
  unknownHealth,
  validateCacheName,
  validateHealthReport,
  validateNamespace,
  validateUserName,
  validateWarmNamespace,
  validateWarmRule,
  warmRulesOf,
  type CacheHealth,
  type ContentCache,
  type ContentCachePatch,
  type GrantKeyRecord,
  type HealthReport,
  type NamespaceRule,
  type NetworkRule,
  type NewContentCache,
  type StateRepository,
  type UserSettings,
  type WarmRule,
} from './repository.js';
import type { Migration } from './sqlite.js';

/** Every migration of the PostgreSQL schema, in order (the same tables as SQLite's). */
export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'content caches, user settings, default, namespace and network rules, health',
    sql: `
      CREATE TABLE content_caches (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        name_key   TEXT NOT NULL UNIQUE,
        host       TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
      );
      CREATE TABLE user_settings (
        username         TEXT PRIMARY KEY,
        content_cache_id TEXT NOT NULL REFERENCES content_caches(id) ON DELETE CASCADE
      );
      CREATE INDEX user_settings_cache ON user_settings(content_cache_id);
      CREATE TABLE default_cache (
        singleton        INTEGER PRIMARY KEY CHECK (singleton = 1),
        content_cache_id TEXT NOT NULL REFERENCES content_caches(id) ON DELETE CASCADE
      );
      CREATE TABLE namespace_rules (
        namespace        TEXT PRIMARY KEY,
        content_cache_id TEXT NOT NULL REFERENCES content_caches(id) ON DELETE CASCADE
      );
      CREATE INDEX namespace_rules_cache ON namespace_rules(content_cache_id);
      CREATE TABLE network_rules (
        cidr             TEXT PRIMARY KEY,
        content_cache_id TEXT NOT NULL REFERENCES content_caches(id) ON DELETE CASCADE
      );
      CREATE INDEX network_rules_cache ON network_rules(content_cache_id);
      CREATE TABLE cache_health (
        content_cache_id     TEXT PRIMARY KEY REFERENCES content_caches(id) ON DELETE CASCADE,
        ok                   BOOLEAN NOT NULL,
        latency_ms           DOUBLE PRECISION NOT NULL,
        error                TEXT,
        checked_at           TIMESTAMPTZ NOT NULL,
        last_ok_at           TIMESTAMPTZ,
        consecutive_failures INTEGER NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'grant signing keys shared by the servers of a database',
    sql: `
      CREATE TABLE grant_keys (
        kid        TEXT PRIMARY KEY,
        pem        TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'warm rules: the caches that fetch an image pushed under a namespace',
    sql: `
      CREATE TABLE warm_rules (
        namespace        TEXT NOT NULL,
        content_cache_id TEXT NOT NULL REFERENCES content_caches(id) ON DELETE CASCADE,
        PRIMARY KEY (namespace, content_cache_id)
      );
      CREATE INDEX warm_rules_cache ON warm_rules(content_cache_id);
    `,
  },
];

/** The advisory lock key that serializes migrations between servers (any fixed number: "casc" in ASCII). */
const MIGRATION_LOCK = 0x63617363;

/** Options of {@link PostgresStateRepository}. */
export interface PostgresStateOptions {
  /**
   * The connection: a `postgres://user[:password]@host[:port]/database[?sslmode=...]` URL. Parts it leaves
   * out come from libpq's environment variables (`PGHOST`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, ...).
   */
  readonly url: string;
  /** Connections kept open at most (default 10). */
  readonly maxConnections?: number;
  /** How long a query may run before it fails (default 10 s). */
  readonly statementTimeoutMs?: number;
  /** How long opening a connection may take (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** The migrations to apply; tests pass a longer list to exercise upgrades. Default {@link POSTGRES_MIGRATIONS}. */
  readonly migrations?: readonly Migration[];
}

interface CacheRow {
  id: string;
  name: string;
  host: string;
}

interface HealthRow {
  ok: boolean;
  latency_ms: number;
  error: string | null;
  checked_at: Date;
  last_ok_at: Date | null;
  consecutive_failures: number;
}

/** PostgreSQL's SQLSTATE of an error, when it came from the server. */
function sqlState(err: unknown): string | undefined {
  return err instanceof pg.DatabaseError ? err.code : undefined;
}

const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

function toCache(row: CacheRow): ContentCache {
  return { id: row.id, name: row.name, host: row.host };
}

/** `url` without its password, for messages and logs. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(a connection string that is not a URL)';
  }
}

/**
 * Applies the migrations the database has not seen yet, in one transaction holding an advisory lock, so
 * that two servers starting together cannot both apply one. Running it again is a no-op. Answers the
 * versions it applied.
 * @throws Error when the database was migrated by a newer Cascade (a version this list does not know).
 */
export async function migratePostgres(client: pg.ClientBase, migrations: readonly Migration[] = POSTGRES_MIGRATIONS): Promise<number[]> {
  for (const [i, m] of migrations.entries()) {
    if (m.version !== i + 1) throw new Error(`migration ${m.name} has version ${m.version}, expected ${i + 1}`);
  }
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER PRIMARY KEY,
      name       TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`);
    const rows = (await client.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).rows;
    const applied = new Set(rows.map((r) => r.version));
    const newest = rows.at(-1)?.version ?? 0;
    if (newest > migrations.length) {
      throw new Error(`the state database has schema version ${newest}, newer than this Cascade knows (${migrations.length}): upgrade Cascade`);
    }
    const done: number[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      done.push(m.version);
    }
    await client.query('COMMIT');
    return done;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * The state in a PostgreSQL database. Open it with {@link PostgresStateRepository.open}, which connects and
 * applies the pending migrations; the database itself must exist.
 *
 * @example
 * const state = await PostgresStateRepository.open({ url: 'postgres://cascade@db.internal/cascade' });
 * const cache = await state.create({ name: 'region-us', host: 'https://cache-us.example.com' });
 * await state.setSettings('alice', { contentCacheUUID: cache.id });
 */
export class PostgresStateRepository implements StateRepository {
  private constructor(
    private readonly pool: pg.Pool,
    /** The connection URL without its password. */
    readonly where: string,
  ) {}

  /** Connects, checks the connection and applies the pending migrations. */
  static async open(options: PostgresStateOptions): Promise<PostgresStateRepository> {
    const where = redactDatabaseUrl(options.url);
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
      statement_timeout: options.statementTimeoutMs ?? 10_000,
      application_name: 'cascade-server',
    });
    // An idle connection the server closes (a restart, a failover) is dropped from the pool; the next
    // query opens a new one. Without a listener the error would end the process.
    pool.on('error', () => undefined);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw new Error(`cannot connect to the state database ${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    try {
      await migratePostgres(client, options.migrations ?? POSTGRES_MIGRATIONS);
    } catch (err) {
      client.release();
      await pool.end().catch(() => undefined);
      throw err;
    }
    client.release();
    return new PostgresStateRepository(pool, where);
  }

  /** The highest migration applied to the database. */
  async schemaVersion(): Promise<number> {
    const row = (await this.pool.query<{ version: number | null }>('SELECT MAX(version) AS version FROM schema_migrations')).rows[0];
    return row?.version ?? 0;
  }

  private async rows<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    return (await this.pool.query<R>(sql, params)).rows;
  }

  private async changes(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.pool.query(sql, params)).rowCount ?? 0;
  }

  /** Translates the constraint failures that mean "bad input" into {@link StateError}s. */
  private async write<T>(fn: () => Promise<T>, what: { conflict?: string; missingCache?: string }): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = sqlState(err);
      if (code === UNIQUE_VIOLATION && what.conflict !== undefined) throw new StateError('CONFLICT', what.conflict);
      if (code === FOREIGN_KEY_VIOLATION && what.missingCache !== undefined) {
        throw new StateError('INVALID', `no content cache with id ${what.missingCache}`);
      }
      throw err;
    }
  }

  /** {@inheritDoc StateRepository.list} */
  async list(): Promise<ContentCache[]> {
    // COLLATE "C": the byte order SQLite uses, whatever the database's locale.
    return (await this.rows<CacheRow>('SELECT id, name, host FROM content_caches ORDER BY name_key COLLATE "C", id COLLATE "C"')).map(toCache);
  }

  /** {@inheritDoc StateRepository.get} */
  async get(id: string): Promise<ContentCache | undefined> {
    const key = normalizeCacheId(id);
    if (key === undefined) return undefined;
    const row = (await this.rows<CacheRow>('SELECT id, name, host FROM content_caches WHERE id = $1', [key]))[0];
    return row === undefined ? undefined : toCache(row);
  }

  /** {@inheritDoc StateRepository.create} */
  async create(cache: NewContentCache): Promise<ContentCache> {
    const name = validateCacheName(cache.name);
    const row = { id: newCacheId(), name, key: cacheNameKey(name), host: normalizeCacheHost(cache.host) };
    await this.write(() => this.changes('INSERT INTO content_caches (id, name, name_key, host) VALUES ($1, $2, $3, $4)', [row.id, row.name, row.key, row.host]), {
      conflict: `a content cache named ${JSON.stringify(name)} already exists`,
    });
    return { id: row.id, name: row.name, host: row.host };
  }

  /** {@inheritDoc StateRepository.update} */
  async update(id: string, patch: ContentCachePatch): Promise<ContentCache | undefined> {
    const name = patch.name === undefined ? undefined : validateCacheName(patch.name);
    const host = patch.host === undefined ? undefined : normalizeCacheHost(patch.host);
    const key = normalizeCacheId(id);
    if (key === undefined) return undefined;
    // One statement: a concurrent change of the other field is not undone.
    const row = await this.write(
      async () =>
        (
          await this.rows<CacheRow>(
            `UPDATE content_caches SET name = COALESCE($2, name), name_key = COALESCE($3, name_key), host = COALESCE($4, host)
             WHERE id = $1 RETURNING id, name, host`,
            [key, name ?? null, name === undefined ? null : cacheNameKey(name), host ?? null],
          )
        )[0],
      { conflict: `a content cache named ${JSON.stringify(name)} already exists` },
    );
    return row === undefined ? undefined : toCache(row);
  }

  /** {@inheritDoc StateRepository.delete} */
  async delete(id: string): Promise<boolean> {
    const key = normalizeCacheId(id);
    // The foreign keys' ON DELETE CASCADE clears settings, default, rules and health in this statement.
    return key !== undefined && (await this.changes('DELETE FROM content_caches WHERE id = $1', [key])) > 0;
  }

  /** {@inheritDoc StateRepository.getSettings} */
  async getSettings(user: string): Promise<UserSettings> {
    const row = (await this.rows<{ content_cache_id: string }>('SELECT content_cache_id FROM user_settings WHERE username = $1', [user]))[0];
    return { contentCacheUUID: row?.content_cache_id ?? null };
  }

  /** {@inheritDoc StateRepository.setSettings} */
  async setSettings(user: string, settings: UserSettings): Promise<UserSettings> {
    validateUserName(user);
    if (settings.contentCacheUUID === null) {
      await this.changes('DELETE FROM user_settings WHERE username = $1', [user]);
      return { contentCacheUUID: null };
    }
    const cacheId = referencedCacheId(settings.contentCacheUUID);
    await this.write(
      () =>
        this.changes(
          'INSERT INTO user_settings (username, content_cache_id) VALUES ($1, $2) ON CONFLICT (username) DO UPDATE SET content_cache_id = excluded.content_cache_id',
          [user, cacheId],
        ),
      { missingCache: cacheId },
    );
    return { contentCacheUUID: cacheId };
  }

  /** {@inheritDoc StateRepository.getDefaultCache} */
  async getDefaultCache(): Promise<ContentCache | undefined> {
    const row = (
      await this.rows<CacheRow>('SELECT c.id, c.name, c.host FROM default_cache d JOIN content_caches c ON c.id = d.content_cache_id WHERE d.singleton = 1')
    )[0];
    return row === undefined ? undefined : toCache(row);
  }

  /** {@inheritDoc StateRepository.setDefaultCache} */
  async setDefaultCache(id: string | null): Promise<void> {
    if (id === null) {
      await this.changes('DELETE FROM default_cache');
      return;
    }
    const cacheId = referencedCacheId(id);
    await this.write(
      () =>
        this.changes(
          'INSERT INTO default_cache (singleton, content_cache_id) VALUES (1, $1) ON CONFLICT (singleton) DO UPDATE SET content_cache_id = excluded.content_cache_id',
          [cacheId],
        ),
      { missingCache: cacheId },
    );
  }

  /** {@inheritDoc StateRepository.listNamespaceRules} */
  async listNamespaceRules(): Promise<NamespaceRule[]> {
    const rows = await this.rows<{ namespace: string; content_cache_id: string }>('SELECT namespace, content_cache_id FROM namespace_rules ORDER BY namespace COLLATE "C"');
    return rows.map((r) => ({ namespace: r.namespace, cacheId: r.content_cache_id }));
  }

  /** {@inheritDoc StateRepository.setNamespaceRule} */
  async setNamespaceRule(rule: NamespaceRule): Promise<NamespaceRule> {
    const namespace = validateNamespace(rule.namespace);
    const cacheId = referencedCacheId(rule.cacheId);
    await this.write(
      () =>
        this.changes(
          'INSERT INTO namespace_rules (namespace, content_cache_id) VALUES ($1, $2) ON CONFLICT (namespace) DO UPDATE SET content_cache_id = excluded.content_cache_id',
          [namespace, cacheId],
        ),
      { missingCache: cacheId },
    );
    return { namespace, cacheId };
  }

  /** {@inheritDoc StateRepository.deleteNamespaceRule} */
  async deleteNamespaceRule(namespace: string): Promise<boolean> {
    return (await this.changes('DELETE FROM namespace_rules WHERE namespace = $1', [namespace])) > 0;
  }

  /** {@inheritDoc StateRepository.listNetworkRules} */
  async listNetworkRules(): Promise<NetworkRule[]> {
    const rows = await this.rows<{ cidr: string; content_cache_id: string }>('SELECT cidr, content_cache_id FROM network_rules ORDER BY cidr COLLATE "C"');
    return rows.map((r) => ({ cidr: r.cidr, cacheId: r.content_cache_id }));
  }

  /** {@inheritDoc StateRepository.setNetworkRule} */
  async setNetworkRule(rule: NetworkRule): Promise<NetworkRule> {
    const cidr = normalizeCidr(rule.cidr);
    const cacheId = referencedCacheId(rule.cacheId);
    await this.write(
      () =>
        this.changes(
          'INSERT INTO network_rules (cidr, content_cache_id) VALUES ($1, $2) ON CONFLICT (cidr) DO UPDATE SET content_cache_id = excluded.content_cache_id',
          [cidr, cacheId],
        ),
      { missingCache: cacheId },
    );
    return { cidr, cacheId };
  }

  /** {@inheritDoc StateRepository.deleteNetworkRule} */
  async deleteNetworkRule(cidr: string): Promise<boolean> {
    const key = keyOrNone(normalizeCidr, cidr);
    if (key === undefined) return false;
    return (await this.changes('DELETE FROM network_rules WHERE cidr = $1', [key])) > 0;
  }

  /** {@inheritDoc StateRepository.listWarmRules} */
  async listWarmRules(): Promise<WarmRule[]> {
    return warmRulesOf(
      await this.rows<{ namespace: string; content_cache_id: string }>('SELECT namespace, content_cache_id FROM warm_rules ORDER BY namespace COLLATE "C", content_cache_id COLLATE "C"'),
    );
  }

  /** {@inheritDoc StateRepository.setWarmRule} */
  async setWarmRule(rule: WarmRule): Promise<WarmRule> {
    const checked = validateWarmRule(rule);
    // One transaction: the rule is replaced as a whole, or not at all when a cache does not exist.
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('DELETE FROM warm_rules WHERE namespace = $1', [checked.namespace]);
      for (const id of checked.cacheIds) {
        await this.write(() => client.query('INSERT INTO warm_rules (namespace, content_cache_id) VALUES ($1, $2)', [checked.namespace, id]), { missingCache: id });
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    return checked;
  }

  /** {@inheritDoc StateRepository.deleteWarmRule} */
  async deleteWarmRule(namespace: string): Promise<boolean> {
    const key = keyOrNone(validateWarmNamespace, namespace);
    if (key === undefined) return false;
    return (await this.changes('DELETE FROM warm_rules WHERE namespace = $1', [key])) > 0;
  }

  /** {@inheritDoc StateRepository.recordHealth} */
  async recordHealth(id: string, report: HealthReport): Promise<boolean> {
    const checked = validateHealthReport(report);
    const key = normalizeCacheId(id);
    if (key === undefined) return false;
    try {
      // One statement, so the failure count cannot be lost between a read and a write; a report older than
      // the stored one changes nothing.
      await this.changes(
        `INSERT INTO cache_health (content_cache_id, ok, latency_ms, error, checked_at, last_ok_at, consecutive_failures)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $2 THEN $5::timestamptz END, CASE WHEN $2 THEN 0 ELSE 1 END)
         ON CONFLICT (content_cache_id) DO UPDATE SET
           ok = excluded.ok,
           latency_ms = excluded.latency_ms,
           error = excluded.error,
           checked_at = excluded.checked_at,
           last_ok_at = COALESCE(excluded.last_ok_at, cache_health.last_ok_at),
           consecutive_failures = CASE WHEN excluded.ok THEN 0 ELSE cache_health.consecutive_failures + 1 END
         WHERE excluded.checked_at >= cache_health.checked_at`,
        [key, checked.ok, checked.latencyMs, checked.error ?? null, checked.at],
      );
      return true;
    } catch (err) {
      // The cache was deleted, perhaps while it was being checked: there is nothing to record.
      if (sqlState(err) === FOREIGN_KEY_VIOLATION) return false;
      throw err;
    }
  }

  /** {@inheritDoc StateRepository.health} */
  async health(id: string): Promise<CacheHealth | undefined> {
    const key = normalizeCacheId(id);
    if (key === undefined) return undefined;
    const rows = await this.rows<HealthRow & { exists: boolean }>(
      `SELECT h.ok, h.latency_ms, h.error, h.checked_at, h.last_ok_at, h.consecutive_failures
       FROM content_caches c LEFT JOIN cache_health h ON h.content_cache_id = c.id WHERE c.id = $1`,
      [key],
    );
    const row = rows[0];
    if (row === undefined) return undefined;
    if (row.checked_at === null) {
      return unknownHealth(key);
    }
    return {
      cacheId: key,
      status: row.ok ? 'healthy' : 'unhealthy',
      checkedAt: row.checked_at,
      latencyMs: row.latency_ms,
      error: row.error,
      lastOkAt: row.last_ok_at,
      consecutiveFailures: row.consecutive_failures,
    };
  }

  /** {@inheritDoc StateRepository.listGrantKeys} */
  async listGrantKeys(): Promise<GrantKeyRecord[]> {
    // BIGINT comes back as a string (it may exceed 2^53); epoch milliseconds do not.
    const rows = await this.rows<{ kid: string; pem: string; created_at: string }>('SELECT kid, pem, created_at FROM grant_keys ORDER BY created_at, kid COLLATE "C"');
    return rows.map((r) => ({ kid: r.kid, pem: r.pem, createdAt: Number(r.created_at) }));
  }

  /** {@inheritDoc StateRepository.addGrantKey} */
  async addGrantKey(key: GrantKeyRecord): Promise<void> {
    await this.changes('INSERT INTO grant_keys (kid, pem, created_at) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING', [key.kid, key.pem, Math.round(key.createdAt)]);
  }

  /** {@inheritDoc StateRepository.deleteGrantKey} */
  async deleteGrantKey(kid: string): Promise<boolean> {
    return (await this.changes('DELETE FROM grant_keys WHERE kid = $1', [kid])) > 0;
  }

  /** {@inheritDoc StateRepository.close} */
  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }
}
