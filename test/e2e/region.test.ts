/**
 * A region: three `cascade registry` cache nodes on one storage folder, coordinated through a real
 * `redis-server`, behind nginx round-robin. One fill per blob for the region (a herd of 60 through the
 * balancer makes one origin GET); a node killed with SIGKILL mid-fill leaves every client, its own included
 * (they resume with Range through the balancer), with the right bytes and at most 2 origin GETs; a hit on one
 * node refreshes the TTL for all; one sweep per interval for the region; Redis stopped mid-run (hits and fills
 * go on, per node) and restarted (the nodes coordinate again); a node restarted on the shared folder adopts
 * the state and leaves the other nodes' running fills alone.
 *
 * The origin is the programmable fake in test/lib/fault-upstream.ts (its request log counts the GETs).
 */
import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it, type TestContext } from 'node:test';
import { createHash } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import { blobUrl, cacheConfig, cascadeHop, fetchBlob, hasBlobData, MiB, randomBlob, testScope, waitFor, type Hop } from '../lib/cache.js';
import { startCascade } from '../lib/cascade.js';
import { startFaultUpstream, type FaultUpstream } from '../lib/fault-upstream.js';
import { startRedis, type RedisServer } from '../lib/redis.js';
import { metric, regionMetric, resilientGet, startBalancer, total } from '../lib/region.js';

const NAME = 'team/app';

interface Region {
  readonly origin: FaultUpstream;
  readonly redis: RedisServer;
  readonly nodes: Hop[];
  /** `http://127.0.0.1:PORT` of nginx. */
  readonly lb: string;
  readonly shared: string;
  readonly dir: string;
  /** (Re)starts node `i` on the shared folder (after {@link Region.nodes}[i] was stopped). */
  restart(i: number): Promise<Hop>;
}

interface RegionOptions {
  readonly options?: Record<string, unknown>;
  /** Top-level config of every node (beside `log`). */
  readonly config?: Record<string, unknown>;
  readonly blobttl?: string;
}

async function startRegion(t: TestContext, prefix: string, o: RegionOptions = {}): Promise<Region> {
  const { dir, defer } = await testScope(t, prefix);
  const origin = await startFaultUpstream();
  defer(() => origin.stop());
  const redis = await startRedis();
  defer(() => redis.close());
  const shared = join(dir, 'shared', 'data');
  await mkdir(shared, { recursive: true });
  const start = async (i: number): Promise<Hop> => {
    const home = join(dir, `node${i}`);
    await mkdir(home, { recursive: true });
    const config = cacheConfig(shared, { origin: origin.url, ...(o.blobttl ? { blobttl: o.blobttl } : {}), options: { region: { redis: redis.url }, ...(o.options ?? {}) }, config: { log: { level: 'debug' }, ...(o.config ?? {}) } });
    const hop = cascadeHop(`node${i}`, await startCascade(home, config), shared);
    defer(() => hop.stop());
    return hop;
  };
  const nodes = [await start(0), await start(1), await start(2)];
  const lb = await startBalancer(join(dir, 'nginx'), nodes);
  defer(() => lb.stop());
  return {
    origin,
    redis,
    nodes,
    lb: lb.url,
    shared,
    dir,
    async restart(i) {
      const hop = await start(i);
      nodes[i] = hop;
      return hop;
    },
  };
}

describe('a region of three cache nodes on one folder, Redis, nginx round-robin', { timeout: 180_000 }, () => {
  it('a herd of 60 through the balancer makes one origin GET; every body is right', { timeout: 120_000 }, async (t) => {
    const region = await startRegion(t, 'region-herd-');
    const blob = randomBlob('region-herd', 64 * MiB);
    const digest = region.origin.addBlob(blob);
    const results = await Promise.all(Array.from({ length: 60 }, () => fetchBlob(blobUrl(region.lb, NAME, digest), { keepBody: 0, timeoutMs: 90_000 })));
    const bad = results.filter((r) => r.status !== 200 || !r.complete || r.digest !== digest);
    assert.deepEqual(bad.map((r) => `${r.status} ${r.error ?? ''} ${r.digest}`), [], 'every client gets the whole blob');
    assert.equal(region.origin.count(digest, 'GET'), 1, 'one origin GET for the region');
    const led = await regionMetric(region.nodes, 'cascade_region_fills_total', 'role="led"');
    const joined = await regionMetric(region.nodes, 'cascade_region_fills_total', 'role="joined"');
    assert.equal(total(led), 1, `one node led the fill (led per node: ${led.join(', ')})`);
    assert.equal(total(joined), 2, `the two others joined it (joined per node: ${joined.join(', ')})`);
    // Every node served part of the herd (round-robin), and a hit on any node needs no origin request.
    for (const node of region.nodes) {
      const res = await fetchBlob(blobUrl(node.url, NAME, digest), { keepBody: 0 });
      assert.equal(res.digest, digest);
    }
    assert.equal(region.origin.count(digest, 'GET'), 1);
  });

  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
  it(`the node leading a fill is ${signal === 'SIGKILL' ? 'killed (SIGKILL)' : 'stopped (SIGTERM)'} mid-fill: every client ends with the right bytes, at most 2 origin GETs`, { timeout: 150_000 }, async (t) => {
    // A stopped node drains its requests for 500 ms only: the fill is handed to the region, not finished.
    const region = await startRegion(t, `region-${signal}-`, signal === 'SIGTERM' ? { config: { http: { draintimeout: '500ms' } } } : {});
    const size = 24 * MiB;
    const blob = randomBlob('region-kill', size);
    // About 6 MB/s for the first GET: the fill runs for seconds; the resumed GET (Range) is served at once.
    const digest = region.origin.addBlob(blob, { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 20, times: 1, only: 'GET' });
    const clients = Array.from({ length: 12 }, () => resilientGet(blobUrl(region.lb, NAME, digest), size));
    // The leader: the node whose led counter is 1, once it has written a few MiB.
    const leaderIndex = await waitFor('a leader', async () => {
      const led = await regionMetric(region.nodes, 'cascade_region_fills_total', 'role="led"');
      const i = led.indexOf(1);
      return i >= 0 ? i + 1 : undefined;
    }, 20_000);
    const leader = region.nodes[leaderIndex - 1]!;
    await waitFor('the fill to be a few MiB in', async () => (await metric(leader, 'cascade_cache_bytes_total', 'source="upstream"')) >= 4 * MiB, 20_000);
    assert.ok((await metric(leader, 'cascade_cache_bytes_total', 'source="upstream"')) < size, 'the fill is still running when its node is killed');
    await leader.proc!.stop(signal);
    const results = await Promise.all(clients);
    for (const [i, r] of results.entries()) {
      assert.equal(r.size, size, `client ${i}: ${r.errors.join('; ')}`);
      assert.equal(r.digest, digest, `client ${i}: the bytes are right (${r.tries} tries: ${r.errors.join('; ')})`);
    }
    if (signal === 'SIGKILL') assert.ok(results.some((r) => r.tries > 1), 'some clients were on the killed node and resumed through the balancer');
    const gets = region.origin.count(digest, 'GET');
    const diagnostics = () =>
      region.nodes
        .map((n) => `${n.name}:\n${n.proc!.logs.filter((l) => (typeof l.level === 'number' && l.level >= 40) || String(l.msg).startsWith('region') || String(l.msg).startsWith('fill')).map((l) => `  ${JSON.stringify(l)}`).join('\n')}`)
        .join('\n') + `\norigin GETs: ${region.origin.requests.filter((r) => r.method === 'GET' && r.digest === digest).map((r) => String(r.headers.range ?? 'whole')).join(', ')}`;
    assert.ok(gets >= 1 && gets <= 2, `at most one extra origin GET (got ${gets})\n${diagnostics()}`);
    // The takeover resumed from what the dead leader had verified, with a Range request.
    const resumed = region.origin.requests.filter((r) => r.method === 'GET' && r.digest === digest).slice(1);
    for (const r of resumed) assert.match(String(r.headers.range), /^bytes=[1-9]\d*-\d+$/, `the takeover asks for the rest only\n${diagnostics()}`);
    const survivors = region.nodes.filter((_, i) => i !== leaderIndex - 1);
    const takeovers = await regionMetric(survivors, 'cascade_region_fills_total', 'role="takeover"');
    assert.equal(total(takeovers), 1, `a surviving node took the fill over (per node: ${takeovers.join(', ')})`);
    assert.equal(gets, 2, 'the takeover resumed with one Range GET');
    assert.ok(await hasBlobData(region.shared, digest), 'the blob is stored');
    // The stored blob is whole and right.
    const after = await fetchBlob(blobUrl(survivors[0]!.url, NAME, digest), { keepBody: 0 });
    assert.equal(after.digest, digest);
  });
  }

  it('a hit on another node refreshes the TTL for the region', { timeout: 60_000 }, async (t) => {
    const region = await startRegion(t, 'region-ttl-', { blobttl: '3s', options: { sweepinterval: '500ms' } });
    const blob = randomBlob('region-ttl', 256 * 1024);
    const digest = region.origin.addBlob(blob);
    const [a, b, c] = region.nodes as [Hop, Hop, Hop];
    assert.equal((await fetchBlob(blobUrl(a.url, NAME, digest))).digest, digest);
    // Hit it on the other nodes for twice the TTL: it stays.
    const until = Date.now() + 6500;
    let i = 0;
    while (Date.now() < until) {
      const node = i++ % 2 === 0 ? b : c;
      const res = await fetchBlob(blobUrl(node.url, NAME, digest));
      assert.equal(res.digest, digest);
      await sleep(700);
    }
    assert.ok(await hasBlobData(region.shared, digest), 'hits on other nodes kept the blob past its TTL');
    assert.equal(region.origin.count(digest, 'GET'), 1, 'every hit was served from the shared folder');
    // Left alone, it expires (TTL + a bucket + a sweep).
    await waitFor('the blob to expire', async () => !(await hasBlobData(region.shared, digest)), 15_000, 200);
  });

  it('notifications: every node reports its pulls, each from a queue of its own in the shared folder', { timeout: 60_000 }, async (t) => {
    const received: Array<{ action: string; source: { addr: string }; target: { digest: string } }> = [];
    const listener = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(...(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: typeof received }).events);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => listener.close(() => resolve())));
    const url = `http://127.0.0.1:${(listener.address() as { port: number }).port}/events`;
    const region = await startRegion(t, 'region-events-', { config: { notifications: { endpoints: [{ name: 'audit', url, timeout: '2s', threshold: 3, backoff: '200ms' }] } } });
    const digest = region.origin.addBlob(randomBlob('region-events', 64 * 1024));
    for (const node of region.nodes) assert.equal((await fetchBlob(blobUrl(node.url, NAME, digest))).digest, digest);
    await waitFor('a pull event from each node', async () => new Set(received.filter((e) => e.action === 'pull' && e.target.digest === digest).map((e) => e.source.addr)).size === 3 || undefined, 15_000, 100);
    // No two nodes append to one queue: one folder per node, each with the endpoint's queue.
    const events = join(region.shared, 'docker/registry/v2/_cascade_events');
    const folders = await readdir(events);
    assert.equal(folders.length, 3, folders.join(', '));
    for (const f of folders) assert.deepEqual(await readdir(join(events, f)), ['audit']);
  });

  it('a blob being read on one node is never swept by another node\'s sweeper', { timeout: 60_000 }, async (t) => {
    const region = await startRegion(t, 'region-pin-', { blobttl: '2s', options: { sweepinterval: '300ms' } });
    // Far more than the socket buffers hold: the node is still sending (and pinning) while the client stalls.
    const size = 64 * MiB;
    const digest = region.origin.addBlob(randomBlob('region-pin', size));
    // The node that sweeps (timers keep their phase, so mostly the same one wins each interval): the reader is another one.
    const first = await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"');
    await sleep(1500);
    const ran = (await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"')).map((v, i) => v - (first[i] ?? 0));
    const sweeper = ran.indexOf(Math.max(...ran));
    const b = region.nodes[(sweeper + 1) % 3]!;
    const a = region.nodes[(sweeper + 2) % 3]!;
    assert.equal((await fetchBlob(blobUrl(a.url, NAME, digest), { keepBody: 0 })).digest, digest);
    // A client of node b reads the first bytes, then stalls well past the TTL.
    const hash = createHash('sha256');
    let received = 0;
    let resume: () => void = () => undefined;
    const done = new Promise<{ status: number; complete: boolean }>((resolve, reject) => {
      const req = httpRequest(blobUrl(b.url, NAME, digest), { agent: false }, (res) => {
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          received += chunk.length;
          if (received >= MiB && !res.isPaused() && resume === noop) {
            res.pause();
            resume = () => res.resume();
          }
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, complete: res.complete }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
    const noop = resume;
    await waitFor('the client to stall', () => resume !== noop, 10_000);
    const sweepsBefore = await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"');
    await sleep(5000);
    const sweeps = (await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"')).map((v, i) => v - (sweepsBefore[i] ?? 0));
    const reader = region.nodes.indexOf(b);
    assert.ok(total(sweeps) - sweeps[reader]! > 0, `nodes other than the reader's swept meanwhile (${sweeps.join(', ')}; reader: node${reader})`);
    assert.ok(await hasBlobData(region.shared, digest), 'the blob being read stays on the shared folder past its TTL');
    resume();
    const res = await done;
    assert.equal(res.status, 200);
    assert.ok(res.complete && received === size);
    assert.equal(`sha256:${hash.digest('hex')}`, digest);
    // Released, it expires at a later sweep.
    await waitFor('the blob to expire once released', async () => !(await hasBlobData(region.shared, digest)), 15_000, 200);
  });

  it('maxsize counts the region\'s storage, whichever node filled the blobs', { timeout: 60_000 }, async (t) => {
    const region = await startRegion(t, 'region-quota-', { blobttl: '1h', options: { sweepinterval: '300ms', maxsize: '3MiB' } });
    // The node that sweeps fills nothing: only the region's total can tell it the folder is over its quota.
    const first = await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"');
    await sleep(1500);
    const ran = (await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"')).map((v, i) => v - (first[i] ?? 0));
    const sweeper = ran.indexOf(Math.max(...ran));
    const fillers = region.nodes.filter((_, i) => i !== sweeper);
    const digests: string[] = [];
    for (let i = 0; i < 5; i++) {
      const digest = region.origin.addBlob(randomBlob(`region-quota-${i}`, MiB));
      digests.push(digest);
      assert.equal((await fetchBlob(blobUrl(fillers[i % 2]!.url, NAME, digest), { keepBody: 0 })).digest, digest);
      await sleep(100);
    }
    const stored = async () => (await Promise.all(digests.map((d) => hasBlobData(region.shared, d)))).filter(Boolean).length;
    await waitFor('the region to get under its quota', async () => (await stored()) <= 3, 15_000, 200);
    assert.ok((await stored()) >= 2, 'only what the quota needs is evicted');
    assert.equal(await hasBlobData(region.shared, digests[0]!), false, 'the least recently used blob went first');
  });

  it('the sweeper runs once per interval for the region, not once per node', { timeout: 60_000 }, async (t) => {
    const region = await startRegion(t, 'region-sweep-', { blobttl: '1h', options: { sweepinterval: '500ms' } });
    const before = total(await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"'));
    const started = Date.now();
    await sleep(5000);
    const ran = total(await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"')) - before;
    const intervals = (Date.now() - started) / 500;
    const skipped = total(await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="skipped"'));
    assert.ok(ran >= intervals - 2 && ran <= intervals + 2, `about one sweep per interval: ${ran} sweeps in ${intervals.toFixed(1)} intervals (skipped: ${skipped})`);
    assert.ok(skipped >= intervals, 'the other nodes skipped theirs');
  });

  it('Redis stopped mid-run: hits and fills go on per node; restarted: the nodes coordinate again', { timeout: 120_000 }, async (t) => {
    const region = await startRegion(t, 'region-redis-', { blobttl: '1h', options: { sweepinterval: '500ms' } });
    const first = randomBlob('region-redis-1', 2 * MiB);
    const d1 = region.origin.addBlob(first);
    assert.equal((await fetchBlob(blobUrl(region.lb, NAME, d1), { keepBody: 0 })).digest, d1);
    assert.deepEqual(await regionMetric(region.nodes, 'cascade_region_redis_up'), [1, 1, 1]);
    await region.redis.stop({ kill: true });
    await waitFor('every node to see Redis down', async () => (await regionMetric(region.nodes, 'cascade_region_redis_up')).every((v) => v === 0), 15_000, 200);
    // Hits through the balancer, on every node.
    for (let i = 0; i < 6; i++) assert.equal((await fetchBlob(blobUrl(region.lb, NAME, d1), { keepBody: 0, timeoutMs: 10_000 })).digest, d1, `hit ${i} while Redis is down`);
    // A new blob fills per node (at most one origin GET per node), every body right.
    const second = randomBlob('region-redis-2', 4 * MiB);
    const d2 = region.origin.addBlob(second);
    const herd = await Promise.all(Array.from({ length: 9 }, () => fetchBlob(blobUrl(region.lb, NAME, d2), { keepBody: 0, timeoutMs: 20_000 })));
    assert.deepEqual(herd.filter((r) => r.digest !== d2).map((r) => `${r.status} ${r.error ?? ''}`), []);
    assert.ok(region.origin.count(d2, 'GET') <= 3, `per-node single-flight while Redis is down (${region.origin.count(d2, 'GET')} GETs)`);
    for (const node of region.nodes) {
      const ready = await fetch(`${node.url}/ready`);
      assert.equal(ready.status, 200, 'a node without Redis stays ready');
      await ready.arrayBuffer();
      assert.ok(node.proc!.logs.some((l) => l.msg?.startsWith('region: Redis unreachable')), `${node.name} logged that Redis is down`);
    }
    const sweepsWhileDown = total(await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"'));
    await sleep(1500);
    assert.equal(total(await regionMetric(region.nodes, 'cascade_region_sweeps_total', 'result="ran"')), sweepsWhileDown, 'no node sweeps alone');
    await region.redis.start();
    await waitFor('every node to see Redis back', async () => (await regionMetric(region.nodes, 'cascade_region_redis_up')).every((v) => v === 1), 20_000, 200);
    for (const node of region.nodes) {
      assert.equal(node.proc!.logs.filter((l) => l.msg?.startsWith('region: Redis unreachable')).length, 1, `${node.name} logged the outage once`);
      assert.ok(node.proc!.logs.some((l) => l.msg?.startsWith('region: Redis is back')), `${node.name} logged that Redis is back`);
    }
    // One fill for the region again.
    const third = randomBlob('region-redis-3', 8 * MiB);
    const d3 = region.origin.addBlob(third);
    const herd3 = await Promise.all(Array.from({ length: 12 }, () => fetchBlob(blobUrl(region.lb, NAME, d3), { keepBody: 0, timeoutMs: 30_000 })));
    assert.deepEqual(herd3.filter((r) => r.digest !== d3).map((r) => `${r.status} ${r.error ?? ''}`), []);
    assert.equal(region.origin.count(d3, 'GET'), 1, 'one origin GET once Redis is back');
    // Nothing is lost or corrupted: the earlier blobs are still served right, from the folder.
    for (const d of [d1, d2]) assert.equal((await fetchBlob(blobUrl(region.lb, NAME, d), { keepBody: 0 })).digest, d);
    assert.equal(region.origin.count(d1, 'GET'), 1);
  });

  it('a node restarted on the shared folder adopts the state and leaves the running fills of the others alone', { timeout: 120_000 }, async (t) => {
    const region = await startRegion(t, 'region-restart-');
    const stored = randomBlob('region-restart-1', 1 * MiB);
    const d1 = region.origin.addBlob(stored);
    assert.equal((await fetchBlob(blobUrl(region.nodes[0]!.url, NAME, d1), { keepBody: 0 })).digest, d1);
    // A slow fill led by node 1 runs while node 0 restarts: at least 7.7 s (384 chunks 20 ms apart), so that it
    // is still running once node 0 is back, even on a loaded machine.
    const size = 12 * MiB;
    const slow = randomBlob('region-restart-2', size);
    const d2 = region.origin.addBlob(slow, { kind: 'slow', chunkBytes: 32 * 1024, intervalMs: 20 });
    const filling = fetchBlob(blobUrl(region.nodes[1]!.url, NAME, d2), { keepBody: 0, timeoutMs: 60_000 });
    await waitFor('the fill to be under way', async () => (await metric(region.nodes[1]!, 'cascade_cache_bytes_total', 'source="upstream"')) >= 2 * MiB, 20_000);
    await region.nodes[0]!.stop();
    const restarted = await region.restart(0);
    // The restarted node serves the stored blob as a hit, and joins the running fill instead of starting one.
    assert.equal((await fetchBlob(blobUrl(restarted.url, NAME, d1), { keepBody: 0 })).digest, d1);
    assert.equal(region.origin.count(d1, 'GET'), 1, 'the stored blob is a hit on the restarted node');
    assert.ok((await metric(region.nodes[1]!, 'cascade_cache_bytes_total', 'source="upstream"')) < size, 'the fill still runs');
    const joined = await fetchBlob(blobUrl(restarted.url, NAME, d2), { keepBody: 0, timeoutMs: 60_000 });
    const first = await filling;
    assert.equal(first.digest, d2, `the fill of node 1 survived the restart of node 0 (${first.error ?? ''})`);
    assert.equal(joined.digest, d2, `the restarted node followed it (${joined.error ?? ''})`);
    assert.equal(region.origin.count(d2, 'GET'), 1, 'one origin GET for the running fill');
    assert.equal(await metric(restarted, 'cascade_region_fills_total', 'role="joined"'), 1);
    await waitFor('the restarted node in the region', async () => (await metric(restarted, 'cascade_region_nodes')) === 3, 5000);
  });
});
