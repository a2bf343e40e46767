/**
 * The web page's server side: the static files and their headers (`/`, `/ui/`), `GET /api/v0/accounts/me`,
 * the health answer with the checker's live figures, the cache tree route, and the health checker itself
 * (metrics parsing, the last error kept after recovery, caches served over https with a private CA).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, get as httpGet, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import pino from 'pino';
import { errorMapper } from '@cascade/registry-core';
import { makeCa } from '@cascade/testkit';
import { createApiRouter } from '../src/api/router.js';
import { cacheFigures, HealthChecker, parsePrometheusText } from '../src/health.js';
import { SqliteStateRepository } from '../src/state/sqlite.js';
import { createUiMiddleware, UI_CSP, UI_DIR } from '../src/web/ui.js';

const USERS: Record<string, string> = { admin: 'secret', bob: 'secret' };
const auth = (user: string) => `Basic ${Buffer.from(`${user}:${USERS[user] ?? 'wrong'}`).toString('base64')}`;
const silent = pino({ level: 'silent' });

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

describe('web page: static files', () => {
  let server: Server;
  let base: string;
  before(async () => {
    const app = new Koa();
    const ui = createUiMiddleware();
    app.use(async (ctx, next) => (ctx.path === '/' || ctx.path === '/ui' || ctx.path.startsWith('/ui/') ? ui(ctx, next) : next()));
    app.use((ctx) => {
      ctx.status = 418;
    });
    server = createHttpServer(app.callback());
    base = `http://${await listen(server)}`;
  });
  after(() => close(server));

  it('/ and /ui redirect to /ui/', async () => {
    for (const path of ['/', '/ui']) {
      const res = await fetch(`${base}${path}`, { redirect: 'manual' });
      assert.equal(res.status, 302, path);
      assert.equal(res.headers.get('location'), '/ui/');
      assert.equal(res.headers.get('content-security-policy'), UI_CSP);
    }
  });

  it('/ui/ is the page, with a strict CSP and nosniff; its files have their types', async () => {
    const res = await fetch(`${base}/ui/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.match(res.headers.get('content-security-policy') ?? '', /^default-src 'self';/);
    assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    const html = await res.text();
    assert.equal(html, readFileSync(`${UI_DIR}index.html`, 'utf8'));
    // Nothing from elsewhere, no inline script or style (the CSP would block them).
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
    assert.doesNotMatch(html, /<script>|<style|style="|\son[a-z]+="/i);
    for (const [file, type] of [['app.js', 'text/javascript; charset=utf-8'], ['style.css', 'text/css; charset=utf-8'], ['favicon.svg', 'image/svg+xml']] as const) {
      const r = await fetch(`${base}/ui/${file}`);
      assert.equal(r.status, 200, file);
      assert.equal(r.headers.get('content-type'), type, file);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      const text = await r.text();
      assert.doesNotMatch(text, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, `${file} loads nothing from elsewhere`);
    }
  });

  it('answers 304 to a matching ETag, 404 to unknown files and traversal, 405 to writes; HEAD has no body', async () => {
    const first = await fetch(`${base}/ui/app.js`);
    await first.arrayBuffer();
    const etag = first.headers.get('etag') ?? '';
    assert.ok(etag);
    assert.equal((await fetch(`${base}/ui/app.js`, { headers: { 'if-none-match': etag } })).status, 304);
    for (const path of ['/ui/nope.js', '/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/..%2fpackage.json', '/ui/sub/app.js', '/ui/.hidden']) {
      // node:http sends the path as it is (fetch would resolve the dot segments first).
      const res = await new Promise<IncomingMessage>((resolve, reject) => httpGet(`${base}/`, { path }, resolve).on('error', reject));
      const body = await new Promise<string>((resolve) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text));
      });
      assert.equal(res.statusCode, 404, path);
      assert.equal(body, 'not found\n');
    }
    const post = await fetch(`${base}/ui/`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await fetch(`${base}/ui/`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it('refuses a folder without index.html', () => {
    assert.throws(() => createUiMiddleware({ dir: new URL('.', import.meta.url).pathname }), /index\.html is missing/);
  });
});

describe('API: /accounts/me and live health', () => {
  let server: Server;
  let base: string;
  const state = new SqliteStateRepository(':memory:');
  let cacheId = '';
  before(async () => {
    const app = new Koa();
    app.use(errorMapper(silent));
    app.use(createApiRouter({
      state,
      isAdmin: (user) => user === 'admin',
      authenticate: async (ctx) => {
        const m = /^Basic (.+)$/.exec(ctx.get('authorization'));
        const [user, password] = Buffer.from(m?.[1] ?? '', 'base64').toString().split(':');
        return user && USERS[user] === password ? { user } : undefined;
      },
      liveHealth: (id) => ({
        hitRatio: id === cacheId ? 0.75 : null,
        diskBytes: 1234,
        storageFreeBytes: 10,
        storageCapacityBytes: 100,
        metricsAt: new Date('2030-01-01T00:00:01.000Z'),
        lastError: 'connect ECONNREFUSED',
        lastErrorAt: new Date('2029-12-31T23:59:00.000Z'),
      }),
      cacheTree: async (admin) => ({ admin }),
    }));
    server = createHttpServer(app.callback());
    base = `http://${await listen(server)}`;
    cacheId = (await state.create({ name: 'region-a', host: 'http://127.0.0.1:1' })).id;
  });
  after(async () => {
    await close(server);
    await state.close();
  });

  it('GET /api/v0/accounts/me answers the caller and whether they are an admin', async () => {
    const admin = await fetch(`${base}/api/v0/accounts/me`, { headers: { authorization: auth('admin') } });
    assert.equal(admin.status, 200);
    assert.equal(admin.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await admin.json(), { user: 'admin', admin: true });
    assert.deepEqual(await (await fetch(`${base}/api/v0/accounts/me`, { headers: { authorization: auth('bob') } })).json(), { user: 'bob', admin: false });
    const anonymous = await fetch(`${base}/api/v0/accounts/me`);
    assert.equal(anonymous.status, 401);
    assert.equal(((await anonymous.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
    const wrong = await fetch(`${base}/api/v0/accounts/me`, { headers: { authorization: `Basic ${Buffer.from('bob:nope').toString('base64')}` } });
    assert.equal(wrong.status, 401);
    const put = await fetch(`${base}/api/v0/accounts/me`, { method: 'PUT', headers: { authorization: auth('bob') } });
    assert.equal(put.status, 405);
    // A user named "me" still has settings.
    assert.equal((await fetch(`${base}/api/v0/accounts/me/settings`, { headers: { authorization: auth('admin') } })).status, 200);
  });

  it('the cache tree: any user, told whether an admin asks; 404 from a router without one', async () => {
    const tree = (user: string) => fetch(`${base}/api/v0/content_caches_tree`, { headers: { authorization: auth(user) } });
    assert.deepEqual(await (await tree('admin')).json(), { admin: true });
    const bob = await tree('bob');
    assert.equal(bob.status, 200);
    assert.equal(bob.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await bob.json(), { admin: false });
    assert.equal((await fetch(`${base}/api/v0/content_caches_tree`)).status, 401);
    const bare = new Koa();
    bare.use(errorMapper(silent));
    bare.use(createApiRouter({ state, isAdmin: () => true, authenticate: async () => ({ user: 'admin' }) }));
    const plain = createHttpServer(bare.callback());
    try {
      const res = await fetch(`http://${await listen(plain)}/api/v0/content_caches_tree`);
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NOT_FOUND');
    } finally {
      await close(plain);
    }
  });

  it('the health answer carries the checker\'s live figures', async () => {
    await state.recordHealth(cacheId, { ok: true, latencyMs: 3, at: new Date('2030-01-01T00:00:00.000Z') });
    const res = await fetch(`${base}/api/v0/content_caches/${cacheId}/health`, { headers: { authorization: auth('bob') } });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), {
      contentCacheUUID: cacheId,
      status: 'healthy',
      checkedAt: '2030-01-01T00:00:00.000Z',
      latencyMs: 3,
      error: null,
      lastOkAt: '2030-01-01T00:00:00.000Z',
      consecutiveFailures: 0,
      lastError: 'connect ECONNREFUSED',
      lastErrorAt: '2029-12-31T23:59:00.000Z',
      hitRatio: 0.75,
      diskBytes: 1234,
      storageFreeBytes: 10,
      storageCapacityBytes: 100,
      metricsAt: '2030-01-01T00:00:01.000Z',
    });
  });
});

describe('health checker: metrics', () => {
  const METRICS = [
    '# HELP cascade_cache_hit_ratio Hits divided by hits and misses.',
    '# TYPE cascade_cache_hit_ratio gauge',
    'cascade_cache_hit_ratio{role="registry"} 0.25',
    'cascade_cache_blob_requests_total{result="hit",role="registry"} 1',
    'cascade_cache_blob_requests_total{result="miss",role="registry"} 3',
    'cascade_cache_disk_bytes{role="registry"} 4096',
    'cascade_storage_free_bytes{role="registry"} 1e9',
    'cascade_storage_capacity_bytes{role="registry"} 2e9 1700000000000',
    'weird_label{a="x\\"y,z}",b="\\\\"} +Inf',
    'not a metric line',
  ].join('\n');

  it('parses the text format: names, labels with escapes, values, timestamps', () => {
    const parsed = parsePrometheusText(METRICS);
    assert.deepEqual(parsed.get('cascade_cache_blob_requests_total'), [
      { labels: { result: 'hit', role: 'registry' }, value: 1 },
      { labels: { result: 'miss', role: 'registry' }, value: 3 },
    ]);
    assert.deepEqual(parsed.get('cascade_storage_capacity_bytes'), [{ labels: { role: 'registry' }, value: 2e9 }]);
    assert.deepEqual(parsed.get('weird_label'), [{ labels: { a: 'x"y,z}', b: '\\' }, value: Infinity }]);
    assert.equal(parsed.has('not'), false);
  });

  it('figures: hit ratio from the counters, disk and storage; null for what is missing or no read yet', () => {
    assert.deepEqual(cacheFigures(parsePrometheusText(METRICS)), { hitRatio: 0.25, diskBytes: 4096, storageFreeBytes: 1e9, storageCapacityBytes: 2e9 });
    assert.deepEqual(cacheFigures(parsePrometheusText('cascade_cache_hit_ratio 0.5\n')), { hitRatio: 0.5, diskBytes: null, storageFreeBytes: null, storageCapacityBytes: null });
    const noReads = 'cascade_cache_hit_ratio 0\ncascade_cache_blob_requests_total{result="hit"} 0\ncascade_cache_blob_requests_total{result="miss"} 0\n';
    assert.equal(cacheFigures(parsePrometheusText(noReads)).hitRatio, null);
    assert.deepEqual(cacheFigures(new Map()), { hitRatio: null, diskBytes: null, storageFreeBytes: null, storageCapacityBytes: null });
  });
});

describe('health checker: caches', () => {
  const state = new SqliteStateRepository(':memory:');
  after(() => state.close());
  let up = true;
  const metrics = 'cascade_cache_blob_requests_total{result="hit"} 9\ncascade_cache_blob_requests_total{result="miss"} 1\ncascade_cache_disk_bytes 2048\n';
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    if (!up) {
      req.socket.destroy();
      return;
    }
    if (req.url === '/v2/') {
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="grant"' }).end('{}');
      return;
    }
    if (req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(metrics);
      return;
    }
    res.writeHead(404).end();
  };

  it('records latency and metrics; keeps the last error after the cache recovers; n/a without /metrics', async () => {
    const cache = createHttpServer(handler);
    const bare = createHttpServer((req, res) => res.writeHead(req.url === '/v2/' ? 200 : 404).end());
    const host = await listen(cache);
    const bareHost = await listen(bare);
    try {
      const a = await state.create({ name: 'a', host: `http://${host}` });
      const b = await state.create({ name: 'b', host: `http://${bareHost}` });
      const checker = new HealthChecker({ state, intervalMs: 60_000, logger: silent, timeoutMs: 2000 });
      assert.equal(checker.liveHealth(a.id).hitRatio, null, 'nothing before the first check');
      await checker.checkAll();
      assert.equal(checker.isDown(a.id), false);
      assert.equal((await state.health(a.id))?.status, 'healthy');
      let live = checker.liveHealth(a.id);
      assert.equal(live.hitRatio, 0.9);
      assert.equal(live.diskBytes, 2048);
      assert.equal(live.lastError, null);
      assert.ok(live.metricsAt instanceof Date);
      assert.deepEqual({ ...checker.liveHealth(b.id), metricsAt: null }, { hitRatio: null, diskBytes: null, storageFreeBytes: null, storageCapacityBytes: null, metricsAt: null, lastError: null, lastErrorAt: null });

      up = false;
      await checker.checkAll();
      assert.equal(checker.isDown(a.id), true);
      live = checker.liveHealth(a.id);
      assert.ok(live.lastError && live.lastErrorAt, 'the failure is kept');
      assert.equal(live.hitRatio, 0.9, 'the last figures stay until the next answer');
      up = true;
      await checker.checkAll();
      assert.equal(checker.isDown(a.id), false);
      assert.equal(checker.liveHealth(a.id).lastError, live.lastError, 'the last error stays after recovery');

      await state.delete(a.id);
      await checker.checkAll();
      assert.equal(checker.liveHealth(a.id).lastError, null, 'a deleted cache is forgotten');
      checker.stop();
    } finally {
      await close(cache);
      await close(bare);
      for (const c of await state.list()) await state.delete(c.id);
    }
  });

  it('a cache over https with a private CA is up when the CA is given (origin.cas), down otherwise', async () => {
    const ca = makeCa('Test CA');
    const leaf = ca.issue({ commonName: 'cache', ips: ['127.0.0.1'], dns: [] });
    const server = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, handler);
    const host = await listen(server as unknown as Server);
    try {
      const cache = await state.create({ name: 'tls', host: `https://${host}` });
      const trusting = new HealthChecker({ state, intervalMs: 60_000, logger: silent, timeoutMs: 2000, ca: [ca.certPem] });
      await trusting.checkAll();
      assert.equal(trusting.isDown(cache.id), false, (await state.health(cache.id))?.error ?? '');
      assert.equal(trusting.liveHealth(cache.id).hitRatio, 0.9);
      trusting.stop();
      const plain = new HealthChecker({ state, intervalMs: 60_000, logger: silent, timeoutMs: 2000 });
      await plain.checkAll();
      assert.equal(plain.isDown(cache.id), true);
      assert.match(plain.liveHealth(cache.id).lastError ?? '', /certificate/i);
      plain.stop();
    } finally {
      await close(server as unknown as Server);
    }
  });
});
