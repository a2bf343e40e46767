/**
 * `cascade up`: the README's main job. The real command, as a child process: it prints its banner, a
 * push through the server as the admin and a pull as the user work with skopeo, the user's blobs come
 * from region-b (which filled them through region-a), and SIGTERM stops everything with exit 0. A second
 * run on the same directory reuses its state (same passwords, the image still there). With `--mirror URL`, the
 * stack has a fifth node, a pull-through mirror of that registry, which skopeo pulls an image through.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasBlobData, startCascadeOrigin, waitFor } from '../lib/cache.js';
import { CASCADE_BIN, testScope } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { freePort, run, skopeo } from '../lib/peers.js';

interface Up {
  child: ChildProcess;
  out: string[];
  port: number;
  exited: Promise<number | null>;
}

/** Starts `cascade up` on free consecutive ports (retrying when one is taken), with `args`; resolves at "ready". */
async function startUp(dir: string, args: readonly string[] = []): Promise<Up> {
  for (let attempt = 1; ; attempt++) {
    const port = 20_000 + ((await freePort()) % 40_000);
    const child = spawn(process.execPath, [CASCADE_BIN, 'up', '--dir', dir, '--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: string[] = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => out.push(d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const outcome = await Promise.race([
      waitFor('cascade up to print "ready"', () => out.join('').includes('\nready\n') || undefined, 30_000).then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
    ]);
    if (outcome === 'ready') return { child, out, port, exited };
    const text = out.join('');
    if (attempt < 3 && /in use/.test(text)) continue;
    throw new Error(`cascade up exited before it was ready:\n${text}`);
  }
}

test('cascade up: the stack on localhost, a push and a pull through a cache, a clean stop and a restart', { timeout: 120_000 }, async (t) => {
  const { dir, defer } = await testScope(t, 'e2e-up-');
  const state = join(dir, 'stack');
  const up = await startUp(state);
  defer(() => up.child.kill('SIGKILL'));
  const banner = up.out.join('');
  const creds = JSON.parse(await readFile(join(state, 'credentials.json'), 'utf8')) as { admin: string; user: string };
  const server = `127.0.0.1:${up.port}`;
  assert.ok(banner.includes(`server    http://${server}`), banner);
  assert.ok(banner.includes(`--dest-creds admin:${creds.admin}`), 'the banner gives the push command');

  const image = await makeOciImage(join(dir, 'src'), { layers: [1 << 20, 200_000], tag: 'v1', seed: 'cascade-up' });
  await skopeo(['copy', '--dest-creds', `admin:${creds.admin}`, image.ref, `docker://${server}/team/app:v1`]);
  await skopeo(['copy', '--src-creds', `user:${creds.user}`, `docker://${server}/team/app:v1`, `oci:${join(dir, 'pulled')}:v1`]);
  await assertLayoutHolds(join(dir, 'pulled'), 'v1', image);

  const blobDigests = image.blobs.map((b) => b.digest).filter((d) => d !== image.digest);
  const served = async (node: string) => {
    const lines = (await readFile(join(state, 'logs', `${node}.log`), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    return new Set(lines.filter((l) => l.msg === 'request' && l.method === 'GET' && l.status === 200 && /\/blobs\//.test(String(l.path))).map((l) => String(l.path).split('/blobs/')[1]));
  };
  await waitFor('region-b to log every blob it served', async () => {
    const b = await served('region-b');
    return blobDigests.every((d) => b.has(d)) || undefined;
  }, 5000);
  const a = await served('region-a');
  for (const d of blobDigests) assert.ok(a.has(d), `region-a filled ${d} for region-b`);
  // The banner's doctor command: the server and both caches check out, with real connections.
  for (const config of ['server/server.yml', 'region-a/config.yml', 'region-b/config.yml']) {
    const doctor = await run(process.execPath, [CASCADE_BIN, 'doctor', join(state, config)], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
    assert.equal(doctor.code, 0, `cascade doctor ${config}:\n${doctor.stdout}${doctor.stderr}`);
    assert.match(doctor.stdout.trimEnd(), /: all good$/, `${config}:\n${doctor.stdout}`);
  }
  assert.ok(banner.includes(`npx cascade doctor ${join(state, 'server', 'server.yml')}`), 'the banner gives the doctor command');

  // Warm on push out of the box: the origin notifies the server; with a warm rule for `team`, a push leaves
  // its blobs on both caches before anyone pulls.
  const adminApi = (method: string, path: string, body?: unknown) =>
    fetch(`http://${server}/api/v0${path}`, {
      method,
      headers: { authorization: `Basic ${Buffer.from(`admin:${creds.admin}`).toString('base64')}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const caches = (await (await adminApi('GET', '/content_caches')).json()) as Array<{ id: string; name: string }>;
  const rule = await adminApi('PUT', '/warm_rules/team', { contentCacheUUIDs: caches.map((c) => c.id) });
  assert.equal(rule.status, 200, await rule.text());
  const warmed = await makeOciImage(join(dir, 'src-warm'), { layers: [300_000], tag: 'v2', seed: 'cascade-up-warm' });
  await skopeo(['copy', '--dest-creds', `admin:${creds.admin}`, warmed.ref, `docker://${server}/team/warm:v2`]);
  const warmedBlobs = warmed.blobs.map((b) => b.digest).filter((d) => d !== warmed.digest);
  for (const node of ['region-a', 'region-b']) {
    await waitFor(`${node} to hold the pushed image's blobs`, async () => (await Promise.all(warmedBlobs.map((d) => hasBlobData(join(state, node, 'data'), d)))).every(Boolean) || undefined, 30_000, 200);
  }
  const logs = (await Promise.all(['origin', 'server', 'region-a', 'region-b'].map((n) => readFile(join(state, 'logs', `${n}.log`), 'utf8')))).join('\n');
  assert.ok(!logs.includes(creds.admin) && !logs.includes(creds.user), 'no password in the logs');

  up.child.kill('SIGTERM');
  assert.equal(await up.exited, 0, 'SIGTERM stops the stack cleanly');

  const again = await startUp(state);
  defer(() => again.child.kill('SIGKILL'));
  assert.ok(again.out.join('').includes(`admin:${creds.admin}`), 'the same passwords on a second run');
  await skopeo(['copy', '--src-creds', `user:${creds.user}`, `docker://127.0.0.1:${again.port}/team/app:v1`, `oci:${join(dir, 'pulled-again')}:v1`]);
  await assertLayoutHolds(join(dir, 'pulled-again'), 'v1', image);
  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0);
});

test('cascade up --mirror: a fifth node, a pull-through mirror of a registry, pulled through with skopeo', { timeout: 120_000 }, async (t) => {
  const { dir, defer } = await testScope(t, 'e2e-up-mirror-');
  const remote = await startCascadeOrigin(dir, 'remote');
  defer(() => remote.stop());
  const image = await makeOciImage(join(dir, 'src'), { layers: [1 << 20, 100_000], tag: 'v1', seed: 'cascade-up-mirror' });
  await skopeo(['copy', image.ref, `docker://${remote.host}/tools/app:v1`]);

  const state = join(dir, 'stack');
  const up = await startUp(state, ['--mirror', remote.url]);
  defer(() => up.child.kill('SIGKILL'));
  const mirror = `127.0.0.1:${up.port + 4}`;
  const banner = up.out.join('');
  assert.ok(banner.includes(`mirror    http://${mirror}   pull-through mirror of ${remote.url}`), banner);

  // The remote is the mirror's default: its repositories keep their names.
  await skopeo(['copy', `docker://${mirror}/tools/app:v1`, `oci:${join(dir, 'pulled')}:v1`]);
  await assertLayoutHolds(join(dir, 'pulled'), 'v1', image);
  const blobGets = remote.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/sha256:')).length;
  await skopeo(['copy', `docker://${mirror}/tools/app:v1`, `oci:${join(dir, 'pulled-again')}:v1`]);
  await assertLayoutHolds(join(dir, 'pulled-again'), 'v1', image);
  assert.equal(remote.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/sha256:')).length, blobGets, 'a second pull is served from the mirror');

  const doctor = await run(process.execPath, [CASCADE_BIN, 'doctor', join(state, 'mirror', 'config.yml')], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(doctor.code, 0, `cascade doctor mirror/config.yml:\n${doctor.stdout}${doctor.stderr}`);

  up.child.kill('SIGTERM');
  assert.equal(await up.exited, 0, 'SIGTERM stops the stack, the mirror too');
});
