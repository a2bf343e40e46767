/**
 * The SQLite state repository, in memory and in a file: content caches, settings, default, rules, health,
 * the cascade of a cache delete, migrations and persistence across reopen.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { StateError, type StateRepository } from '../src/state/repository.js';
import { migrate, MIGRATIONS, SqliteStateRepository, type Migration } from '../src/state/sqlite.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const MISSING = '00000000-0000-4000-8000-000000000000';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function tempFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cascade-state-'));
  dirs.push(dir);
  return join(dir, 'state.db');
}

/** Asserts `promise` rejects with a StateError of `kind` whose message matches `message`. */
async function refused(promise: Promise<unknown>, kind: StateError['kind'], message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StateError, `expected a StateError, got ${String(err)}`);
    assert.equal(err.kind, kind);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const backends: { name: string; open: () => Promise<SqliteStateRepository> }[] = [
  { name: 'in memory', open: async () => new SqliteStateRepository(':memory:') },
  { name: 'in a file', open: async () => new SqliteStateRepository(await tempFile()) },
];

for (const backend of backends) {
  describe(`SqliteStateRepository ${backend.name}`, () => {
    async function open(t: TestContext): Promise<StateRepository> {
      const state = await backend.open();
      t.after(() => state.close());
      return state;
    }

    it('creates, lists, gets, updates and deletes content caches', async (t) => {
      const state = await open(t);
      assert.deepEqual(await state.list(), []);
      const us = await state.create({ name: 'region-us', host: 'http://10.0.0.1:5000' });
      assert.match(us.id, UUID_V4);
      assert.deepEqual(us, { id: us.id, name: 'region-us', host: 'http://10.0.0.1:5000' });
      const eu = await state.create({ name: 'Region-EU', host: 'https://cache-eu.example.com' });
      assert.notEqual(eu.id, us.id);
      assert.deepEqual((await state.list()).map((c) => c.name), ['Region-EU', 'region-us'], 'sorted by name, ignoring case');
      assert.deepEqual(await state.get(us.id), us);
      assert.deepEqual(await state.get(us.id.toUpperCase()), us, 'ids are found in any case');
      assert.equal(await state.get(MISSING), undefined);
      assert.equal(await state.get('not-a-uuid'), undefined);

      assert.deepEqual(await state.update(us.id, { host: 'https://cache-us.example.com:443/' }), { ...us, host: 'https://cache-us.example.com' });
      assert.deepEqual(await state.update(us.id, { name: 'us-west' }), { id: us.id, name: 'us-west', host: 'https://cache-us.example.com' });
      assert.deepEqual(await state.update(us.id, {}), { id: us.id, name: 'us-west', host: 'https://cache-us.example.com' });
      assert.equal(await state.update(MISSING, { name: 'x' }), undefined);
      assert.equal(await state.update('nope', { name: 'x' }), undefined);

      assert.equal(await state.delete(us.id), true);
      assert.equal(await state.delete(us.id), false);
      assert.equal(await state.delete('nope'), false);
      assert.deepEqual(await state.list(), [eu]);
    });

    it('keeps names unique regardless of case', async (t) => {
      const state = await open(t);
      const a = await state.create({ name: 'Region-US', host: 'http://a:5000' });
      const b = await state.create({ name: 'region-eu', host: 'http://b:5000' });
      await refused(state.create({ name: 'region-us', host: 'http://c:5000' }), 'CONFLICT', /region-us/);
      await refused(state.create({ name: 'REGION-EU', host: 'http://c:5000' }), 'CONFLICT');
      await refused(state.update(b.id, { name: 'REGION-US' }), 'CONFLICT');
      assert.equal((await state.update(a.id, { name: 'region-us' }))?.name, 'region-us', 'a cache may change the case of its own name');
      await state.create({ name: 'Ünïcode', host: 'http://u:5000' });
      await refused(state.create({ name: 'üNÏCODE', host: 'http://u:5000' }), 'CONFLICT');
    });

    it('validates and normalizes names and hosts', async (t) => {
      const state = await open(t);
      for (const name of ['', ' lead', 'trail ', 'tab\there', 'x'.repeat(129)]) await refused(state.create({ name, host: 'http://h' }), 'INVALID', /name/);
      const cases: [string, string][] = [
        ['http://Cache.Example.com:5000/', 'http://cache.example.com:5000'],
        ['https://cache:443', 'https://cache'],
        ['http://[::1]:5000', 'http://[::1]:5000'],
        ['HTTP://10.0.0.1', 'http://10.0.0.1'],
      ];
      for (const [i, [host, normalized]] of cases.entries()) assert.equal((await state.create({ name: `c${i}`, host })).host, normalized);
      const bad: [string, RegExp][] = [
        ['cache:5000', /http or https/],
        ['ftp://cache', /http or https/],
        ['not a url', /absolute/],
        ['http://user:pw@cache', /user info/],
        ['http://cache/v2', /path/],
        ['http://cache/.', /path/],
        ['http://cache?x=1', /query/],
        ['http://cache/?', /query/],
        ['http://cache#f', /fragment/],
      ];
      for (const [host, reason] of bad) await refused(state.create({ name: 'bad', host }), 'INVALID', reason);
      const c = await state.create({ name: 'ok', host: 'http://ok' });
      await refused(state.update(c.id, { host: 'http://ok/path' }), 'INVALID', /path/);
      await refused(state.update(c.id, { name: '' }), 'INVALID', /name/);
      assert.deepEqual(await state.get(c.id), c, 'a refused update changes nothing');
    });

    it('stores user settings, which must name an existing cache', async (t) => {
      const state = await open(t);
      const c = await state.create({ name: 'us', host: 'http://us' });
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: null });
      assert.deepEqual(await state.setSettings('alice', { contentCacheUUID: c.id.toUpperCase() }), { contentCacheUUID: c.id });
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: c.id });
      assert.deepEqual(await state.getSettings('Alice'), { contentCacheUUID: null }, 'user names are exact');
      await refused(state.setSettings('alice', { contentCacheUUID: MISSING }), 'INVALID', /no content cache/);
      await refused(state.setSettings('alice', { contentCacheUUID: 'garbage' }), 'INVALID', /no content cache/);
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: c.id }, 'a refused write changes nothing');
      await refused(state.setSettings('', { contentCacheUUID: null }), 'INVALID', /user name/);
      await refused(state.setSettings('u'.repeat(256), { contentCacheUUID: null }), 'INVALID', /user name/);
      assert.deepEqual(await state.setSettings('alice', { contentCacheUUID: null }), { contentCacheUUID: null });
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: null });
    });

    it('sets and clears the default cache', async (t) => {
      const state = await open(t);
      const c = await state.create({ name: 'us', host: 'http://us' });
      assert.equal(await state.getDefaultCache(), undefined);
      await state.setDefaultCache(c.id);
      assert.deepEqual(await state.getDefaultCache(), c);
      await refused(state.setDefaultCache(MISSING), 'INVALID');
      await refused(state.setDefaultCache('x'), 'INVALID');
      assert.deepEqual(await state.getDefaultCache(), c);
      await state.setDefaultCache(null);
      assert.equal(await state.getDefaultCache(), undefined);
      await state.setDefaultCache(null);
    });

    it('sets, replaces, lists and deletes namespace rules', async (t) => {
      const state = await open(t);
      const a = await state.create({ name: 'a', host: 'http://a' });
      const b = await state.create({ name: 'b', host: 'http://b' });
      assert.deepEqual(await state.setNamespaceRule({ namespace: 'team/sub', cacheId: a.id }), { namespace: 'team/sub', cacheId: a.id });
      await state.setNamespaceRule({ namespace: 'team', cacheId: a.id });
      assert.deepEqual(await state.setNamespaceRule({ namespace: 'team', cacheId: b.id.toUpperCase() }), { namespace: 'team', cacheId: b.id });
      assert.deepEqual(await state.listNamespaceRules(), [
        { namespace: 'team', cacheId: b.id },
        { namespace: 'team/sub', cacheId: a.id },
      ]);
      for (const namespace of ['', 'Team', 'team/', '/team', 'team//sub', 'a b']) {
        await refused(state.setNamespaceRule({ namespace, cacheId: a.id }), 'INVALID', /namespace/);
      }
      await refused(state.setNamespaceRule({ namespace: 'other', cacheId: MISSING }), 'INVALID', /no content cache/);
      assert.equal(await state.deleteNamespaceRule('team'), true);
      assert.equal(await state.deleteNamespaceRule('team'), false);
      assert.deepEqual(await state.listNamespaceRules(), [{ namespace: 'team/sub', cacheId: a.id }]);
    });

    it('sets network rules in canonical form, and deletes them by any spelling', async (t) => {
      const state = await open(t);
      const a = await state.create({ name: 'a', host: 'http://a' });
      const b = await state.create({ name: 'b', host: 'http://b' });
      assert.deepEqual(await state.setNetworkRule({ cidr: '10.1.2.3/8', cacheId: a.id }), { cidr: '10.0.0.0/8', cacheId: a.id });
      assert.deepEqual(await state.setNetworkRule({ cidr: '10.0.0.0/8', cacheId: b.id }), { cidr: '10.0.0.0/8', cacheId: b.id }, 'replaced, not duplicated');
      assert.equal((await state.setNetworkRule({ cidr: '2001:DB8:0:0::1/32', cacheId: a.id })).cidr, '2001:db8::/32');
      assert.equal((await state.setNetworkRule({ cidr: '::ffff:192.168.0.0/112', cacheId: a.id })).cidr, '192.168.0.0/16');
      assert.equal((await state.setNetworkRule({ cidr: '172.16.0.1', cacheId: a.id })).cidr, '172.16.0.1/32');
      assert.deepEqual((await state.listNetworkRules()).map((r) => r.cidr).sort(), ['10.0.0.0/8', '172.16.0.1/32', '192.168.0.0/16', '2001:db8::/32']);
      for (const cidr of ['', '10.0.0.0/33', '10.0.0/8', '010.0.0.0/8', '10.0.0.0/08', 'fe80::1%eth0/64', '::/129', 'x/8']) {
        await refused(state.setNetworkRule({ cidr, cacheId: a.id }), 'INVALID', /cidr/);
      }
      await refused(state.setNetworkRule({ cidr: '10.0.0.0/8', cacheId: MISSING }), 'INVALID', /no content cache/);
      assert.equal(await state.deleteNetworkRule('10.9.9.9/8'), true);
      assert.equal(await state.deleteNetworkRule('10.0.0.0/8'), false);
      assert.equal(await state.deleteNetworkRule('2001:0db8::/32'), true);
      assert.equal(await state.deleteNetworkRule('garbage'), false);
    });

    it('records health: failures counted, last success kept, older reports ignored', async (t) => {
      const state = await open(t);
      const c = await state.create({ name: 'us', host: 'http://us' });
      assert.deepEqual(await state.health(c.id), {
        cacheId: c.id, status: 'unknown', checkedAt: null, latencyMs: null, error: null, lastOkAt: null, consecutiveFailures: 0,
      });
      const t0 = new Date('2030-01-01T00:00:00.000Z');
      const at = (s: number) => new Date(t0.getTime() + s * 1000);
      assert.equal(await state.recordHealth(c.id, { ok: true, latencyMs: 12.5, at: at(0) }), true);
      assert.deepEqual(await state.health(c.id), {
        cacheId: c.id, status: 'healthy', checkedAt: at(0), latencyMs: 12.5, error: null, lastOkAt: at(0), consecutiveFailures: 0,
      });
      await state.recordHealth(c.id, { ok: false, latencyMs: 5000, error: 'connect ECONNREFUSED', at: at(10) });
      await state.recordHealth(c.id, { ok: false, latencyMs: 5000, at: at(20) });
      assert.deepEqual(await state.health(c.id), {
        cacheId: c.id, status: 'unhealthy', checkedAt: at(20), latencyMs: 5000, error: 'check failed', lastOkAt: at(0), consecutiveFailures: 2,
      });
      await state.recordHealth(c.id, { ok: true, latencyMs: 1, at: at(5) });
      assert.equal((await state.health(c.id))?.checkedAt?.getTime(), at(20).getTime(), 'a late report of an older check changes nothing');
      await state.recordHealth(c.id, { ok: true, latencyMs: 3, error: 'ignored when ok', at: at(30) });
      assert.deepEqual(await state.health(c.id), {
        cacheId: c.id, status: 'healthy', checkedAt: at(30), latencyMs: 3, error: null, lastOkAt: at(30), consecutiveFailures: 0,
      });
      await state.recordHealth(c.id, { ok: false, latencyMs: 1, error: 'e'.repeat(5000), at: at(40) });
      assert.equal((await state.health(c.id))?.error?.length, 1024, 'long errors are cut');

      await refused(state.recordHealth(c.id, { ok: true, latencyMs: -1, at: at(50) }), 'INVALID', /latencyMs/);
      await refused(state.recordHealth(c.id, { ok: true, latencyMs: Number.NaN, at: at(50) }), 'INVALID', /latencyMs/);
      await refused(state.recordHealth(c.id, { ok: true, latencyMs: 1, at: new Date(Number.NaN) }), 'INVALID', /date/);
      assert.equal(await state.recordHealth(MISSING, { ok: true, latencyMs: 1, at: at(50) }), false);
      assert.equal(await state.recordHealth('nope', { ok: true, latencyMs: 1, at: at(50) }), false);
      assert.equal(await state.health(MISSING), undefined);
    });

    it('deleting a cache clears every reference to it, and only to it', async (t) => {
      const state = await open(t);
      const gone = await state.create({ name: 'gone', host: 'http://gone' });
      const kept = await state.create({ name: 'kept', host: 'http://kept' });
      await state.setSettings('alice', { contentCacheUUID: gone.id });
      await state.setSettings('bob', { contentCacheUUID: kept.id });
      await state.setDefaultCache(gone.id);
      await state.setNamespaceRule({ namespace: 'team', cacheId: gone.id });
      await state.setNamespaceRule({ namespace: 'other', cacheId: kept.id });
      await state.setNetworkRule({ cidr: '10.0.0.0/8', cacheId: gone.id });
      await state.setNetworkRule({ cidr: '::/0', cacheId: kept.id });
      await state.recordHealth(gone.id, { ok: true, latencyMs: 1, at: new Date() });

      assert.equal(await state.delete(gone.id), true);
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: null });
      assert.deepEqual(await state.getSettings('bob'), { contentCacheUUID: kept.id });
      assert.equal(await state.getDefaultCache(), undefined);
      assert.deepEqual(await state.listNamespaceRules(), [{ namespace: 'other', cacheId: kept.id }]);
      assert.deepEqual(await state.listNetworkRules(), [{ cidr: '::/0', cacheId: kept.id }]);
      assert.equal(await state.health(gone.id), undefined);

      // A new cache does not inherit anything from a deleted one.
      const fresh = await state.create({ name: 'gone', host: 'http://gone' });
      assert.notEqual(fresh.id, gone.id);
      assert.deepEqual(await state.getSettings('alice'), { contentCacheUUID: null });
    });
  });
}

describe('SqliteStateRepository migrations and persistence', () => {
  it('runs in WAL mode and migrates once, however often it opens', async () => {
    const file = await tempFile();
    for (let i = 0; i < 3; i++) {
      const state = new SqliteStateRepository(file);
      assert.equal(state.schemaVersion(), MIGRATIONS.length);
      await state.close();
    }
    const db = new Database(file);
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      const rows = db.prepare('SELECT version, name FROM schema_migrations').all();
      assert.equal(rows.length, MIGRATIONS.length);
      assert.deepEqual(migrate(db), [], 'migrating an up-to-date database applies nothing');
      assert.deepEqual(migrate(db), []);
    } finally {
      db.close();
    }
  });

  it('applies new migrations to an existing database, keeping its data', async () => {
    const file = await tempFile();
    const first = new SqliteStateRepository(file);
    const c = await first.create({ name: 'us', host: 'http://us' });
    await first.close();

    const next: Migration[] = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'test column', sql: 'ALTER TABLE content_caches ADD COLUMN note TEXT' }];
    const upgraded = new SqliteStateRepository(file, { migrations: next });
    assert.equal(upgraded.schemaVersion(), next.length);
    assert.deepEqual(await upgraded.get(c.id), c);
    await upgraded.close();
    const again = new SqliteStateRepository(file, { migrations: next });
    assert.equal(again.schemaVersion(), next.length, 'the new migration ran once');
    await again.close();

    assert.throws(() => new SqliteStateRepository(file), /schema version 2, newer than this Cascade knows \(1\)/);
  });

  it('refuses a migration list with gaps', () => {
    const bad: Migration[] = [{ version: 2, name: 'gap', sql: 'SELECT 1' }];
    assert.throws(() => new SqliteStateRepository(':memory:', { migrations: bad }), /version 2, expected 1/);
  });

  it('a failing migration leaves the database as it was', async () => {
    const file = await tempFile();
    const broken: Migration[] = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE x (a); SELECT * FROM no_such_table' }];
    assert.throws(() => new SqliteStateRepository(file, { migrations: broken }), /no such table/);
    const state = new SqliteStateRepository(file);
    assert.equal(state.schemaVersion(), MIGRATIONS.length);
    await state.close();
    const db = new Database(file);
    try {
      assert.equal(db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'x'").pluck().get(), 0, 'the partial migration was rolled back');
    } finally {
      db.close();
    }
  });

  it('keeps everything across a reopen', async () => {
    const file = await tempFile();
    const state = new SqliteStateRepository(file);
    const c = await state.create({ name: 'us', host: 'http://us:5000' });
    await state.setSettings('alice', { contentCacheUUID: c.id });
    await state.setDefaultCache(c.id);
    await state.setNamespaceRule({ namespace: 'team', cacheId: c.id });
    await state.setNetworkRule({ cidr: '10.0.0.0/8', cacheId: c.id });
    await state.recordHealth(c.id, { ok: true, latencyMs: 2, at: new Date('2030-01-01T00:00:00Z') });
    await state.close();

    const reopened = new SqliteStateRepository(file);
    try {
      assert.deepEqual(await reopened.list(), [c]);
      assert.deepEqual(await reopened.getSettings('alice'), { contentCacheUUID: c.id });
      assert.deepEqual(await reopened.getDefaultCache(), c);
      assert.deepEqual(await reopened.listNamespaceRules(), [{ namespace: 'team', cacheId: c.id }]);
      assert.deepEqual(await reopened.listNetworkRules(), [{ cidr: '10.0.0.0/8', cacheId: c.id }]);
      assert.equal((await reopened.health(c.id))?.status, 'healthy');
      // Foreign keys are a per-connection setting: the cascade must work on a reopened database too.
      await reopened.delete(c.id);
      assert.deepEqual(await reopened.getSettings('alice'), { contentCacheUUID: null });
      assert.deepEqual(await reopened.listNetworkRules(), []);
    } finally {
      await reopened.close();
    }
  });

  it('names the file when it cannot open it', () => {
    assert.throws(() => new SqliteStateRepository('/nonexistent-dir-cascade/state.db'), /cannot open the state database \/nonexistent-dir-cascade\/state\.db/);
  });
});
