/**
 * The cache node (`cascade registry` with the `downstream` middleware), one node in front of one upstream:
 * miss then hit for GET, HEAD and Range; a cold blob streams to the client as it arrives; pushes are
 * refused; the client's Authorization goes upstream on a miss; 50 concurrent cold requests for one
 * 64 MiB blob cost one GET at the origin; config errors name the key.
 *
 * Upstream counts come from the fake upstream's own request list (test/lib/fault-upstream.ts) or from the
 * origin's access log (a real `cascade registry`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { describe, it } from 'node:test';
import {
  assertBlob,
  assertStoreIntegrity,
  blobRequests,
  blobUrl,
  errorCodes,
  fetchBlob,
  hasBlobData,
  MiB,
  pushBlob,
  randomBlob,
  runCacheExpectingExit,
  settle,
  sha256,
  startCacheNode,
  startCascadeOrigin,
  waitFor,
  testScope,
} from '../lib/cache.js';
import { startFaultUpstream } from '../lib/fault-upstream.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';

const NAME = 'team/app';

describe('cache node: one hop', () => {
  it('a miss fetches from the upstream and stores the blob; a hit (GET, HEAD, Range) is served from storage', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('one-hop', 3 * MiB + 123);
    const digest = up.addBlob(blob);
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());
    // The native addon was built by `npm install` and is in use: these bodies go out with sendfile.
    assert.ok(
      cache.proc!.logs.some((l) => l.msg === 'blob bodies from files are sent with sendfile (plain HTTP)'),
      `sendfile is in use:\n${cache.proc!.logs.filter((l) => /sendfile/.test(String(l.msg))).map((l) => JSON.stringify(l)).join('\n')}`,
    );

    await assertBlob(cache, NAME, digest, blob.length, 'cold');
    assert.equal(up.count(digest, 'GET'), 1, 'one upstream GET for the miss');
    await waitFor('the blob data file in the cache storage', () => hasBlobData(cache.rootdirectory, digest), 5000);
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [digest]);
    const before = up.requests.length;

    await assertBlob(cache, NAME, digest, blob.length, 'warm');
    const head = await fetchBlob(blobUrl(cache.url, NAME, digest), { method: 'HEAD' });
    assert.equal(head.status, 200, 'HEAD on a hit');
    assert.equal(head.headers['content-length'], String(blob.length), 'HEAD Content-Length');
    assert.equal(head.headers['docker-content-digest'], digest, 'HEAD Docker-Content-Digest');
    assert.equal(head.size, 0);

    const range = await fetchBlob(blobUrl(cache.url, NAME, digest), { headers: { range: 'bytes=1000-1999' } });
    assert.equal(range.status, 206, 'Range on a hit');
    assert.equal(range.headers['content-range'], `bytes 1000-1999/${blob.length}`);
    assert.ok(range.body?.equals(blob.subarray(1000, 2000)), 'the requested slice');
    const tail = await fetchBlob(blobUrl(cache.url, NAME, digest), { headers: { range: `bytes=${blob.length - 10}-` } });
    assert.equal(tail.status, 206);
    assert.ok(tail.body?.equals(blob.subarray(blob.length - 10)), 'an open-ended range');

    assert.deepEqual(
      up.requests.slice(before).map((r) => `${r.method} ${r.path}`),
      [],
      'hits (GET, HEAD, Range) make no upstream request',
    );
    // the cache answered under another repository name too (blobs are content-addressed)
    await assertBlob(cache, 'other/repo', digest, blob.length, 'same digest, other repository');
  });

  it('HEAD and Range on cold blobs answer correctly', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const a = randomBlob('cold-head', 700_000);
    const b = randomBlob('cold-range', 900_000);
    const da = up.addBlob(a);
    const db = up.addBlob(b);
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());

    const head = await fetchBlob(blobUrl(cache.url, NAME, da), { method: 'HEAD' });
    assert.equal(head.status, 200, `HEAD on a cold blob\n${cache.diagnostics()}`);
    assert.equal(head.headers['content-length'], String(a.length));
    assert.equal(head.headers['docker-content-digest'], da);
    await assertBlob(cache, NAME, da, a.length, 'GET after a cold HEAD');

    const range = await fetchBlob(blobUrl(cache.url, NAME, db), { headers: { range: 'bytes=500000-500099' } });
    if (range.status === 206) {
      assert.equal(range.headers['content-range'], `bytes 500000-500099/${b.length}`);
      assert.ok(range.body?.equals(b.subarray(500_000, 500_100)), 'cold Range: the requested slice');
    } else {
      // a server may ignore Range and answer the whole blob
      assert.equal(range.status, 200, `cold Range -> ${range.status}\n${cache.diagnostics()}`);
      assert.equal(range.digest, db, 'cold Range answered with the whole blob: its bytes');
    }
    await assertBlob(cache, NAME, db, b.length, 'GET after a cold Range');
    await waitFor('both blobs stored', async () => (await hasBlobData(cache.rootdirectory, da)) && (await hasBlobData(cache.rootdirectory, db)), 5000);
    await assertStoreIntegrity(cache.rootdirectory);
    assert.ok(up.count(db, 'GET') <= 2, `at most a range and a full fetch upstream for the cold Range blob, got ${up.count(db, 'GET')}`);
  });

  it('a cold blob streams to the client as it arrives from the upstream (no store-and-forward)', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('trickle', 2 * MiB);
    // 8 chunks, 250 ms apart: the upstream needs ~1.75 s to send it all
    const digest = up.addBlob(blob, { kind: 'slow', chunkBytes: 256 * 1024, intervalMs: 250 });
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());

    const res = await fetchBlob(blobUrl(cache.url, NAME, digest));
    assert.equal(res.status, 200, cache.diagnostics());
    assert.ok(res.complete, res.error);
    assert.equal(res.digest, digest);
    assert.ok(res.totalMs >= 1500, `the upstream trickled for ~1.75 s, the response took ${res.totalMs} ms`);
    assert.ok((res.firstByteMs ?? Infinity) < 1000, `first byte after ${res.firstByteMs} ms: the cache must stream while it fills, not after`);
    up.setScenario(digest, { kind: 'ok' });
    await waitFor('the blob stored', () => hasBlobData(cache.rootdirectory, digest), 5000);
    await assertBlob(cache, NAME, digest, blob.length, 'warm');
    assert.equal(up.count(digest, 'GET'), 1, 'the second GET was a hit');
  });

  it('refuses pushes with 405 UNSUPPORTED and stores nothing', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());
    const body = Buffer.from('a layer someone tries to push to a cache');
    const digest = sha256(body);
    const attempts: Array<[string, string, RequestInit]> = [
      ['POST', `${cache.url}/v2/${NAME}/blobs/uploads/`, {}],
      ['POST', `${cache.url}/v2/${NAME}/blobs/uploads/?digest=${digest}`, { body }],
      ['POST', `${cache.url}/v2/${NAME}/blobs/uploads/?mount=${digest}&from=other/repo`, {}],
      [
        'PUT',
        `${cache.url}/v2/${NAME}/manifests/v1`,
        { body: JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: body.length }, layers: [] }), headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } },
      ],
    ];
    for (const [method, url, init] of attempts) {
      const res = await fetch(url, { method, ...init });
      const text = await res.text();
      assert.equal(res.status, 405, `${method} ${url} -> ${res.status} ${text}`);
      const codes = (JSON.parse(text) as { errors: Array<{ code: string }> }).errors.map((e) => e.code);
      assert.deepEqual(codes, ['UNSUPPORTED'], `${method} ${url}: error codes`);
    }
    assert.equal(await hasBlobData(cache.rootdirectory, digest), false, 'nothing was stored');
    assert.deepEqual(
      up.requests.filter((r) => r.method !== 'GET' && r.method !== 'HEAD').map((r) => `${r.method} ${r.path}`),
      [],
      'no write was forwarded upstream',
    );
  });

  it("forwards the client's Authorization upstream on a miss (auth: passthrough, the default)", async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('auth-passthrough', 64 * 1024);
    const digest = up.addBlob(blob);
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());
    const authorization = `Basic ${Buffer.from('alice:correct horse').toString('base64')}`;
    const res = await fetchBlob(blobUrl(cache.url, NAME, digest), { headers: { authorization } });
    assert.equal(res.status, 200, cache.diagnostics());
    assert.equal(res.digest, digest);
    const gets = up.requests.filter((r) => r.digest === digest && r.method === 'GET');
    assert.equal(gets.length, 1);
    assert.equal(gets[0]!.headers.authorization, authorization, 'the upstream got the client credentials');
    const all = [...cache.proc!.text, ...cache.proc!.logs.map((l) => JSON.stringify(l))].join('\n');
    assert.ok(!all.includes('correct horse') && !all.includes(authorization.slice(6)), 'credentials never logged');
  });

  it('skopeo configured for a password-protected origin pulls through the cache unchanged (the origin challenge is relayed on /v2/)', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const password = 'origin-Passw0rd';
    await mkdir(join(dir, 'auth'), { recursive: true });
    await writeFile(join(dir, 'auth', 'htpasswd'), `alice:${bcrypt.hashSync(password, 10)}\n`);
    const origin = await startCascadeOrigin(dir, 'origin', { auth: { htpasswd: { realm: 'origin-realm', path: join(dir, 'auth', 'htpasswd') } } });
    defer(() => origin.stop());
    const image = await makeOciImage(join(dir, 'src'), { layers: [512 * 1024, 100_000], tag: 'v1', seed: 'passthrough-skopeo' });
    const creds = `alice:${password}`;
    await skopeo(['copy', '--dest-creds', creds, image.ref, `docker://${origin.host}/private/app:v1`]);
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url });
    defer(() => cache.stop());

    const ping = await fetch(`${cache.url}/v2/`);
    assert.equal(ping.status, 401, 'the version check answers as the origin does');
    assert.equal(ping.headers.get('www-authenticate'), 'Basic realm="origin-realm"');
    const anonymous = await skopeo(['copy', `docker://${cache.host}/private/app:v1`, `oci:${join(dir, 'anon')}:v1`], { allowFailure: true });
    assert.notEqual(anonymous.code, 0, 'no image without credentials');
    await skopeo(['copy', '--src-creds', creds, `docker://${cache.host}/private/app:v1`, `oci:${join(dir, 'out')}:v1`]);
    await assertLayoutHolds(join(dir, 'out'), 'v1', image);
    for (const layer of image.image.layers) assert.ok(await hasBlobData(cache.rootdirectory, layer.digest), `layer ${layer.digest} stored by the cache`);
    const all = [...cache.proc!.text, ...cache.proc!.logs.map((l) => JSON.stringify(l))].join('\n');
    assert.ok(!all.includes(password) && !all.includes(Buffer.from(creds).toString('base64')), 'credentials never logged');
  });

  it('50 concurrent cold requests for one 64 MiB blob: one GET at the origin, 50 correct copies', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const blob = randomBytes(64 * MiB);
    const digest = await pushBlob(origin.url, NAME, blob);
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url });
    defer(() => cache.stop());

    const results = await Promise.all(Array.from({ length: 50 }, () => fetchBlob(blobUrl(cache.url, NAME, digest), { keepBody: 4096, timeoutMs: 90_000 })));
    const bad = results.map((r, i) => ({ i, r })).filter(({ r }) => r.status !== 200 || !r.complete || r.digest !== digest);
    assert.deepEqual(
      bad.map(({ i, r }) => `client ${i}: ${r.status} ${r.size} bytes ${r.error ?? ''} ${r.digest === digest ? '' : 'WRONG DIGEST'} ${r.body?.toString().slice(0, 200) ?? ''}`),
      [],
      `every client gets the blob\n${cache.diagnostics(10)}`,
    );
    await settle(origin);
    const gets = blobRequests(origin, digest, 'GET');
    assert.equal(gets.length, 1, `origin GETs for the blob: ${JSON.stringify(gets)}\n${origin.diagnostics(20)}`);
    await settle(cache);
    assert.equal(blobRequests(cache, digest, 'GET').length, 50, 'the cache logged 50 client GETs');
    await waitFor('the blob stored', () => hasBlobData(cache.rootdirectory, digest), 10_000);
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [digest]);
  });
});

describe('cache node: configuration errors', () => {
  it('blobttl requires storage.delete.enabled: true (names the key, exits non-zero)', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-config-');
    const res = await runCacheExpectingExit(dir, 'nodelete', { origin: 'http://127.0.0.1:9', config: { storage: { delete: { enabled: false }, filesystem: { rootdirectory: dir } } } });
    assert.notEqual(res.code, 0, 'exits non-zero');
    assert.match(res.stderr, /blobttl/, res.stderr);
    assert.match(res.stderr, /storage\.delete\.enabled/, res.stderr);
    assert.ok(res.stderr.includes(res.file), `names the file: ${res.stderr}`);
  });

  it('refuses a bad blobttl, an upstream set with no host and a non-URL originhost, naming each key', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-cache-config-');
    const badTtl = await runCacheExpectingExit(dir, 'badttl', { origin: 'http://127.0.0.1:9', blobttl: '24 hours' });
    assert.notEqual(badTtl.code, 0);
    assert.match(badTtl.stderr, /middleware\.registry\[0\]\.options\.blobttl/, badTtl.stderr);

    // an upstream set with neither originhost nor upstreamhosts: nowhere to fetch from
    const noOrigin = await runCacheExpectingExit(dir, 'noorigin', { origin: 'http://127.0.0.1:9', options: { upstreams: [{ upstreamhosts: [] }] } });
    assert.notEqual(noOrigin.code, 0);
    assert.match(noOrigin.stderr, /originhost/, noOrigin.stderr);

    const notUrl = await runCacheExpectingExit(dir, 'noturl', { origin: 'not a url' });
    assert.notEqual(notUrl.code, 0);
    assert.match(notUrl.stderr, /originhost/, notUrl.stderr);
  });
});
