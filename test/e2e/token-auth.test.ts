/**
 * `auth.token` end to end: the real `cascade registry` process as a token-auth origin, its own token server
 * at the realm's path, and skopeo as the client (it follows the Bearer challenge to the token endpoint with
 * Basic credentials, as docker does). Then distribution 2.8 trusting tokens that Cascade signs (x5c chain
 * to its rootcertbundle), which is the setup the server role's tests against a distribution origin need.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { waitFor } from '../lib/cache.js';
import { tempDir, testScope, type CascadeProcess } from '../lib/cascade.js';
import { ACCESS, creds, ISSUER, SERVICE, startTokenCascade, USERS, writeSigningKey, writeUsers } from '../lib/token.js';
import { makeOciImage, type OciImageLayout } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { freePort, skopeo } from '../lib/peers.js';
import { makeCa } from '@cascade/testkit';

/** The text of every log line of the process, to search for leaked secrets. */
function allOutput(proc: CascadeProcess): string {
  return [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))].join('\n');
}

describe('cascade registry: auth.token with its own token server', () => {
  let fixtures: { dir: string; cleanup: () => Promise<void> };
  let image: OciImageLayout;

  before(async () => {
    fixtures = await tempDir('e2e-token-fixtures-');
    image = await makeOciImage(join(fixtures.dir, 'image'), { layers: [512 * 1024, 40_000], tag: 'v1', seed: 'token-auth' });
  });
  after(async () => {
    await fixtures?.cleanup();
  });

  test('skopeo: push with rights, read-only pull, anonymous refused or allowed by the rules', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-token-');
    const { proc, realm } = await startTokenCascade(dir, { signingkey: await writeSigningKey(dir), htpasswd: await writeUsers(dir), access: ACCESS });
    defer(() => proc.stop());
    const host = proc.host;

    await t.test('a user with push rights copies an image in with --dest-creds', async () => {
      await skopeo(['copy', '--dest-creds', creds('alice'), image.ref, `docker://${host}/team/app:v1`]);
      const inspected = JSON.parse((await skopeo(['inspect', '--creds', creds('alice'), `docker://${host}/team/app:v1`])).stdout) as { Digest: string };
      assert.equal(inspected.Digest, image.digest);
      // The access log is written asynchronously: wait for the line rather than race it.
      await waitFor('a PUT by alice in the access log', () => proc.requests().some((r) => r.user === 'alice' && r.method === 'PUT'), 5000);
    });

    await t.test('a read-only user pulls, but cannot push', async () => {
      const out = join(dir, 'bob-out');
      await skopeo(['copy', '--src-creds', creds('bob'), `docker://${host}/team/app:v1`, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', image);
      const push = await skopeo(['copy', '--dest-creds', creds('bob'), image.ref, `docker://${host}/team/app:v2`], { allowFailure: true });
      assert.notEqual(push.code, 0, 'skopeo push with a read-only user fails');
      assert.match(push.stderr, /denied|unauthorized|authentication required|insufficient/i, push.stderr);
      const tags = JSON.parse((await skopeo(['list-tags', '--creds', creds('alice'), `docker://${host}/team/app`])).stdout) as { Tags: string[] };
      assert.deepEqual(tags.Tags, ['v1'], 'nothing was tagged by the refused push');
    });

    await t.test('wrong credentials fail at the token endpoint', async () => {
      const res = await skopeo(['copy', '--src-creds', 'alice:wrong', `docker://${host}/team/app:v1`, `oci:${join(dir, 'wrong')}:v1`], { allowFailure: true });
      assert.notEqual(res.code, 0);
      await waitFor('a 401 from the token endpoint in the access log', () => proc.requests().some((r) => r.path === '/auth/token' && r.status === 401), 5000);
    });

    await t.test('anonymous gets 401 on pull where the rules give anonymous nothing', async () => {
      const res = await skopeo(['copy', '--src-no-creds', `docker://${host}/team/app:v1`, `oci:${join(dir, 'anon-team')}:v1`], { allowFailure: true });
      assert.notEqual(res.code, 0, 'anonymous skopeo pull of team/ fails');
      const manifest = await fetch(`${proc.url}/v2/team/app/manifests/v1`);
      assert.equal(manifest.status, 401);
      assert.equal(manifest.headers.get('www-authenticate'), `Bearer realm="${realm}",service="${SERVICE}",scope="repository:team/app:pull"`);
      // The anonymous token the client then gets grants nothing here...
      const tokenRes = await fetch(`${realm}?service=${SERVICE}&scope=repository:team/app:pull`);
      assert.equal(tokenRes.status, 200);
      const { token } = (await tokenRes.json()) as { token: string };
      const withToken = await fetch(`${proc.url}/v2/team/app/manifests/v1`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(withToken.status, 401);
      assert.equal(withToken.headers.get('www-authenticate'), `Bearer realm="${realm}",service="${SERVICE}",scope="repository:team/app:pull",error="insufficient_scope"`);
      // ... and a forged one gets nothing either.
      const [h = '', , s = ''] = token.split('.');
      const widened = Buffer.from(JSON.stringify({ iss: ISSUER, sub: 'alice', aud: SERVICE, exp: Math.floor(Date.now() / 1000) + 60, access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] })).toString('base64url');
      const forged = await fetch(`${proc.url}/v2/team/app/manifests/v1`, { headers: { authorization: `Bearer ${h}.${widened}.${s}` } });
      assert.equal(forged.status, 401);
      assert.match(forged.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    });

    await t.test('anonymous pulls work where the rules grant anonymous pull on a namespace', async () => {
      await skopeo(['copy', '--dest-creds', creds('alice'), image.ref, `docker://${host}/public/app:v1`]);
      const out = join(dir, 'anon-public');
      await skopeo(['copy', '--src-no-creds', `docker://${host}/public/app:v1`, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', image);
      const push = await skopeo(['copy', '--dest-no-creds', image.ref, `docker://${host}/public/app:v2`], { allowFailure: true });
      assert.notEqual(push.code, 0, 'anonymous push is refused');
    });

    await t.test('no password and no token ever reaches the log', async () => {
      const output = allOutput(proc);
      for (const [user, password] of Object.entries(USERS)) {
        assert.ok(!output.includes(password), `${user}'s password is not logged`);
        assert.ok(!output.includes(Buffer.from(`${user}:${password}`).toString('base64')), `${user}'s Basic header is not logged`);
      }
      assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\.eyJ/.test(output), 'no JWT in the log');
    });
  });
});

/** Waits until `url` answers at all (any status), or throws after `timeoutMs`. */
async function waitForHttp(url: string, output: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`${url} did not answer in ${timeoutMs} ms:\n${output.slice(-30).join('\n')}`);
}

describe('distribution 2.8 trusting the tokens of Cascade\'s token server', () => {
  test('skopeo pushes to and pulls from distribution with tokens Cascade signed (x5c)', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-token-dist-');
    // An RSA signing key with a certificate from a test CA: distribution 2 trusts a token key only through
    // a certificate chain to its rootcertbundle.
    const ca = makeCa('Cascade token CA');
    const leaf = ca.issue({ commonName: 'cascade token signer' });
    const signingkey = join(dir, 'token-signing-with-cert.pem');
    await writeFile(signingkey, `${leaf.keyPem}${leaf.certPem}`, { mode: 0o600 });
    const bundle = join(dir, 'token-ca.pem');
    await writeFile(bundle, ca.certPem);
    const { proc: cascade, realm } = await startTokenCascade(dir, { signingkey, htpasswd: await writeUsers(dir), rootcertbundle: bundle, access: ACCESS });
    defer(() => cascade.stop());

    const port = await freePort();
    const distConfig = join(dir, 'distribution.yml');
    await writeFile(
      distConfig,
      JSON.stringify({
        version: 0.1,
        log: { level: 'info', formatter: 'json' },
        storage: { filesystem: { rootdirectory: join(dir, 'dist-data') }, maintenance: { uploadpurging: { enabled: false } } },
        http: { addr: `127.0.0.1:${port}`, secret: 'e2e-token-secret' },
        auth: { token: { realm, service: SERVICE, issuer: ISSUER, rootcertbundle: bundle } },
      }),
    );
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
    const child = spawn('docker-registry', ['serve', distConfig], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    child.stdout.setEncoding('utf8').on('data', (c: string) => output.push(...c.split('\n').filter(Boolean)));
    child.stderr.setEncoding('utf8').on('data', (c: string) => output.push(...c.split('\n').filter(Boolean)));
    const exited = new Promise<void>((res) => child.once('exit', () => res()));
    defer(async () => {
      child.kill('SIGTERM');
      await exited;
    });
    const host = `127.0.0.1:${port}`;
    await waitForHttp(`http://${host}/v2/`, output);

    const challenge = await fetch(`http://${host}/v2/team/app/tags/list`);
    assert.equal(challenge.status, 401);
    assert.equal(challenge.headers.get('www-authenticate'), `Bearer realm="${realm}",service="${SERVICE}",scope="repository:team/app:pull"`, 'the same challenge Cascade sends');

    const image = await makeOciImage(join(dir, 'image'), { layers: [200_000], tag: 'v1', seed: 'token-distribution' });
    const diagnostics = () => `--- distribution ---\n${output.slice(-30).join('\n')}`;
    const push = await skopeo(['copy', '--dest-creds', creds('alice'), image.ref, `docker://${host}/team/app:v1`], { allowFailure: true });
    assert.equal(push.code, 0, `${push.stderr}\n${diagnostics()}`);
    const out = join(dir, 'out');
    await skopeo(['copy', '--src-creds', creds('bob'), `docker://${host}/team/app:v1`, `oci:${out}:v1`]);
    await assertLayoutHolds(out, 'v1', image);
    const bobPush = await skopeo(['copy', '--dest-creds', creds('bob'), image.ref, `docker://${host}/team/app:v2`], { allowFailure: true });
    assert.notEqual(bobPush.code, 0, 'distribution refuses a push with bob\'s pull-only token');
    const anon = await skopeo(['copy', '--src-no-creds', `docker://${host}/team/app:v1`, `oci:${join(dir, 'anon')}:v1`], { allowFailure: true });
    assert.notEqual(anon.code, 0, 'anonymous gets nothing in team/');
    await waitFor('alice\'s token from Cascade in its access log', () => cascade.requests().some((r) => r.path === '/auth/token' && r.user === 'alice' && r.status === 200), 5000);
  });
});
