/**
 * The SQLite state repository, in memory and in a file: the conformance suite (src/state/conformance.ts:
 * content caches, settings, default, rules, health, the cascade of a cache delete), then migrations and
 * persistence across reopen.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { runStateConformance } from '../src/state/conformance.js';
import { migrate, MIGRATIONS, SqliteStateRepository, type Migration } from '../src/state/sqlite.js';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function tempFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cascade-state-'));
  dirs.push(dir);
  return join(dir, 'state.db');
}

const backends: { name: string; open: () => Promise<SqliteStateRepository> }[] = [
  { name: 'in memory', open: async () => new SqliteStateRepository(':memory:') },
  { name: 'in a file', open: async () => new SqliteStateRepository(await tempFile()) },
];

for (const backend of backends) runStateConformance(`SqliteStateRepository ${backend.name}`, backend.open);

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

    assert.throws(() => new SqliteStateRepository(file), new RegExp(`schema version ${next.length}, newer than this Cascade knows \\(${MIGRATIONS.length}\\)`));
  });

  it("upgrades a database of the first schema (before grant keys) to today's, keeping its caches", async () => {
    const file = await tempFile();
    // What the Cascade of the first schema left: its migration, and a cache.
    const old = new Database(file);
    migrate(old, MIGRATIONS.slice(0, 1));
    const c = { id: '6b1f0c59-5f0e-4f5c-9d57-4b0f1d2b6a10', name: 'us', host: 'http://us' };
    old.prepare('INSERT INTO content_caches (id, name, name_key, host) VALUES (?, ?, ?, ?)').run(c.id, c.name, c.name, c.host);
    old.close();
    const now = new SqliteStateRepository(file);
    assert.equal(now.schemaVersion(), MIGRATIONS.length);
    assert.deepEqual(await now.list(), [c]);
    await now.addGrantKey({ kid: 'k', pem: 'p', createdAt: 1 });
    assert.deepEqual(await now.listGrantKeys(), [{ kid: 'k', pem: 'p', createdAt: 1 }]);
    await now.close();
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
