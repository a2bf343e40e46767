/**
 * The cache tree: how the registered caches chain (origin → server → caches → the caches below them), with
 * each node's figures over the last hour. Nothing here asks a cache anything: the health loop
 * (health.ts) reads each cache's `/metrics` and hands a {@link CacheSample} to a {@link CacheHistory};
 * {@link buildCacheTree} places each cache under the first of its upstreams (the `upstream` label of
 * `cascade_upstream_requests_total`, in the cache's configured order) that is a registered cache, this
 * server or the origin. Counters become "over the last hour" as the increase between the samples kept
 * for the hour, a drop being a restart of the cache (the counter starts again from 0).
 * `GET /api/v0/content_caches_tree` answers {@link buildCacheTree}'s result.
 */
import { networkInterfaces, hostname } from 'node:os';
import type { MetricSample } from './health.js';

/** One hour: the window of the figures. */
export const TREE_WINDOW_MS = 3_600_000;
/**
 * At most this many samples per cache: samples closer together than the window divided by this (10 s for
 * the hour) replace the newest instead of adding one, so memory does not grow with a short health interval.
 */
const MAX_SAMPLES = 360;

/** One upstream host as a cache reports it. */
export interface UpstreamSample {
  /** As the cache names it (`cascade_upstream_requests_total{upstream}`), in {@link urlKey} form (no credentials). */
  readonly url: string;
  readonly requests: number;
  readonly errors: number;
  /** `cascade_upstream_up`: false while the cache marks the host down; null when not reported. */
  readonly up: boolean | null;
}

/** The counters of one cache at one scrape. */
export interface CacheSample {
  /** When it was read (ms since the epoch). */
  readonly at: number;
  readonly hits: number;
  readonly misses: number;
  /** `cascade_cache_bytes_served_total` (null for a cache that does not publish it). */
  readonly bytesServed: number | null;
  /** `cascade_cache_bytes_total{source="upstream"}`. */
  readonly bytesFilled: number;
  /** In the cache's configured order. */
  readonly upstreams: readonly UpstreamSample[];
  /**
   * The node of a region that answered (`cascade_region_node_info{node}`): behind a region's balancer each
   * scrape reaches any node, whose counters are its own. Absent for a cache of one node.
   */
  readonly node?: string;
  /** When the cache's process started (ms; `cascade_process_start_time_seconds`): its counters were 0 then. */
  readonly startedAt?: number;
}

/**
 * A cache's counters from its parsed `/metrics`; undefined for something that publishes no Cascade cache
 * metrics (another registry, a mirror-less plain registry).
 */
export function sampleOf(metrics: ReadonlyMap<string, readonly MetricSample[]>, at: number): CacheSample | undefined {
  const requests = metrics.get('cascade_cache_blob_requests_total');
  const upstreamRequests = metrics.get('cascade_upstream_requests_total');
  if (!requests && !upstreamRequests) return undefined;
  const sum = (name: string, where: (labels: Readonly<Record<string, string>>) => boolean = () => true): number | null => {
    const samples = metrics.get(name)?.filter((s) => where(s.labels) && Number.isFinite(s.value) && s.value >= 0);
    return samples?.length ? samples.reduce((a, s) => a + s.value, 0) : null;
  };
  const upstreams: UpstreamSample[] = [];
  const seen = new Set<string>();
  for (const s of upstreamRequests ?? []) {
    const raw = s.labels['upstream'];
    const url = raw === undefined ? undefined : urlKey(raw);
    if (url === undefined || seen.has(url) || upstreams.length >= 64) continue;
    seen.add(url);
    const errors = sum('cascade_upstream_errors_total', (l) => l['upstream'] === raw) ?? 0;
    const up = metrics.get('cascade_upstream_up')?.find((u) => u.labels['upstream'] === raw);
    upstreams.push({ url, requests: Number.isFinite(s.value) && s.value >= 0 ? s.value : 0, errors, up: up === undefined ? null : up.value > 0 });
  }
  const node = metrics.get('cascade_region_node_info')?.[0]?.labels['node'];
  const started = metrics.get('cascade_process_start_time_seconds')?.[0]?.value;
  return {
    at,
    ...(node ? { node: node.slice(0, 200) } : {}),
    ...(started !== undefined && Number.isFinite(started) && started > 0 && started * 1000 <= at ? { startedAt: Math.round(started * 1000) } : {}),
    hits: sum('cascade_cache_blob_requests_total', (l) => l['result'] === 'hit') ?? 0,
    misses: sum('cascade_cache_blob_requests_total', (l) => l['result'] === 'miss') ?? 0,
    bytesServed: sum('cascade_cache_bytes_served_total'),
    bytesFilled: sum('cascade_cache_bytes_total', (l) => l['source'] === 'upstream') ?? 0,
    upstreams,
  };
}

/**
 * How much a counter grew over consecutive readings: the sum of the rises, where a drop is a restart (the
 * counter started again from 0, so the new reading is all growth).
 */
export function counterIncrease(values: readonly number[]): number {
  let total = 0;
  for (let i = 1; i < values.length; i++) {
    const prev = values[i - 1] as number;
    const cur = values[i] as number;
    total += cur >= prev ? cur - prev : cur;
  }
  return total;
}

/** A cache's figures over the window. */
export interface WindowFigures {
  readonly hits: number;
  readonly misses: number;
  /** hits / (hits + misses); null with no blob read in the window. */
  readonly hitRatio: number | null;
  /** Null when the cache does not publish the bytes it served. */
  readonly bytesServed: number | null;
  readonly bytesFilled: number;
  /** Failed requests to its upstreams, all together. */
  readonly upstreamErrors: number;
  /** Per upstream URL. */
  readonly upstreamErrorsBy: ReadonlyMap<string, number>;
  /** The oldest sample the figures start from (ms), null with fewer than two samples (no figure yet). */
  readonly since: number | null;
}

/** The figures of `samples` (oldest first) taken within `windowMs` before `now`. */
export function windowFigures(samples: readonly CacheSample[], now: number, windowMs = TREE_WINDOW_MS): WindowFigures {
  const inWindow = samples.filter((s) => s.at >= now - windowMs && s.at <= now);
  // A cache (a region's node) that started within the window counted from 0 then: what it did before its
  // first sample counts too.
  const first = inWindow[0];
  if (first?.startedAt !== undefined && first.startedAt >= now - windowMs && first.startedAt < first.at) {
    inWindow.unshift({ at: first.startedAt, hits: 0, misses: 0, bytesServed: first.bytesServed === null ? null : 0, bytesFilled: 0, upstreams: first.upstreams.map((u) => ({ ...u, requests: 0, errors: 0 })) });
  }
  const increase = (read: (s: CacheSample) => number) => counterIncrease(inWindow.map(read));
  const hits = increase((s) => s.hits);
  const misses = increase((s) => s.misses);
  const urls = [...new Set(inWindow.flatMap((s) => s.upstreams.map((u) => u.url)))];
  // A host missing from a sample (the cache restarted with other upstreams) reads 0: a restart for it.
  const upstreamErrorsBy = new Map(urls.map((url) => [url, increase((s) => s.upstreams.find((u) => u.url === url)?.errors ?? 0)]));
  return {
    hits,
    misses,
    hitRatio: hits + misses > 0 ? hits / (hits + misses) : null,
    bytesServed: inWindow.length > 0 && inWindow.every((s) => s.bytesServed !== null) ? increase((s) => s.bytesServed ?? 0) : null,
    bytesFilled: increase((s) => s.bytesFilled),
    upstreamErrors: [...upstreamErrorsBy.values()].reduce((a, b) => a + b, 0),
    upstreamErrorsBy,
    since: inWindow.length >= 2 ? (inWindow[0] as CacheSample).at : null,
  };
}

/** True when a counter of `b` is below its value in `a`: the cache restarted between them. */
function restartedBetween(a: CacheSample, b: CacheSample): boolean {
  if (b.hits < a.hits || b.misses < a.misses || b.bytesFilled < a.bytesFilled || (b.bytesServed ?? 0) < (a.bytesServed ?? 0)) return true;
  return b.upstreams.some((u) => u.errors < (a.upstreams.find((x) => x.url === u.url)?.errors ?? 0));
}

/**
 * The samples of each cache, kept for the window (bounded in count too). A region's samples are kept per node
 * (each node counts on its own), and its figures are the sum of its nodes'.
 */
export class CacheHistory {
  /** Cache id -> node ('' for a cache of one node) -> samples, oldest first. */
  private readonly samples = new Map<string, Map<string, CacheSample[]>>();

  constructor(
    private readonly windowMs = TREE_WINDOW_MS,
    private readonly maxSamples = MAX_SAMPLES,
  ) {}

  add(id: string, sample: CacheSample): void {
    const nodes = this.samples.get(id) ?? new Map<string, CacheSample[]>();
    this.samples.set(id, nodes);
    const cutoff = sample.at - this.windowMs;
    // A node not heard from for the window (a node replaced, the region scaled down) is forgotten.
    for (const [node, list] of nodes) if ((list.at(-1) as CacheSample).at < cutoff) nodes.delete(node);
    const key = sample.node ?? '';
    const list = nodes.get(key) ?? [];
    nodes.set(key, list);
    const last = list.at(-1);
    const before = list.at(-2);
    // While the newest is too close to the one before it, it is only the latest reading: replaced, unless
    // it shows a restart (a reset must stay between two kept samples to be counted).
    if (last && before && last.at - before.at < this.windowMs / this.maxSamples && !restartedBetween(before, last)) list[list.length - 1] = sample;
    else list.push(sample);
    let drop = 0;
    while (drop < list.length - 1 && (list[drop] as CacheSample).at < cutoff) drop++;
    drop = Math.max(drop, list.length - this.maxSamples);
    if (drop > 0) list.splice(0, drop);
  }

  /** Forgets the caches not in `ids` (deleted). */
  keep(ids: ReadonlySet<string>): void {
    for (const id of this.samples.keys()) if (!ids.has(id)) this.samples.delete(id);
  }

  /** The newest sample of the cache, whichever node it came from. */
  latest(id: string): CacheSample | undefined {
    let newest: CacheSample | undefined;
    for (const list of this.samples.get(id)?.values() ?? []) {
      const last = list.at(-1);
      if (last && (!newest || last.at > newest.at)) newest = last;
    }
    return newest;
  }

  figures(id: string, now: number): WindowFigures | undefined {
    const nodes = this.samples.get(id);
    if (!nodes) return undefined;
    return sumFigures([...nodes.values()].map((list) => windowFigures(list, now, this.windowMs)));
  }
}

/** The figures of a region: the sum of its nodes' (one node's figures as they are). */
export function sumFigures(parts: readonly WindowFigures[]): WindowFigures {
  if (parts.length === 1) return parts[0] as WindowFigures;
  const add = (read: (f: WindowFigures) => number) => parts.reduce((a, f) => a + read(f), 0);
  const hits = add((f) => f.hits);
  const misses = add((f) => f.misses);
  const upstreamErrorsBy = new Map<string, number>();
  for (const f of parts) for (const [url, n] of f.upstreamErrorsBy) upstreamErrorsBy.set(url, (upstreamErrorsBy.get(url) ?? 0) + n);
  const since = parts.map((f) => f.since).filter((t): t is number => t !== null);
  return {
    hits,
    misses,
    hitRatio: hits + misses > 0 ? hits / (hits + misses) : null,
    bytesServed: parts.every((f) => f.bytesServed !== null) ? add((f) => f.bytesServed ?? 0) : null,
    bytesFilled: add((f) => f.bytesFilled),
    upstreamErrors: add((f) => f.upstreamErrors),
    upstreamErrorsBy,
    since: since.length > 0 ? Math.min(...since) : null,
  };
}

// ---- URLs ----------------------------------------------------------------------------------------------

/**
 * The comparable form of an http(s) URL: lower-case scheme and host, no default port, no credentials, no
 * trailing slash, no query or fragment. Undefined when it is not an http(s) URL.
 */
export function urlKey(raw: string): string | undefined {
  let u: URL;
  try {
    u = new URL(raw.trim());
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  // URL lower-cases the scheme and host and drops the default port already.
  const path = u.pathname.replace(/\/+$/, '');
  return `${u.protocol}//${u.host}${path}`;
}

/**
 * The URLs a cache may use to reach this server: `publicurl`, the URL it listens on, its loopback names
 * when it listens on loopback, and, when it listens on every interface (`addr` `:8443`, `0.0.0.0:8443`),
 * each of the machine's addresses and its host name at that port.
 */
export function serverUrls(listening: string, publicUrl: string | undefined, addr: string): string[] {
  const out = new Set<string>();
  const add = (raw: string) => {
    const key = urlKey(raw);
    if (key) out.add(key);
  };
  if (publicUrl) add(publicUrl);
  add(listening);
  let u: URL;
  try {
    u = new URL(listening);
  } catch {
    return [...out];
  }
  const everywhere = /^(?:|0\.0\.0\.0|\[::\])$/.test(addr.trim().replace(/:\d+$/, ''));
  const hosts: string[] = [];
  if (everywhere || u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]') hosts.push('localhost', '127.0.0.1', '[::1]');
  if (everywhere) {
    hosts.push(hostname());
    for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) hosts.push(i.family === 'IPv6' ? `[${i.address.split('%')[0]}]` : i.address);
  }
  for (const host of hosts) add(`${u.protocol}//${host}${u.port ? `:${u.port}` : ''}`);
  return [...out];
}

// ---- the tree ------------------------------------------------------------------------------------------

/** A cache's health as the server's last check saw it. */
export interface TreeHealth {
  readonly status: 'up' | 'down' | 'unknown';
  readonly lastError: string | null;
  readonly lastErrorAt: Date | null;
}

/** What {@link buildCacheTree} knows of one registered cache. */
export interface TreeCacheInput {
  readonly id: string;
  readonly name: string;
  readonly host: string;
  readonly health: TreeHealth;
  readonly diskBytes: number | null;
  /** Null when the cache never published its counters (down since the start, or not a Cascade cache). */
  readonly latest: CacheSample | null;
  readonly figures: WindowFigures | null;
}

/** What {@link buildCacheTree} takes. */
export interface CacheTreeOptions {
  /** The server's `origin.url`. */
  readonly originUrl: string;
  /** The URLs caches may use for this server ({@link serverUrls}). */
  readonly serverUrls: readonly string[];
  readonly caches: readonly TreeCacheInput[];
  /** Warm jobs running for a cache now (the warmer, when the server runs one). */
  readonly warmJobsInFlight?: (cacheId: string) => number;
  /** Upstream URLs that name no registered cache (the origin's, unknown ones) are shown to admins only. */
  readonly admin: boolean;
}

/** What an upstream of a cache is. */
export type UpstreamTarget = { kind: 'cache'; id: string; name: string } | { kind: 'server' } | { kind: 'origin' } | { kind: 'unknown' };

/** One upstream of a cache in the answer. */
export interface TreeUpstreamJson {
  /** Null for a user who is not an admin, unless it is a registered cache's host. */
  readonly url: string | null;
  readonly target: UpstreamTarget;
  /** The upstream the node hangs under in the tree. */
  readonly parent: boolean;
  readonly up: boolean | null;
  readonly errors: number;
}

interface NodeBase {
  readonly children: TreeNodeJson[];
}

/** A node of the tree. */
export type TreeNodeJson =
  | (NodeBase & { kind: 'origin'; url: string | null })
  | (NodeBase & { kind: 'server' })
  | (NodeBase & { kind: 'unknown-upstream'; url: string | null })
  | (NodeBase & { kind: 'cycle'; caches: string[] })
  | (NodeBase & {
      kind: 'cache';
      id: string;
      name: string;
      host: string;
      health: 'up' | 'down' | 'unknown';
      lastError: string | null;
      lastErrorAt: string | null;
      /** True when the cache reported no upstream yet: shown under the server, its place unknown. */
      upstreamUnknown: boolean;
      /** True for a cache in an upstream cycle (a → b → a), shown under a cycle node. */
      inCycle: boolean;
      hitRatio: number | null;
      bytesServed: number | null;
      bytesFilled: number | null;
      upstreamErrors: number | null;
      diskBytes: number | null;
      warmJobsInFlight: number | null;
      /** When the hour's figures start (the oldest sample kept), null before two samples. */
      since: string | null;
      upstreams: TreeUpstreamJson[];
    });

/** The answer of `GET /api/v0/content_caches_tree`. */
export interface CacheTreeJson {
  readonly windowSeconds: number;
  /** The origin's tree first, then nodes for unknown upstreams and cycles. */
  readonly roots: TreeNodeJson[];
}

/**
 * Places every cache in the tree. A cache hangs under the first of its upstreams that is known (a
 * registered cache, this server, the origin); with none known, under an unknown-upstream node; having
 * reported nothing, under the server, flagged. Caches whose chain loops (a → b → a) hang under a cycle
 * node, so the tree stays a tree.
 */
export function buildCacheTree(options: CacheTreeOptions, windowMs = TREE_WINDOW_MS): CacheTreeJson {
  const servers = new Set(options.serverUrls.map((u) => urlKey(u)).filter((u): u is string => u !== undefined));
  const origin = urlKey(options.originUrl);
  const byHost = new Map<string, TreeCacheInput>();
  for (const c of options.caches) {
    const key = urlKey(c.host);
    if (key !== undefined && !byHost.has(key)) byHost.set(key, c);
  }
  const targetOf = (url: string): UpstreamTarget => {
    const key = urlKey(url);
    if (key === undefined) return { kind: 'unknown' };
    const cache = byHost.get(key);
    if (cache) return { kind: 'cache', id: cache.id, name: cache.name };
    if (servers.has(key)) return { kind: 'server' };
    if (key === origin) return { kind: 'origin' };
    return { kind: 'unknown' };
  };

  // Where each cache hangs: a cache id, 'server', 'origin', or an unknown URL.
  type Parent = { kind: 'cache'; id: string } | { kind: 'server' } | { kind: 'origin' } | { kind: 'unknown'; url: string };
  const parents = new Map<string, Parent>();
  const upstreamsOf = new Map<string, TreeUpstreamJson[]>();
  for (const c of options.caches) {
    const reported = c.latest?.upstreams ?? [];
    const targets = reported.map((u) => ({ u, target: targetOf(u.url) }));
    const first = targets.findIndex((t) => t.target.kind !== 'unknown');
    const parentIndex = first >= 0 ? first : reported.length > 0 ? 0 : -1;
    upstreamsOf.set(
      c.id,
      targets.map(({ u, target }, i) => ({
        url: target.kind === 'cache' || options.admin ? u.url : null,
        target,
        parent: i === parentIndex,
        up: u.up,
        errors: c.figures?.upstreamErrorsBy.get(u.url) ?? 0,
      })),
    );
    if (parentIndex < 0) parents.set(c.id, { kind: 'server' });
    else {
      const t = targets[parentIndex] as { u: UpstreamSample; target: UpstreamTarget };
      parents.set(c.id, t.target.kind === 'cache' ? { kind: 'cache', id: t.target.id } : t.target.kind === 'unknown' ? { kind: 'unknown', url: t.u.url } : { kind: t.target.kind });
    }
  }

  // Cycles: follow each cache's parents; a cache met twice on one walk closes a loop.
  const cycleOf = new Map<string, string>();
  const cycles: string[][] = [];
  const settled = new Set<string>();
  for (const c of options.caches) {
    const path: string[] = [];
    const onPath = new Map<string, number>();
    let id: string | undefined = c.id;
    while (id !== undefined && !settled.has(id) && !onPath.has(id)) {
      onPath.set(id, path.length);
      path.push(id);
      const p = parents.get(id);
      id = p?.kind === 'cache' ? p.id : undefined;
    }
    if (id !== undefined && onPath.has(id)) {
      const loop = path.slice(onPath.get(id));
      const key = String(cycles.length);
      cycles.push(loop);
      for (const member of loop) cycleOf.set(member, key);
    }
    for (const p of path) settled.add(p);
  }

  const byId = new Map(options.caches.map((c) => [c.id, c]));
  const childrenOf = new Map<string, string[]>();
  const push = (key: string, id: string) => childrenOf.set(key, [...(childrenOf.get(key) ?? []), id]);
  for (const c of options.caches) {
    const cycle = cycleOf.get(c.id);
    if (cycle !== undefined) {
      push(`cycle:${cycle}`, c.id);
      continue;
    }
    const p = parents.get(c.id) as Parent;
    push(p.kind === 'cache' ? `cache:${p.id}` : p.kind === 'unknown' ? `unknown:${p.url}` : p.kind, c.id);
  }

  const cacheNode = (id: string, depth: number): TreeNodeJson => {
    const c = byId.get(id) as TreeCacheInput;
    const f = c.figures;
    const hasFigures = f !== null && f.since !== null;
    return {
      kind: 'cache',
      id: c.id,
      name: c.name,
      host: c.host,
      health: c.health.status,
      lastError: c.health.lastError,
      lastErrorAt: c.health.lastErrorAt?.toISOString() ?? null,
      upstreamUnknown: c.latest === null,
      inCycle: cycleOf.has(id),
      hitRatio: hasFigures ? f.hitRatio : null,
      bytesServed: hasFigures ? f.bytesServed : null,
      bytesFilled: hasFigures ? f.bytesFilled : null,
      upstreamErrors: hasFigures ? f.upstreamErrors : null,
      diskBytes: c.diskBytes,
      warmJobsInFlight: options.warmJobsInFlight ? options.warmJobsInFlight(c.id) : null,
      since: hasFigures && f.since !== null ? new Date(f.since).toISOString() : null,
      upstreams: upstreamsOf.get(id) ?? [],
      // A cycle member's children exclude the other members (they hang under the cycle node); the depth
      // bound is a second guard.
      children: depth > options.caches.length ? [] : children(`cache:${id}`, depth + 1),
    };
  };
  const children = (key: string, depth: number): TreeNodeJson[] =>
    (childrenOf.get(key) ?? [])
      .filter((id) => key.startsWith('cycle:') || !cycleOf.has(id))
      .sort((a, b) => (byId.get(a) as TreeCacheInput).name.localeCompare((byId.get(b) as TreeCacheInput).name))
      .map((id) => cacheNode(id, depth));

  const roots: TreeNodeJson[] = [
    {
      kind: 'origin',
      url: options.admin ? (origin ?? null) : null,
      children: [{ kind: 'server', children: children('server', 0) }, ...children('origin', 0)],
    },
  ];
  const unknownUrls = [...childrenOf.keys()].filter((k) => k.startsWith('unknown:')).map((k) => k.slice('unknown:'.length)).sort();
  for (const url of unknownUrls) roots.push({ kind: 'unknown-upstream', url: options.admin ? url : null, children: children(`unknown:${url}`, 0) });
  cycles.forEach((loop, i) => {
    roots.push({ kind: 'cycle', caches: loop.map((id) => (byId.get(id) as TreeCacheInput).name), children: children(`cycle:${i}`, 0) });
  });
  return { windowSeconds: Math.round(windowMs / 1000), roots };
}
