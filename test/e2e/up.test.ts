/**
 * `cascade up`: the README's main job. The real command, as a child process: it prints its banner, a
 * push through the server as the admin and a pull as the user work with skopeo, the user's blobs come
 * from region-b (which filled them through region-a), and SIGTERM stops everything with exit 0. A second
 * run on the same directory reuses its state (same passwords, the image still there). With `--mirror URL`, the
 * stack has a fifth node, a pull-through mirror of that registry, which skopeo pulls an image through. With
 * `--region 3`, region-b is three node processes on one storage folder with a redis-server, behind the
 * command's balancer: concurrent pulls are served by several nodes, region-a (the region's upstream) sends
 * each blob once, `cascade doctor` finds Redis and the live nodes, and with one node killed pulls still work.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
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
    // Its own process group: a test that fails stops it with every process it started (a region's nodes, Redis).
    const child = spawn(process.execPath, [CASCADE_BIN, 'up', '--dir', dir, '--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out: string[] = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => out.push(d));
    // 'close', not 'exit': the output is all read by then (a port in use is told on stderr, and retried).
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    const outcome = await Promise.race([
      waitFor('cascade up to print "ready"', () => out.join('').includes('\nready\n') || undefined, 30_000).then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
    ]);
    if (outcome === 'ready') return { child, out, port, exited };
    const text = out.join('');
    if (attempt < 3 && /in use/.test(text)) continue;
    // Where each node got to: the last lines of the stack's logs.
    const logs = await readdir(join(dir, 'logs')).catch(() => [] as string[]);
    const tails = await Promise.all(logs.map(async (f) => `--- ${f}\n${(await readFile(join(dir, 'logs', f), 'utf8').catch(() => '')).split('\n').slice(-6).join('\n')}`));
    throw new Error(`cascade up exited (code ${await exited}) before it was ready:\n${text}\n${tails.join('\n')}`);
  }
}

/** SIGKILL to the process group of `cascade up` (the command, and any node or redis-server it started). */
function killGroup(up: Up): void {
  try {
    process.kill(-up.child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

test('cascade up: the stack on localhost, a push and a pull through a cache, a clean stop and a restart', { timeout: 120_000 }, async (t) => {
  const { dir, defer } = await testScope(t, 'e2e-up-');
  const state = join(dir, 'stack');
  const up = await startUp(state);
  defer(() => killGroup(up));
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
  defer(() => killGroup(again));
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
  defer(() => killGroup(up));
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

/** The JSON lines of a node's log in the stack's `logs/` folder. */
async function logLines(state: string, node: string): Promise<Array<Record<string, unknown>>> {
  return (await readFile(join(state, 'logs', `${node}.log`), 'utf8')).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** How many times `node` answered GET 200 for each blob digest. */
async function blobGets(state: string, node: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const l of await logLines(state, node)) {
    if (l.msg !== 'request' || l.method !== 'GET' || l.status !== 200 || !/\/blobs\/sha256:/.test(String(l.path))) continue;
    const digest = String(l.path).split('/blobs/')[1]!;
    counts.set(digest, (counts.get(digest) ?? 0) + 1);
  }
  return counts;
}

/** The sum of a counter's samples that match `labels` in a Prometheus text exposition. */
function metricSum(text: string, name: string, labels = ''): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .filter((l) => l.includes(labels))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

test('cascade up --region 3: region-b is three nodes on one folder with Redis behind a balancer; one fill per blob; a node killed, pulls still work', { timeout: 180_000 }, async (t) => {
  const { dir, defer } = await testScope(t, 'e2e-up-region-');
  const state = join(dir, 'stack');
  const up = await startUp(state, ['--region', '3']);
  defer(() => killGroup(up));
  const banner = up.out.join('');
  const creds = JSON.parse(await readFile(join(state, 'credentials.json'), 'utf8')) as { admin: string; user: string };
  const server = `127.0.0.1:${up.port}`;
  assert.ok(banner.includes(`region-b  http://127.0.0.1:${up.port + 3}   balancer`), banner);
  const nodes = [...banner.matchAll(/^ {4}(region-b-\d) +(http:\/\/127\.0\.0\.1:(\d+)) +pid (\d+), storage (\S+) \(shared\)$/gm)].map((m) => ({ name: m[1]!, url: m[2]!, port: Number(m[3]), pid: Number(m[4]), storage: m[5]! }));
  assert.deepEqual(nodes.map((n) => n.name), ['region-b-1', 'region-b-2', 'region-b-3'], banner);
  assert.deepEqual(nodes.map((n) => n.port), [up.port + 5, up.port + 6, up.port + 7]);
  assert.equal(new Set(nodes.map((n) => n.storage)).size, 1, 'one storage folder');
  const redisPort = Number(/redis {7}redis:\/\/127\.0\.0\.1:(\d+)/.exec(banner)?.[1]);
  assert.equal(redisPort, up.port + 8, banner);

  // Three users' pulls at once: each skopeo has connections of its own, which the balancer spreads.
  const image = await makeOciImage(join(dir, 'src'), { layers: [4 << 20, 1 << 20], tag: 'v1', seed: 'cascade-up-region' });
  await skopeo(['copy', '--dest-creds', `admin:${creds.admin}`, image.ref, `docker://${server}/team/app:v1`]);
  await Promise.all([1, 2, 3].map((i) => skopeo(['copy', '--src-creds', `user:${creds.user}`, `docker://${server}/team/app:v1`, `oci:${join(dir, `pulled-${i}`)}:v1`])));
  for (const i of [1, 2, 3]) await assertLayoutHolds(join(dir, `pulled-${i}`), 'v1', image);

  const blobDigests = image.blobs.map((b) => b.digest).filter((d) => d !== image.digest);
  const servedBy = await Promise.all(nodes.map((n) => blobGets(state, n.name)));
  assert.ok(servedBy.filter((m) => m.size > 0).length >= 2, `several nodes served blobs: ${servedBy.map((m) => m.size).join(', ')}`);
  // One fill per blob for the whole region: its upstream, region-a, sent each blob once.
  const fromA = await blobGets(state, 'region-a');
  for (const d of blobDigests) assert.equal(fromA.get(d), 1, `region-a sent ${d} once to the region (${JSON.stringify([...fromA])})`);
  // Each blob is once in the shared folder, and the nodes' metrics count one led fill per blob.
  for (const d of blobDigests) {
    const hex = d.slice('sha256:'.length);
    assert.equal((await stat(join(nodes[0]!.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'))).size, image.blobs.find((b) => b.digest === d)!.size);
  }
  const metrics = await Promise.all(nodes.map(async (n) => (await fetch(`${n.url}/metrics`)).text()));
  assert.equal(metrics.reduce((sum, text) => sum + metricSum(text, 'cascade_region_fills_total', 'role="led"'), 0), blobDigests.length, 'one led fill per blob in the region');
  for (const text of metrics) assert.equal(metricSum(text, 'cascade_region_redis_up'), 1);

  // The server's cache tree: its scrapes of the balancer reach any node (a new connection each), whose
  // counters it keeps apart (one series for all nodes would count each switch of node as a restart).
  type TreeNode = { name?: string; bytesServed?: number | null; children?: TreeNode[] };
  const findNode = (nodes: TreeNode[], name: string): TreeNode | undefined => {
    for (const n of nodes) {
      if (n.name === name) return n;
      const below = findNode(n.children ?? [], name);
      if (below) return below;
    }
    return undefined;
  };
  const treeServed = async () => {
    const res = await fetch(`http://${server}/api/v0/content_caches_tree`, { headers: { authorization: `Basic ${Buffer.from(`user:${creds.user}`).toString('base64')}` } });
    return findNode(((await res.json()) as { roots: TreeNode[] }).roots, 'region-b')?.bytesServed ?? 0;
  };
  const servedByNodes = async () => (await Promise.all(nodes.map(async (n) => metricSum(await (await fetch(`${n.url}/metrics`)).text(), 'cascade_cache_bytes_served_total')))).reduce((a, b) => a + b, 0);
  // Each node counted from 0 at its start (within the hour), so once the server has read every node the tree
  // shows what the three served together.
  const total = await servedByNodes();
  await waitFor('the tree to show what the region\'s nodes served', async () => ((await treeServed()) === total ? true : undefined), 60_000, 1000);

  // cascade doctor on a node's config: Redis answers and the region's nodes are live.
  const doctor = await run(process.execPath, [CASCADE_BIN, 'doctor', join(state, 'region-b-1', 'config.yml')], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
  assert.match(doctor.stdout, new RegExp(`^ok {4}region redis://127\\.0\\.0\\.1:${redisPort}: answers PING`, 'm'), doctor.stdout);
  assert.match(doctor.stdout, /^ok {4}region redis:\S+: 3 live nodes/m, doctor.stdout);

  // A node dies (SIGKILL, as a crash): the balancer skips it, and a new image is pulled through the region.
  process.kill(nodes[1]!.pid, 'SIGKILL');
  const second = await makeOciImage(join(dir, 'src2'), { layers: [2 << 20, 300_000], tag: 'v2', seed: 'cascade-up-region-2' });
  await skopeo(['copy', '--dest-creds', `admin:${creds.admin}`, second.ref, `docker://${server}/team/app:v2`]);
  await Promise.all([1, 2].map((i) => skopeo(['copy', '--src-creds', `user:${creds.user}`, `docker://${server}/team/app:v2`, `oci:${join(dir, `pulled-v2-${i}`)}:v2`])));
  for (const i of [1, 2]) await assertLayoutHolds(join(dir, `pulled-v2-${i}`), 'v2', second);
  const fromA2 = await blobGets(state, 'region-a');
  for (const d of second.blobs.map((b) => b.digest).filter((d) => d !== second.digest)) assert.equal(fromA2.get(d), 1, `region-a sent ${d} once`);
  assert.ok((await logLines(state, 'region-b')).some((l) => /region-b-2 exited \(signal SIGKILL\)/.test(String(l.msg))), 'the exit is logged');

  // SIGTERM stops the stack: the nodes and Redis too.
  up.child.kill('SIGTERM');
  assert.equal(await up.exited, 0);
  for (const n of nodes) assert.throws(() => process.kill(n.pid, 0), { code: 'ESRCH' }, `${n.name} is stopped`);
  assert.equal(await listening(redisPort), false, 'redis-server is stopped');
  const logs = (await Promise.all(['server', 'region-a', ...nodes.map((n) => n.name)].map((n) => readFile(join(state, 'logs', `${n}.log`), 'utf8')))).join('\n');
  assert.ok(!logs.includes(creds.admin) && !logs.includes(creds.user), 'no password in the logs');
});
