/**
 * `cascade doctor server.yml`: the checks of a server's config (see doctor.ts for cache nodes, mirrors and
 * registries). The config; the origin's CA files; the origin (TCP, TLS, `GET /v2/`); the service account at
 * the origin; the grant keys; the state database (reachable, its schema version), without changing it; and
 * every registered cache as the server reaches it (its health checks and redirects depend on that).
 */
import { constants as fsConstants } from 'node:fs';
import { access, readdir, readFile, stat } from 'node:fs/promises';
import { createPrivateKey } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { pino } from 'pino';
import { ConfigError } from '@cascade/registry-core';
import { assertEs256Key } from '@cascade/downstream';
import { authenticateThroughOrigin, loadServerConfig, MIGRATIONS, OriginClient, POSTGRES_MIGRATIONS, redactDatabaseUrl, type ServerConfig } from '@cascade/server';
import { checkCaFile, checkUpstream, DEFAULT_TIMEOUT_MS, withoutFile, type CheckResult, type DoctorOptions, type UpstreamTarget } from './doctor.js';

/** Whether a YAML document is a `server.yml`: an `origin` section, and no `storage` (which a registry needs). */
export function isServerConfig(doc: unknown): boolean {
  return typeof doc === 'object' && doc !== null && 'origin' in doc && !('storage' in doc);
}

/** Every check of a server config, in the order they are printed. */
export async function* runServerChecks(file: string, options: DoctorOptions = {}): AsyncGenerator<CheckResult> {
  const env = options.env ?? process.env;
  const now = options.now ?? new Date();
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let config: ServerConfig;
  try {
    config = loadServerConfig(file, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) {
      yield { status: 'FAIL', subject: `config ${file}`, message: withoutFile(issue.message, file), fix: 'correct the key in the file (docs/server.md lists every key)' };
    }
    return;
  }
  yield { status: 'ok', subject: `config ${file}`, message: `a server in front of ${config.origin.url}, state in ${config.database.postgres !== undefined ? 'PostgreSQL' : 'SQLite'}` };

  const pem: string[] = [];
  const names: string[] = [];
  const unloaded: string[] = [];
  for (const [i, caFile] of config.origin.cas.entries()) {
    const checked = checkCaFile(caFile, `origin.cas[${i}]`, now);
    yield checked.result;
    if (checked.pem) pem.push(...checked.pem);
    else unloaded.push(caFile);
    names.push(...(checked.certificates ?? []).map((c) => c.subject));
  }
  const target = (label: UpstreamTarget['label'], url: string): UpstreamTarget => ({ label, url, ca: pem, caNames: names, unloadedCas: unloaded, casKey: 'origin.cas', grantKeys: false, timeoutMs, now });

  // The network checks run together; the lines come out in order.
  const originChecks = checkUpstream(target('origin', config.origin.url));
  const account = checkServiceAccount(config, pem, timeoutMs);
  const database = checkDatabase(config, timeoutMs);
  const keys = config.grants.keystore === 'folder' ? checkKeys(config.grants.keysdir) : undefined;
  const originResults = await originChecks;
  yield* originResults;
  const accountResult = await account;
  yield originResults.some((r) => r.status === 'FAIL') && accountResult.status === 'FAIL'
    ? { status: 'skip', subject: accountResult.subject, message: 'not checked (the origin cannot be reached)' }
    : accountResult;
  if (keys) yield await keys;
  const db = await database;
  yield db.result;
  if (config.grants.keystore === 'database' && db.grantKeys !== undefined) {
    yield db.grantKeys > 0
      ? { status: 'ok', subject: 'grant keys (state database)', message: `${db.grantKeys} key${db.grantKeys === 1 ? '' : 's'} in the database, shared by the servers that use it` }
      : { status: 'warn', subject: 'grant keys (state database)', message: 'no key yet: the first server to start creates one' };
  }
  if (db.caches === undefined) return;
  if (db.caches.length === 0) {
    yield { status: 'warn', subject: 'caches', message: 'no cache is registered: every blob is served by the server', fix: 'register caches with POST /api/v0/content_caches (docs/server-api.md) or on the web page' };
    return;
  }
  const cacheChecks = db.caches.map((c) => checkUpstream(target(`cache ${c.name}`, c.host)));
  for (const check of cacheChecks) {
    for (const r of await check) {
      yield r.status === 'FAIL' ? { ...r, fix: `${r.fix ?? 'make it reachable'}; until then the server's health check skips this cache and serves its users' blobs itself` } : r;
    }
  }
}

/** The service account (`origin.username`, `CASCADE_ORIGIN_PASSWORD`) signs in at the origin. */
async function checkServiceAccount(config: ServerConfig, ca: string[], timeoutMs: number): Promise<CheckResult> {
  const subject = 'service account';
  const { username, password } = config.origin;
  if (username === undefined) {
    return { status: 'warn', subject, message: 'none configured: caches behind this server cannot fill misses, users without a cache still pull', fix: 'set origin.username and CASCADE_ORIGIN_PASSWORD (an account with pull on every repository)' };
  }
  const origin = new OriginClient({ url: config.origin.url, username, ...(password !== undefined ? { password } : {}), ca, logger: pino({ level: 'silent' }) });
  const started = Date.now();
  try {
    const basic = `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`;
    const signal = AbortSignal.timeout(timeoutMs * 2);
    const ok = await Promise.race([
      authenticateThroughOrigin(origin, basic),
      new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new Error(`no answer within ${timeoutMs * 2} ms`)))),
    ]);
    const ms = Date.now() - started;
    if (ok) return { status: 'ok', subject, message: `the origin accepts ${username}`, ms };
    return { status: 'FAIL', subject, message: `the origin refuses ${username}`, ms, fix: 'check origin.username and the password (CASCADE_ORIGIN_PASSWORD, or origin.password) against the origin' };
  } catch (err) {
    return { status: 'FAIL', subject, message: `could not sign in ${username} at the origin: ${err instanceof Error ? err.message : String(err)}`, ms: Date.now() - started, fix: 'see the origin checks above' };
  } finally {
    origin.close();
  }
}

/** The grant keys: a readable folder of EC P-256 keys (or none yet: the server creates one at start). */
async function checkKeys(dir: string): Promise<CheckResult> {
  const subject = `grant keys ${dir}`;
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => /^[^.].*\.pem$/.test(f));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { status: 'warn', subject, message: 'no such folder yet: the server creates it and a key at its first start', fix: 'nothing, unless several servers share a database: then create it on one and share it (docs/server.md)' };
    return { status: 'FAIL', subject, message: `cannot read it (${code ?? (err as Error).message})`, fix: 'give the server read and write access to grants.keysdir' };
  }
  try {
    await access(dir, fsConstants.W_OK);
  } catch {
    return { status: 'FAIL', subject, message: 'not writable: the server rotates its keys there', fix: 'give the server write access to grants.keysdir' };
  }
  if (files.length === 0) return { status: 'warn', subject, message: 'no key yet: the server creates one at its first start' };
  for (const f of files) {
    try {
      const key = createPrivateKey(await readFile(join(dir, f)));
      assertEs256Key(key);
    } catch {
      return { status: 'FAIL', subject, message: `${f} is not an EC P-256 private key: the server would refuse to start`, fix: `remove ${join(dir, f)}, or replace it with a key from "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"` };
    }
  }
  const newest = Math.max(...(await Promise.all(files.map(async (f) => (await stat(join(dir, f))).mtimeMs))));
  return { status: 'ok', subject, message: `${files.length} key${files.length === 1 ? '' : 's'}, the newest from ${new Date(newest).toISOString().slice(0, 10)}` };
}

interface DatabaseFindings {
  readonly result: CheckResult;
  /** The registered caches, when the database could be read. */
  readonly caches?: readonly { name: string; host: string }[];
  /** The grant keys stored in it, when it could be read. */
  readonly grantKeys?: number;
}

/** The state database: reachable, and its schema one this Cascade knows. Reads only. */
async function checkDatabase(config: ServerConfig, timeoutMs: number): Promise<DatabaseFindings> {
  const known = config.database.postgres !== undefined ? POSTGRES_MIGRATIONS.length : MIGRATIONS.length;
  const verdict = (subject: string, version: number, caches: { name: string; host: string }[], grantKeys: number, ms?: number): DatabaseFindings => {
    if (version > known) {
      return { result: { status: 'FAIL', subject, message: `schema version ${version}, newer than this Cascade knows (${known})`, fix: 'run the Cascade version that migrated it, or a newer one' } };
    }
    const pending = known - version;
    const keys = config.grants.keystore === 'database' ? `, ${grantKeys} grant key${grantKeys === 1 ? '' : 's'}` : '';
    const message = `schema version ${version}${pending > 0 ? ` (${pending} migration${pending === 1 ? '' : 's'} to apply at the next start)` : ''}, ${caches.length} cache${caches.length === 1 ? '' : 's'} registered${keys}`;
    return { result: { status: 'ok', subject, message, ...(ms !== undefined ? { ms } : {}) }, caches, grantKeys };
  };
  if (config.database.postgres !== undefined) {
    const where = redactDatabaseUrl(config.database.postgres);
    const subject = `database ${where}`;
    const client = new pg.Client({ connectionString: config.database.postgres, connectionTimeoutMillis: timeoutMs, statement_timeout: timeoutMs, application_name: 'cascade-doctor' });
    client.on('error', () => undefined);
    const started = Date.now();
    try {
      await client.connect();
      const exists = (await client.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t")).rows[0]?.t;
      if (!exists) return { result: { status: 'ok', subject, message: 'reachable and empty: the server creates the schema at its first start', ms: Date.now() - started }, caches: [], grantKeys: 0 };
      const version = (await client.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations')).rows[0]?.v ?? 0;
      const caches = version >= 1 ? (await client.query<{ name: string; host: string }>('SELECT name, host FROM content_caches ORDER BY name_key COLLATE "C"')).rows : [];
      const grantKeys = version >= 2 ? Number((await client.query<{ n: string }>('SELECT COUNT(*) AS n FROM grant_keys')).rows[0]?.n ?? 0) : 0;
      return verdict(subject, version, caches, grantKeys, Date.now() - started);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      return { result: { status: 'FAIL', subject, message: `cannot use it: ${reason}`, ms: Date.now() - started, fix: 'check the host, port, database, user, password (CASCADE_DATABASE_URL or PGPASSWORD) and sslmode; the server cannot start without it' } };
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  const file = config.database.sqlite;
  const subject = `database ${file}`;
  if (file === ':memory:') return { result: { status: 'warn', subject, message: 'in memory: caches and settings are lost when the server stops', fix: 'set database.sqlite to a file on a volume' }, caches: [], grantKeys: 0 };
  try {
    await stat(file);
  } catch {
    return { result: { status: 'ok', subject, message: 'no file yet: the server creates it at its first start' }, caches: [], grantKeys: 0 };
  }
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const hasTable = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get() !== undefined;
    const version = hasTable ? ((db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0) : 0;
    const caches = version >= 1 ? (db.prepare('SELECT name, host FROM content_caches ORDER BY name_key').all() as { name: string; host: string }[]) : [];
    const grantKeys = version >= 2 ? (db.prepare('SELECT COUNT(*) AS n FROM grant_keys').get() as { n: number }).n : 0;
    return verdict(subject, version, caches, grantKeys);
  } catch (err) {
    return { result: { status: 'FAIL', subject, message: `cannot read it: ${err instanceof Error ? err.message : String(err)}`, fix: 'give the server read and write access to the file and its folder, or restore it from a backup' } };
  } finally {
    db?.close();
  }
}
