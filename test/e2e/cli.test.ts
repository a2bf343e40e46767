/**
 * The `cascade registry` process: config errors, REGISTRY_* overrides, htpasswd auth with a real client,
 * credentials kept out of the logs, TLS, graceful stop, and recovery after a crash mid-upload.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { makeCa } from '@cascade/testkit';
import { stringify } from 'yaml';
import { CASCADE_BIN, startCascade, testScope } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CASCADE_BIN, ...args], { env: { ...process.env, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('cascade registry: configuration', () => {
  it('refuses an unknown key, naming the file and the key, with a non-zero exit and no stack trace', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const file = join(dir, 'config.yml');
    await writeFile(file, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: dir } }, http: { addr: '127.0.0.1:0', adress: 'x' } }));
    const res = await runCli(['registry', file]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, new RegExp(`${file.replace(/[.]/g, '\\.')}.*http\\.adress`));
    assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
  });

  it('refuses a wrongly typed value and reports every problem at once', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const file = join(dir, 'config.yml');
    await writeFile(file, stringify({ version: '0.1', storage: { filesystem: { rootdirectory: dir }, delete: { enabled: 'perhaps' } }, log: { level: 'loud' }, http: { addr: '127.0.0.1:0' } }));
    const res = await runCli(['registry', file]);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /storage\.delete\.enabled/);
    assert.match(res.stderr, /log\.level/);
  });

  it('reports a missing config file and an unknown command clearly', async () => {
    const missing = await runCli(['registry', '/nonexistent/config.yml']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /\/nonexistent\/config\.yml.*cannot read/);
    const unknown = await runCli(['fly']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown command "fly"/);
  });

  it('applies REGISTRY_* environment overrides (storage root and delete)', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const proc = await startCascade(dir, { storage: { filesystem: { rootdirectory: join(dir, 'from-file') } } }, {
      env: { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: join(dir, 'from-env'), REGISTRY_STORAGE_DELETE_ENABLED: 'true' },
    });
    defer(() => proc.stop());
    const body = Buffer.from('env override');
    const res = await fetch(`${proc.url}/v2/env/test/blobs/uploads/?digest=${sha(body)}`, { method: 'POST', body });
    assert.equal(res.status, 201);
    const hex = sha(body).slice(7);
    await stat(join(dir, 'from-env/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'));
    await assert.rejects(stat(join(dir, 'from-file/docker/registry/v2/blobs')));
    // delete was enabled by the environment
    assert.equal((await fetch(`${proc.url}/v2/env/test/blobs/${sha(body)}`, { method: 'DELETE' })).status, 202);
  });

  it('stops cleanly on SIGTERM', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const proc = await startCascade(dir, { storage: { inmemory: {} } });
    assert.equal(await proc.stop('SIGTERM'), 0);
  });
});

describe('cascade registry: htpasswd auth', () => {
  it('challenges anonymous clients, accepts valid credentials with skopeo, and never logs credentials', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const password = 's3cret-Passw0rd';
    await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync(password, 10)}\n`);
    const proc = await startCascade(dir, {
      storage: { filesystem: { rootdirectory: join(dir, 'data') } },
      auth: { htpasswd: { realm: 'cascade-test', path: join(dir, 'htpasswd') } },
      log: { level: 'debug' },
    });
    defer(() => proc.stop());

    const anon = await fetch(`${proc.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('www-authenticate'), 'Basic realm="cascade-test"');
    assert.equal(((await anon.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAUTHORIZED');
    const basic = (user: string, pass: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });
    assert.equal((await fetch(`${proc.url}/v2/`, { headers: basic('alice', 'wrong') })).status, 401);
    assert.equal((await fetch(`${proc.url}/v2/`, { headers: basic('mallory', password) })).status, 401);
    assert.equal((await fetch(`${proc.url}/v2/`, { headers: basic('alice', password) })).status, 200);

    const body = Buffer.from('private layer');
    const push = await fetch(`${proc.url}/v2/private/app/blobs/uploads/?digest=${sha(body)}`, { method: 'POST', body });
    assert.equal(push.status, 401, 'no anonymous push');
    const authed = await fetch(`${proc.url}/v2/private/app/blobs/uploads/?digest=${sha(body)}`, { method: 'POST', body, headers: basic('alice', password) });
    assert.equal(authed.status, 201);
    const anonPull = await fetch(`${proc.url}/v2/private/app/blobs/${sha(body)}`);
    assert.equal(anonPull.status, 401, 'no bytes without authorization');
    assert.equal((await anonPull.text()).includes('private layer'), false);

    // A real client with credentials: skopeo pushes and pulls an image.
    const image = await makeOciImage(join(dir, 'src'), { layers: [1024 * 1024, 300_000], tag: 'v1', seed: 'auth' });
    const creds = `alice:${password}`;
    const anonCopy = await skopeo(['copy', `oci:${join(dir, 'src')}:v1`, `docker://${proc.host}/private/img:v1`], { allowFailure: true });
    assert.notEqual(anonCopy.code, 0, 'skopeo without credentials is refused');
    await skopeo(['copy', '--dest-creds', creds, `oci:${join(dir, 'src')}:v1`, `docker://${proc.host}/private/img:v1`]);
    await skopeo(['copy', '--src-creds', creds, `docker://${proc.host}/private/img:v1`, `oci:${join(dir, 'out')}:v1`]);
    await assertLayoutHolds(join(dir, 'out'), 'v1', image);

    const all = [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))].join('\n');
    assert.ok(proc.requests().some((r) => r.user === 'alice'), 'the access log names the user');
    assert.ok(!all.includes(password), 'password never logged');
    assert.ok(!all.includes(Buffer.from(`alice:${password}`).toString('base64')), 'Authorization header never logged');
  });
});

describe('cascade registry: TLS', () => {
  it('serves HTTPS with http.tls', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const ca = makeCa();
    const pair = ca.issue();
    await writeFile(join(dir, 'cert.pem'), pair.certPem);
    await writeFile(join(dir, 'key.pem'), pair.keyPem);
    const proc = await startCascade(dir, {
      storage: { inmemory: {} },
      http: { addr: '127.0.0.1:0', tls: { certificate: join(dir, 'cert.pem'), key: join(dir, 'key.pem') } },
    });
    defer(() => proc.stop());
    assert.match(proc.url, /^https:\/\//);
    const status = await new Promise<number>((resolve, reject) => {
      httpsRequest(`${proc.url}/v2/`, { ca: ca.certPem }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(status, 200);
  });
});

describe('cascade registry: crash safety', () => {
  it('a process killed mid-upload leaves no visible blob and no temp files after restart', async (t) => {
    const { dir, defer } = await testScope(t, 'cascade-cli-');
    const root = join(dir, 'data');
    const config = { storage: { filesystem: { rootdirectory: root }, delete: { enabled: true } } };
    const proc = await startCascade(dir, config);
    const blob = Buffer.alloc(8 * 1024 * 1024, 0x5a);
    const digest = sha(blob);
    const url = new URL(`${proc.url}/v2/crash/test/blobs/uploads/?digest=${digest}`);
    // Send half the blob, then kill the registry while the request is still open.
    const req = httpRequest(url, { method: 'POST', headers: { 'content-length': String(blob.length) } });
    req.on('error', () => undefined);
    req.write(blob.subarray(0, blob.length / 2));
    await new Promise((r) => setTimeout(r, 500));
    await proc.stop('SIGKILL');
    req.destroy();

    const again = await startCascade(dir, config);
    defer(() => again.stop());
    const res = await fetch(`${again.url}/v2/crash/test/blobs/${digest}`);
    assert.equal(res.status, 404, 'no partial blob is visible');
    const hex = digest.slice(7);
    await assert.rejects(stat(join(root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')));
    const tmp = await readdir(join(root, '_cascade/tmp')).catch(() => []);
    assert.deepEqual(tmp, [], 'temp files are cleaned at start-up');
    // and the registry keeps serving: the same upload now succeeds
    const ok = await fetch(`${again.url}/v2/crash/test/blobs/uploads/?digest=${digest}`, { method: 'POST', body: blob });
    assert.equal(ok.status, 201);
    assert.equal(sha(Buffer.from(await (await fetch(`${again.url}/v2/crash/test/blobs/${digest}`)).arrayBuffer())), digest);
  });
});
