/**
 * The server's state in PostgreSQL (Debian's `postgresql`, a throwaway cluster per file): the state
 * conformance suite on a real server, migrations under concurrency and against a newer schema, a clear
 * error for an unreachable database, and two `cascade server` processes sharing one database: caches
 * registered and choices saved through one are used by the other, for a real pull with skopeo.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { POSTGRES_MIGRATIONS, PostgresStateRepository, type Migration } from '@cascade/server';
import { runStateConformance } from '@cascade/server/conformance';
import { CASCADE_BIN, testScope, type CascadeProcess } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { freePort, run, skopeo } from '../lib/peers.js';
import { startPostgres, type Postgres } from '../lib/postgres.js';
import { api, basic, startServer, startStack, USERS } from '../lib/stack.js';

let server: Postgres;
let databases = 0;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A new, empty database on the test server. */
const freshDatabase = () => server.createDatabase(`cascade_${++databases}`);

runStateConformance('PostgresStateRepository', async () => PostgresStateRepository.open({ url: await freshDatabase() }));

describe('PostgresStateRepository migrations and connection', () => {
  it('servers opening one new database together apply each migration once', async (t) => {
    const url = await freshDatabase();
    const states = await Promise.all(Array.from({ length: 4 }, () => PostgresStateRepository.open({ url })));
    t.after(() => Promise.all(states.map((s) => s.close())));
    for (const s of states) assert.equal(await s.schemaVersion(), POSTGRES_MIGRATIONS.length);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    t.after(() => client.end());
    const rows = (await client.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).rows;
    assert.deepEqual(rows.map((r) => r.version), POSTGRES_MIGRATIONS.map((m) => m.version));
  });

  it('upgrades with a new migration, refuses a database migrated by a newer Cascade, and rolls back a failed one', async (t) => {
    const url = await freshDatabase();
    const first = await PostgresStateRepository.open({ url });
    const cache = await first.create({ name: 'kept', host: 'http://10.0.0.1:5000' });
    await first.close();
    const next: Migration[] = [...POSTGRES_MIGRATIONS, { version: POSTGRES_MIGRATIONS.length + 1, name: 'a note per cache', sql: 'ALTER TABLE content_caches ADD COLUMN note TEXT' }];
    const upgraded = await PostgresStateRepository.open({ url, migrations: next });
    assert.equal(await upgraded.schemaVersion(), next.length);
    assert.deepEqual(await upgraded.get(cache.id), cache, 'the data survives the upgrade');
    await upgraded.close();
    await assert.rejects(PostgresStateRepository.open({ url }), new RegExp(`schema version ${next.length}, newer than this Cascade knows \\(${POSTGRES_MIGRATIONS.length}\\): upgrade Cascade`));

    const fresh = await freshDatabase();
    const broken: Migration[] = [...POSTGRES_MIGRATIONS, { version: POSTGRES_MIGRATIONS.length + 1, name: 'broken', sql: 'ALTER TABLE no_such_table ADD COLUMN x TEXT' }];
    await assert.rejects(PostgresStateRepository.open({ url: fresh, migrations: broken }), /no_such_table/);
    const state = await PostgresStateRepository.open({ url: fresh });
    t.after(() => state.close());
    assert.equal(await state.schemaVersion(), POSTGRES_MIGRATIONS.length, 'nothing of the failed run was kept: the valid migrations applied now');
  });

  it('an unreachable database is a clear error that names it, without its password', async () => {
    const port = await freePort();
    await assert.rejects(PostgresStateRepository.open({ url: `postgres://cascade:s3cret@127.0.0.1:${port}/cascade`, connectTimeoutMs: 2000 }), (err: Error) => {
      assert.match(err.message, new RegExp(`^cannot connect to the state database postgres://cascade:\\*\\*\\*@127\\.0\\.0\\.1:${port}/cascade: `));
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
  });
});

describe('two servers sharing one PostgreSQL database', () => {
  it('a cache registered and a choice saved through one server are used by the other, for a real pull', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-server-pg-');
    const database = { postgres: await freshDatabase() };
    // Both keep their grant keys in the database too: no folder is shared.
    const stack = await startStack(dir, defer, { database, keystore: 'database' });
    const one = stack.server;
    const two: CascadeProcess = await startServer(join(dir, 'two'), {
      origin: stack.origin.url,
      password: USERS.svc,
      issuer: 'cascade-test',
      healthInterval: '1s',
      database,
      keystore: 'database',
    });
    defer(() => two.stop());
    assert.ok(two.logs.some((l) => l.msg === 'state database ready' && l.database === 'postgres'), 'the second server uses PostgreSQL');
    const kids = async (server: CascadeProcess) => ((await (await fetch(`${server.url}/api/v0/keys`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
    assert.deepEqual(await kids(two), await kids(one), 'one key, made by the first server, published by both');
    assert.equal((await kids(one)).length, 1);
    assert.equal(existsSync(join(dir, 'keys')) || existsSync(join(dir, 'two', 'keys')), false, 'no key folder');

    // Alice registers the caches through server one; bob picks region-b through server two.
    const b = await api(one, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-b', host: stack.regionB.url });
    assert.equal(b.status, 201, JSON.stringify(b.json));
    const regionB = (b.json as { id: string }).id;
    assert.equal((await api(one, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-a', host: stack.regionA.url })).status, 201);
    const listed = await api(two, 'GET', '/api/v0/content_caches', 'bob');
    assert.deepEqual((listed.json as { name: string }[]).map((c) => c.name), ['region-a', 'region-b'], 'server two lists what server one registered');
    assert.equal((await api(two, 'PATCH', '/api/v0/accounts/bob/settings', 'bob', { contentCacheUUID: regionB })).status, 200);
    assert.deepEqual((await api(one, 'GET', '/api/v0/accounts/bob/settings', 'bob')).json, { contentCacheUUID: regionB }, 'server one reads the choice saved through two');
    assert.equal((await api(two, 'POST', '/api/v0/content_caches', 'alice', { name: 'REGION-B', host: 'http://127.0.0.1:1' })).status, 409, 'names stay unique across servers');

    // Alice pushes through server one; bob pulls through server two, which redirects him to region-b with
    // a grant signed by the keys both servers share.
    const image = await makeOciImage(join(dir, 'src'), { layers: [900_000, 64_000], tag: 'v1', seed: 'server-postgres' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${one.host}/team/app:v1`]);
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${two.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob'), 'v1', image);
    const blobs = image.blobs.map((x) => x.digest).filter((d) => d !== image.digest);
    const redirected = two.requests().filter((r) => r.redirectedTo === 'region-b').length;
    assert.ok(redirected >= blobs.length, `server two redirected bob's blobs to region-b (${redirected})`);
    const atB = new Set(stack.regionB.requests().filter((r) => r.method === 'GET' && r.status === 200).map((r) => String(r.path).split('/blobs/')[1]));
    for (const d of blobs) assert.ok(atB.has(d), `region-b served ${d}`);

    // A cache deleted through server two is gone for server one, and so is bob's choice.
    assert.equal((await api(two, 'DELETE', `/api/v0/content_caches/${regionB}`, 'alice')).status, 204);
    assert.deepEqual((await api(one, 'GET', '/api/v0/accounts/bob/settings', 'bob')).json, { contentCacheUUID: null });
    assert.equal((await api(one, 'GET', `/api/v0/content_caches/${regionB}`, 'alice')).status, 404);

    // cascade doctor on server two's config: the PostgreSQL state read (without changing it), the cache left.
    const doctor = await run(process.execPath, [CASCADE_BIN, 'doctor', join(dir, 'two', 'server.yml')], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
    assert.match(doctor.stdout, new RegExp(`^ok {4}database postgres://cascade@127\\.0\\.0\\.1:\\d+/cascade_\\d+: schema version ${POSTGRES_MIGRATIONS.length}, 1 cache registered, 1 grant key`, 'm'));
    assert.match(doctor.stdout, /^ok {4}cache region-a http:\/\/127\.0\.0\.1:\d+: GET \/v2\/ → 401/m);

    const logs = [one, two].flatMap((p) => [...p.text, ...p.logs.map((l) => JSON.stringify(l))]).join('\n');
    for (const secret of Object.values(USERS)) assert.ok(!logs.includes(secret), `password ${secret} not logged`);
  });

  it('pulls go on while the database is down: blobs from the server, grant fills checked against the caches last read, /ready says why', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-server-pg-down-');
    const own = await startPostgres(); // this test stops its database
    defer(() => own.stop());
    const stack = await startStack(dir, defer, { database: { postgres: own.url() } });
    const { server } = stack;
    const b = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-b', host: stack.regionB.url });
    assert.equal((await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-a', host: stack.regionA.url })).status, 201);
    assert.equal((await api(server, 'PATCH', '/api/v0/accounts/bob/settings', 'bob', { contentCacheUUID: (b.json as { id: string }).id })).status, 200);
    const image = await makeOciImage(join(dir, 'src'), { layers: [300_000, 200_000], tag: 'v1', seed: 'server-postgres-down' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${server.host}/team/app:v1`]);
    const [first, second] = image.blobs.map((x) => x.digest).filter((d) => d !== image.digest);
    const blob = (digest: string) => fetch(`${server.url}/v2/team/app/blobs/${digest}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    // Up: redirected to region-b; a grant taken now is used after the database is gone.
    const redirect = await blob(first!);
    assert.equal(redirect.status, 307);
    const location = redirect.headers.get('location') ?? '';
    assert.ok(location.startsWith(stack.regionB.url));
    assert.equal((await fetch(`${server.url}/ready`)).status, 200);

    await own.stop();
    // A few health-check rounds (every second) without the database.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(server.child.exitCode, null, `the server keeps running:\n${server.text.slice(-10).join('\n')}`);
    assert.ok(server.logs.some((l) => l.msg === 'health checks paused: the state database cannot be read'));
    const ready = await fetch(`${server.url}/ready`);
    assert.equal(ready.status, 503, 'not ready without its database');
    assert.match(await ready.text(), /database/);
    const direct = await blob(second!);
    assert.equal(direct.status, 200, 'no redirect without the state, but the blob is served');
    assert.equal(sha256(Buffer.from(await direct.arrayBuffer())), second);
    // region-b has not got the first blob: its fill through region-a reaches the server with the grant.
    const filled = await fetch(location);
    assert.equal(filled.status, 200, 'a grant fill is checked against the caches the server last read');
    assert.equal(sha256(Buffer.from(await filled.arrayBuffer())), first);
    assert.ok(server.logs.some((l) => l.msg === 'state database unavailable: serving blobs from the server, without redirects'), 'the server says why it does not redirect');
    assert.equal((await api(server, 'GET', '/api/v0/content_caches', 'alice')).status, 500, 'the API cannot answer without its database');
    assert.equal(server.child.exitCode, null, 'the server is still running');
  });
});
