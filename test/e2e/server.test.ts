/**
 * The DTR flow end to end: skopeo talks only to the server; the origin (a Cascade registry with htpasswd)
 * authorizes every request; manifests come from the origin; blobs are redirected with a signed grant to
 * the user's cache (region-b -> region-a -> server -> origin), and users without a cache get them from the
 * server. Grants cannot be forged, widened or replayed.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { startCascade, testScope, type CascadeProcess } from '../lib/cascade.js';
import { api, basic, startServer, startStack, USERS } from '../lib/stack.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';

for (const originKind of ['cascade', 'distribution'] as const) describe(`server: the DTR pull flow, origin ${originKind} with htpasswd`, () => {
  it('a user whose cache is region-b pulls through region-b -> region-a; a user without a cache pulls from the server', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-server-');
    const stack = await startStack(dir, defer, { originKind });
    const { server, regionA, regionB, origin } = stack;

    // Admin registers the caches; bob picks region-b.
    const a = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-a', host: regionA.url });
    assert.equal(a.status, 201, JSON.stringify(a.json));
    const b = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-b', host: regionB.url });
    assert.equal(b.status, 201, JSON.stringify(b.json));
    const regionBId = (b.json as { id: string }).id;
    assert.equal((await api(server, 'POST', '/api/v0/content_caches', 'bob', { name: 'x', host: 'http://127.0.0.1:1' })).status, 403, 'writes are admin-only');
    const settings = await api(server, 'PATCH', '/api/v0/accounts/bob/settings', 'bob', { contentCacheUUID: regionBId });
    assert.equal(settings.status, 200, JSON.stringify(settings.json));

    // Alice pushes through the server (proxied to the origin with her credentials).
    const image = await makeOciImage(join(dir, 'src'), { layers: [2 * 1024 * 1024, 700_000, 64_000], tag: 'v1', seed: 'server-flow' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${server.host}/team/app:v1`]);

    // Bob pulls from the server: manifests from the origin, every blob from region-b.
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob'), 'v1', image);
    // Config and layers: the manifest itself is fetched through /manifests/, from the origin.
    const blobDigests = image.blobs.map((x) => x.digest).filter((d) => d !== image.digest);
    const servedBy = (proc: CascadeProcess) =>
      new Set(proc.requests().filter((r) => r.method === 'GET' && r.status === 200 && typeof r.path === 'string' && /\/blobs\/sha256:/.test(r.path)).map((r) => String(r.path).split('/blobs/')[1]));
    const atB = servedBy(regionB);
    for (const d of blobDigests) assert.ok(atB.has(d), `region-b served ${d}\n${JSON.stringify(regionB.requests().slice(-20))}`);
    const atA = servedBy(regionA);
    for (const d of blobDigests) assert.ok(atA.has(d), `region-a filled region-b's miss for ${d}`);
    const redirects = server.requests().filter((r) => r.redirectedTo === 'region-b');
    assert.ok(redirects.length >= blobDigests.length, 'the server redirected bob\'s blob requests to region-b');
    const originManifestGets = origin.gets().filter((path) => path.includes('/manifests/'));
    assert.ok(originManifestGets.length >= 1, 'manifests were served from the origin');

    // A second pull by bob is served by region-b from its own disk: region-a sees no new blob request.
    const aBefore = regionA.requests().length;
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob2')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob2'), 'v1', image);
    assert.equal(regionA.requests().filter((r, i) => i >= aBefore && String(r.path).includes('/blobs/')).length, 0, 'warm pull: no request upstream of region-b');

    // Carol has no cache: the server serves the blobs itself.
    const redirectsBefore = server.requests().filter((r) => r.redirectedTo).length;
    await skopeo(['copy', '--src-creds', `carol:${USERS.carol}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'carol')}:v1`]);
    await assertLayoutHolds(join(dir, 'carol'), 'v1', image);
    assert.equal(server.requests().filter((r) => r.redirectedTo).length, redirectsBefore, 'no redirect for a user without a cache');

    // Anonymous: refused with the origin's challenge, and no bytes.
    const anon = await fetch(`${server.url}/v2/team/app/blobs/${blobDigests[0]}`, { redirect: 'manual' });
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm=/);
    assert.equal((await anon.arrayBuffer()).byteLength < 300, true);
    const wrong = await fetch(`${server.url}/v2/team/app/manifests/v1`, { headers: { authorization: `Basic ${Buffer.from('bob:nope').toString('base64')}` } });
    assert.equal(wrong.status, 401);

    // Grants: take a real one from a redirect, then abuse it.
    const redirect = await fetch(`${server.url}/v2/team/app/blobs/${blobDigests[1]}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    assert.equal(redirect.status, 307);
    const location = new URL(redirect.headers.get('location') ?? '');
    assert.equal(location.origin, regionB.url);
    const grant = location.searchParams.get('grant') ?? '';
    assert.ok(grant.length > 20);
    const blobAt = (cache: CascadeProcess, repo: string, digest: string, token: string) => fetch(`${cache.url}/v2/${repo}/blobs/${digest}?grant=${encodeURIComponent(token)}`);
    assert.equal((await blobAt(regionB, 'team/app', blobDigests[1]!, grant)).status, 200, 'the genuine grant works');
    assert.equal((await blobAt(regionB, 'team/app', blobDigests[0]!, grant)).status, 403, 'another digest');
    assert.equal((await blobAt(regionB, 'team/other', blobDigests[1]!, grant)).status, 403, 'another repository');
    const [h, p, s] = grant.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, digest: blobDigests[0] })).toString('base64url')}.${s}`;
    assert.equal((await blobAt(regionB, 'team/app', blobDigests[0]!, tampered)).status, 401, 'tampered claims');
    const forged = `${h}.${p}.${Buffer.alloc(64, 7).toString('base64url')}`;
    assert.equal((await blobAt(regionB, 'team/app', blobDigests[1]!, forged)).status, 401, 'forged signature');
    assert.equal((await fetch(`${regionB.url}/v2/team/app/blobs/${blobDigests[1]}`)).status, 401, 'no grant, no bytes');
    assert.equal((await fetch(`${regionB.url}/v2/team/app/manifests/v1?grant=${encodeURIComponent(grant)}`)).status, 403, 'grants are for blobs only');
    // A grant for region-b replayed to a cache that does not fill region-b: register region-c, not chained.
    const regionC = await startCascade(join(dir, 'region-c'), {
      storage: { filesystem: { rootdirectory: join(dir, 'region-c-data') }, delete: { enabled: true } },
      middleware: { registry: [{ name: 'downstream', options: { originhost: server.url, auth: 'grant', name: 'region-c', issuer: 'cascade-test' } }] },
    });
    defer(() => regionC.stop());
    assert.equal((await blobAt(regionC, 'team/app', blobDigests[1]!, grant)).status, 403, 'replayed to another cache');
    // The server's own blob endpoint refuses a grant of another digest too.
    assert.equal((await fetch(`${server.url}/v2/team/app/blobs/${blobDigests[0]}?grant=${encodeURIComponent(grant)}`)).status, 403);

    // region-b goes down: after the server's health check sees it, bob's blobs come from the server.
    await regionB.stop();
    await new Promise((r) => setTimeout(r, 2500));
    const down = await fetch(`${server.url}/v2/team/app/blobs/${blobDigests[2]}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    assert.equal(down.status, 200, 'a cache marked down is skipped: the server serves the blob');
    // A deleted cache: bob's setting falls back to no cache, the server serves the blob.
    assert.equal((await api(server, 'DELETE', `/api/v0/content_caches/${regionBId}`, 'alice')).status, 204);
    const deleted = await fetch(`${server.url}/v2/team/app/blobs/${blobDigests[2]}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    assert.equal(deleted.status, 200, 'the cache was deleted: the server serves the blob');
    assert.equal(((await api(server, 'GET', '/api/v0/accounts/bob/settings', 'bob')).json as { contentCacheUUID: unknown }).contentCacheUUID, null);

    // Credentials and grants never reach the logs.
    const logs = [...[server, regionA, regionB].flatMap((proc) => [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))]), ...origin.text()].join('\n');
    for (const secret of Object.values(USERS)) assert.ok(!logs.includes(secret), `password ${secret} not logged`);
    assert.ok(!logs.includes(grant), 'grants are not logged');
  });
});

describe('server: origin with the Docker token flow', () => {
  it('users pull by their rights: with pull, through their cache; without, 401 and no bytes', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-server-token-');
    const { generateKeyPairSync } = await import('node:crypto');
    const { freePort } = await import('../lib/peers.js');
    const users = { alice: 'alice-pw', bob: 'bob-pw', dave: 'dave-pw', svc: 'svc-pw' };
    await writeFile(join(dir, 'htpasswd'), Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 8)}`).join('\n') + '\n');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(join(dir, 'token.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    const port = await freePort();
    const realm = `http://127.0.0.1:${port}/auth/token`;
    const origin = await startCascade(join(dir, 'origin'), {
      storage: { filesystem: { rootdirectory: join(dir, 'origin-data') } },
      http: { addr: `127.0.0.1:${port}` },
      auth: {
        token: {
          realm,
          service: 'origin',
          issuer: 'origin-tokens',
          signingkey: join(dir, 'token.pem'),
          htpasswd: join(dir, 'htpasswd'),
          access: [
            { account: 'alice', name: '*', actions: ['*'] },
            { account: 'svc', name: '*', actions: ['pull'] },
            { account: 'bob', name: 'team/*', actions: ['pull'] },
            { account: 'dave', name: '*', actions: [] },
          ],
        },
      },
    });
    defer(() => origin.stop());
    const server = await startServer(dir, { origin: origin.url, password: users.svc, issuer: 'cascade-test' });
    defer(() => server.stop());
    const cache = await startCascade(join(dir, 'region-a'), {
      storage: { filesystem: { rootdirectory: join(dir, 'region-a-data') }, delete: { enabled: true } },
      middleware: { registry: [{ name: 'downstream', options: { originhost: server.url, auth: 'grant', name: 'region-a', issuer: 'cascade-test' } }] },
    });
    defer(() => cache.stop());
    const auth = (u: keyof typeof users) => `Basic ${Buffer.from(`${u}:${users[u]}`).toString('base64')}`;
    const created = await fetch(`${server.url}/api/v0/content_caches`, { method: 'POST', headers: { authorization: auth('alice'), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'region-a', host: cache.url }) });
    assert.equal(created.status, 201, 'alice, admin, is authenticated through the origin\'s token endpoint');
    const { id } = (await created.json()) as { id: string };
    assert.equal((await fetch(`${server.url}/api/v0/content_caches_default`, { method: 'PUT', headers: { authorization: auth('alice'), 'content-type': 'application/json' }, body: JSON.stringify({ contentCacheUUID: id }) })).status, 200);

    const image = await makeOciImage(join(dir, 'src'), { layers: [1024 * 1024, 50_000], tag: 'v1', seed: 'token-flow' });
    await skopeo(['copy', '--dest-creds', `alice:${users.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${server.host}/team/app:v1`]);
    await skopeo(['copy', '--src-creds', `bob:${users.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob'), 'v1', image);
    const layer = image.blobs.map((x) => x.digest).find((d) => d !== image.digest) as string;
    assert.ok(
      cache.requests().some((r) => r.status === 200 && String(r.path).endsWith(layer) && r.user === 'bob'),
      'bob\'s blobs came from region-a (the default cache)',
    );

    // Clients talk only to the server: its challenges name its own token path, which relays to the origin's.
    const anon = await fetch(`${server.url}/v2/team/app/manifests/v1`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', new RegExp(`^Bearer realm="${server.url}/auth/token",service="origin"`));
    const tokenRequests = server.requests().filter((r) => r.path === '/auth/token');
    assert.ok(tokenRequests.some((r) => r.status === 200 && r.user === 'bob'), `bob's skopeo got its tokens through the server: ${JSON.stringify(tokenRequests)}`);
    const viaServer = await fetch(`${server.url}/auth/token?service=origin&scope=repository:team/app:pull`, { headers: { authorization: auth('bob') } });
    assert.equal(viaServer.status, 200);
    assert.equal(viaServer.headers.get('cache-control'), 'no-store');
    assert.ok(((await viaServer.json()) as { token?: string }).token, 'a token from the origin, through the server');
    assert.equal((await fetch(`${server.url}/auth/token?service=origin&scope=repository:team/app:pull`, { headers: { authorization: `Basic ${Buffer.from('bob:wrong').toString('base64')}` } })).status, 401, 'the origin refuses wrong credentials, through the server too');
    // A grant the server refuses keeps its own challenge: it is not the origin's.
    const badGrant = await fetch(`${server.url}/v2/team/app/blobs/${layer}?grant=not.a.grant`);
    assert.equal(badGrant.status, 401);
    assert.match(badGrant.headers.get('www-authenticate') ?? '', /^Bearer realm="cascade-grant"/);
    // With tokenproxy off, the origin's realm is relayed as it is.
    const plain = await startServer(join(dir, 'plain'), { origin: origin.url, password: users.svc, issuer: 'cascade-test', tokenproxy: false });
    defer(() => plain.stop());
    assert.match((await fetch(`${plain.url}/v2/`)).headers.get('www-authenticate') ?? '', new RegExp(`^Bearer realm="${realm}"`));
    assert.equal((await fetch(`${plain.url}/auth/token`)).status, 404);

    // dave is a valid user without pull rights: the origin refuses his token's scope, the server relays it.
    const failed = await skopeo(['copy', '--src-creds', `dave:${users.dave}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'dave')}:v1`], { allowFailure: true });
    assert.notEqual(failed.code, 0, 'dave cannot pull');
    const tokenRes = await fetch(`${server.url}/auth/token?service=origin&scope=repository:team/app:pull`, { headers: { authorization: auth('dave') } });
    const { token } = (await tokenRes.json()) as { token: string };
    const blob = await fetch(`${server.url}/v2/team/app/blobs/${layer}`, { headers: { authorization: `Bearer ${token}` }, redirect: 'manual' });
    assert.equal(blob.status, 401);
    assert.match(blob.headers.get('www-authenticate') ?? '', /insufficient_scope/);
    assert.equal(blob.headers.get('location'), null, 'no redirect, no grant');
    assert.ok((await blob.arrayBuffer()).byteLength < 300, 'no blob bytes');
    // bob has no rights outside team/: same answer.
    const bobToken = ((await (await fetch(`${realm}?service=origin&scope=repository:other/app:pull`, { headers: { authorization: auth('bob') } })).json()) as { token: string }).token;
    assert.equal((await fetch(`${server.url}/v2/other/app/blobs/${layer}`, { headers: { authorization: `Bearer ${bobToken}` }, redirect: 'manual' })).status, 401);
    const logs = [...server.text, ...server.logs.map((l) => JSON.stringify(l))].join('\n');
    for (const secret of Object.values(users)) assert.ok(!logs.includes(secret), `password ${secret} not logged`);
    assert.ok(!logs.includes(token), 'tokens are not logged');
  });
});
