/**
 * The benchmark scenarios. Each one starts fresh cache nodes for its run (cold means an empty storage
 * folder), measures Cascade and distribution's proxy mode against the same origin (distribution 2.8.2,
 * a plain registry), records its figures as flat keys in the run's metrics (`s1.single.cascade.MBps`...)
 * and every correctness problem (a wrong status, size or digest, a cut transfer, more than one upstream
 * GET per hop for Cascade, a crash) in `ctx.problems`. Scenario 7 (shaped links) is in shaped.ts and
 * measures with {@link coldPull}, as scenario 2 does.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { startCascade } from '../lib/cascade.js';
import { startServer } from '../lib/stack.js';
import { makeOciImage, type OciImageLayout } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';
import { fetchHashed, getMany, type Batch, type ClientKind } from './client.js';
import type { NetPlace } from './netns.js';
import { cascadeNode, CpuMeter, Fleet, RssProbe, startChain, startDistribution, type Peer } from './procs.js';
import { blobDataPath, GiB, makeBlobFile, mbps, median, MiB, percentile, recycleMemory, uploadBlob } from './util.js';

/**
 * The memory a cold pull's new files get. `fresh`: whatever the kernel hands out (on this virtual machine,
 * mostly pages the host backs on first use, ~0.45 GB/s); `recycled`: pages just freed, by writing and
 * deleting a file right before the pull (as on a long-running host); `both`: one pass of each.
 */
export type MemoryMode = 'fresh' | 'recycled' | 'both';

/**
 * The memory passes of scenario 2, in order. Recycled goes first: it is the pass the targets check, and a
 * fresh pass before it (eight cold pulls, ~4 GiB of new files) left the recycled one on fresh pages whatever
 * its recycling wrote (the cache's write threads took ~0.76 CPU-s of system time per 512 MiB instead of ~0.1,
 * and a cold 1-hop pull twice as long; docs/performance.md). The fresh pass then gets whatever the kernel
 * hands out, which on this machine is still mostly fresh pages.
 */
export function memoryPasses(mode: MemoryMode): Array<'fresh' | 'recycled'> {
  return mode === 'both' ? ['recycled', 'fresh'] : [mode];
}

/**
 * The mode of scenario 2's unprefixed figures (`s2.cascade1.ratio`, which the targets check) and of
 * scenario 7: recycled unless only fresh was asked for, or the results predate the option (then fresh).
 */
export function primaryMemory(mode: MemoryMode | undefined): 'fresh' | 'recycled' {
  return mode === undefined || mode === 'fresh' ? 'fresh' : 'recycled';
}

/** Scenario 2's key prefix for one memory pass: `s2.` for the primary mode, `s2.fresh.` for the other. */
export function coldPrefix(mode: MemoryMode | undefined, pass: 'fresh' | 'recycled'): string {
  return pass === primaryMemory(mode) ? 's2.' : `s2.${pass}.`;
}

/** Sizes and counts of one benchmark invocation. */
export interface BenchConfig {
  readonly mode: 'full' | 'smoke';
  readonly runs: number;
  /** Scenario 1 and 2 blob (MiB). */
  readonly bigMiB: number;
  /** Scenario 3 blob (MiB); also the small size of the RSS-vs-blob-size check. */
  readonly concMiB: number;
  /** Scenario 3: simultaneous cold requests. */
  readonly concCount: number;
  /** Scenario 1: simultaneous warm streams. */
  readonly streams: number;
  /** Scenario 1: single-stream transfers per system per run (their median is the run's figure). */
  readonly singleRepeats: number;
  /** Scenario 4: size of the file in each layer. */
  readonly imageLayers: number[];
  /** Scenario 6: sequential requests per kind per run. */
  readonly latencyRequests: number;
  /** Hash every download (smoke), or one per scenario and system (full). */
  readonly hashAll: boolean;
  /** Scenarios 2 and 7: the memory of cold pulls (scenario 7 uses the primary mode only). */
  readonly memory: MemoryMode;
  /** Recycled memory: the size of the file written and deleted before each cold pull (MiB). */
  readonly recycleMiB: number;
  /** Scenario 7: the blob (MiB). */
  readonly shapedMiB: number;
  /** Scenario 7: the link speeds, Gbit/s. */
  readonly shapedGbits: readonly number[];
  readonly client: ClientKind;
  /** Scenario 8 (a region): the blob (MiB), the simultaneous clients, the nodes, and how many bodies are hashed (all: every one). */
  readonly regionMiB: number;
  readonly regionClients: number;
  readonly regionNodes: number;
  readonly regionHashed: number | 'all';
  /** Scenarios to run (1..8); 5 is measured during 1 and 3. */
  readonly scenarios: ReadonlySet<number>;
}

/** Deterministic mixed layer sizes: mostly small, some medium, a few large (like real images). */
export function mixedLayers(count: number, scale = 1): number[] {
  let x = 0x2545f491;
  const rnd = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const r = rnd();
    let size: number;
    if (i % 30 === 0) size = 8 * MiB + r * 16 * MiB; // large: 8-24 MiB
    else if (i % 5 === 0) size = 512 * 1024 + r * 3.5 * MiB; // medium: 0.5-4 MiB
    else size = 4096 + r * 252 * 1024; // small: 4-256 KiB
    out.push(Math.max(1, Math.round(size * scale)));
  }
  return out;
}

export const FULL: Omit<BenchConfig, 'runs' | 'client' | 'scenarios'> = {
  mode: 'full',
  bigMiB: 512,
  concMiB: 64,
  concCount: 100,
  streams: 32,
  singleRepeats: 3,
  imageLayers: mixedLayers(300),
  latencyRequests: 200,
  hashAll: false,
  memory: 'both',
  recycleMiB: 2048,
  shapedMiB: 256,
  shapedGbits: [1, 10],
  regionMiB: 256,
  regionClients: 60,
  regionNodes: 3,
  // 60 bodies of 256 MiB would be 15 GiB of files to hash: every tenth is hashed, every one's size checked.
  regionHashed: 6,
};

export const SMOKE: Omit<BenchConfig, 'runs' | 'client' | 'scenarios'> = {
  mode: 'smoke',
  bigMiB: 8,
  concMiB: 4,
  concCount: 20,
  streams: 8,
  singleRepeats: 1,
  imageLayers: mixedLayers(20, 0.05),
  latencyRequests: 10,
  hashAll: true,
  memory: 'recycled',
  recycleMiB: 64,
  shapedMiB: 8,
  // One speed: the smoke run checks that shaped chains work, not how fast.
  shapedGbits: [10],
  regionMiB: 4,
  regionClients: 12,
  regionNodes: 3,
  regionHashed: 'all',
};

export interface BlobData {
  readonly digest: string;
  readonly size: number;
  /** The origin's data file (what nginx serves). */
  readonly path: string;
}

/** Everything a run needs, set up once per invocation. */
export interface Context {
  readonly cfg: BenchConfig;
  readonly work: string;
  readonly origin: Peer;
  readonly nginx: Peer | undefined;
  readonly big: BlobData;
  readonly conc: BlobData;
  /** 1 MiB, pulled through each chain before its cold pull: the nodes have served a request before. */
  readonly warmup: BlobData;
  readonly image: OciImageLayout | undefined;
  readonly problems: string[];
  readonly notes: string[];
  /** The runner's progress log (timestamped). */
  readonly log: (s: string) => void;
  /** Keep the nodes' storage folders (`--keep`); otherwise each goes when its fleet stops. */
  readonly keep: boolean;
  /** The server scenario's stack, started on first use and kept across runs. */
  server?: Promise<ServerStack>;
  /** This run's empty chains for scenarios 2 and 3 (they use different blobs, so both are cold). */
  chains?: Promise<{ fleet: Fleet; chains: Chain[] }>;
}

/** One of {@link CHAINS}, running: its nodes, nearest-to-origin first. */
export type Chain = (typeof CHAINS)[number] & { readonly nodes: Peer[] };

/**
 * The four chains of {@link CHAINS}, empty, started in `dir` at once in front of `origin` (idle nodes cost
 * nothing). Hop i of each runs at `places[i]` when given (scenario 7: hop i's namespace), on loopback otherwise.
 */
export function startChains(fleet: Fleet, dir: string, origin: string, places?: readonly NetPlace[]): Promise<Chain[]> {
  return Promise.all(CHAINS.map(async (c) => ({ ...c, nodes: await startChain(fleet, c.kind, join(dir, c.key), origin, c.hops, places) })));
}

/** Fresh chains for scenarios 2 and 3, with the fleet that stops them. */
async function chainSet(ctx: Context, name: string): Promise<{ fleet: Fleet; chains: Chain[] }> {
  const fleet = new Fleet();
  return { fleet, chains: await startChains(fleet, await runDir(ctx, fleet, name), ctx.origin.url) };
}

/** The four chains of scenarios 2 and 3, started (empty) once per run. */
function coldChains(ctx: Context) {
  return (ctx.chains ??= chainSet(ctx, 'chains'));
}

/** Stops a fleet of a scenario's own, recording its crashes. */
export async function stopFleet(ctx: Context, fleet: Fleet): Promise<void> {
  await fleet.stopAll();
  ctx.problems.push(...fleet.crashes);
}

/** Stops this run's chains (after scenarios 2 and 3), recording crashes. */
export async function endRun(ctx: Context): Promise<void> {
  if (!ctx.chains) return;
  const { fleet } = await ctx.chains.catch(() => ({ fleet: undefined }));
  ctx.chains = undefined;
  if (fleet) await stopFleet(ctx, fleet);
}

export const REPO = 'bench/blob';
export const IMAGE_REPO = 'bench/image';

export type Metrics = Record<string, number>;

export const blobUrl = (peer: Peer | string, digest: string) => `${typeof peer === 'string' ? peer : peer.url}/v2/${REPO}/blobs/${digest}`;

/** Generates a blob file and uploads it to the origin. */
export async function seedBlob(work: string, origin: Peer, seed: string, size: number): Promise<BlobData> {
  const file = join(work, `${seed}.bin`);
  const digest = await makeBlobFile(file, seed, size);
  await uploadBlob(origin.url, REPO, file, digest);
  await rm(file, { force: true });
  const path = blobDataPath(origin.rootdirectory, digest);
  const info = await stat(path);
  if (info.size !== size) throw new Error(`origin stored ${info.size} bytes for ${digest}, expected ${size}`);
  return { digest, size, path };
}

/** Generates the scenario 4 image and pushes it to the origin with skopeo. */
export async function seedImage(work: string, origin: Peer, layers: number[]): Promise<OciImageLayout> {
  const dir = join(work, 'image-src');
  const image = await makeOciImage(dir, { layers, tag: 'v1', seed: 'cascade-bench' });
  await skopeo(['copy', image.ref, `docker://${origin.host}/${IMAGE_REPO}:v1`], { timeoutMs: 600_000 });
  return image;
}

/**
 * Records a failure. Cascade's (a label naming cascade, or scenario 6's server) is a correctness problem
 * that fails the run; a peer's (distribution, nginx, the origin measured directly) is a note: the suite
 * tests Cascade, and an occasional 500 from distribution's proxy under load is its own business.
 */
export function problem(ctx: Context, message: string): void {
  if (/cascade|^s6/i.test(message.split(':')[0] ?? '')) {
    ctx.problems.push(message);
    console.error(`PROBLEM: ${message}`);
  } else {
    ctx.notes.push(`A peer failed (not counted as a problem of Cascade): ${message}`);
    console.error(`peer failure: ${message}`);
  }
}

/** Checks every transfer of a batch: 200, the full size, no transport error, the right digest when hashed. */
export function checkBatch(ctx: Context, what: string, batch: Batch, blob: BlobData): boolean {
  const bad: string[] = [];
  batch.transfers.forEach((t, i) => {
    if (t.status !== 200) bad.push(`#${i}: status ${t.status}`);
    else if (t.error) bad.push(`#${i}: ${t.error} after ${t.bytes} bytes`);
    else if (t.bytes !== blob.size) bad.push(`#${i}: ${t.bytes} bytes instead of ${blob.size}`);
    else if (t.digest !== undefined && t.digest !== blob.digest) bad.push(`#${i}: wrong bytes (sha256 ${t.digest})`);
  });
  if (bad.length) problem(ctx, `${what}: ${bad.length} of ${batch.transfers.length} transfers failed: ${bad.slice(0, 3).join('; ')}`);
  return bad.length === 0;
}

/** One GET with the Node client, hashed: the download is checked byte for byte. */
async function verify(ctx: Context, what: string, url: string, blob: BlobData): Promise<void> {
  // Connection: close, so that no idle keep-alive connection of ours delays the node's shutdown drain.
  const r = await fetchHashed(url, { timeoutMs: 300_000, headers: { connection: 'close' } });
  if (r.status !== 200 || r.error || r.bytes !== blob.size || r.digest !== blob.digest) {
    problem(ctx, `${what}: verification GET ${url} -> ${r.status}, ${r.bytes} bytes, ${r.digest}${r.error ? `, ${r.error}` : ''} (expected ${blob.size} bytes, ${blob.digest})`);
  }
}

/** `count` GETs of `url` with the configured client, curl under the command prefix `via` when given. */
export async function get(ctx: Context, url: string, count: number, spread: 'processes' | 'parallel' = 'processes', via?: readonly string[]): Promise<Batch> {
  const hashDir = ctx.cfg.hashAll ? join(ctx.work, 'bodies') : undefined;
  if (hashDir) await mkdir(hashDir, { recursive: true });
  const t0 = performance.now();
  const b = await getMany(ctx.cfg.client, url, { count, spread, ...(hashDir ? { hashDir } : {}), timeoutMs: 600_000, ...(via ? { via } : {}) });
  trace(`GET ${url.replace(/sha256:(.{8}).*/, '$1')} x${count}: ${(performance.now() - t0).toFixed(0)} ms (wall ${b.wallMs.toFixed(0)} ms)`);
  return b;
}

/** With BENCH_TRACE=1, one line per measured step (to see where a run's time goes). */
export function trace(s: string): void {
  if (process.env.BENCH_TRACE) console.log(`  trace ${new Date().toISOString().slice(11, 23)} ${s}`);
}

/** Waits until `peer` has the blob in its storage (distribution's proxy stores in the background). */
export async function waitStored(ctx: Context, peer: Peer, blob: BlobData, timeoutMs = 120_000): Promise<boolean> {
  const path = blobDataPath(peer.rootdirectory, blob.digest);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const size = await stat(path).then((s) => s.size, () => -1);
    if (size === blob.size) return true;
    await sleep(50);
  }
  ctx.notes.push(`${peer.name} had not stored ${blob.digest.slice(0, 19)} after ${timeoutMs} ms`);
  return false;
}

/** Waits until every request `peer` answered so far is in its access log (a marker request). */
export async function settle(peer: Peer, timeoutMs = 10_000): Promise<void> {
  const id = randomUUID();
  await fetchHashed(`${peer.url}/v2/?settle=${id}`, { hash: false, timeoutMs, headers: { connection: 'close' } });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (peer.requests().some((r) => r.query?.includes(id))) return;
    await sleep(20);
  }
}

export const blobRequests = (peer: Peer, digest: string, method: string, since = 0) =>
  peer.requests().slice(since).filter((r) => r.method === method && r.path.endsWith(`/blobs/${digest}`)).length;

/** A fresh storage folder for nodes of `fleet`, removed when the fleet stops (unless `--keep`). */
export async function runDir(ctx: Context, fleet: Fleet, name: string): Promise<string> {
  const dir = join(ctx.work, 'runs', `${name}-${randomUUID().slice(0, 8)}`);
  await mkdir(dir, { recursive: true });
  if (!ctx.keep) fleet.removeOnStop(dir);
  return dir;
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios 1 and 5: warm blob, one stream and N streams; peak RSS of the cache.

export async function warm(ctx: Context, m: Metrics): Promise<void> {
  const fleet = new Fleet();
  try {
    const dir = await runDir(ctx, fleet, 'warm');
    const [cascade] = await startChain(fleet, 'cascade', join(dir, 'c'), ctx.origin.url, 1);
    const [dist] = await startChain(fleet, 'distribution', join(dir, 'd'), ctx.origin.url, 1);
    const caches = { cascade: cascade!, distribution: dist! };
    // Fill both caches (this GET is hashed: it checks what the cache streams while filling), then wait
    // until each has the blob on disk, so the measured requests are hits.
    for (const [name, peer] of Object.entries(caches)) {
      for (const blob of [ctx.conc, ctx.big]) {
        await verify(ctx, `s1 ${name} fill`, blobUrl(peer, blob.digest), blob);
        await waitStored(ctx, peer, blob);
      }
    }
    const systems: Array<[string, string, Peer]> = [
      ...(ctx.nginx ? [['nginx', `${ctx.nginx.url}/blob`, ctx.nginx] as [string, string, Peer]] : []),
      ['cascade', blobUrl(caches.cascade, ctx.big.digest), caches.cascade],
      ['distribution', blobUrl(caches.distribution, ctx.big.digest), caches.distribution],
    ];
    // One stream: `singleRepeats` transfers per system, interleaved, the median kept; the server's CPU
    // time (nginx's workers included) summed over them.
    const single: Record<string, number[]> = {};
    const cpu: Record<string, number> = {};
    const rssSingle = new RssProbe(caches.cascade.pid).start();
    for (let rep = 0; rep < ctx.cfg.singleRepeats; rep++) {
      for (const [name, url, peer] of systems) {
        const meter = new CpuMeter([peer.pid]);
        const b = await get(ctx, url, 1);
        cpu[name] = (cpu[name] ?? 0) + meter.read()[0]!;
        checkBatch(ctx, `s1 single ${name}`, b, ctx.big);
        (single[name] ??= []).push(mbps(ctx.big.size, b.transfers[0]!.totalMs));
      }
    }
    m['s5.single.cascade.MiB'] = rssSingle.stop();
    for (const [name, v] of Object.entries(single)) m[`s1.single.${name}.MBps`] = median(v);
    for (const [name, s] of Object.entries(cpu)) m[`s1.single.${name}.cpuPerGiB`] = s / ((ctx.cfg.singleRepeats * ctx.big.size) / GiB);
    // N streams of the small blob first (RSS baseline for "does not grow with blob size"), then of the big one.
    for (const [name, peer] of Object.entries(caches)) {
      const probe = new RssProbe(peer.pid).start();
      const b = await get(ctx, blobUrl(peer, ctx.conc.digest), ctx.cfg.streams);
      m[`s5.concSmall.${name}.MiB`] = probe.stop();
      checkBatch(ctx, `s1 ${ctx.cfg.streams} streams of the ${ctx.cfg.concMiB} MiB blob, ${name}`, b, ctx.conc);
      m[`s1.concSmall.${name}.MBps`] = mbps(ctx.conc.size * ctx.cfg.streams, b.wallMs);
    }
    for (const [name, url, peer] of systems) {
      const probe = peer.kind === 'nginx' ? undefined : new RssProbe(peer.pid).start();
      const b = await get(ctx, url, ctx.cfg.streams);
      if (probe) m[`s5.conc.${name}.MiB`] = probe.stop();
      checkBatch(ctx, `s1 ${ctx.cfg.streams} streams ${name}`, b, ctx.big);
      m[`s1.conc.${name}.MBps`] = mbps(ctx.big.size * ctx.cfg.streams, b.wallMs);
    }
    if (!ctx.cfg.hashAll) await verify(ctx, 's1 cascade warm', blobUrl(caches.cascade, ctx.big.digest), ctx.big);
    for (const key of ['single', 'conc']) {
      const c = m[`s1.${key}.cascade.MBps`]!;
      m[`s1.${key}.ratio.distribution`] = c / m[`s1.${key}.distribution.MBps`]!;
      if (ctx.nginx) {
        m[`s1.${key}.ratio.nginx`] = c / m[`s1.${key}.nginx.MBps`]!;
        m[`s1.${key}.ratio.distribution-vs-nginx`] = m[`s1.${key}.distribution.MBps`]! / m[`s1.${key}.nginx.MBps`]!;
      }
    }
    m['s5.growth.cascade.MiB'] = m['s5.conc.cascade.MiB']! - m['s5.concSmall.cascade.MiB']!;
    m['s5.growth.distribution.MiB'] = m['s5.conc.distribution.MiB']! - m['s5.concSmall.distribution.MiB']!;
  } finally {
    await stopFleet(ctx, fleet);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 2: cold blob through one cache and a chain of three, against the origin directly.

export const CHAINS: ReadonlyArray<{ key: string; kind: 'cascade' | 'distribution'; hops: number }> = [
  { key: 'cascade1', kind: 'cascade', hops: 1 },
  { key: 'cascade3', kind: 'cascade', hops: 3 },
  { key: 'distribution1', kind: 'distribution', hops: 1 },
  { key: 'distribution3', kind: 'distribution', hops: 3 },
];

/** Where cold pulls happen: the origin, its blobs, and how the client reaches them. */
export interface Site {
  readonly origin: Peer;
  /** The blob pulled cold. */
  readonly big: BlobData;
  /** 1 MiB, pulled through each chain before its cold pull: the nodes have served a request before. */
  readonly warmup: BlobData;
  /** A command prefix the client runs under (its network namespace in scenario 7); none on loopback. */
  readonly via?: readonly string[];
}

/** What one cold pull is measured with. */
export interface ColdPullOptions {
  /** Labels of problems and notes (`s2`, `s7 1 Gbit/s`). */
  readonly what: string;
  /** Recycled: a file is written and deleted right before the pull ({@link recycleBytes}). */
  readonly memory: 'fresh' | 'recycled';
  /** GET the blob once more through the chain afterwards, hashed (full runs; smoke runs hash every body). */
  readonly verify: boolean;
}

/**
 * One cold pull of `site.big` through `chain` (empty), recorded under `<p><chain key>.`: the origin directly
 * right before it (the ratio pairs the two), the pull's times, the upstream GETs per hop, each hop's fill
 * from Cascade's logs, and the CPU seconds of the origin and of every hop from before the pull until every
 * hop has stored the blob (a cache syncs and moves its file, or, distribution, stores a second fetch,
 * after the client's last byte: that work is the pull's too).
 */
export async function coldPull(ctx: Context, site: Site, chain: Chain, m: Metrics, p: string, o: ColdPullOptions): Promise<void> {
  const k = `${p}${chain.key}`;
  const hops = chain.nodes;
  const last = hops[hops.length - 1]!;
  const pull = (peer: Peer, blob: BlobData) => get(ctx, blobUrl(peer, blob.digest), 1, 'processes', site.via);
  // A running node, not a fresh process, is what clients meet: every node of the chain first passes on
  // one unrelated small blob (its first request costs start-up work: connections, lazily compiled code).
  // That first request's TTFB is kept as an informative figure.
  const warmDirect = await pull(site.origin, site.warmup);
  const warm = await pull(last, site.warmup);
  checkBatch(ctx, `${o.what} warm-up ${chain.key}`, warm, site.warmup);
  m[`${k}.firstTtfbExtraMs`] = warm.transfers[0]!.ttfbMs - warmDirect.transfers[0]!.ttfbMs;
  // The origin directly, right before the cold pull: the pair is compared within the run.
  const directCpu = new CpuMeter([site.origin.pid]);
  const direct = await pull(site.origin, site.big);
  const gib = site.big.size / GiB;
  m[`${k}.direct.originCpuPerGiB`] = directCpu.read()[0]! / gib;
  checkBatch(ctx, `${o.what} origin direct`, direct, site.big);
  if (o.memory === 'recycled') m[`${k}.recycleMBps`] = recycleMemory(ctx.work, recycleBytes(ctx.cfg, hops.length, site.big.size));
  // The direct GET's access line must be in before the count starts (the recycling write blocked this
  // process, and with it the reading of the origin's log).
  await settle(site.origin);
  const before = [site.origin, ...hops].map((peer) => peer.requests().length);
  const cpu = new CpuMeter([site.origin, ...hops].map((peer) => peer.pid));
  const b = await pull(last, site.big);
  checkBatch(ctx, `${o.what} cold ${chain.key}`, b, site.big);
  const t = b.transfers[0]!;
  const d = direct.transfers[0]!;
  m[`${k}.totalMs`] = t.totalMs;
  m[`${k}.ttfbMs`] = t.ttfbMs;
  m[`${k}.direct.totalMs`] = d.totalMs;
  m[`${k}.direct.ttfbMs`] = d.ttfbMs;
  m[`${k}.ratio`] = t.totalMs / d.totalMs;
  m[`${k}.ttfbExtraMs`] = t.ttfbMs - d.ttfbMs;
  m[`${k}.MBps`] = mbps(site.big.size, t.totalMs);
  for (const peer of hops) await waitStored(ctx, peer, site.big);
  const [originCpu, ...hopCpu] = cpu.read();
  hopCpu.forEach((s, i) => (m[`${k}.hop${i + 1}.cpuS`] = s));
  m[`${k}.cpuPerGiBPerHop`] = hopCpu.reduce((a, s) => a + s, 0) / hops.length / gib;
  m[`${k}.originCpuPerGiB`] = originCpu! / gib;
  // Upstream GETs per hop for this one cold request (informative; scenario 3 checks the burst).
  // Every node, the last hop too: its log lines up to the marker (its fill's among them) are then all in.
  for (const peer of [site.origin, ...hops]) await settle(peer);
  const upstreams = [site.origin, ...hops.slice(0, -1)];
  m[`${k}.maxGetsPerHop`] = Math.max(...upstreams.map((peer, i) => blobRequests(peer, site.big.digest, 'GET', before[i])));
  // Cascade logs how long each hop waited for its upstream's headers and how long its fill took.
  hops.forEach((peer, i) => {
    const logs = peer.cascade?.logs ?? [];
    const fill = logs.find((l) => l.msg === 'fill complete' && l.digest === site.big.digest);
    const up = logs.find((l) => l.msg === 'upstream request' && l.method === 'GET' && String(l.path).endsWith(site.big.digest));
    if (typeof fill?.duration === 'number') m[`${k}.hop${i + 1}.fillMs`] = fill.duration;
    if (typeof up?.duration === 'number') m[`${k}.hop${i + 1}.upstreamHeadersMs`] = up.duration;
  });
  if (o.verify) await verify(ctx, `${o.what} ${chain.key} after the cold pull`, blobUrl(last, site.big.digest), site.big);
}

/**
 * The size of the file written and deleted before a recycled cold pull: enough freed pages for the copies
 * the pull writes (one per hop), with half again as margin, and at most `recycleMiB` (2 GiB). Writing more
 * only costs time: on fresh memory the file itself goes at ~0.45 GB/s, and freed pages go back to the host
 * within seconds, so each pull pays for its own file.
 */
export function recycleBytes(cfg: BenchConfig, hops: number, blobSize: number): number {
  return Math.min(cfg.recycleMiB * MiB, Math.ceil((1.5 * hops * blobSize) / MiB) * MiB);
}

/** The medians of the direct pulls paired with each chain's cold pull, under `<p>direct...`. */
export function summariseDirect(m: Metrics, p: string, size: number): void {
  const of = (what: string) => median(CHAINS.map((c) => m[`${p}${c.key}.direct.${what}`]!));
  m[`${p}directMs`] = of('totalMs');
  m[`${p}directTtfbMs`] = of('ttfbMs');
  m[`${p}direct.MBps`] = mbps(size, m[`${p}directMs`]!);
  // From the first byte to the last: what the link carried, without the origin's time to answer.
  m[`${p}direct.bodyMBps`] = mbps(size, m[`${p}directMs`]! - m[`${p}directTtfbMs`]!);
  m[`${p}direct.originCpuPerGiB`] = of('originCpuPerGiB');
}

export async function cold(ctx: Context, m: Metrics): Promise<void> {
  const site: Site = { origin: ctx.origin, big: ctx.big, warmup: ctx.warmup };
  for (const memory of memoryPasses(ctx.cfg.memory)) {
    const p = coldPrefix(ctx.cfg.memory, memory);
    // The primary pass uses the run's chains, which scenario 3 uses next (for another blob); another pass
    // needs empty chains of its own.
    const own = p === 's2.' ? undefined : await chainSet(ctx, `chains-${memory}`);
    try {
      const { chains } = own ?? (await coldChains(ctx));
      for (const chain of chains) await coldPull(ctx, site, chain, m, p, { what: `s2 ${memory}`, memory, verify: !ctx.cfg.hashAll });
      summariseDirect(m, p, ctx.big.size);
    } finally {
      if (own) await stopFleet(ctx, own.fleet);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios 3 and 5: N simultaneous cold requests for one blob.

export async function burst(ctx: Context, m: Metrics): Promise<void> {
  // The origin directly, as the reference for completion times.
  const direct = await get(ctx, blobUrl(ctx.origin, ctx.conc.digest), ctx.cfg.concCount, 'parallel');
  checkBatch(ctx, 's3 origin direct', direct, ctx.conc);
  m['s3.direct.p50Ms'] = percentile(direct.transfers.map((t) => t.totalMs), 50);
  m['s3.direct.p99Ms'] = percentile(direct.transfers.map((t) => t.totalMs), 99);
  m['s3.direct.wallMs'] = direct.wallMs;
  {
    // The same chains as scenario 2 (started for it, or now): this blob has never been asked of them.
    const { chains } = await coldChains(ctx);
    for (const chain of chains) {
      const hops = chain.nodes;
      const last = hops[hops.length - 1]!;
      const upstreams = [ctx.origin, ...hops.slice(0, -1)];
      const before = upstreams.map((p) => p.requests().length);
      const probe = new RssProbe(hops[0]!.pid).start();
      const b = await get(ctx, blobUrl(last, ctx.conc.digest), ctx.cfg.concCount, 'parallel');
      const rss = probe.stop();
      checkBatch(ctx, `s3 burst ${chain.key}`, b, ctx.conc);
      const times = b.transfers.map((t) => t.totalMs);
      m[`s3.${chain.key}.p50Ms`] = percentile(times, 50);
      m[`s3.${chain.key}.p99Ms`] = percentile(times, 99);
      m[`s3.${chain.key}.wallMs`] = b.wallMs;
      if (chain.hops === 1) m[`s5.burst.${chain.kind}.MiB`] = rss;
      // Count the GETs each upstream served once every hop has stored the blob and logged its requests.
      for (const p of hops) await waitStored(ctx, p, ctx.conc);
      for (const p of upstreams) await settle(p);
      const gets = upstreams.map((p, i) => blobRequests(p, ctx.conc.digest, 'GET', before[i]));
      const heads = upstreams.map((p, i) => blobRequests(p, ctx.conc.digest, 'HEAD', before[i]));
      gets.forEach((n, i) => (m[`s3.${chain.key}.hop${i + 1}.gets`] = n));
      m[`s3.${chain.key}.maxGetsPerHop`] = Math.max(...gets);
      m[`s3.${chain.key}.minGetsPerHop`] = Math.min(...gets);
      m[`s3.${chain.key}.upstreamHeads`] = heads.reduce((a, x) => a + x, 0);
      if (chain.kind === 'cascade' && gets.some((n) => n !== 1)) {
        problem(ctx, `s3 burst ${chain.key}: upstream GETs per hop (origin first) ${gets.join(', ')}; expected exactly 1 each`);
      }
      if (!ctx.cfg.hashAll) await verify(ctx, `s3 ${chain.key} after the burst`, blobUrl(last, ctx.conc.digest), ctx.conc);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 4: a whole image pulled by skopeo, cold and warm.

async function pull(ctx: Context, what: string, host: string, check: boolean): Promise<number> {
  const dest = join(ctx.work, 'pulls', `${what}-${randomUUID().slice(0, 8)}`);
  await mkdir(dest, { recursive: true });
  const started = performance.now();
  try {
    await skopeo(['copy', `docker://${host}/${IMAGE_REPO}:v1`, `oci:${dest}:v1`], { timeoutMs: 600_000 });
  } catch (err) {
    problem(ctx, `s4 ${what}: skopeo copy failed: ${(err as Error).message.slice(0, 1500)}`);
    return NaN;
  }
  const ms = performance.now() - started;
  if (check) {
    try {
      await assertLayoutHolds(dest, 'v1', ctx.image!);
    } catch (err) {
      problem(ctx, `s4 ${what}: the pulled image differs: ${(err as Error).message.slice(0, 500)}`);
    }
  }
  await rm(dest, { recursive: true, force: true });
  return ms;
}

export async function image(ctx: Context, m: Metrics): Promise<void> {
  const image = ctx.image!;
  const layers: BlobData[] = image.blobs.filter((b) => b.digest !== image.digest).map((b) => ({ digest: b.digest, size: b.size, path: b.path }));
  m['s4.direct.ms'] = await pull(ctx, 'origin', ctx.origin.host, ctx.cfg.hashAll);
  for (const kind of ['cascade', 'distribution'] as const) {
    const fleet = new Fleet();
    try {
      const dir = await runDir(ctx, fleet, `image-${kind}`);
      const [cache] = await startChain(fleet, kind, dir, ctx.origin.url, 1);
      m[`s4.${kind}.coldMs`] = await pull(ctx, `${kind} cold`, cache!.host, true);
      // distribution's proxy stores blobs in the background: wait for every one before the warm pull.
      for (const l of layers) if (!(await waitStored(ctx, cache!, l, 60_000))) break;
      m[`s4.${kind}.warmMs`] = await pull(ctx, `${kind} warm`, cache!.host, ctx.cfg.hashAll || kind === 'cascade');
    } finally {
      await stopFleet(ctx, fleet);
    }
  }
  for (const t of ['cold', 'warm']) {
    m[`s4.${t}.ratio.distribution`] = m[`s4.cascade.${t}Ms`]! / m[`s4.distribution.${t}Ms`]!;
    m[`s4.${t}.ratio.direct`] = m[`s4.cascade.${t}Ms`]! / m['s4.direct.ms']!;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scenario 6: the server: manifest GET and blob redirect latency against the origin directly.

const USERS = { alice: 'alice-pw', bob: 'bob-pw', svc: 'svc-pw' } as const;
const basic = (user: keyof typeof USERS) => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;

export interface ServerStack {
  readonly fleet: Fleet;
  readonly origin: Peer;
  readonly server: Peer;
  readonly cache: Peer;
  readonly image: OciImageLayout;
  /** A small blob of the image (its config). */
  readonly blob: BlobData;
}

/**
 * distribution with htpasswd as the origin (the server authorizes through it), `cascade server` in
 * front of it with one registered cache node (auth: grant) as the default cache; a small image pushed.
 */
async function startServerStack(ctx: Context): Promise<ServerStack> {
  const fleet = new Fleet();
  const dir = join(ctx.work, 'server');
  await mkdir(dir, { recursive: true });
  // bcrypt cost 5, htpasswd -B's default: the origin checks the password of every request.
  await writeFile(join(dir, 'htpasswd'), Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}`).join('\n') + '\n');
  const origin = await startDistribution(fleet, { dir: join(dir, 'origin'), name: 'server-origin', htpasswd: join(dir, 'htpasswd') });
  trace('s6: origin started');
  const image = await makeOciImage(join(dir, 'src'), { layers: [256 * 1024, 1024 * 1024], tag: 'v1', seed: 'server-bench' });
  await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, image.ref, `docker://${origin.host}/${IMAGE_REPO}:v1`]);
  trace('s6: image pushed');
  const server = fleet.add(cascadeNode('server', await startServer(dir, { origin: origin.url, password: USERS.svc, issuer: 'cascade-bench', ttl: '60s' }), dir));
  trace('s6: server started');
  const cacheData = join(dir, 'region-a', 'data');
  const cacheProc = await startCascade(join(dir, 'region-a'), {
    storage: { filesystem: { rootdirectory: cacheData }, delete: { enabled: true } },
    middleware: { registry: [{ name: 'downstream', options: { originhost: server.url, auth: 'grant', name: 'region-a', issuer: 'cascade-bench', blobttl: '24h' } }] },
  });
  const cache = fleet.add(cascadeNode('region-a', cacheProc, cacheData));
  trace('s6: cache started');
  const api = async (method: string, path: string, body: unknown) => {
    const res = await fetch(`${server.url}${path}`, { method, headers: { authorization: basic('alice'), 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${method} ${path} -> ${res.status}: ${text}`);
    return JSON.parse(text) as { id: string };
  };
  const { id } = await api('POST', '/api/v0/content_caches', { name: 'region-a', host: cache.url });
  await api('PUT', '/api/v0/content_caches_default', { contentCacheUUID: id });
  trace('s6: cache registered');
  const config = image.image.config;
  return { fleet, origin, server, cache, image, blob: { digest: config.digest, size: config.size, path: config.path } };
}

export async function server(ctx: Context, m: Metrics): Promise<void> {
  const s = await (ctx.server ??= startServerStack(ctx));
  const manifestPath = `/v2/${IMAGE_REPO}/manifests/v1`;
  const blobPath = `/v2/${IMAGE_REPO}/blobs/${s.blob.digest}`;
  const headers = { authorization: basic('bob') };
  const manifestHeaders = { ...headers, accept: 'application/vnd.oci.image.manifest.v1+json' };
  // Smoke runs bound this scenario (5 s per request, 6 s in all) so that a stalled server cannot push
  // the run past its minute; stalls are noted, and the figures kept are those measured.
  const smoke = ctx.cfg.mode === 'smoke';
  const timeoutMs = smoke ? 5_000 : 30_000;
  const deadline = performance.now() + (smoke ? 6_000 : 600_000);
  const kinds = {
    'manifest.server': () => fetchHashed(`${s.server.url}${manifestPath}`, { headers: manifestHeaders, timeoutMs }),
    'manifest.origin': () => fetchHashed(`${s.origin.url}${manifestPath}`, { headers: manifestHeaders, timeoutMs }),
    'blob.server': () => fetchHashed(`${s.server.url}${blobPath}`, { headers, timeoutMs }),
    'blob.origin': () => fetchHashed(`${s.origin.url}${blobPath}`, { headers, timeoutMs }),
  };
  let stalls = 0;
  const times: Record<string, number[]> = {};
  const bad: string[] = [];
  let location: string | undefined;
  let servedByServer = 0;
  measure: for (let i = -10; i < ctx.cfg.latencyRequests; i++) {
    for (const [kind, send] of Object.entries(kinds)) {
      if (performance.now() >= deadline) break measure;
      const r = await send();
      if (r.error?.startsWith('timeout')) {
        stalls += 1;
        continue;
      }
      // The server streams the blob itself (200) when its health check finds the cache down: correct, but
      // not a redirect, so it is counted apart and left out of the redirect latency.
      const fallback = kind === 'blob.server' && r.status === 200 && r.digest === s.blob.digest;
      const want = kind === 'blob.server' ? 307 : 200;
      if (fallback) servedByServer += 1;
      else if (r.status !== want && kind.endsWith('.origin')) problem(ctx, `origin of s6: ${kind} -> ${r.status}`);
      else if (r.status !== want) bad.push(`${kind} -> ${r.status} ${r.body.toString().slice(0, 200)}`);
      else if (kind.startsWith('manifest') && r.digest !== s.image.digest) bad.push(`${kind}: manifest digest ${r.digest}`);
      else if (kind === 'blob.origin' && r.digest !== s.blob.digest) bad.push(`${kind}: blob digest ${r.digest}`);
      if (kind === 'blob.server' && r.status === 307) location = typeof r.headers.location === 'string' ? r.headers.location : undefined;
      if (i >= 0 && !fallback) (times[kind] ??= []).push(r.totalMs);
      if (r.totalMs > 100) trace(`s6: ${kind} #${i} took ${r.totalMs.toFixed(0)} ms`);
    }
  }
  trace('s6: measured');
  m['s6.blob.servedByServer'] = servedByServer;
  m['s6.stalls'] = stalls;
  if (stalls) ctx.notes.push(`Scenario 6: ${stalls} request(s) got no answer within ${timeoutMs} ms (left out of the figures).`);
  if (performance.now() >= deadline) ctx.notes.push(`Scenario 6 stopped after its time budget, with ${times['manifest.server']?.length ?? 0} measured requests of each kind.`);
  if (servedByServer) {
    ctx.notes.push(`Scenario 6: the server answered ${servedByServer} of ${ctx.cfg.latencyRequests + 10} blob GETs itself (200, right bytes) instead of redirecting: its health check had marked the cache down. Those are left out of the redirect latency.`);
  }
  if (bad.length) problem(ctx, `s6: ${bad.length} unexpected answers: ${bad.slice(0, 3).map((b) => b.slice(0, 160)).join('; ')}`);
  for (const [kind, v] of Object.entries(times)) {
    m[`s6.${kind}.p50Ms`] = percentile(v, 50);
    m[`s6.${kind}.p99Ms`] = percentile(v, 99);
  }
  m['s6.manifest.extraP50Ms'] = m['s6.manifest.server.p50Ms']! - m['s6.manifest.origin.p50Ms']!;
  m['s6.blob.extraP50Ms'] = m['s6.blob.server.p50Ms']! - m['s6.blob.origin.p50Ms']!;
  // The redirect leads to the cache, which serves the right bytes.
  if (!location) ctx.notes.push('Scenario 6: the server redirected no blob GET (it found the cache down, or stalled): no redirect to follow.');
  else if (smoke && performance.now() >= deadline) ctx.notes.push('Scenario 6: out of time: the redirect was not followed.');
  else if (!location.startsWith(s.cache.url)) problem(ctx, `s6: the blob redirect points to ${location}, not to the registered cache ${s.cache.url}`);
  else {
    trace(`s6: following the redirect to ${location.slice(0, 80)}`);
    // A cold fill of a small blob through the cache, the server and the origin. Slowness is noted, not
    // failed (smoke runs give up after 3 s so that they stay within their minute); wrong bytes fail.
    const r = await fetchHashed(location, { timeoutMs: smoke ? 3_000 : 60_000 });
    m['s6.followRedirectMs'] = r.totalMs;
    trace(`s6: redirect followed: ${r.status} in ${r.totalMs.toFixed(0)} ms`);
    if (r.totalMs > 1000) {
      ctx.notes.push(`Scenario 6: following one blob redirect (a cold fill of a ${s.blob.size}-byte blob through the cache, the server and the origin) took ${r.totalMs.toFixed(0)} ms${r.error ? ` and failed: ${r.error}` : ''}.`);
      trace(`cache log:\n${s.cache.tail(8)}\nserver log:\n${s.server.tail(8)}`);
    }
    const timedOut = r.error?.startsWith('timeout') ?? false;
    if (!timedOut && (r.status !== 200 || r.digest !== s.blob.digest || r.error)) problem(ctx, `s6: following the redirect: ${r.status}, ${r.digest}${r.error ? `, ${r.error}` : ''}`);
  }
}

export async function stopServer(ctx: Context): Promise<void> {
  if (!ctx.server) return;
  const s = await ctx.server.catch(() => undefined);
  if (s) await stopFleet(ctx, s.fleet);
}

/** Smoke runs start the server stack in the background at once (full runs do not: it would disturb scenario 1). */
export function startServerEarly(ctx: Context): void {
  if (ctx.cfg.mode === 'smoke' && ctx.cfg.scenarios.has(6)) {
    ctx.server ??= startServerStack(ctx);
    ctx.server.catch(() => undefined);
  }
}

export const SCENARIOS: ReadonlyArray<{ id: number; name: string; run: (ctx: Context, m: Metrics) => Promise<void> }> = [
  { id: 1, name: 'warm blob (and 5: RSS)', run: warm },
  { id: 2, name: 'cold blob', run: cold },
  { id: 3, name: 'concurrent cold requests (and 5: RSS)', run: burst },
  { id: 4, name: 'image pull', run: image },
  { id: 6, name: 'server latency', run: server },
];

/** Starts the origin and nginx and seeds the blobs and the image. */
export async function setup(cfg: BenchConfig, work: string, fleet: Fleet, log: (s: string) => void, keep = false): Promise<Context> {
  const { startNginx } = await import('./procs.js');
  const origin = await startDistribution(fleet, { dir: join(work, 'origin'), name: 'origin' });
  log(`origin (distribution) at ${origin.url}; generating and uploading ${cfg.bigMiB} MiB and ${cfg.concMiB} MiB blobs`);
  const big = await seedBlob(work, origin, 'big', cfg.bigMiB * MiB);
  const conc = await seedBlob(work, origin, 'conc', cfg.concMiB * MiB);
  const warmup = await seedBlob(work, origin, 'warmup', MiB);
  const needNginx = cfg.scenarios.has(1);
  const nginx = needNginx ? await startNginx(fleet, join(work, 'nginx'), big.path) : undefined;
  let image: OciImageLayout | undefined;
  if (cfg.scenarios.has(4)) {
    const total = cfg.imageLayers.reduce((a, b) => a + b, 0);
    log(`generating a ${cfg.imageLayers.length}-layer image (${(total / MiB).toFixed(0)} MiB of layer content) and pushing it with skopeo`);
    image = await seedImage(work, origin, cfg.imageLayers);
  }
  return { cfg, work, origin, nginx, big, conc, warmup, image, problems: [], notes: [], log, keep };
}
