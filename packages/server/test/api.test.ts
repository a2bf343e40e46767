/**
 * The `/api/v0` API over real HTTP on port 0, against a SQLite file and an in-memory database: every
 * endpoint and every status it answers, plus the check that docs/server-api.md documents every error code.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import Koa from 'koa';
import { pino, type Logger } from 'pino';
import { errorMapper } from '@cascade/registry-core';
import { API_ERROR_CODES, ApiError, type ApiErrorCode } from '../src/api/errors.js';
import { API_PREFIX, API_RESOURCES, createApiRouter, type ApiRouterOptions } from '../src/api/router.js';
import type { StateRepository } from '../src/state/repository.js';
import { SqliteStateRepository } from '../src/state/sqlite.js';
import { EventsTokens } from '../src/warm/events.js';
import { WarmService } from '../src/warm/service.js';
import { Warmer } from '../src/warm/warmer.js';

const USERS: Record<string, string> = { admin: 'secret', alice: 'secret', bob: 'secret' };
const MISSING = '00000000-0000-4000-8000-000000000000';

/** The fake origin: Basic credentials checked against {@link USERS}. */
async function basicAuth(ctx: Koa.Context): Promise<{ user: string } | undefined> {
  const m = /^Basic (.+)$/i.exec(ctx.get('authorization'));
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const user = decoded.slice(0, colon);
  return colon > 0 && USERS[user] === decoded.slice(colon + 1) ? { user } : undefined;
}

interface Api {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves the API router on the HTTP kit's error mapper, as the server does (and a stand-in for the rest of
 * the server after it), on 127.0.0.1:0.
 */
async function serve(options: Partial<ApiRouterOptions> & { state: StateRepository; logger?: Logger }): Promise<Api> {
  const app = new Koa();
  const { logger = pino({ level: 'silent' }), ...apiOptions } = options;
  app.use(errorMapper(logger));
  app.use(createApiRouter({ isAdmin: (user) => user === 'admin', authenticate: basicAuth, ...apiOptions }));
  app.use((ctx) => {
    ctx.status = 418;
    ctx.body = 'not the api';
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Reply {
  status: number;
  headers: Headers;
  /** The parsed JSON body, or undefined when there is none. */
  body: unknown;
}

interface CallOptions {
  /** Who calls (password from USERS); undefined for no credentials. */
  as?: string | undefined;
  /** A value sent as JSON, or a string sent as it is. */
  json?: unknown;
  headers?: Record<string, string>;
}

async function call(api: Api, method: string, path: string, options: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.as !== undefined) headers['authorization'] = `Basic ${Buffer.from(`${options.as}:${USERS[options.as] ?? 'wrong'}`).toString('base64')}`;
  let body: string | undefined;
  if (options.json !== undefined) {
    body = typeof options.json === 'string' ? options.json : JSON.stringify(options.json);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(`${api.url}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text };
}

/** Asserts an error reply: status, the envelope, and its one code. */
function assertError(reply: Reply, status: number, code: ApiErrorCode, message?: RegExp): void {
  assert.equal(reply.status, status, `expected ${status} ${code}, got ${reply.status} ${JSON.stringify(reply.body)}`);
  assert.match(reply.headers.get('content-type') ?? '', /^application\/json/);
  const body = reply.body as { errors: { code: string; message: string }[] };
  assert.equal(body.errors.length, 1);
  assert.equal(body.errors[0]?.code, code);
  assert.equal(typeof body.errors[0]?.message, 'string');
  if (message) assert.match(body.errors[0]?.message ?? '', message);
}

function idOf(reply: Reply): string {
  const id = (reply.body as { id?: unknown }).id;
  assert.equal(typeof id, 'string');
  return id as string;
}

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function tempDb(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cascade-api-'));
  dirs.push(dir);
  return join(dir, 'state.db');
}

const backends: { name: string; file: () => Promise<string> }[] = [
  { name: 'SQLite file', file: tempDb },
  { name: 'SQLite in memory', file: async () => ':memory:' },
];

for (const backend of backends) {
  describe(`/api/v0 over HTTP (${backend.name})`, () => {
    let state: SqliteStateRepository;
    let api: Api;
    before(async () => {
      state = new SqliteStateRepository(await backend.file());
      api = await serve({ state });
    });
    after(async () => {
      await api.close();
      await state.close();
    });

    /** Creates a cache through the API as admin and answers its id. */
    async function createCache(name: string, host = `http://${name}:5000`): Promise<string> {
      const reply = await call(api, 'POST', '/api/v0/content_caches', { as: 'admin', json: { name, host } });
      assert.equal(reply.status, 201, JSON.stringify(reply.body));
      return idOf(reply);
    }

    describe('authentication and routing', () => {
      it('401 UNAUTHORIZED without credentials or with wrong ones, with a challenge', async () => {
        for (const as of [undefined, 'mallory']) {
          const reply = await call(api, 'GET', '/api/v0/content_caches', { as });
          assertError(reply, 401, 'UNAUTHORIZED');
          assert.equal(reply.headers.get('www-authenticate'), 'Basic realm="cascade"');
        }
        assertError(await call(api, 'POST', '/api/v0/content_caches', { json: { name: 'x', host: 'http://x' } }), 401, 'UNAUTHORIZED');
        assertError(await call(api, 'GET', '/api/v0/accounts/alice/settings'), 401, 'UNAUTHORIZED');
      });

      it('404 NOT_FOUND for unknown paths under the prefix; other paths fall through', async () => {
        for (const path of ['/api/v0', '/api/v0/', '/api/v0/repositories', '/api/v0/content_caches/x/y/z']) {
          assertError(await call(api, 'GET', path, { as: 'alice' }), 404, 'NOT_FOUND');
        }
        assert.equal((await call(api, 'GET', '/api/v1/content_caches', { as: 'alice' })).status, 418);
        assert.equal((await call(api, 'GET', '/api/v0x', { as: 'alice' })).status, 418);
      });

      it('405 METHOD_NOT_ALLOWED with Allow; OPTIONS lists the methods; HEAD is GET without a body', async () => {
        // @koa/router's allowedMethods: Allow lists the routes' methods (HEAD first, with GET); OPTIONS is
        // 200 with no content.
        const reply = await call(api, 'PUT', '/api/v0/content_caches', { as: 'admin', json: {} });
        assertError(reply, 405, 'METHOD_NOT_ALLOWED');
        assert.equal(reply.headers.get('allow'), 'HEAD, GET, POST');
        const options = await call(api, 'OPTIONS', '/api/v0/content_caches/x');
        assert.equal(options.status, 200);
        assert.equal(options.headers.get('allow'), 'HEAD, GET, PATCH, DELETE');
        assert.equal(options.headers.get('content-length'), '0');
        assert.equal(options.body, undefined);
        assertError(await call(api, 'POST', '/api/v0/content_cache_rules', { as: 'admin', json: {} }), 405, 'METHOD_NOT_ALLOWED');
        // A method the router does not know is the client's fault too (405, not @koa/router's 501).
        assertError(await call(api, 'PROPFIND', '/api/v0/content_caches', { as: 'admin' }), 405, 'METHOD_NOT_ALLOWED');
        const head = await call(api, 'HEAD', '/api/v0/content_caches', { as: 'alice' });
        assert.equal(head.status, 200);
        assert.equal(head.body, undefined);
      });

      it('answers with Cache-Control: no-store', async () => {
        assert.equal((await call(api, 'GET', '/api/v0/content_caches', { as: 'alice' })).headers.get('cache-control'), 'no-store');
      });
    });

    describe('content caches', () => {
      it('POST: 201 with {id, name, host} and Location; admin only', async () => {
        assertError(await call(api, 'POST', '/api/v0/content_caches', { as: 'alice', json: { name: 'nope', host: 'http://nope' } }), 403, 'DENIED');
        const reply = await call(api, 'POST', '/api/v0/content_caches', { as: 'admin', json: { name: 'region-us', host: 'HTTP://Cache-US:5000/' } });
        assert.equal(reply.status, 201);
        const id = idOf(reply);
        assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        assert.deepEqual(reply.body, { id, name: 'region-us', host: 'http://cache-us:5000' });
        assert.equal(reply.headers.get('location'), `/api/v0/content_caches/${id}`);
        assert.deepEqual((await call(api, 'GET', `/api/v0/content_caches/${id}`, { as: 'alice' })).body, reply.body);
      });

      it('POST: 400 INVALID_CONTENT_CACHE with the reason, 409 for a duplicate name', async () => {
        const post = (json: unknown) => call(api, 'POST', '/api/v0/content_caches', { as: 'admin', json });
        assertError(await post({ host: 'http://h' }), 400, 'INVALID_CONTENT_CACHE', /name is required/);
        assertError(await post({ name: 'h' }), 400, 'INVALID_CONTENT_CACHE', /host is required/);
        assertError(await post({ name: 5, host: 'http://h' }), 400, 'INVALID_CONTENT_CACHE', /name must be a string/);
        assertError(await post({ name: '', host: 'http://h' }), 400, 'INVALID_CONTENT_CACHE', /name must not be empty/);
        assertError(await post({ name: 'h', host: 'cache:5000' }), 400, 'INVALID_CONTENT_CACHE', /http or https/);
        assertError(await post({ name: 'h', host: 'http://h/v2/' }), 400, 'INVALID_CONTENT_CACHE', /path/);
        assertError(await post({ name: 'h', host: 'http://u:p@h' }), 400, 'INVALID_CONTENT_CACHE', /user info/);
        assertError(await post({ name: 'h', hostname: 'http://h' }), 400, 'INVALID_CONTENT_CACHE', /unknown field "hostname"/);
        assertError(await post([{ name: 'h', host: 'http://h' }]), 400, 'INVALID_CONTENT_CACHE', /JSON object/);
        assertError(await post('"text"'), 400, 'INVALID_CONTENT_CACHE', /JSON object/);
        await createCache('dup-name');
        assertError(await post({ name: 'DUP-NAME', host: 'http://other' }), 409, 'CONTENT_CACHE_NAME_CONFLICT', /already exists/);
      });

      it('POST: 400 INVALID_JSON, 415 UNSUPPORTED_MEDIA_TYPE, 413 REQUEST_TOO_LARGE', async () => {
        const post = (json: string, headers?: Record<string, string>) => call(api, 'POST', '/api/v0/content_caches', { as: 'admin', json, ...(headers ? { headers } : {}) });
        assertError(await post('{"name": '), 400, 'INVALID_JSON', /malformed JSON/);
        assertError(await call(api, 'POST', '/api/v0/content_caches', { as: 'admin', headers: { 'content-type': 'application/json' } }), 400, 'INVALID_JSON', /required/);
        assertError(await post('{"name":"a","host":"http://a"}', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await post('name=a&host=http://a', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        const big = JSON.stringify({ name: 'big', host: 'http://big', pad: 'x'.repeat(70 * 1024) });
        assertError(await post(big), 413, 'REQUEST_TOO_LARGE', /65536/);
        // JSON with a charset, or a +json type, is JSON.
        assert.equal((await post('{"name":"charset","host":"http://c"}', { 'content-type': 'application/json; charset=utf-8' })).status, 201);
        assert.equal((await post('{"name":"plusjson","host":"http://c"}', { 'content-type': 'application/vnd.cascade+json' })).status, 201);
      });

      it('413 also for a chunked body that grows past the limit', async () => {
        const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request(`${api.url}/api/v0/content_caches`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from('admin:secret').toString('base64')}` },
          });
          req.on('response', (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (text += chunk));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          });
          req.on('error', reject);
          const chunk = Buffer.alloc(16 * 1024, 0x20);
          for (let i = 0; i < 6; i++) req.write(chunk);
          req.end();
        });
        assert.equal(status, 413);
        assert.equal((JSON.parse(body) as { errors: { code: string }[] }).errors[0]?.code, 'REQUEST_TOO_LARGE');
      });

      it('GET list: any user, sorted by name', async () => {
        const list = await call(api, 'GET', '/api/v0/content_caches', { as: 'bob' });
        assert.equal(list.status, 200);
        const names = (list.body as { name: string }[]).map((c) => c.name);
        assert.deepEqual(names, [...names].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase())));
        assert.ok(names.includes('region-us'));
      });

      it('GET one: 404 NO_SUCH_CONTENT_CACHE for unknown and malformed ids', async () => {
        assertError(await call(api, 'GET', `/api/v0/content_caches/${MISSING}`, { as: 'alice' }), 404, 'NO_SUCH_CONTENT_CACHE');
        assertError(await call(api, 'GET', '/api/v0/content_caches/not-a-uuid', { as: 'alice' }), 404, 'NO_SUCH_CONTENT_CACHE');
        const id = await createCache('upper-id');
        assert.equal((await call(api, 'GET', `/api/v0/content_caches/${id.toUpperCase()}`, { as: 'alice' })).status, 200);
      });

      it('PATCH: 200 with the changed fields only; 403, 404, 400, 409', async () => {
        const id = await createCache('patch-me');
        await createCache('taken');
        const patch = (json: unknown, as = 'admin', target = id) => call(api, 'PATCH', `/api/v0/content_caches/${target}`, { as, json });
        assertError(await patch({ name: 'x' }, 'alice'), 403, 'DENIED');
        const renamed = await patch({ name: 'patched' });
        assert.equal(renamed.status, 200);
        assert.deepEqual(renamed.body, { id, name: 'patched', host: 'http://patch-me:5000' });
        assert.deepEqual((await patch({ host: 'https://new-host' })).body, { id, name: 'patched', host: 'https://new-host' });
        assert.deepEqual((await patch({})).body, { id, name: 'patched', host: 'https://new-host' });
        assertError(await patch({ name: 'x' }, 'admin', MISSING), 404, 'NO_SUCH_CONTENT_CACHE');
        assertError(await patch({ host: 'http://h?q=1' }), 400, 'INVALID_CONTENT_CACHE', /query/);
        assertError(await patch({ name: null }), 400, 'INVALID_CONTENT_CACHE', /name must be a string/);
        assertError(await patch({ id: MISSING }), 400, 'INVALID_CONTENT_CACHE', /unknown field "id"/);
        assertError(await patch({ name: 'Taken' }), 409, 'CONTENT_CACHE_NAME_CONFLICT');
        assertError(await patch('{'), 400, 'INVALID_JSON');
        assertError(await call(api, 'PATCH', `/api/v0/content_caches/${id}`, { as: 'admin', json: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await patch(JSON.stringify({ name: 'x'.repeat(70 * 1024) })), 413, 'REQUEST_TOO_LARGE');
      });

      it('DELETE: 204, then 404; admin only', async () => {
        const id = await createCache('delete-me');
        assertError(await call(api, 'DELETE', `/api/v0/content_caches/${id}`, { as: 'alice' }), 403, 'DENIED');
        const reply = await call(api, 'DELETE', `/api/v0/content_caches/${id}`, { as: 'admin' });
        assert.equal(reply.status, 204);
        assert.equal(reply.body, undefined);
        assertError(await call(api, 'DELETE', `/api/v0/content_caches/${id}`, { as: 'admin' }), 404, 'NO_SUCH_CONTENT_CACHE');
        assertError(await call(api, 'GET', `/api/v0/content_caches/${id}`, { as: 'admin' }), 404, 'NO_SUCH_CONTENT_CACHE');
      });

      it('GET health: unknown, then what the checker recorded; 404 for an unknown cache', async () => {
        const id = await createCache('health');
        const fresh = await call(api, 'GET', `/api/v0/content_caches/${id}/health`, { as: 'alice' });
        assert.equal(fresh.status, 200);
        assert.deepEqual(fresh.body, { contentCacheUUID: id, status: 'unknown', checkedAt: null, latencyMs: null, error: null, lastOkAt: null, consecutiveFailures: 0 });
        await state.recordHealth(id, { ok: true, latencyMs: 4, at: new Date('2030-01-01T00:00:00.000Z') });
        await state.recordHealth(id, { ok: false, latencyMs: 5000, error: 'timeout', at: new Date('2030-01-01T00:00:20.000Z') });
        assert.deepEqual((await call(api, 'GET', `/api/v0/content_caches/${id}/health`, { as: 'alice' })).body, {
          contentCacheUUID: id,
          status: 'unhealthy',
          checkedAt: '2030-01-01T00:00:20.000Z',
          latencyMs: 5000,
          error: 'timeout',
          lastOkAt: '2030-01-01T00:00:00.000Z',
          consecutiveFailures: 1,
        });
        assertError(await call(api, 'GET', `/api/v0/content_caches/${MISSING}/health`, { as: 'alice' }), 404, 'NO_SUCH_CONTENT_CACHE');
        assertError(await call(api, 'GET', `/api/v0/content_caches/${id}/health`), 401, 'UNAUTHORIZED');
      });
    });

    describe('user settings', () => {
      it('GET/PATCH: the user themself or an admin, others 403 DENIED', async () => {
        const id = await createCache('settings');
        const path = '/api/v0/accounts/alice/settings';
        assert.deepEqual((await call(api, 'GET', path, { as: 'alice' })).body, { contentCacheUUID: null });
        const set = await call(api, 'PATCH', path, { as: 'alice', json: { contentCacheUUID: id } });
        assert.equal(set.status, 200);
        assert.deepEqual(set.body, { contentCacheUUID: id });
        assert.deepEqual((await call(api, 'GET', path, { as: 'alice' })).body, { contentCacheUUID: id });
        assertError(await call(api, 'GET', path, { as: 'bob' }), 403, 'DENIED', /themself or an admin/);
        assertError(await call(api, 'PATCH', path, { as: 'bob', json: { contentCacheUUID: null } }), 403, 'DENIED');
        assert.deepEqual((await call(api, 'GET', path, { as: 'admin' })).body, { contentCacheUUID: id });
        assert.deepEqual((await call(api, 'PATCH', '/api/v0/accounts/bob/settings', { as: 'admin', json: { contentCacheUUID: id } })).body, { contentCacheUUID: id });
        assert.deepEqual((await call(api, 'GET', '/api/v0/accounts/bob/settings', { as: 'bob' })).body, { contentCacheUUID: id });
      });

      it('PATCH: null and "" clear, {} keeps, a missing or malformed cache is 400 INVALID_USER_SETTINGS', async () => {
        const id = await createCache('settings-2');
        const path = '/api/v0/accounts/bob/settings';
        const patch = (json: unknown) => call(api, 'PATCH', path, { as: 'bob', json });
        assert.deepEqual((await patch({ contentCacheUUID: id })).body, { contentCacheUUID: id });
        assert.deepEqual((await patch({})).body, { contentCacheUUID: id });
        assert.deepEqual((await patch({ contentCacheUUID: '' })).body, { contentCacheUUID: null });
        assert.deepEqual((await patch({ contentCacheUUID: id })).body, { contentCacheUUID: id });
        assert.deepEqual((await patch({ contentCacheUUID: null })).body, { contentCacheUUID: null });
        assertError(await patch({ contentCacheUUID: MISSING }), 400, 'INVALID_USER_SETTINGS', /no content cache/);
        assertError(await patch({ contentCacheUUID: 'region-us' }), 400, 'INVALID_USER_SETTINGS', /no content cache/);
        assertError(await patch({ contentCacheUUID: 42 }), 400, 'INVALID_USER_SETTINGS', /string or null/);
        assertError(await patch({ contentCacheUuid: id }), 400, 'INVALID_USER_SETTINGS', /unknown field/);
        assertError(await patch([]), 400, 'INVALID_USER_SETTINGS', /JSON object/);
        assertError(await patch('nope'), 400, 'INVALID_JSON');
        assertError(await call(api, 'PATCH', path, { as: 'bob', json: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await patch(JSON.stringify({ contentCacheUUID: 'x'.repeat(70 * 1024) })), 413, 'REQUEST_TOO_LARGE');
        assert.deepEqual((await call(api, 'GET', path, { as: 'bob' })).body, { contentCacheUUID: null });
      });

      it('a user whose cache is deleted reads null again', async () => {
        const id = await createCache('doomed');
        await call(api, 'PATCH', '/api/v0/accounts/alice/settings', { as: 'alice', json: { contentCacheUUID: id } });
        assert.equal((await call(api, 'DELETE', `/api/v0/content_caches/${id}`, { as: 'admin' })).status, 204);
        assert.deepEqual((await call(api, 'GET', '/api/v0/accounts/alice/settings', { as: 'alice' })).body, { contentCacheUUID: null });
      });
    });

    describe('default cache', () => {
      it('GET any user; PUT admin: set, 400 INVALID_CONTENT_CACHE_DEFAULT, clear', async () => {
        const id = await createCache('the-default');
        const path = '/api/v0/content_caches_default';
        assert.deepEqual((await call(api, 'GET', path, { as: 'bob' })).body, { contentCacheUUID: null });
        assertError(await call(api, 'PUT', path, { as: 'bob', json: { contentCacheUUID: id } }), 403, 'DENIED');
        const set = await call(api, 'PUT', path, { as: 'admin', json: { contentCacheUUID: id } });
        assert.equal(set.status, 200);
        assert.deepEqual(set.body, { contentCacheUUID: id });
        assert.deepEqual((await call(api, 'GET', path, { as: 'bob' })).body, { contentCacheUUID: id });
        assertError(await call(api, 'PUT', path, { as: 'admin', json: { contentCacheUUID: MISSING } }), 400, 'INVALID_CONTENT_CACHE_DEFAULT', /no content cache/);
        assertError(await call(api, 'PUT', path, { as: 'admin', json: {} }), 400, 'INVALID_CONTENT_CACHE_DEFAULT', /required/);
        assertError(await call(api, 'PUT', path, { as: 'admin', json: { contentCacheUUID: true } }), 400, 'INVALID_CONTENT_CACHE_DEFAULT');
        assertError(await call(api, 'PUT', path, { as: 'admin', json: '[' }), 400, 'INVALID_JSON');
        assertError(await call(api, 'PUT', path, { as: 'admin', json: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await call(api, 'PUT', path, { as: 'admin', json: JSON.stringify({ contentCacheUUID: 'x'.repeat(70 * 1024) }) }), 413, 'REQUEST_TOO_LARGE');
        assert.deepEqual((await call(api, 'PUT', path, { as: 'admin', json: { contentCacheUUID: null } })).body, { contentCacheUUID: null });
        assert.deepEqual((await call(api, 'GET', path, { as: 'bob' })).body, { contentCacheUUID: null });
        assertError(await call(api, 'GET', path), 401, 'UNAUTHORIZED');
      });
    });

    describe('rules', () => {
      it('namespace rules: PUT (slashes as they are or encoded), GET, DELETE', async () => {
        const id = await createCache('ns-cache');
        const put = (ns: string, json: unknown, as = 'admin') => call(api, 'PUT', `/api/v0/content_cache_rules/namespaces/${ns}`, { as, json });
        const set = await put('team/sub', { contentCacheUUID: id });
        assert.equal(set.status, 200);
        assert.deepEqual(set.body, { namespace: 'team/sub', contentCacheUUID: id });
        assert.deepEqual((await put('team%2Fother', { contentCacheUUID: id })).body, { namespace: 'team/other', contentCacheUUID: id });
        assertError(await put('team', { contentCacheUUID: id }, 'alice'), 403, 'DENIED');
        assertError(await put('Team', { contentCacheUUID: id }), 400, 'INVALID_CONTENT_CACHE_RULE', /namespace/);
        assertError(await put('team', {}), 400, 'INVALID_CONTENT_CACHE_RULE', /contentCacheUUID is required/);
        assertError(await put('team', { contentCacheUUID: MISSING }), 400, 'INVALID_CONTENT_CACHE_RULE', /no content cache/);
        assertError(await put('team', { contentCacheUUID: id, extra: 1 }), 400, 'INVALID_CONTENT_CACHE_RULE', /unknown field/);
        assertError(await put('team', '{'), 400, 'INVALID_JSON');
        assertError(await call(api, 'PUT', '/api/v0/content_cache_rules/namespaces/team', { as: 'admin', json: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await put('team', JSON.stringify({ contentCacheUUID: 'x'.repeat(70 * 1024) })), 413, 'REQUEST_TOO_LARGE');

        const rules = await call(api, 'GET', '/api/v0/content_cache_rules', { as: 'bob' });
        assert.equal(rules.status, 200);
        const namespaces = (rules.body as { namespaces: unknown[] }).namespaces;
        assert.deepEqual(namespaces, [
          { namespace: 'team/other', contentCacheUUID: id },
          { namespace: 'team/sub', contentCacheUUID: id },
        ]);

        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/namespaces/team/sub', { as: 'bob' }), 403, 'DENIED');
        assert.equal((await call(api, 'DELETE', '/api/v0/content_cache_rules/namespaces/team/sub', { as: 'admin' })).status, 204);
        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/namespaces/team%2Fsub', { as: 'admin' }), 404, 'NO_SUCH_CONTENT_CACHE_RULE');
        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/namespaces/BAD', { as: 'admin' }), 400, 'INVALID_CONTENT_CACHE_RULE');
        assert.equal((await call(api, 'DELETE', '/api/v0/content_cache_rules/namespaces/team/other', { as: 'admin' })).status, 204);
      });

      it('network rules: PUT with the CIDR encoded or not, stored canonical; DELETE by any spelling', async () => {
        const id = await createCache('net-cache');
        const put = (cidr: string, json: unknown, as = 'admin') => call(api, 'PUT', `/api/v0/content_cache_rules/networks/${cidr}`, { as, json });
        const set = await put(encodeURIComponent('10.1.2.3/8'), { contentCacheUUID: id });
        assert.equal(set.status, 200);
        assert.deepEqual(set.body, { cidr: '10.0.0.0/8', contentCacheUUID: id });
        assert.deepEqual((await put('192.168.0.0/16', { contentCacheUUID: id })).body, { cidr: '192.168.0.0/16', contentCacheUUID: id });
        assert.deepEqual((await put(encodeURIComponent('2001:DB8::/32'), { contentCacheUUID: id })).body, { cidr: '2001:db8::/32', contentCacheUUID: id });
        assert.deepEqual((await put(encodeURIComponent('::ffff:172.16.0.0/108'), { contentCacheUUID: id })).body, { cidr: '172.16.0.0/12', contentCacheUUID: id });
        assertError(await put('10.0.0.0%2F8', { contentCacheUUID: id }, 'bob'), 403, 'DENIED');
        assertError(await put('10.0.0.0%2F33', { contentCacheUUID: id }), 400, 'INVALID_CONTENT_CACHE_RULE', /cidr/);
        assertError(await put('not-a-network', { contentCacheUUID: id }), 400, 'INVALID_CONTENT_CACHE_RULE', /cidr/);
        assertError(await put('10.0.0.0%2F8', { contentCacheUUID: null }), 400, 'INVALID_CONTENT_CACHE_RULE', /must be a string/);
        assertError(await put('10.0.0.0%2F8', { contentCacheUUID: MISSING }), 400, 'INVALID_CONTENT_CACHE_RULE', /no content cache/);
        assertError(await put('10.0.0.0%2F8', '{'), 400, 'INVALID_JSON');
        assertError(await call(api, 'PUT', '/api/v0/content_cache_rules/networks/10.0.0.0%2F8', { as: 'admin', json: '{}', headers: { 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
        assertError(await put('10.0.0.0%2F8', JSON.stringify({ contentCacheUUID: 'x'.repeat(70 * 1024) })), 413, 'REQUEST_TOO_LARGE');

        const rules = (await call(api, 'GET', '/api/v0/content_cache_rules', { as: 'alice' })).body as { networks: { cidr: string }[] };
        assert.deepEqual(rules.networks.map((r) => r.cidr).sort(), ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '2001:db8::/32']);

        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/networks/10.0.0.0%2F8', { as: 'bob' }), 403, 'DENIED');
        assert.equal((await call(api, 'DELETE', `/api/v0/content_cache_rules/networks/${encodeURIComponent('10.9.9.9/8')}`, { as: 'admin' })).status, 204);
        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/networks/10.0.0.0/8', { as: 'admin' }), 404, 'NO_SUCH_CONTENT_CACHE_RULE');
        assertError(await call(api, 'DELETE', '/api/v0/content_cache_rules/networks/nonsense', { as: 'admin' }), 400, 'INVALID_CONTENT_CACHE_RULE');
        assert.equal((await call(api, 'DELETE', '/api/v0/content_cache_rules/networks/2001:db8:0:0::%2F32', { as: 'admin' })).status, 204);
      });

      it('deleting a cache removes its rules and the default', async () => {
        const id = await createCache('rule-target');
        await call(api, 'PUT', '/api/v0/content_cache_rules/namespaces/cascade-ns', { as: 'admin', json: { contentCacheUUID: id } });
        await call(api, 'PUT', '/api/v0/content_cache_rules/networks/198.51.100.0%2F24', { as: 'admin', json: { contentCacheUUID: id } });
        await call(api, 'PUT', '/api/v0/content_caches_default', { as: 'admin', json: { contentCacheUUID: id } });
        await call(api, 'DELETE', `/api/v0/content_caches/${id}`, { as: 'admin' });
        const rules = (await call(api, 'GET', '/api/v0/content_cache_rules', { as: 'admin' })).body as { namespaces: { contentCacheUUID: string }[]; networks: { contentCacheUUID: string }[] };
        assert.ok(![...rules.namespaces, ...rules.networks].some((r) => r.contentCacheUUID === id));
        assert.deepEqual((await call(api, 'GET', '/api/v0/content_caches_default', { as: 'admin' })).body, { contentCacheUUID: null });
      });
    });
  });
}

describe('/api/v0 injected dependencies', () => {
  it('keeps the challenge the authenticator set on a 401', async (t) => {
    const state = new SqliteStateRepository(':memory:');
    const api = await serve({
      state,
      authenticate: async (ctx) => {
        ctx.set('WWW-Authenticate', 'Bearer realm="https://origin/token",service="origin"');
        return undefined;
      },
    });
    t.after(async () => {
      await api.close();
      await state.close();
    });
    const reply = await call(api, 'GET', '/api/v0/content_caches', { as: 'alice' });
    assertError(reply, 401, 'UNAUTHORIZED');
    assert.equal(reply.headers.get('www-authenticate'), 'Bearer realm="https://origin/token",service="origin"');
  });

  it('answers 500 UNKNOWN for an unexpected failure, logging it and revealing nothing', async (t) => {
    const state = new SqliteStateRepository(':memory:');
    const logged: { level: number; msg: string; err?: { message: string } }[] = [];
    const api = await serve({
      state,
      authenticate: async () => {
        throw new Error('origin at 10.0.0.9 exploded');
      },
      logger: pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line)) }),
    });
    t.after(async () => {
      await api.close();
      await state.close();
    });
    const reply = await call(api, 'GET', '/api/v0/content_caches', { as: 'alice' });
    assertError(reply, 500, 'UNKNOWN');
    assert.doesNotMatch(JSON.stringify(reply.body), /10\.0\.0\.9/);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.msg, 'request failed');
    assert.equal(logged[0]?.level, 50, 'an error, with its stack');
    assert.equal(logged[0]?.err?.message, 'origin at 10.0.0.9 exploded');
  });

  it('passes an ApiError thrown by the authenticator through', async (t) => {
    const state = new SqliteStateRepository(':memory:');
    const api = await serve({
      state,
      authenticate: async () => {
        throw new ApiError('DENIED', 'account locked at the origin');
      },
    });
    t.after(async () => {
      await api.close();
      await state.close();
    });
    assertError(await call(api, 'GET', '/api/v0/content_caches', { as: 'alice' }), 403, 'DENIED', /locked/);
  });

  it('keeps the state across a restart of the server on the same file', async () => {
    const file = await tempDb();
    const first = new SqliteStateRepository(file);
    const api1 = await serve({ state: first });
    const created = await call(api1, 'POST', '/api/v0/content_caches', { as: 'admin', json: { name: 'persistent', host: 'http://p:5000' } });
    const id = idOf(created);
    await call(api1, 'PATCH', '/api/v0/accounts/alice/settings', { as: 'alice', json: { contentCacheUUID: id } });
    await api1.close();
    await first.close();

    const second = new SqliteStateRepository(file);
    const api2 = await serve({ state: second });
    try {
      assert.deepEqual((await call(api2, 'GET', '/api/v0/content_caches', { as: 'bob' })).body, [{ id, name: 'persistent', host: 'http://p:5000' }]);
      assert.deepEqual((await call(api2, 'GET', '/api/v0/accounts/alice/settings', { as: 'alice' })).body, { contentCacheUUID: id });
    } finally {
      await api2.close();
      await second.close();
    }
  });
});

describe('docs/server-api.md', () => {
  // dist/test/api.test.js -> the repository root
  const doc = readFileSync(new URL('../../../../docs/server-api.md', import.meta.url), 'utf8');

  it('documents every error code with its status', () => {
    for (const [code, descriptor] of Object.entries(API_ERROR_CODES)) {
      const row = new RegExp(`^\\| \`${code}\` \\| ${descriptor.status} \\|`, 'm');
      assert.match(doc, row, `docs/server-api.md must have a row "| \`${code}\` | ${descriptor.status} | ..." in its Errors table`);
    }
  });

  it('documents no code the API does not have', () => {
    const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \| \d{3} \|/gm)].map((m) => m[1]);
    for (const code of documented) assert.ok(code !== undefined && code in API_ERROR_CODES, `docs/server-api.md documents ${code}, which the API does not use`);
  });

  it('documents every endpoint and method', () => {
    for (const resource of Object.values(API_RESOURCES)) {
      const path = `${API_PREFIX}${resource.path}`.replace(/:(\w+)/g, '{$1}').replace(/\*(\w+)/g, '{$1}');
      for (const method of Object.keys(resource.operations)) {
        assert.match(doc, new RegExp(`^\\| ${method} \\| \`${path.replace(/[{}]/g, '\\$&')}\` \\|`, 'm'), `docs/server-api.md must list ${method} ${path}`);
      }
    }
  });
});

describe('/api/v0 warm on push', () => {
  const SECRET = 'unit-events-secret-0123456789';
  const MANIFEST = `sha256:${'a'.repeat(64)}`;

  async function warmApi(t: TestContext, withWarm = true) {
    const state = new SqliteStateRepository(':memory:');
    const warmer = new Warmer({ resolve: async () => ({ digest: MANIFEST, blobs: [] }), warmBlob: async () => ({ present: true, size: 0 }), cacheById: (id) => state.get(id), logger: pino({ level: 'silent' }) });
    const warm = new WarmService({ state, warmer, logger: pino({ level: 'silent' }) });
    const api = await serve({ state, ...(withWarm ? { warm, eventsTokens: new EventsTokens([SECRET]) } : {}) });
    t.after(async () => {
      await api.close();
      await warmer.close();
      await state.close();
    });
    return { api, state, warmer };
  }

  it('takes events only with the secret, as an envelope, at most 1 MiB', async (t) => {
    const { api, state } = await warmApi(t);
    const cache = await state.create({ name: 'region-a', host: 'http://a' });
    await state.setWarmRule({ namespace: 'team', cacheIds: [cache.id] });
    const envelope = { events: [{ id: 'e1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'team/app' } }] };
    const type = { 'content-type': 'application/vnd.docker.distribution.events.v1+json' };
    assertError(await call(api, 'POST', '/api/v0/events', { json: envelope, headers: type }), 401, 'UNAUTHORIZED', /missing or wrong/);
    assertError(await call(api, 'POST', '/api/v0/events', { as: 'admin', json: envelope, headers: type }), 401, 'UNAUTHORIZED', /missing or wrong/);
    const ok = await call(api, 'POST', '/api/v0/events', { json: envelope, headers: { ...type, authorization: `Bearer ${SECRET}` } });
    assert.equal(ok.status, 200);
    assert.equal((ok.body as { jobs: string[] }).jobs.length, 1);
    assertError(await call(api, 'POST', '/api/v0/events', { json: { events: [{ id: 1 }] }, headers: { authorization: `Bearer ${SECRET}` } }), 400, 'INVALID_EVENTS', /events\.0\.id/);
    assertError(await call(api, 'POST', '/api/v0/events', { json: 'x'.repeat(100), headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'text/plain' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    const big = JSON.stringify({ events: [], pad: 'x'.repeat(1 << 20) });
    assertError(await call(api, 'POST', '/api/v0/events', { json: big, headers: { authorization: `Bearer ${SECRET}` } }), 413, 'REQUEST_TOO_LARGE');
  });

  it('refuses every event when no secret is configured', async (t) => {
    const { api } = await warmApi(t, false);
    assertError(await call(api, 'POST', '/api/v0/events', { json: { events: [] }, headers: { authorization: 'Bearer anything-at-all-0123456789' } }), 401, 'UNAUTHORIZED', /no events secret is configured/);
  });

  it('sets, lists and deletes warm rules (admins), and reads jobs (admins)', async (t) => {
    const { api, state } = await warmApi(t);
    const a = await state.create({ name: 'region-a', host: 'http://a' });
    assertError(await call(api, 'PUT', '/api/v0/warm_rules/team', { as: 'bob', json: { contentCacheUUIDs: [a.id] } }), 403, 'DENIED');
    const set = await call(api, 'PUT', '/api/v0/warm_rules/team/sub/', { as: 'admin', json: { contentCacheUUIDs: [a.id] } });
    assert.equal(set.status, 200);
    assert.deepEqual(set.body, { namespace: 'team/sub', contentCacheUUIDs: [a.id] });
    assert.deepEqual((await call(api, 'GET', '/api/v0/warm_rules', { as: 'bob' })).body, [{ namespace: 'team/sub', contentCacheUUIDs: [a.id] }]);
    for (const json of [{}, { contentCacheUUIDs: [] }, { contentCacheUUIDs: 'x' }, { contentCacheUUIDs: [1] }, { contentCacheUUIDs: [MISSING] }, { contentCacheUUIDs: [a.id], extra: 1 }]) {
      assertError(await call(api, 'PUT', '/api/v0/warm_rules/team', { as: 'admin', json }), 400, 'INVALID_WARM_RULE');
    }
    assertError(await call(api, 'PUT', '/api/v0/warm_rules/Team', { as: 'admin', json: { contentCacheUUIDs: [a.id] } }), 400, 'INVALID_WARM_RULE');
    assert.equal((await call(api, 'DELETE', '/api/v0/warm_rules/team%2Fsub', { as: 'admin' })).status, 204);
    assertError(await call(api, 'DELETE', '/api/v0/warm_rules/team/sub', { as: 'admin' }), 404, 'NO_SUCH_WARM_RULE');

    // A manual warm: 202 with the job, which the jobs routes show.
    const started = await call(api, 'POST', `/api/v0/content_caches/${a.id}/warm`, { as: 'admin', json: { repository: 'team/app', reference: 'v1' } });
    assert.equal(started.status, 202);
    const job = started.body as { id: string; state: string; trigger: unknown; contentCacheName: string };
    assert.equal(job.state, 'queued');
    assert.deepEqual(job.trigger, { kind: 'manual', user: 'admin' });
    assert.equal(started.headers.get('location'), `/api/v0/warm_jobs/${job.id}`);
    assert.equal((await call(api, 'GET', `/api/v0/warm_jobs/${job.id}`, { as: 'admin' })).status, 200);
    assert.equal(((await call(api, 'GET', '/api/v0/warm_jobs', { as: 'admin' })).body as unknown[]).length, 1);
    assertError(await call(api, 'GET', '/api/v0/warm_jobs', { as: 'bob' }), 403, 'DENIED');
    assertError(await call(api, 'GET', `/api/v0/warm_jobs/${MISSING}`, { as: 'admin' }), 404, 'NO_SUCH_WARM_JOB');
    assertError(await call(api, 'POST', `/api/v0/content_caches/${MISSING}/warm`, { as: 'admin', json: { repository: 'team/app', reference: 'v1' } }), 404, 'NO_SUCH_CONTENT_CACHE');
    for (const json of [{ repository: 'team/app' }, { repository: 'Team', reference: 'v1' }, { repository: 'team/app', reference: 'sha256:nope' }, { repository: 'team/app', reference: 'bad tag' }, { repository: 'team/app', reference: 'v1', x: 1 }]) {
      assertError(await call(api, 'POST', `/api/v0/content_caches/${a.id}/warm`, { as: 'admin', json }), 400, 'INVALID_WARM_REQUEST');
    }
    assertError(await call(api, 'POST', `/api/v0/content_caches/${a.id}/warm`, { as: 'bob', json: { repository: 'team/app', reference: 'v1' } }), 403, 'DENIED');
  });
});
