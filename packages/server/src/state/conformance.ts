/**
 * The behaviour every {@link StateRepository} must have, as `node:test` tests: content caches, settings, the
 * default, namespace and network rules, warm rules, health, the cascade of a cache delete, and grant keys. It registers tests, so
 * it is imported only from tests (package export `./conformance`): the SQLite repository's unit tests and
 * the PostgreSQL end-to-end test run it.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { StateError, type StateRepository } from './repository.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const MISSING = '00000000-0000-4000-8000-000000000000';

/** Asserts `promise` rejects with a StateError of `kind` whose message matches `message`. */
async function refused(promise: Promise<unknown>, kind: StateError['kind'], message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StateError, `expected a StateError, got ${String(err)}`);
    assert.equal(err.kind, kind);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** Registers the conformance tests under `name`; `open` gives each test a new, empty repository. */
export function runStateConformance(name: string, open: () => Promise<StateRepository>): void {
  describe(name, () => {
    async function openState(t: TestContext): Promise<StateRepository> {
      const state = await open();
      t.after(() => state.close());
      return state;
    }

    it('creates, lists, gets, updates and deletes content caches', async (t) => {
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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
      const state = await openState(t);
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

    it('sets, replaces, lists and deletes warm rules; a deleted cache leaves them', async (t) => {
      const state = await openState(t);
      const [a, b] = [await state.create({ name: 'a', host: 'http://a' }), await state.create({ name: 'b', host: 'http://b' })];
      const both = [a.id, b.id].sort();
      assert.deepEqual(await state.listWarmRules(), []);
      assert.deepEqual(await state.setWarmRule({ namespace: 'team/', cacheIds: [b.id.toUpperCase(), a.id, b.id] }), { namespace: 'team', cacheIds: both }, 'a trailing slash, case and duplicates are normalized');
      await state.setWarmRule({ namespace: 'team/sub', cacheIds: [a.id] });
      assert.deepEqual(await state.listWarmRules(), [
        { namespace: 'team', cacheIds: both },
        { namespace: 'team/sub', cacheIds: [a.id] },
      ]);
      assert.deepEqual(await state.setWarmRule({ namespace: 'team/sub', cacheIds: [b.id] }), { namespace: 'team/sub', cacheIds: [b.id] }, 'replaced as a whole');
      for (const namespace of ['', 'Team', '/team', 'team//', 'a b']) await refused(state.setWarmRule({ namespace, cacheIds: [a.id] }), 'INVALID', /namespace/);
      await refused(state.setWarmRule({ namespace: 'x', cacheIds: [] }), 'INVALID', /at least one/);
      await refused(state.setWarmRule({ namespace: 'x', cacheIds: ['nope'] }), 'INVALID', /no content cache/);
      // A cache that does not exist refuses the whole rule, and leaves the old one as it was.
      await refused(state.setWarmRule({ namespace: 'team', cacheIds: [a.id, MISSING] }), 'INVALID', /no content cache/);
      assert.deepEqual((await state.listWarmRules())[0], { namespace: 'team', cacheIds: both });

      assert.equal(await state.delete(b.id), true);
      assert.deepEqual(await state.listWarmRules(), [{ namespace: 'team', cacheIds: [a.id] }], 'the deleted cache left every rule; a rule left empty is gone');
      assert.equal(await state.deleteWarmRule('team/'), true);
      assert.equal(await state.deleteWarmRule('team'), false);
      assert.equal(await state.deleteWarmRule('Not Valid'), false);
      assert.deepEqual(await state.listWarmRules(), []);
    });

    it('keeps grant keys: added once per kid, listed oldest first, deleted', async (t) => {
      const state = await openState(t);
      assert.deepEqual(await state.listGrantKeys(), []);
      const a = { kid: 'kid-a', pem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', createdAt: Date.UTC(2030, 0, 2) };
      const b = { kid: 'kid-b', pem: '-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n', createdAt: Date.UTC(2030, 0, 1) };
      await state.addGrantKey(a);
      await state.addGrantKey(b);
      await state.addGrantKey({ ...a, pem: 'another', createdAt: 1 });
      assert.deepEqual(await state.listGrantKeys(), [b, a], 'oldest first; a kid is stored once, as first added');
      assert.equal(await state.deleteGrantKey('kid-b'), true);
      assert.equal(await state.deleteGrantKey('kid-b'), false);
      assert.deepEqual(await state.listGrantKeys(), [a]);
    });
  });
}
