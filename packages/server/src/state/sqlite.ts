/**
 * The embedded {@link StateRepository}: one SQLite file (or `:memory:`) through better-sqlite3.
 *
 * The database runs in WAL mode (readers never wait for the writer) with foreign keys on, which is what
 * makes deleting a cache clear every reference to it in the same transaction. The schema is created and
 * upgraded at start-up by numbered migrations recorded in `schema_migrations`.
 */
import Database from 'better-sqlite3';
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

/** One schema change. Applied migrations are never edited: a change is a new migration. */
export interface Migration {
  /** 1, 2, 3, ...: applied in order, each exactly once. */
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** Every migration of the SQLite schema, in order. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'content caches, user settings, default, namespace and network rules, health',
    sql: `
      CREATE TABLE content_caches (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        name_key   TEXT NOT NULL UNIQUE,
        host       TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
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
        ok                   INTEGER NOT NULL,
        latency_ms           REAL NOT NULL,
        error                TEXT,
        checked_at           TEXT NOT NULL,
        last_ok_at           TEXT,
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
        created_at INTEGER NOT NULL
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

/** Options of {@link SqliteStateRepository}. */
export interface SqliteStateOptions {
  /** How long a statement waits for another process's write lock before failing (default 5000 ms). */
  readonly busyTimeoutMs?: number;
  /** The migrations to apply; tests pass a longer list to exercise upgrades. Default {@link MIGRATIONS}. */
  readonly migrations?: readonly Migration[];
}

interface CacheRow {
  id: string;
  name: string;
  host: string;
}

interface HealthRow {
  ok: number;
  latency_ms: number;
  error: string | null;
  checked_at: string;
  last_ok_at: string | null;
  consecutive_failures: number;
}

/**
 * Applies the migrations the database has not seen yet, each in the same transaction as its row in
 * `schema_migrations`, all under one write lock so two processes starting together cannot both apply one.
 * Running it again is a no-op. Answers the versions it applied.
 * @throws Error when the database was migrated by a newer Cascade (a version this list does not know).
 */
export function migrate(db: Database.Database, migrations: readonly Migration[] = MIGRATIONS): number[] {
  for (const [i, m] of migrations.entries()) {
    if (m.version !== i + 1) throw new Error(`migration ${m.name} has version ${m.version}, expected ${i + 1}`);
  }
  const run = db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER PRIMARY KEY,
      name       TEXT NOT NULL,
      applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    )`);
    const rows = db.prepare<[], { version: number }>('SELECT version FROM schema_migrations ORDER BY version').all();
    const applied = new Set(rows.map((r) => r.version));
    const newest = rows.at(-1)?.version ?? 0;
    if (newest > migrations.length) {
      throw new Error(`the state database has schema version ${newest}, newer than this Cascade knows (${migrations.length}): upgrade Cascade`);
    }
    const record = db.prepare<[number, string]>('INSERT INTO schema_migrations (version, name) VALUES (?, ?)');
    const done: number[] = [];
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      db.exec(m.sql);
      record.run(m.version, m.name);
      done.push(m.version);
    }
    return done;
  });
  return run.immediate();
}

function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

function toCache(row: CacheRow): ContentCache {
  return { id: row.id, name: row.name, host: row.host };
}

/** Every statement the repository runs, prepared once when it opens. */
function prepareStatements(db: Database.Database) {
  return {
    listCaches: db.prepare<[], CacheRow>('SELECT id, name, host FROM content_caches ORDER BY name_key, id'),
    getCache: db.prepare<[string], CacheRow>('SELECT id, name, host FROM content_caches WHERE id = ?'),
    insertCache: db.prepare<{ id: string; name: string; key: string; host: string }>(
      'INSERT INTO content_caches (id, name, name_key, host) VALUES (@id, @name, @key, @host)',
    ),
    updateCache: db.prepare<{ id: string; name: string; key: string; host: string }>(
      'UPDATE content_caches SET name = @name, name_key = @key, host = @host WHERE id = @id',
    ),
    deleteCache: db.prepare<[string]>('DELETE FROM content_caches WHERE id = ?'),

    getSettings: db.prepare<[string], { content_cache_id: string }>('SELECT content_cache_id FROM user_settings WHERE username = ?'),
    upsertSettings: db.prepare<[string, string]>(
      'INSERT INTO user_settings (username, content_cache_id) VALUES (?, ?) ON CONFLICT (username) DO UPDATE SET content_cache_id = excluded.content_cache_id',
    ),
    deleteSettings: db.prepare<[string]>('DELETE FROM user_settings WHERE username = ?'),

    getDefault: db.prepare<[], CacheRow>(
      'SELECT c.id, c.name, c.host FROM default_cache d JOIN content_caches c ON c.id = d.content_cache_id WHERE d.singleton = 1',
    ),
    upsertDefault: db.prepare<[string]>(
      'INSERT INTO default_cache (singleton, content_cache_id) VALUES (1, ?) ON CONFLICT (singleton) DO UPDATE SET content_cache_id = excluded.content_cache_id',
    ),
    deleteDefault: db.prepare<[]>('DELETE FROM default_cache'),

    listNamespaces: db.prepare<[], { namespace: string; content_cache_id: string }>(
      'SELECT namespace, content_cache_id FROM namespace_rules ORDER BY namespace',
    ),
    upsertNamespace: db.prepare<[string, string]>(
      'INSERT INTO namespace_rules (namespace, content_cache_id) VALUES (?, ?) ON CONFLICT (namespace) DO UPDATE SET content_cache_id = excluded.content_cache_id',
    ),
    deleteNamespace: db.prepare<[string]>('DELETE FROM namespace_rules WHERE namespace = ?'),

    listNetworks: db.prepare<[], { cidr: string; content_cache_id: string }>('SELECT cidr, content_cache_id FROM network_rules ORDER BY cidr'),
    upsertNetwork: db.prepare<[string, string]>(
      'INSERT INTO network_rules (cidr, content_cache_id) VALUES (?, ?) ON CONFLICT (cidr) DO UPDATE SET content_cache_id = excluded.content_cache_id',
    ),
    deleteNetwork: db.prepare<[string]>('DELETE FROM network_rules WHERE cidr = ?'),

    listWarm: db.prepare<[], { namespace: string; content_cache_id: string }>(
      'SELECT namespace, content_cache_id FROM warm_rules ORDER BY namespace, content_cache_id',
    ),
    insertWarm: db.prepare<[string, string]>('INSERT INTO warm_rules (namespace, content_cache_id) VALUES (?, ?)'),
    deleteWarm: db.prepare<[string]>('DELETE FROM warm_rules WHERE namespace = ?'),

    // One statement, so the failure count cannot be lost between a read and a write; a report older than
    // the stored one changes nothing.
    recordHealth: db.prepare<{ id: string; ok: number; latency: number; error: string | null; at: string }>(`
      INSERT INTO cache_health (content_cache_id, ok, latency_ms, error, checked_at, last_ok_at, consecutive_failures)
      VALUES (@id, @ok, @latency, @error, @at, CASE WHEN @ok = 1 THEN @at END, CASE WHEN @ok = 1 THEN 0 ELSE 1 END)
      ON CONFLICT (content_cache_id) DO UPDATE SET
        ok = excluded.ok,
        latency_ms = excluded.latency_ms,
        error = excluded.error,
        checked_at = excluded.checked_at,
        last_ok_at = COALESCE(excluded.last_ok_at, cache_health.last_ok_at),
        consecutive_failures = CASE WHEN excluded.ok = 1 THEN 0 ELSE cache_health.consecutive_failures + 1 END
      WHERE excluded.checked_at >= cache_health.checked_at
    `),
    getHealth: db.prepare<[string], HealthRow>(
      'SELECT ok, latency_ms, error, checked_at, last_ok_at, consecutive_failures FROM cache_health WHERE content_cache_id = ?',
    ),
    schemaVersion: db.prepare<[], { version: number | null }>('SELECT MAX(version) AS version FROM schema_migrations'),
    listKeys: db.prepare<[], { kid: string; pem: string; created_at: number }>('SELECT kid, pem, created_at FROM grant_keys ORDER BY created_at, kid'),
    addKey: db.prepare<[string, string, number]>('INSERT INTO grant_keys (kid, pem, created_at) VALUES (?, ?, ?) ON CONFLICT (kid) DO NOTHING'),
    deleteKey: db.prepare<[string]>('DELETE FROM grant_keys WHERE kid = ?'),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/**
 * The state in a SQLite database: `path` is a file (created when missing; its directory must exist) or
 * `':memory:'`. Opening applies the pending migrations. Statements are prepared once, here.
 *
 * @example
 * const state = new SqliteStateRepository('/var/lib/cascade/state.db');
 * const cache = await state.create({ name: 'region-us', host: 'https://cache-us.example.com' });
 * await state.setSettings('alice', { contentCacheUUID: cache.id });
 */
export class SqliteStateRepository implements StateRepository {
  /** The file the state lives in, or `:memory:`. */
  readonly path: string;
  private readonly db: Database.Database;
  private readonly stmt: Statements;

  constructor(path: string, options: SqliteStateOptions = {}) {
    this.path = path;
    try {
      this.db = new Database(path);
    } catch (err) {
      throw new Error(`cannot open the state database ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    try {
      this.db.pragma('journal_mode = WAL');
      // NORMAL is durable in WAL mode except for the last commits on power loss, and never corrupts.
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`);
      migrate(this.db, options.migrations ?? MIGRATIONS);
      this.stmt = prepareStatements(this.db);
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** The highest migration applied to the database. */
  schemaVersion(): number {
    return this.stmt.schemaVersion.get()?.version ?? 0;
  }

  /** Translates the constraint failures that mean "bad input" into {@link StateError}s. */
  private write<T>(fn: () => T, what: { conflict?: string; missingCache?: string }): T {
    try {
      return fn();
    } catch (err) {
      const code = sqliteCode(err);
      if (code === 'SQLITE_CONSTRAINT_UNIQUE' && what.conflict !== undefined) throw new StateError('CONFLICT', what.conflict);
      if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY' && what.missingCache !== undefined) {
        throw new StateError('INVALID', `no content cache with id ${what.missingCache}`);
      }
      throw err;
    }
  }

  /** {@inheritDoc StateRepository.list} */
  async list(): Promise<ContentCache[]> {
    return this.stmt.listCaches.all().map(toCache);
  }

  /** {@inheritDoc StateRepository.get} */
  async get(id: string): Promise<ContentCache | undefined> {
    const key = normalizeCacheId(id);
    const row = key === undefined ? undefined : this.stmt.getCache.get(key);
    return row === undefined ? undefined : toCache(row);
  }

  /** {@inheritDoc StateRepository.create} */
  async create(cache: NewContentCache): Promise<ContentCache> {
    const name = validateCacheName(cache.name);
    const row = { id: newCacheId(), name, key: cacheNameKey(name), host: normalizeCacheHost(cache.host) };
    this.write(() => this.stmt.insertCache.run(row), { conflict: `a content cache named ${JSON.stringify(name)} already exists` });
    return { id: row.id, name: row.name, host: row.host };
  }

  /** {@inheritDoc StateRepository.update} */
  async update(id: string, patch: ContentCachePatch): Promise<ContentCache | undefined> {
    const name = patch.name === undefined ? undefined : validateCacheName(patch.name);
    const host = patch.host === undefined ? undefined : normalizeCacheHost(patch.host);
    const key = normalizeCacheId(id);
    if (key === undefined) return undefined;
    // Read and write in one transaction, so a concurrent change of the other field is not undone.
    const apply = this.db.transaction((): ContentCache | undefined => {
      const current = this.stmt.getCache.get(key);
      if (current === undefined) return undefined;
      const next = { id: key, name: name ?? current.name, key: cacheNameKey(name ?? current.name), host: host ?? current.host };
      this.stmt.updateCache.run(next);
      return { id: next.id, name: next.name, host: next.host };
    });
    return this.write(() => apply.immediate(), { conflict: `a content cache named ${JSON.stringify(name)} already exists` });
  }

  /** {@inheritDoc StateRepository.delete} */
  async delete(id: string): Promise<boolean> {
    const key = normalizeCacheId(id);
    // The foreign keys' ON DELETE CASCADE clears settings, default, rules and health in this statement.
    return key !== undefined && this.stmt.deleteCache.run(key).changes > 0;
  }

  /** {@inheritDoc StateRepository.getSettings} */
  async getSettings(user: string): Promise<UserSettings> {
    return { contentCacheUUID: this.stmt.getSettings.get(user)?.content_cache_id ?? null };
  }

  /** {@inheritDoc StateRepository.setSettings} */
  async setSettings(user: string, settings: UserSettings): Promise<UserSettings> {
    validateUserName(user);
    if (settings.contentCacheUUID === null) {
      this.stmt.deleteSettings.run(user);
      return { contentCacheUUID: null };
    }
    const cacheId = referencedCacheId(settings.contentCacheUUID);
    this.write(() => this.stmt.upsertSettings.run(user, cacheId), { missingCache: cacheId });
    return { contentCacheUUID: cacheId };
  }

  /** {@inheritDoc StateRepository.getDefaultCache} */
  async getDefaultCache(): Promise<ContentCache | undefined> {
    const row = this.stmt.getDefault.get();
    return row === undefined ? undefined : toCache(row);
  }

  /** {@inheritDoc StateRepository.setDefaultCache} */
  async setDefaultCache(id: string | null): Promise<void> {
    if (id === null) {
      this.stmt.deleteDefault.run();
      return;
    }
    const cacheId = referencedCacheId(id);
    this.write(() => this.stmt.upsertDefault.run(cacheId), { missingCache: cacheId });
  }

  /** {@inheritDoc StateRepository.listNamespaceRules} */
  async listNamespaceRules(): Promise<NamespaceRule[]> {
    return this.stmt.listNamespaces.all().map((r) => ({ namespace: r.namespace, cacheId: r.content_cache_id }));
  }

  /** {@inheritDoc StateRepository.setNamespaceRule} */
  async setNamespaceRule(rule: NamespaceRule): Promise<NamespaceRule> {
    const namespace = validateNamespace(rule.namespace);
    const cacheId = referencedCacheId(rule.cacheId);
    this.write(() => this.stmt.upsertNamespace.run(namespace, cacheId), { missingCache: cacheId });
    return { namespace, cacheId };
  }

  /** {@inheritDoc StateRepository.deleteNamespaceRule} */
  async deleteNamespaceRule(namespace: string): Promise<boolean> {
    return this.stmt.deleteNamespace.run(namespace).changes > 0;
  }

  /** {@inheritDoc StateRepository.listNetworkRules} */
  async listNetworkRules(): Promise<NetworkRule[]> {
    return this.stmt.listNetworks.all().map((r) => ({ cidr: r.cidr, cacheId: r.content_cache_id }));
  }

  /** {@inheritDoc StateRepository.setNetworkRule} */
  async setNetworkRule(rule: NetworkRule): Promise<NetworkRule> {
    const cidr = normalizeCidr(rule.cidr);
    const cacheId = referencedCacheId(rule.cacheId);
    this.write(() => this.stmt.upsertNetwork.run(cidr, cacheId), { missingCache: cacheId });
    return { cidr, cacheId };
  }

  /** {@inheritDoc StateRepository.deleteNetworkRule} */
  async deleteNetworkRule(cidr: string): Promise<boolean> {
    const key = keyOrNone(normalizeCidr, cidr);
    if (key === undefined) return false;
    return this.stmt.deleteNetwork.run(key).changes > 0;
  }

  /** {@inheritDoc StateRepository.listWarmRules} */
  async listWarmRules(): Promise<WarmRule[]> {
    return warmRulesOf(this.stmt.listWarm.all());
  }

  /** {@inheritDoc StateRepository.setWarmRule} */
  async setWarmRule(rule: WarmRule): Promise<WarmRule> {
    const checked = validateWarmRule(rule);
    // One transaction: the rule is replaced as a whole, or not at all when a cache does not exist.
    const replace = this.db.transaction(() => {
      this.stmt.deleteWarm.run(checked.namespace);
      for (const id of checked.cacheIds) this.write(() => this.stmt.insertWarm.run(checked.namespace, id), { missingCache: id });
    });
    replace.immediate();
    return checked;
  }

  /** {@inheritDoc StateRepository.deleteWarmRule} */
  async deleteWarmRule(namespace: string): Promise<boolean> {
    const key = keyOrNone(validateWarmNamespace, namespace);
    if (key === undefined) return false;
    return this.stmt.deleteWarm.run(key).changes > 0;
  }

  /** {@inheritDoc StateRepository.recordHealth} */
  async recordHealth(id: string, report: HealthReport): Promise<boolean> {
    const checked = validateHealthReport(report);
    const key = normalizeCacheId(id);
    if (key === undefined) return false;
    try {
      this.stmt.recordHealth.run({ id: key, ok: checked.ok ? 1 : 0, latency: checked.latencyMs, error: checked.error ?? null, at: checked.at.toISOString() });
      return true;
    } catch (err) {
      // The cache was deleted, perhaps while it was being checked: there is nothing to record.
      if (sqliteCode(err) === 'SQLITE_CONSTRAINT_FOREIGNKEY') return false;
      throw err;
    }
  }

  /** {@inheritDoc StateRepository.health} */
  async health(id: string): Promise<CacheHealth | undefined> {
    const key = normalizeCacheId(id);
    if (key === undefined || this.stmt.getCache.get(key) === undefined) return undefined;
    const row = this.stmt.getHealth.get(key);
    if (row === undefined) {
      return unknownHealth(key);
    }
    return {
      cacheId: key,
      status: row.ok === 1 ? 'healthy' : 'unhealthy',
      checkedAt: new Date(row.checked_at),
      latencyMs: row.latency_ms,
      error: row.error,
      lastOkAt: row.last_ok_at === null ? null : new Date(row.last_ok_at),
      consecutiveFailures: row.consecutive_failures,
    };
  }

  /** {@inheritDoc StateRepository.listGrantKeys} */
  async listGrantKeys(): Promise<GrantKeyRecord[]> {
    return this.stmt.listKeys.all().map((r) => ({ kid: r.kid, pem: r.pem, createdAt: r.created_at }));
  }

  /** {@inheritDoc StateRepository.addGrantKey} */
  async addGrantKey(key: GrantKeyRecord): Promise<void> {
    this.stmt.addKey.run(key.kid, key.pem, Math.round(key.createdAt));
  }

  /** {@inheritDoc StateRepository.deleteGrantKey} */
  async deleteGrantKey(kid: string): Promise<boolean> {
    return this.stmt.deleteKey.run(kid).changes > 0;
  }

  /** {@inheritDoc StateRepository.close} */
  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
