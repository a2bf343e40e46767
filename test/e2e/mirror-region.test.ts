/**
 * A region of mirrors: three `cascade registry` mirror nodes (`proxy.remotes` and `proxy.region`) on one storage
 * folder, coordinated through a real `redis-server`, behind nginx round-robin. Blobs are asked for through the
 * mirror's path prefix (`/v2/<remote>/<repository>`). A herd of 30 through the balancer makes one remote GET;
 * the node leading a fill killed with SIGKILL mid-fill leaves every client with the right bytes, the fill taken
 * over from the same remote and repository with a Range GET (at most 2 remote GETs); a fill another node runs for
 * one repository is served to another repository only after its remote confirmed it (HEAD), as on one node;
 * skopeo pulls an image through the balancer by tag and by digest, while several nodes revalidate the tag at once.
 *
 * The remote of the fill tests is the programmable fake in test/lib/fault-upstream.ts (its request log counts the
 * GETs); skopeo's is a Cascade registry.
 */
import assert from 'node:assert/strict';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { cascadeHop, fetchBlob, hasBlobData, MiB, randomBlob, startCascadeOrigin, testScope, waitFor, type Hop } from '../lib/cache.js';
import { startCascade } from '../lib/cascade.js';
import { startFaultUpstream, type FaultUpstream } from '../lib/fault-upstream.js';
import { layoutBlobs, makeOciImage } from '../lib/image.js';
import { skopeo } from '../lib/peers.js';
import { startRedis } from '../lib/redis.js';
import { metric, regionMetric, resilientGet, startBalancer, total } from '../lib/region.js';

/** The remote's name: its path prefix on the mirrors. */
const REMOTE = 'up';
const NAME = 'team/app';

/** A blob of `name` at the remote, through a mirror at `base`. */
const mirrorBlobUrl = (base: string, digest: string, name = NAME): string => `${base}/v2/${REMOTE}/${name}/blobs/${digest}`;

interface MirrorRegion {
  readonly nodes: Hop[];
  /** `http://127.0.0.1:PORT` of nginx. */
  readonly lb: string;
  readonly shared: string;
  readonly dir: string;
}

/** Three mirror nodes of `remote` on one folder, with Redis and nginx; all stopped when the test ends. */
async function startMirrorRegion(t: TestContext, prefix: string, remote: string): Promise<MirrorRegion> {
  const { dir, defer } = await testScope(t, prefix);
  const redis = await startRedis();
  defer(() => redis.close());
  const shared = join(dir, 'shared', 'data');
  await mkdir(shared, { recursive: true });
  const nodes: Hop[] = [];
  for (let i = 0; i < 3; i++) {
    const home = join(dir, `mirror${i}`);
    await mkdir(home, { recursive: true });
    const config = {
      log: { level: 'debug' },
      storage: { delete: { enabled: true }, filesystem: { rootdirectory: shared } },
      proxy: { remotes: [{ url: remote, name: REMOTE }], region: { redis: redis.url } },
    };
    const hop = cascadeHop(`mirror${i}`, await startCascade(home, config), shared);
    defer(() => hop.stop());
    nodes.push(hop);
  }
  const lb = await startBalancer(join(dir, 'nginx'), nodes);
  defer(() => lb.stop());
  return { nodes, lb: lb.url, shared, dir };
}

/** A fault-upstream remote, stopped when the test ends. */
async function faultRemote(t: TestContext): Promise<FaultUpstream> {
  const origin = await startFaultUpstream();
  t.after(() => origin.stop());
  return origin;
}

/** The remote's GETs of `digest` (their Range and repository), for assertion messages. */
function remoteGets(origin: FaultUpstream, digest: string): string {
  return origin.requests.filter((r) => r.method === 'GET' && r.digest === digest).map((r) => `${r.name ?? '?'} ${String(r.headers.range ?? 'whole')}`).join(', ');
}

describe('a region of three mirrors on one folder, Redis, nginx round-robin', { timeout: 240_000 }, () => {
  it('a herd of 30 through the balancer makes one remote GET; every body is right', { timeout: 120_000 }, async (t) => {
    const origin = await faultRemote(t);
    const region = await startMirrorRegion(t, 'mirror-region-herd-', origin.url);
    const digest = origin.addBlob(randomBlob('mirror-region-herd', 32 * MiB));
    const results = await Promise.all(Array.from({ length: 30 }, () => fetchBlob(mirrorBlobUrl(region.lb, digest), { keepBody: 0, timeoutMs: 90_000 })));
    const bad = results.filter((r) => r.status !== 200 || !r.complete || r.digest !== digest);
    assert.deepEqual(bad.map((r) => `${r.status} ${r.error ?? ''} ${r.digest}`), [], 'every client gets the whole blob');
    assert.equal(origin.count(digest, 'GET'), 1, `one remote GET for the region (${remoteGets(origin, digest)})`);
    const led = await regionMetric(region.nodes, 'cascade_region_fills_total', 'role="led"');
    const joined = await regionMetric(region.nodes, 'cascade_region_fills_total', 'role="joined"');
    assert.equal(total(led), 1, `one mirror led the fill (led per node: ${led.join(', ')})`);
    assert.equal(total(joined), 2, `the two others joined it (joined per node: ${joined.join(', ')})`);
    // Every node serves it from the shared folder now.
    for (const node of region.nodes) assert.equal((await fetchBlob(mirrorBlobUrl(node.url, digest), { keepBody: 0 })).digest, digest);
    assert.equal(origin.count(digest, 'GET'), 1);
  });

  it('the mirror leading a fill is killed (SIGKILL) mid-fill: every client ends with the right bytes, the fill resumed from the remote and repository it was for, at most 2 remote GETs', { timeout: 150_000 }, async (t) => {
    const origin = await faultRemote(t);
    const region = await startMirrorRegion(t, 'mirror-region-kill-', origin.url);
    const size = 24 * MiB;
    // About 6 MB/s for the first GET: the fill runs for seconds; the resumed GET (Range) is served at once.
    const digest = origin.addBlob(randomBlob('mirror-region-kill', size), { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 20, times: 1, only: 'GET' });
    // mirror0 leads the fill, for team/app; the clients through the balancer ask for the blob in other/app (each
    // node asks the remote whether other/app has it, then joins the region's fill).
    const leading = fetchBlob(mirrorBlobUrl(region.nodes[0]!.url, digest), { keepBody: 0, timeoutMs: 90_000 });
    const leaderIndex = await waitFor('mirror0 to lead the fill', async () => ((await metric(region.nodes[0]!, 'cascade_region_fills_total', 'role="led"')) === 1 ? 1 : undefined), 20_000);
    const clients = Array.from({ length: 12 }, () => resilientGet(mirrorBlobUrl(region.lb, digest, 'other/app'), size));
    const leader = region.nodes[leaderIndex - 1]!;
    await waitFor('the fill to be a few MiB in', async () => (await metric(leader, 'cascade_cache_bytes_total', 'source="upstream"')) >= 4 * MiB, 20_000);
    assert.ok((await metric(leader, 'cascade_cache_bytes_total', 'source="upstream"')) < size, 'the fill is still running when its node is killed');
    await leader.proc!.stop('SIGKILL');
    const results = await Promise.all(clients);
    // The leader's own client was cut with its node.
    assert.notEqual((await leading).digest, digest);
    const diagnostics = () =>
      region.nodes
        .map((n) => `${n.name}:\n${n.proc!.logs.filter((l) => (typeof l.level === 'number' && l.level >= 40) || String(l.msg).startsWith('region') || String(l.msg).startsWith('fill')).map((l) => `  ${JSON.stringify(l)}`).join('\n')}`)
        .join('\n') + `\nremote GETs: ${remoteGets(origin, digest)}`;
    for (const [i, r] of results.entries()) {
      assert.equal(r.size, size, `client ${i}: ${r.errors.join('; ')}\n${diagnostics()}`);
      assert.equal(r.digest, digest, `client ${i}: the bytes are right (${r.tries} tries: ${r.errors.join('; ')})`);
    }
    assert.ok(results.some((r) => r.tries > 1), 'some clients were on the killed node and resumed through the balancer');
    const gets = origin.requests.filter((r) => r.method === 'GET' && r.digest === digest);
    assert.ok(gets.length >= 1 && gets.length <= 2, `at most one extra remote GET (got ${gets.length})\n${diagnostics()}`);
    const survivors = region.nodes.filter((_, i) => i !== leaderIndex - 1);
    const takeovers = await regionMetric(survivors, 'cascade_region_fills_total', 'role="takeover"');
    assert.equal(total(takeovers), 1, `a surviving mirror took the fill over (per node: ${takeovers.join(', ')})\n${diagnostics()}`);
    assert.equal(gets.length, 2, 'the takeover resumed with one Range GET');
    // The takeover asked the remote for the repository of the fill (not its own clients' other/app), for the rest only.
    const resumed = gets[1]!;
    assert.equal(resumed.name, NAME, `the takeover fetched from the repository of the fill\n${diagnostics()}`);
    assert.ok(origin.requests.some((r) => r.method === 'HEAD' && r.digest === digest && r.name === 'other/app'), 'other/app was confirmed by the remote');
    assert.match(String(resumed.headers.range), /^bytes=[1-9]\d*-\d+$/, `the takeover asks for the rest only\n${diagnostics()}`);
    assert.ok(await hasBlobData(region.shared, digest), 'the blob is stored');
    assert.equal((await fetchBlob(mirrorBlobUrl(survivors[0]!.url, digest), { keepBody: 0 })).digest, digest);
  });

  it('a fill another mirror runs for one repository is served to another repository only once its remote confirmed it', { timeout: 90_000 }, async (t) => {
    const origin = await faultRemote(t);
    const region = await startMirrorRegion(t, 'mirror-region-admit-', origin.url);
    const size = 8 * MiB;
    const digest = origin.addBlob(randomBlob('mirror-region-admit', size), { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 20, times: 1, only: 'GET' });
    const [a, b] = region.nodes as [Hop, Hop, Hop];
    const first = fetchBlob(mirrorBlobUrl(a.url, digest), { keepBody: 0, timeoutMs: 60_000 });
    await waitFor('the fill to be under way on the first mirror', async () => (await metric(a, 'cascade_region_fills_total', 'role="led"')) === 1 || undefined, 20_000);
    const headsBefore = origin.requests.filter((r) => r.method === 'HEAD' && r.digest === digest && r.name === 'other/app').length;
    assert.equal(headsBefore, 0);
    // Another repository on another mirror: the remote is asked whether other/app has the blob before any byte.
    const second = await fetchBlob(mirrorBlobUrl(b.url, digest, 'other/app'), { keepBody: 0, timeoutMs: 60_000 });
    assert.equal(second.digest, digest);
    const heads = origin.requests.filter((r) => r.method === 'HEAD' && r.digest === digest);
    assert.deepEqual(heads.map((r) => r.name), ['other/app'], 'one HEAD, for the repository the fill was not for');
    assert.equal((await first).digest, digest);
    assert.equal(origin.count(digest, 'GET'), 1, `the second repository joined the region's fill (${remoteGets(origin, digest)})`);
    assert.equal(await metric(b, 'cascade_region_fills_total', 'role="joined"'), 1);
    // The same repository on the third mirror needs no HEAD: the fill (now stored and linked) was for it.
    const link = join(region.shared, 'docker/registry/v2/repositories', REMOTE, NAME, '_layers/sha256', digest.slice('sha256:'.length), 'link');
    await waitFor('the blob linked in its repository', () => stat(link).then(() => true, () => undefined), 10_000);
    assert.equal((await fetchBlob(mirrorBlobUrl(region.nodes[2]!.url, digest), { keepBody: 0 })).digest, digest);
    assert.equal(origin.requests.filter((r) => r.method === 'HEAD' && r.digest === digest).length, 1);
  });

  it('skopeo pulls an image through the balancer, by tag and by digest, while the mirrors revalidate the tag at once', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'mirror-region-skopeo-');
    const remote = await startCascadeOrigin(dir, 'remote');
    defer(() => remote.stop());
    const image = await makeOciImage(join(dir, 'image'), { layers: [3 * MiB, 200_000], tag: 'v1', seed: 'mirror-region-skopeo' });
    await skopeo(['copy', image.ref, `docker://${remote.host}/${NAME}:v1`]);
    const region = await startMirrorRegion(t, 'mirror-region-skopeo-nodes-', remote.url);
    const lbHost = region.lb.replace(/^http:\/\//, '');
    // Nine concurrent GETs of the tag through the balancer: every node checks it with the remote and writes the
    // same link into the shared folder; all agree.
    const accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
    const byTag = await Promise.all(Array.from({ length: 9 }, () => fetch(`${region.lb}/v2/${REMOTE}/${NAME}/manifests/v1`, { headers: { accept } })));
    for (const res of byTag) {
      const body = await res.text();
      assert.equal(res.status, 200, body);
      assert.equal(res.headers.get('docker-content-digest'), image.digest);
    }
    await skopeo(['copy', `docker://${lbHost}/${REMOTE}/${NAME}:v1`, `oci:${join(dir, 'pulled-tag')}:v1`], { timeoutMs: 60_000 });
    await skopeo(['copy', `docker://${lbHost}/${REMOTE}/${NAME}@${image.digest}`, `oci:${join(dir, 'pulled-digest')}:v1`], { timeoutMs: 60_000 });
    const expected = await layoutBlobs(image.dir);
    for (const pulled of ['pulled-tag', 'pulled-digest']) {
      const got = await layoutBlobs(join(dir, pulled));
      assert.deepEqual([...got.keys()].sort(), [...expected.keys()].sort(), `${pulled}: every blob, each hashing to its digest`);
    }
    // Each blob was fetched from the remote once for the region.
    const blobGets = remote.requests().filter((r) => r.method === 'GET' && r.path.includes('/blobs/sha256:'));
    const perBlob = new Map<string, number>();
    for (const r of blobGets) perBlob.set(r.path, (perBlob.get(r.path) ?? 0) + 1);
    assert.deepEqual([...perBlob.values()].filter((n) => n > 1), [], `one remote GET per blob: ${[...perBlob.entries()].map(([p, n]) => `${p} ${n}`).join(', ')}`);
    // Every node serves the tag from the one shared link.
    for (const node of region.nodes) {
      const res = await fetch(`${node.url}/v2/${REMOTE}/${NAME}/manifests/v1`, { headers: { accept } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('docker-content-digest'), image.digest);
      await res.arrayBuffer();
    }
  });
});
