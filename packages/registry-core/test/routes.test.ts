/**
 * The HTTP kit's routing (`http/kit/routes.ts`) over real HTTP: exact paths, @koa/router's HEAD and
 * OPTIONS, other methods answered 405 in the app's envelope (never 501), other paths passed on.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import Koa from 'koa';
import { pino } from 'pino';
import { CodedError } from '../src/errors.js';
import { errorMapper, routerOf, serveRoutes } from '../src/http/kit/index.js';
import { listen, type RunningServer } from '../src/http/listen.js';

const silent = pino({ level: 'silent' });

/** One request with any method (fetch refuses TRACE and CONNECT); the body as text. */
function send(url: string, method: string, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const req = request({ host: hostname, port, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject).end();
  });
}

const codeOf = (body: string) => (JSON.parse(body) as { errors: { code: string }[] }).errors[0]?.code;

describe('serveRoutes and routerOf', () => {
  let server: RunningServer;
  before(async () => {
    const app = new Koa();
    app.use(errorMapper(silent));
    const ok = (body: string) => async (ctx: Koa.Context) => {
      ctx.body = body;
    };
    app.use(serveRoutes(routerOf([
      { method: 'GET', path: '/metrics', handler: ok('metrics') },
      { method: 'GET', path: '/token(v1):*', handler: ok('token get') },
      { method: 'POST', path: '/token(v1):*', handler: ok('token post') },
    ])));
    const teapot = { TEAPOT: { status: 418, message: 'teapot', description: 'A table of one code.' } };
    app.use(serveRoutes(routerOf([{ method: 'PUT', path: '/custom', handler: ok('custom') }]), (method, allow) => new CodedError(teapot, 'TEAPOT', `${method}; ${allow}`, { headers: { Allow: allow } })));
    app.use((ctx) => {
      ctx.body = 'the rest of the app';
    });
    server = await listen(app.callback(), { addr: '127.0.0.1:0' }, silent);
  });
  after(() => server.close(100));

  it('serves a route at its exact path, HEAD as GET without a body', async () => {
    assert.deepEqual(await send(server.url, 'GET', '/metrics').then((r) => [r.status, r.body]), [200, 'metrics']);
    assert.deepEqual(await send(server.url, 'HEAD', '/metrics').then((r) => [r.status, r.body]), [200, '']);
    assert.deepEqual(await send(server.url, 'POST', '/token(v1):*').then((r) => [r.status, r.body]), [200, 'token post']);
  });

  it('passes other paths on: no pattern syntax, no case folding, no trailing slash', async () => {
    for (const path of ['/metrics/', '/METRICS', '/metrics.x', '/tokenv1:abc', '/token(v1):x', '/']) {
      assert.equal((await send(server.url, 'GET', path)).body, 'the rest of the app', path);
    }
  });

  it('answers another method with 405 and Allow in the envelope, an unknown one too (never 501), OPTIONS with 200', async () => {
    for (const method of ['POST', 'DELETE', 'TRACE', 'PROPFIND', 'PURGE']) {
      const res = await send(server.url, method, '/metrics');
      assert.equal(res.status, 405, method);
      assert.equal(res.headers['allow'], 'HEAD, GET', method);
      assert.equal(codeOf(res.body), 'UNSUPPORTED', method);
    }
    const options = await send(server.url, 'OPTIONS', '/token(v1):*');
    assert.deepEqual([options.status, options.headers['allow'], options.headers['content-length'], options.body], [200, 'HEAD, GET, POST', '0', '']);
  });

  it('answers with the error the app gives for its table', async () => {
    const res = await send(server.url, 'GET', '/custom');
    assert.equal(res.status, 418);
    assert.equal(res.headers['allow'], 'PUT');
    assert.deepEqual(JSON.parse(res.body), { errors: [{ code: 'TEAPOT', message: 'GET; PUT' }] });
  });
});
