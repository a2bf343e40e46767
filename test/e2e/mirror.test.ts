/**
 * Mirror mode end to end: one `cascade registry` node with a `proxy` section in front of two origins (a
 * Cascade registry and distribution's `docker-registry`), pulled through by containerd (routed by `?ns=`,
 * from a hosts.toml mirror entry) and by skopeo (a registries.conf mirror with a path prefix); then the
 * origins stop and the cached tags and digests still pull; a local repository on the same node takes a
 * push. A second node mirrors a token-auth origin with credentials from its config, and serves it only
 * to the clients it authenticates itself.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { startCascadeOrigin, startDistributionOrigin, waitFor, type Hop } from '../lib/cache.js';
import { startCascade, tempDir, testScope, type CascadeProcess } from '../lib/cascade.js';
import { startServer } from '../lib/stack.js';
import { layoutBlobs, makeOciImage, type OciImageLayout } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { canMount, podman, skopeo, startContainerd, type Containerd } from '../lib/peers.js';
import { ACCESS, creds, startTokenCascade, USERS, writeSigningKey, writeUsers } from '../lib/token.js';

const MiB = 1 << 20;

/** A containerd hosts directory: for each origin host, the mirror first, then the origin itself. */
async function writeHostsDir(dir: string, mirror: string, origins: readonly string[]): Promise<string> {
  const root = join(dir, 'certs.d');
  for (const origin of origins) {
    await mkdir(join(root, origin), { recursive: true });
    await writeFile(
      join(root, origin, 'hosts.toml'),
      [`server = "http://${origin}"`, '', `[host."http://${mirror}"]`, '  capabilities = ["pull", "resolve"]', ''].join('\n'),
    );
  }
  return root;
}

/** The digests in containerd's content store. */
async function contentDigests(ctrd: Containerd): Promise<Set<string>> {
  const { stdout } = await ctrd.ctr(['content', 'ls', '--quiet']);
  return new Set(stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}

/** The config and layer digests of an image (its layout also holds the manifest). */
async function blobsOf(image: OciImageLayout): Promise<string[]> {
  return [...(await layoutBlobs(image.dir)).keys()].filter((d) => d !== image.digest);
}

/**
 * Pulls `ref` with containerd through the hosts directory (`ctr images pull`, which unpacks, where this
 * process may mount; else `ctr content fetch`, the same resolver and fetcher); every blob of `image` must
 * land in its store.
 */
async function ctrPull(ctrd: Containerd, hostsDir: string, ref: string, image: OciImageLayout): Promise<void> {
  const verb = (await canMount()) ? ['images', 'pull'] : ['content', 'fetch'];
  await ctrd.ctr([...verb, '--hosts-dir', hostsDir, '--platform', 'linux/amd64', ref], { timeoutMs: 60_000 });
  const have = await contentDigests(ctrd);
  for (const digest of [image.digest, ...(await layoutBlobs(image.dir)).keys()]) assert.ok(have.has(digest), `${ref}: containerd has ${digest}`);
}

describe('mirror mode: one node, several remotes, real clients', () => {
  let fixtures: { dir: string; cleanup: () => Promise<void> };
  let imageA: OciImageLayout;
  let imageB: OciImageLayout;
  let local: OciImageLayout;

  before(async () => {
    fixtures = await tempDir('e2e-mirror-fixtures-');
    imageA = await makeOciImage(join(fixtures.dir, 'a'), { layers: [2 * MiB, 300_000], tag: 'v1', seed: 'mirror-a' });
    imageB = await makeOciImage(join(fixtures.dir, 'b'), { layers: [3 * MiB, 100_000, 40_000], tag: 'v1', seed: 'mirror-b' });
    local = await makeOciImage(join(fixtures.dir, 'local'), { layers: [1 * MiB], tag: 'v1', seed: 'mirror-local' });
  });
  after(async () => {
    await fixtures?.cleanup();
  });

  test('containerd (ns) and skopeo (registries.conf) pull through one node from two origins, which can then stop', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-mirror-');
    const originA: Hop = await startCascadeOrigin(dir, 'origin-a');
    defer(() => originA.stop());
    const originB: Hop = await startDistributionOrigin(dir, 'origin-b');
    defer(() => originB.stop());
    await skopeo(['copy', imageA.ref, `docker://${originA.host}/team/app:v1`]);
    await skopeo(['copy', imageB.ref, `docker://${originB.host}/library/tool:v1`]);

    const mirrorConfig = {
      storage: { filesystem: { rootdirectory: join(dir, 'mirror', 'data') } },
      proxy: {
        local: ['local'],
        remotes: [
          { url: originA.url, name: 'cascade' },
          { url: originB.url, name: 'dist' },
        ],
      },
    };
    const mirror: CascadeProcess = await startCascade(join(dir, 'mirror'), mirrorConfig);
    defer(() => mirror.stop());
    const ctrd = await startContainerd();
    defer(() => ctrd.stop());
    const hostsDir = await writeHostsDir(dir, mirror.host, [originA.host, originB.host]);
    const refA = `${originA.host}/team/app:v1`;
    const refB = `${originB.host}/library/tool:v1`;

    await t.test('containerd pulls both images through the mirror, which routes them by ns', async () => {
      await ctrPull(ctrd, hostsDir, refA, imageA);
      await ctrPull(ctrd, hostsDir, refB, imageB);
      const served = mirror.requests().filter((r) => r.status === 200 && typeof r.query === 'string');
      for (const [host, image] of [
        [originA.host, imageA],
        [originB.host, imageB],
      ] as const) {
        const ns = (query: string) => new URLSearchParams(query).get('ns') === host;
        const blobs = await blobsOf(image);
        for (const digest of blobs) {
          assert.ok(served.some((r) => String(r.path).endsWith(`/blobs/${digest}`) && ns(String(r.query))), `the mirror served ${digest} for ${host}`);
        }
      }
      // Each origin was asked for each blob once, by the mirror.
      const blobGets = (hop: Hop) => hop.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/sha256:'));
      assert.equal(blobGets(originA).length, (await blobsOf(imageA)).length);
      assert.equal(blobGets(originB).length, (await blobsOf(imageB)).length);
    });

    const registriesConf = join(dir, 'registries.conf');
    await writeFile(
      registriesConf,
      [
        '[[registry]]',
        `location = "${originB.host}"`,
        'insecure = true',
        '[[registry.mirror]]',
        `location = "${mirror.host}/dist"`,
        'insecure = true',
        '',
      ].join('\n'),
    );

    await t.test('skopeo with a registries.conf mirror entry pulls through the node (path prefix)', async () => {
      const before = originB.requests().length;
      const out = join(dir, 'skopeo-b');
      await skopeo(['copy', `docker://${refB}`, `oci:${out}:v1`], { global: ['--registries-conf', registriesConf] });
      await assertLayoutHolds(out, 'v1', imageB);
      assert.ok(mirror.requests().some((r) => r.path === '/v2/dist/library/tool/manifests/v1' && r.status === 200), 'skopeo asked the mirror');
      const after = originB.requests().slice(before);
      assert.deepEqual(after.filter((r) => r.path.includes('/blobs/')), [], 'every blob came from the mirror\'s disk');
    });

    await t.test('podman with the same registries.conf pulls through the node', async () => {
      const before = { origin: originB.requests().length, mirror: mirror.requests().length };
      const home = join(dir, 'podman');
      await podman(['pull', refB], { dir: home, registriesConf });
      const id = (await podman(['image', 'inspect', '--format', '{{.Id}}', refB], { dir: home })).stdout.trim();
      assert.equal(`sha256:${id}`, imageB.image.config.digest, 'podman stored the image whose config the origin has');
      const asked = mirror.requests().slice(before.mirror);
      assert.ok(asked.some((r) => r.path === '/v2/dist/library/tool/manifests/v1' && r.status === 200), `podman asked the mirror: ${JSON.stringify(asked.map((r) => r.path))}`);
      for (const layer of imageB.image.layers) assert.ok(asked.some((r) => r.path === `/v2/dist/library/tool/blobs/${layer.digest}` && r.status === 200), `the mirror served ${layer.digest} to podman`);
      assert.deepEqual(originB.requests().slice(before.origin).filter((r) => r.path.includes('/blobs/')), [], 'no blob from the origin');
    });

    await t.test('a local repository on the same node takes a push, next to the proxied ones', async () => {
      await skopeo(['copy', local.ref, `docker://${mirror.host}/local/app:v1`]);
      const out = join(dir, 'local-out');
      await skopeo(['copy', `docker://${mirror.host}/local/app:v1`, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', local);
      const refused = await skopeo(['copy', local.ref, `docker://${mirror.host}/dist/library/tool:v2`], { allowFailure: true });
      assert.notEqual(refused.code, 0, 'a push into a proxied repository is refused');
    });

    await originA.stop();
    await originB.stop();

    await t.test('with both origins stopped, cached tags and digests still pull', async () => {
      const fresh = await startContainerd();
      defer(() => fresh.stop());
      await ctrPull(fresh, hostsDir, refA, imageA);
      await ctrPull(fresh, hostsDir, `${originB.host}/library/tool@${imageB.digest}`, imageB);
      const out = join(dir, 'skopeo-stale');
      await skopeo(['copy', `docker://${refB}`, `oci:${out}:v1`], { global: ['--registries-conf', registriesConf] });
      await assertLayoutHolds(out, 'v1', imageB);
      const direct = join(dir, 'skopeo-direct');
      await skopeo(['copy', `docker://${mirror.host}/cascade/team/app:v1`, `oci:${direct}:v1`]);
      await assertLayoutHolds(direct, 'v1', imageA);
      await waitFor('a stale-tag warning in the mirror log', () => mirror.logs.some((l) => l.msg === 'remote unavailable: serving the stored tag'), 5000);
      const res = await fetch(`${mirror.url}/v2/cascade/team/app/manifests/v1`, { headers: { accept: imageA.mediaType } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('warning') ?? '', /^110 /);
      const local2 = join(dir, 'local-out-2');
      await skopeo(['copy', `docker://${mirror.host}/local/app:v1`, `oci:${local2}:v1`]);
      await assertLayoutHolds(local2, 'v1', local);
    });

    await t.test('restarted with every remote unreachable, the mirror starts and serves its store', async () => {
      await mirror.stop();
      const again = await startCascade(join(dir, 'mirror'), mirrorConfig);
      defer(() => again.stop());
      const out = join(dir, 'after-restart');
      await skopeo(['copy', `docker://${again.host}/dist/library/tool:v1`, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', imageB);
      const local3 = join(dir, 'local-out-3');
      await skopeo(['copy', `docker://${again.host}/local/app:v1`, `oci:${local3}:v1`]);
      await assertLayoutHolds(local3, 'v1', local);
      const res = await fetch(`${again.url}/v2/library/alpine/manifests/latest?ns=quay.io`);
      assert.equal(res.status, 403, 'a registry that is not a remote is refused');
      assert.match(await res.text(), /does not proxy quay\.io/);
    });
  });

  test('a mirror registered as a cache at the Cascade server serves the blobs it is redirected for, with the server\'s grants', { timeout: 90_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-mirror-grants-');
    const users = { alice: 'alice-pw', bob: 'bob-pw', svc: 'svc-pw' };
    const htpasswd = join(dir, 'htpasswd');
    await writeFile(htpasswd, Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}\n`).join(''));
    const origin = await startCascade(join(dir, 'origin'), {
      storage: { filesystem: { rootdirectory: join(dir, 'origin', 'data') } },
      auth: { htpasswd: { realm: 'origin', path: htpasswd } },
    });
    defer(() => origin.stop());
    const server = await startServer(dir, { origin: origin.url, password: users.svc, issuer: 'cascade-test', healthInterval: '1s' });
    defer(() => server.stop());
    const mirror = await startCascade(join(dir, 'mirror'), {
      storage: { filesystem: { rootdirectory: join(dir, 'mirror', 'data') } },
      proxy: {
        remotes: [{ url: origin.url, username: 'svc', password: users.svc, default: true }],
        grants: { issuer: 'cascade-test', name: 'mirror-a', keys: server.url },
      },
    });
    defer(() => mirror.stop());
    const basicOf = (u: keyof typeof users) => `Basic ${Buffer.from(`${u}:${users[u]}`).toString('base64')}`;
    const created = await fetch(`${server.url}/api/v0/content_caches`, { method: 'POST', headers: { authorization: basicOf('alice'), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'mirror-a', host: mirror.url }) });
    assert.equal(created.status, 201);
    const { id } = (await created.json()) as { id: string };
    const picked = await fetch(`${server.url}/api/v0/accounts/bob/settings`, { method: 'PATCH', headers: { authorization: basicOf('bob'), 'content-type': 'application/json' }, body: JSON.stringify({ contentCacheUUID: id }) });
    assert.equal(picked.status, 200);

    await skopeo(['copy', '--dest-creds', `alice:${users.alice}`, imageA.ref, `docker://${server.host}/team/app:v1`]);
    await skopeo(['copy', '--src-creds', `bob:${users.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob'), 'v1', imageA);
    for (const digest of await blobsOf(imageA)) {
      assert.ok(
        mirror.requests().some((r) => r.method === 'GET' && r.status === 200 && String(r.path).endsWith(`/blobs/${digest}`) && r.user === 'bob'),
        `the mirror served ${digest} to bob, with his grant`,
      );
    }
    const [layer] = await blobsOf(imageA);
    const anonymous = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}`);
    assert.equal(anonymous.status, 401, 'no grant, no auth: the private remote is not served to anonymous clients');
    const forged = await fetch(`${mirror.url}/v2/team/app/blobs/${layer}?grant=not.a.grant`);
    assert.equal(forged.status, 401);
  });

  test('a token-auth origin mirrored with credentials from the config, served only to the mirror\'s own users', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-mirror-token-');
    const tokenDir = join(dir, 'origin');
    await mkdir(tokenDir, { recursive: true });
    const { proc: origin } = await startTokenCascade(tokenDir, { signingkey: await writeSigningKey(tokenDir), htpasswd: await writeUsers(tokenDir), access: ACCESS });
    defer(() => origin.stop());
    await skopeo(['copy', '--dest-creds', creds('alice'), imageA.ref, `docker://${origin.host}/team/app:v1`]);

    const mirrorDir = join(dir, 'mirror');
    await mkdir(mirrorDir, { recursive: true });
    const htpasswd = join(mirrorDir, 'htpasswd');
    await writeFile(htpasswd, `carol:${bcrypt.hashSync('carol-Passw0rd', 5)}\n`);
    // The password comes from the environment, as a deployment would pass a secret.
    const mirror = await startCascade(
      mirrorDir,
      {
        storage: { filesystem: { rootdirectory: join(mirrorDir, 'data') } },
        auth: { htpasswd: { realm: 'mirror', path: htpasswd } },
        proxy: { remotes: [{ url: origin.url, username: 'bob', default: true }] },
        log: { level: 'debug' },
      },
      { env: { REGISTRY_PROXY_REMOTES_0_PASSWORD: USERS.bob } },
    );
    defer(() => mirror.stop());

    const anonymous = await fetch(`${mirror.url}/v2/team/app/manifests/v1`);
    assert.equal(anonymous.status, 401, 'no bytes of a private remote for anonymous clients');

    const out = join(dir, 'out');
    await skopeo(['copy', '--src-creds', 'carol:carol-Passw0rd', `docker://${mirror.host}/team/app:v1`, `oci:${out}:v1`]);
    await assertLayoutHolds(out, 'v1', imageA);
    const tokenRequests = origin.requests().filter((r) => r.path === '/auth/token');
    assert.ok(tokenRequests.length >= 1, 'the mirror got a token from the origin\'s realm');
    assert.ok(origin.requests().some((r) => r.user === 'bob' && String(r.path).includes('/blobs/')), 'the origin saw bob, the mirror\'s configured account');
    const everything = [...mirror.text, ...mirror.logs.map((l) => JSON.stringify(l))].join('\n');
    assert.ok(!everything.includes(USERS.bob), 'the remote password is never logged');
    assert.ok(!everything.includes('carol-Passw0rd'), 'the client password is never logged');
    assert.ok(!/Bearer [A-Za-z0-9_-]{20,}/.test(everything), 'no token is logged');
  });
});
