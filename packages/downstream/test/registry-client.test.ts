/**
 * The one registry client (`src/registry-client/`): the token cache (per realm, service and scope, honouring
 * `expires_in`, one fetch for concurrent waiters), token answers, challenges, bounded reads, and token
 * requests against a fake registry's token endpoint.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { startFakeRegistry } from '@cascade/testkit';
import { BodyTooLargeError, readBounded, RegistryClient, TokenCache, tokenAnswerOf, tokenRealmOf, tokenUrl } from '../src/registry-client/index.js';

describe('registry client: tokens', () => {
  it('caches a token per realm, service and scope until shortly before expires_in runs out', async () => {
    let now = 1_000_000;
    const cache = new TokenCache(() => now);
    let fetched = 0;
    const fetch = (expiresIn?: number) => async () => ({ token: `t${++fetched}`, ...(expiresIn !== undefined ? { expiresIn } : {}) });
    const realm = { realm: 'https://auth.example/token', service: 'reg' };
    assert.equal(await cache.get(realm, 'repository:a:pull', fetch(300)), 't1');
    assert.equal(await cache.get(realm, 'repository:a:pull', fetch(300)), 't1');
    assert.equal(await cache.get(realm, 'repository:b:pull', fetch(300)), 't2', 'another scope, another token');
    assert.equal(await cache.get({ ...realm, service: 'other' }, 'repository:a:pull', fetch(300)), 't3', 'another service, another token');
    now += 289_000; // 300 s less 10 s of margin, less 1 s
    assert.equal(await cache.get(realm, 'repository:a:pull', fetch(300)), 't1');
    now += 1_000;
    assert.equal(await cache.get(realm, 'repository:a:pull', fetch(300)), 't4', 'renewed before it expires');
    // No expires_in: the spec's 60 s, renewed 6 s early.
    assert.equal(await cache.get(realm, 'repository:c:pull', fetch()), 't5');
    now += 53_999;
    assert.equal(await cache.get(realm, 'repository:c:pull', fetch()), 't5');
    now += 1;
    assert.equal(await cache.get(realm, 'repository:c:pull', fetch()), 't6');
    cache.delete(realm, 'repository:c:pull');
    assert.equal(await cache.get(realm, 'repository:c:pull', fetch()), 't7', 'a refused token is fetched again');
    assert.equal(cache.size, 4);
  });

  it('fetches once for concurrent waiters; a failed fetch fails them all and is not cached', async () => {
    const cache = new TokenCache();
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const fetch = async () => {
      calls += 1;
      await gate;
      return { token: 'shared' };
    };
    const realm = { realm: 'https://auth.example/token' };
    const waiting = [cache.get(realm, 's', fetch), cache.get(realm, 's', fetch), cache.get(realm, 's', fetch)];
    release();
    assert.deepEqual(await Promise.all(waiting), ['shared', 'shared', 'shared']);
    assert.equal(calls, 1);
    const failing = () => Promise.reject(new Error('refused'));
    await assert.rejects(cache.get(realm, 'other', failing), /refused/);
    assert.equal(await cache.get(realm, 'other', async () => ({ token: 'later' })), 'later');
  });

  it('reads token answers, Bearer challenges and token URLs', () => {
    assert.deepEqual(tokenAnswerOf('{"token":"a","expires_in":120}'), { token: 'a', expiresIn: 120 });
    assert.deepEqual(tokenAnswerOf('{"access_token":"b"}'), { token: 'b' });
    assert.deepEqual(tokenAnswerOf('{"token":"c","expires_in":-1}'), { token: 'c' });
    assert.deepEqual(tokenAnswerOf('<html>'), { invalid: 'not-json' });
    assert.deepEqual(tokenAnswerOf('{"token":""}'), { invalid: 'no-token' });
    assert.deepEqual(tokenAnswerOf('null'), { invalid: 'no-token' });
    assert.deepEqual(tokenRealmOf('Bearer realm="https://a/token",service="reg",scope="repository:x:pull"'), { realm: 'https://a/token', service: 'reg', scope: 'repository:x:pull' });
    assert.equal(tokenRealmOf('Basic realm="x"'), undefined);
    assert.equal(tokenRealmOf('Bearer service="reg"'), undefined);
    assert.equal(tokenRealmOf(undefined), undefined);
    assert.equal(tokenUrl({ realm: 'https://a/token?x=1', service: 'reg' }, 'repository:x:pull').href, 'https://a/token?x=1&service=reg&scope=repository%3Ax%3Apull');
    assert.equal(tokenUrl({ realm: 'https://a/token' }).href, 'https://a/token');
  });
});

describe('registry client: bounded reads', () => {
  it('reads up to the bound and names what was too large', async () => {
    assert.equal((await readBounded(Readable.from([Buffer.from('abc'), Buffer.from('de')]), 5, 'the manifest')).toString(), 'abcde');
    await assert.rejects(readBounded(Readable.from([Buffer.alloc(4), Buffer.alloc(4)]), 5, 'the manifest of a:b'), (err: unknown) => {
      assert.ok(err instanceof BodyTooLargeError);
      assert.equal(err.message, 'the manifest of a:b is larger than 5 bytes');
      assert.equal(err.code, 'UPSTREAM_FAILED');
      return true;
    });
  });

  it('reports a body cut short as the upstream failing, with the stream error as the cause', async () => {
    const cut = new Readable({ read() {} });
    cut.push(Buffer.alloc(3));
    setImmediate(() => cut.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' })));
    await assert.rejects(readBounded(cut, 100, 'the token'), (err: Error) => !(err instanceof BodyTooLargeError) && /cut or malformed after 3 bytes/.test(err.message) && err.cause !== undefined);
  });
});

describe('registry client: requests', () => {
  it('asks a token service with the credentials given, and reads its answer or its refusal', async (t) => {
    const fake = await startFakeRegistry({ challenge: { scheme: 'bearer', username: 'robot', password: 's3cret', service: 'reg' } });
    const client = new RegistryClient({ url: fake.url });
    t.after(async () => {
      client.close();
      await fake.stop();
    });
    const realm = tokenRealmOf(String((await (await client.request({ method: 'GET', path: '/v2/' })).resume()).headers['www-authenticate']));
    assert.ok(realm);
    const basic = `Basic ${Buffer.from('robot:s3cret').toString('base64')}`;
    const ok = await client.requestToken(realm, 'repository:app:pull', { authorization: basic });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.answer, { token: 'tok-1', expiresIn: 300 });
    const token = fake.requests.find((r) => r.kind === 'token');
    assert.equal(new URL(token?.url ?? '', fake.url).searchParams.get('scope'), 'repository:app:pull');
    assert.equal(token?.headers.authorization, basic);
    const refused = await client.requestToken(realm, 'repository:app:pull');
    assert.equal(refused.status, 401);
    assert.equal(refused.answer, undefined);
  });

  it('keeps every request on the base URL\'s host, and names the registry when it cannot be reached', async () => {
    const client = new RegistryClient({ url: 'http://127.0.0.1:9', name: 'the origin' });
    assert.throws(() => client.request({ method: 'GET', path: 'http://evil.example/v2/' }), /the request target must be a path/);
    await assert.rejects(client.request({ method: 'GET', path: '/v2/' }), (err: Error) => /^the origin http:\/\/127\.0\.0\.1:9 failed: ECONNREFUSED/.test(err.message) && err.cause !== undefined);
    client.close();
  });

  it('gives a token request its whole time limit, and says so when the service stays silent', async (t) => {
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const client = new RegistryClient({ url: `http://127.0.0.1:${port}` });
    t.after(() => {
      client.close();
      for (const s of sockets) s.destroy();
      silent.close();
    });
    const started = Date.now();
    await assert.rejects(client.requestToken({ realm: `http://127.0.0.1:${port}/token` }, 'repository:a:pull', {}, 200), (err: Error) => {
      assert.match(err.message, /^the token service http:\/\/127\.0\.0\.1:\d+ failed: timeout: no answer within 0\.2 s$/);
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ETIMEDOUT');
      return true;
    });
    assert.ok(Date.now() - started < 5000);
  });
});
