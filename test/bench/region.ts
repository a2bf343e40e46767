/**
 * Scenario 8: a region (issue 16). A herd of `regionClients` simultaneous clients GETs one cold blob
 * through nginx (round-robin, as deploy/compose/config/region-nginx.conf) in front of `regionNodes` cache
 * nodes on one storage folder, coordinated through a redis-server; then the same herd through the same
 * nginx in front of one node alone, on an empty folder of its own. Recorded under `s8.region.` and
 * `s8.single.`: the origin's GETs of the blob (one for the region as for one node; more is a correctness
 * problem), each client's completion time (p50, p99) and the herd's, the CPU seconds of each node, of nginx
 * and of Redis from the herd's start until the blob is stored, the blob GETs each node answered (how the
 * balancer spread the clients), and the region's fills by role from the nodes' /metrics. Every body's size
 * is checked and `regionHashed` of them (all in smoke runs) hashed.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { getMany, type Batch } from './client.js';
import { CpuMeter, Fleet, startCascadeCache, startNginxBalancer, type Peer } from './procs.js';
import { startRedis, type RedisServer } from '../lib/redis.js';
import { blobRequests, blobUrl, checkBatch, problem, runDir, seedBlob, settle, stopFleet, waitStored, type BlobData, type Context, type Metrics } from './scenarios.js';
import { MiB, percentile } from './util.js';

/** The blob of scenario 8, seeded once per invocation. */
const blobs = new WeakMap<Context, Promise<BlobData>>();

/** Key prefix of a variant's figures. */
export const regionPrefix = (variant: 'region' | 'single'): string => `s8.${variant}.`;

/** The sum of a metric's samples whose labels include `labels`, in a Prometheus text exposition. */
export function metricSum(text: string, name: string, labels = ''): number {
  return text
    .split('\n')
    .filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && l.includes(labels))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** The herd: `regionClients` GETs at once, `regionHashed` of them written to files and hashed. */
async function herd(ctx: Context, url: string): Promise<Batch> {
  const count = ctx.cfg.regionClients;
  const hashed = ctx.cfg.regionHashed === 'all' ? count : Math.min(count, ctx.cfg.regionHashed);
  const hashDir = join(ctx.work, 'bodies');
  await mkdir(hashDir, { recursive: true });
  const started = performance.now();
  const none: Batch = { transfers: [], wallMs: 0 };
  const [a, b] = await Promise.all([
    hashed > 0 ? getMany(ctx.cfg.client, url, { count: hashed, spread: 'parallel', hashDir, timeoutMs: 600_000 }) : none,
    count - hashed > 0 ? getMany(ctx.cfg.client, url, { count: count - hashed, spread: 'parallel', timeoutMs: 600_000 }) : none,
  ]);
  const digests = a.transfers.filter((t) => t.digest !== undefined).length;
  if (digests !== hashed) problem(ctx, `s8 cascade herd: ${digests} of the ${hashed} bodies to hash were hashed`);
  return { transfers: [...a.transfers, ...b.transfers], wallMs: performance.now() - started };
}

/** One herd through nginx in front of `count` nodes on one empty folder (a region with Redis when count > 1). */
async function measure(ctx: Context, m: Metrics, blob: BlobData, variant: 'region' | 'single'): Promise<void> {
  const p = regionPrefix(variant);
  const count = variant === 'region' ? ctx.cfg.regionNodes : 1;
  const fleet = new Fleet();
  let redis: RedisServer | undefined;
  try {
    const dir = await runDir(ctx, fleet, `region-${variant}`);
    const shared = join(dir, 'shared');
    if (variant === 'region') redis = await startRedis();
    const nodes: Peer[] = [];
    for (let i = 0; i < count; i++) {
      nodes.push(
        await startCascadeCache(fleet, {
          dir: join(dir, `node${i + 1}`),
          name: `cascade-${variant}-node${i + 1}`,
          origin: ctx.origin.url,
          rootdirectory: shared,
          ...(redis ? { options: { region: { redis: redis.url } } } : {}),
        }),
      );
    }
    const balancer = await startNginxBalancer(fleet, join(dir, 'nginx'), nodes);
    const originBefore = ctx.origin.requests().length;
    const pids = [...nodes.map((n) => n.pid), balancer.pid, ...(redis ? [redis.pid] : [])];
    const meter = new CpuMeter(pids);
    const batch = await herd(ctx, blobUrl(balancer, blob.digest));
    // The blob in place (one file: the folder is shared) ends the herd's work, for the CPU figures.
    await waitStored(ctx, nodes[0]!, blob);
    const cpu = meter.read();
    checkBatch(ctx, `s8 cascade ${variant}: herd of ${ctx.cfg.regionClients}`, batch, blob);
    const times = batch.transfers.map((t) => t.totalMs);
    m[`${p}p50Ms`] = percentile(times, 50);
    m[`${p}p99Ms`] = percentile(times, 99);
    m[`${p}wallMs`] = batch.wallMs;
    await settle(ctx.origin);
    const gets = blobRequests(ctx.origin, blob.digest, 'GET', originBefore);
    m[`${p}originGets`] = gets;
    if (gets !== 1) problem(ctx, `s8 cascade ${variant}: the origin served ${gets} GETs of the blob to ${count} node(s) for ${ctx.cfg.regionClients} simultaneous clients; expected exactly 1`);
    let nodeCpu = 0;
    for (const [i, node] of nodes.entries()) {
      await settle(node);
      m[`${p}node${i + 1}.cpuS`] = cpu[i]!;
      m[`${p}node${i + 1}.gets`] = blobRequests(node, blob.digest, 'GET');
      nodeCpu += cpu[i]!;
    }
    m[`${p}cpuS`] = nodeCpu;
    m[`${p}nginx.cpuS`] = cpu[count]!;
    if (redis) m[`${p}redis.cpuS`] = cpu[count + 1]!;
    if (variant === 'region') {
      const texts = await Promise.all(nodes.map(async (n) => (await fetch(`${n.url}/metrics`, { headers: { connection: 'close' } })).text()));
      for (const role of ['led', 'joined', 'takeover']) m[`${p}fills.${role}`] = texts.reduce((sum, t) => sum + metricSum(t, 'cascade_region_fills_total', `role="${role}"`), 0);
      m[`${p}redisUp`] = Math.min(...texts.map((t) => metricSum(t, 'cascade_region_redis_up')));
      if (m[`${p}fills.led`] !== 1) problem(ctx, `s8 cascade region: the nodes count ${m[`${p}fills.led`]} led fills of the blob (cascade_region_fills_total{role="led"}); expected 1`);
      if (m[`${p}redisUp`] !== 1) problem(ctx, `s8 cascade region: a node reports cascade_region_redis_up ${m[`${p}redisUp`]} with Redis running`);
    }
  } finally {
    await stopFleet(ctx, fleet);
    await redis?.close();
  }
}

export async function region(ctx: Context, m: Metrics): Promise<void> {
  let seeded = blobs.get(ctx);
  if (!seeded) {
    seeded = seedBlob(ctx.work, ctx.origin, 'region', ctx.cfg.regionMiB * MiB);
    blobs.set(ctx, seeded);
  }
  const blob = await seeded;
  // Each run's herds start cold: every variant gets an empty folder (the origin keeps the blob).
  await measure(ctx, m, blob, 'single');
  await measure(ctx, m, blob, 'region');
  const single = m[`${regionPrefix('single')}p99Ms`];
  const reg = m[`${regionPrefix('region')}p99Ms`];
  if (single !== undefined && reg !== undefined) m['s8.p99.ratio.single'] = reg / single;
}

export const REGION = { id: 8, name: 'a region: a herd over several nodes with Redis', run: region };
