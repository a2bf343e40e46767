/**
 * The cache tree: counters over the hour (restarts, the window, the bound on samples), a cache's sample from
 * its metrics, the placement of caches (chains, several upstreams, unknown upstreams, caches that reported
 * nothing, cycles), what a user who is not an admin sees, and the health checker's samples from a real
 * HTTP cache stand-in.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createHttpServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { HealthChecker, parsePrometheusText } from '../src/health.js';
import { SqliteStateRepository } from '../src/state/sqlite.js';
import {
  buildCacheTree,
  CacheHistory,
  counterIncrease,
  sampleOf,
  serverUrls,
  urlKey,
  windowFigures,
  type CacheSample,
  type TreeCacheInput,
  type TreeNodeJson,
} from '../src/tree.js';

const HOUR = 3_600_000;

const sample = (at: number, c: Partial<Omit<CacheSample, 'at'>> = {}): CacheSample => ({
  at,
  hits: 0,
  misses: 0,
  bytesServed: 0,
  bytesFilled: 0,
  upstreams: [],
  ...c,
});

describe('counters over the hour', () => {
  it('counterIncrease: sums the rises; a drop is a restart, counted from 0', () => {
    assert.equal(counterIncrease([]), 0);
    assert.equal(counterIncrease([5]), 0);
    assert.equal(counterIncrease([5, 7, 7, 10]), 5);
    // 10 -> 3: restarted and counted 3 since; then 3 -> 4.
    assert.equal(counterIncrease([5, 10, 3, 4]), 5 + 3 + 1);
    assert.equal(counterIncrease([5, 0, 0, 2]), 2);
  });

  it('windowFigures: deltas within the hour only, hit ratio of the deltas, restarts, per upstream errors', () => {
    const now = 10 * HOUR;
    const up = (errors: number) => [{ url: 'http://a:5000', requests: 0, errors, up: true }];
    const samples = [
      // Older than the hour: ignored (else hits would count 1000).
      sample(now - HOUR - 1, { hits: 0, misses: 0, bytesFilled: 0, bytesServed: 0, upstreams: up(0) }),
      sample(now - HOUR + 1000, { hits: 1000, misses: 10, bytesFilled: 500, bytesServed: 9000, upstreams: up(2) }),
      sample(now - 1000, { hits: 1003, misses: 11, bytesFilled: 600, bytesServed: 9400, upstreams: up(3) }),
      // The cache restarted: every counter dropped.
      sample(now, { hits: 4, misses: 0, bytesFilled: 50, bytesServed: 100, upstreams: up(1) }),
    ];
    const f = windowFigures(samples, now);
    assert.equal(f.hits, 3 + 4);
    assert.equal(f.misses, 1);
    assert.equal(f.hitRatio, 7 / 8);
    assert.equal(f.bytesFilled, 100 + 50);
    assert.equal(f.bytesServed, 400 + 100);
    assert.equal(f.upstreamErrors, 1 + 1);
    assert.equal(f.upstreamErrorsBy.get('http://a:5000'), 2);
    assert.equal(f.since, now - HOUR + 1000);
  });

  it('windowFigures: no read is a null hit ratio; one sample is no figure yet; bytes served null when not published', () => {
    const now = HOUR;
    const quiet = windowFigures([sample(now - 2000, { hits: 4 }), sample(now, { hits: 4 })], now);
    assert.equal(quiet.hitRatio, null);
    assert.equal(quiet.hits, 0);
    assert.ok(quiet.since !== null);
    assert.equal(windowFigures([sample(now, { hits: 4 })], now).since, null);
    assert.equal(windowFigures([sample(now - 1, { bytesServed: null }), sample(now, { bytesServed: null })], now).bytesServed, null);
  });

  it('CacheHistory keeps the hour, at most maxSamples, and forgets deleted caches', () => {
    const history = new CacheHistory(HOUR, 5);
    for (let i = 0; i <= 10; i++) history.add('a', sample(i * 20 * 60_000, { hits: i }));
    // At 200 min, the hour goes back to 140 min: samples at 140, 160, 180, 200.
    const f = history.figures('a', 200 * 60_000);
    assert.equal(f?.hits, 3);
    assert.equal(f?.since, 140 * 60_000);
    history.keep(new Set(['b']));
    assert.equal(history.latest('a'), undefined);
  });

  it('CacheHistory: samples closer than window/maxSamples replace the newest, except across a restart', () => {
    const history = new CacheHistory(HOUR, 360);
    // One a second for ten minutes: kept at least 10 s apart, the newest always the last read.
    for (let i = 0; i <= 600; i++) history.add('a', sample(i * 1000, { hits: i }));
    assert.equal(history.latest('a')?.hits, 600);
    assert.equal(history.figures('a', 600_000)?.hits, 600, 'nothing lost by the thinning');
    const kept = (history as unknown as { samples: Map<string, Map<string, CacheSample[]>> }).samples.get('a')?.get('') ?? [];
    assert.ok(kept.length <= 62, `${kept.length} samples kept`);
    for (let i = 1; i < kept.length - 1; i++) assert.ok((kept[i] as CacheSample).at - (kept[i - 1] as CacheSample).at >= 10_000);
    // A restart between two close samples is kept: 100 -> 5 (restart) -> 150 counts 5 + 145.
    const b = new CacheHistory(HOUR, 360);
    b.add('b', sample(0, { hits: 0 }));
    b.add('b', sample(20_000, { hits: 100 }));
    b.add('b', sample(21_000, { hits: 5 }));
    b.add('b', sample(22_000, { hits: 150 }));
    assert.equal(b.figures('b', 22_000)?.hits, 100 + 5 + 145);
  });
});

describe('a region behind a balancer', () => {
  it('keeps each node\'s counters apart (a scrape reaches any node) and sums the nodes\' figures', () => {
    const history = new CacheHistory(HOUR, 360);
    // Three nodes answer the scrapes in turn; each counts on its own (n2 twice as busy, n3 restarts).
    const counts: Record<string, number> = { n1: 0, n2: 0, n3: 0 };
    const seen: Record<string, number[]> = { n1: [], n2: [], n3: [] };
    const all: number[] = [];
    for (let i = 0; i < 90; i++) {
      const node = ['n1', 'n2', 'n3'][i % 3] as string;
      counts.n1 = (counts.n1 as number) + 1;
      counts.n2 = (counts.n2 as number) + 2;
      counts.n3 = i === 45 ? 1 : (counts.n3 as number) + 1;
      const hits = counts[node] as number;
      seen[node]!.push(hits);
      all.push(hits);
      history.add('region', sample(i * 15_000, { node, hits, misses: 1, bytesServed: hits * 1000 }));
    }
    const f = history.figures('region', 89 * 15_000);
    // n1 and n2 grew by 3 and 6 per round over 29 rounds; n3 by 3 per round, with a restart (counted from 0).
    const expected = counterIncrease(seen.n1!) + counterIncrease(seen.n2!) + counterIncrease(seen.n3!);
    assert.equal(counterIncrease(seen.n1!), 29 * 3);
    assert.equal(counterIncrease(seen.n2!), 29 * 6);
    assert.equal(f?.hits, expected);
    assert.notEqual(counterIncrease(all), expected, 'one series for all nodes would count wrong');
    assert.equal(f?.misses, 0, 'a constant counter grows by nothing, on every node');
    assert.equal(f?.bytesServed, expected * 1000);
    assert.equal(history.latest('region')?.node, 'n3', 'the newest sample, whichever node');
    // A node gone for the window is forgotten; the others stay.
    history.add('region', sample(89 * 15_000 + HOUR + 1, { node: 'n1', hits: 500 }));
    const nodes = (history as unknown as { samples: Map<string, Map<string, CacheSample[]>> }).samples.get('region');
    assert.deepEqual([...(nodes?.keys() ?? [])], ['n1']);
  });

  it('a node (or cache) that started within the hour counts from 0 at its start, before its first sample', () => {
    const history = new CacheHistory(HOUR, 360);
    history.add('r', sample(600_000, { node: 'new', hits: 10, bytesServed: 5000, startedAt: 590_000 }));
    history.add('r', sample(615_000, { node: 'old', hits: 10, bytesServed: 5000, startedAt: 600_000 - 2 * HOUR }));
    const f = history.figures('r', 620_000);
    assert.equal(f?.hits, 10, 'the new node\'s 10 count; the old node\'s first sample is only a baseline');
    assert.equal(f?.bytesServed, 5000);
    assert.equal(f?.since, 590_000);
  });

  it('sampleOf reads the node of a region from cascade_region_node_info', () => {
    const metrics = parsePrometheusText(['cascade_cache_blob_requests_total{result="hit"} 3', 'cascade_region_node_info{region="cascade:region:eu",node="cache-1-4242-a1b2c3"} 1', 'cascade_process_start_time_seconds 1700000000'].join('\n'));
    assert.equal(sampleOf(metrics, 1_700_000_005_000)?.node, 'cache-1-4242-a1b2c3');
    assert.equal(sampleOf(metrics, 1_700_000_005_000)?.startedAt, 1_700_000_000_000);
    assert.equal(sampleOf(metrics, 1_600_000_000_000)?.startedAt, undefined, 'a start after the sample is not believed');
    assert.equal(sampleOf(parsePrometheusText('cascade_cache_blob_requests_total{result="hit"} 3'), 1)?.node, undefined);
  });
});

describe('a cache\'s sample from its metrics', () => {
  it('reads the counters and every upstream in the published order, without credentials', () => {
    const text = [
      'cascade_cache_blob_requests_total{result="hit",role="registry"} 7',
      'cascade_cache_blob_requests_total{result="miss",role="registry"} 3',
      'cascade_cache_bytes_total{source="disk",role="registry"} 700',
      'cascade_cache_bytes_total{source="upstream",role="registry"} 300',
      'cascade_cache_bytes_served_total{role="registry"} 1000',
      'cascade_upstream_requests_total{upstream="http://Region-A:5000/",role="registry"} 4',
      'cascade_upstream_requests_total{upstream="https://user:pw@server.example:443",role="registry"} 0',
      'cascade_upstream_errors_total{upstream="http://Region-A:5000/",role="registry"} 1',
      'cascade_upstream_errors_total{upstream="https://user:pw@server.example:443",role="registry"} 0',
      'cascade_upstream_up{upstream="http://Region-A:5000/",role="registry"} 0',
      'cascade_upstream_up{upstream="https://user:pw@server.example:443",role="registry"} 1',
    ].join('\n');
    assert.deepEqual(sampleOf(parsePrometheusText(text), 42), {
      at: 42,
      hits: 7,
      misses: 3,
      bytesServed: 1000,
      bytesFilled: 300,
      upstreams: [
        { url: 'http://region-a:5000', requests: 4, errors: 1, up: false },
        { url: 'https://server.example', requests: 0, errors: 0, up: true },
      ],
    });
    assert.equal(sampleOf(parsePrometheusText('registry_storage_action_seconds_count 3\n'), 1), undefined, 'not a Cascade cache');
    assert.equal(sampleOf(parsePrometheusText('cascade_cache_blob_requests_total{result="hit"} 1\n'), 1)?.bytesServed, null);
  });

  it('URLs compare without case, default ports, credentials or trailing slashes', () => {
    assert.equal(urlKey('HTTP://Cache.Example:80/'), 'http://cache.example');
    assert.equal(urlKey('https://u:p@cache.example:443/base/'), 'https://cache.example/base');
    assert.equal(urlKey('https://cache.example:5000?x=1#y'), 'https://cache.example:5000');
    assert.equal(urlKey('ftp://cache.example'), undefined);
    assert.equal(urlKey('not a url'), undefined);
  });

  it('serverUrls: publicurl, the listening URL, loopback names, and the machine\'s names on every interface', () => {
    const loop = serverUrls('http://127.0.0.1:5000', undefined, '127.0.0.1:5000');
    assert.ok(loop.includes('http://127.0.0.1:5000') && loop.includes('http://localhost:5000'));
    assert.ok(!loop.includes(`http://${hostname().toLowerCase()}:5000`), 'not the host name when listening on loopback only');
    const all = serverUrls('https://127.0.0.1:8443', 'https://Registry.Example/', ':8443');
    assert.ok(all.includes('https://registry.example'));
    assert.ok(all.includes(`https://${hostname().toLowerCase()}:8443`));
    const one = serverUrls('http://10.1.2.3:8443', undefined, '10.1.2.3:8443');
    assert.deepEqual(one, ['http://10.1.2.3:8443']);
  });
});

const ORIGIN = 'https://origin.example';
const SERVER = 'https://server.example:8443';

/** A registered cache that reported `upstreams` (null: nothing yet). */
function cache(name: string, upstreams: string[] | null, more: Partial<TreeCacheInput> = {}): TreeCacheInput {
  const latest = upstreams === null ? null : sample(HOUR, { upstreams: upstreams.map((url) => ({ url: urlKey(url) ?? url, requests: 1, errors: 0, up: true })) });
  return {
    id: `id-${name}`,
    name,
    host: `https://${name}.example:5000`,
    health: { status: upstreams === null ? 'unknown' : 'up', lastError: null, lastErrorAt: null },
    diskBytes: null,
    latest,
    figures: latest ? windowFigures([sample(0, latest), latest], HOUR) : null,
    ...more,
  };
}

/** The tree as nested names: `origin > server > a > b`. */
function shape(nodes: readonly TreeNodeJson[]): unknown[] {
  return nodes.map((n) => {
    const label = n.kind === 'cache' ? n.name : n.kind === 'cycle' ? `cycle(${n.caches.join(',')})` : n.kind === 'origin' || n.kind === 'unknown-upstream' ? `${n.kind}:${n.url}` : n.kind;
    return n.children.length ? { [label]: shape(n.children) } : label;
  });
}

function find(nodes: readonly TreeNodeJson[], name: string): Extract<TreeNodeJson, { kind: 'cache' }> | undefined {
  for (const n of nodes) {
    if (n.kind === 'cache' && n.name === name) return n;
    const inner = find(n.children, name);
    if (inner) return inner;
  }
  return undefined;
}

describe('the cache tree', () => {
  it('chains: origin > server > region-a > region-b; the first known upstream is the parent, the others listed', () => {
    const tree = buildCacheTree({
      originUrl: ORIGIN,
      serverUrls: [SERVER],
      admin: true,
      caches: [
        // region-b: upstreamhosts [region-a], originhost the server (written differently).
        cache('region-b', ['HTTPS://Region-A.example:5000/', 'https://SERVER.example:8443/']),
        cache('region-a', ['https://server.example:8443']),
        // A cache that fills from the origin itself.
        cache('direct', ['https://origin.example:443']),
      ],
    });
    assert.deepEqual(shape(tree.roots), [{ [`origin:${ORIGIN}`]: [{ server: [{ 'region-a': ['region-b'] }] }, 'direct'] }]);
    const b = find(tree.roots, 'region-b');
    assert.deepEqual(
      b?.upstreams.map((u) => [u.url, u.target.kind, u.parent]),
      [
        ['https://region-a.example:5000', 'cache', true],
        ['https://server.example:8443', 'server', false],
      ],
    );
    assert.equal(b?.warmJobsInFlight, null, 'no warmer: no figure');
    assert.equal(b?.inCycle, false);
    assert.equal(b?.upstreamUnknown, false);
  });

  it('an unknown upstream gets its own node; a cache that reported nothing hangs under the server, flagged', () => {
    const tree = buildCacheTree({
      originUrl: ORIGIN,
      serverUrls: [SERVER],
      admin: true,
      caches: [cache('lost', ['https://elsewhere.example:5000']), cache('below-lost', ['https://lost.example:5000']), cache('new', null)],
    });
    assert.deepEqual(shape(tree.roots), [{ [`origin:${ORIGIN}`]: [{ server: ['new'] }] }, { 'unknown-upstream:https://elsewhere.example:5000': [{ lost: ['below-lost'] }] }]);
    const fresh = find(tree.roots, 'new');
    assert.equal(fresh?.upstreamUnknown, true);
    assert.equal(fresh?.health, 'unknown');
    assert.equal(fresh?.hitRatio, null);
    assert.equal(fresh?.bytesFilled, null);
  });

  it('a cycle (a > b > a, and a cache pointing at itself) is shown once, with what hangs below it, and never loops', () => {
    const tree = buildCacheTree({
      originUrl: ORIGIN,
      serverUrls: [SERVER],
      admin: true,
      caches: [
        cache('a', ['https://b.example:5000']),
        cache('b', ['https://a.example:5000', 'https://server.example:8443']),
        cache('c', ['https://a.example:5000']),
        cache('self', ['https://self.example:5000']),
        cache('ok', ['https://server.example:8443']),
      ],
    });
    assert.deepEqual(shape(tree.roots), [{ [`origin:${ORIGIN}`]: [{ server: ['ok'] }] }, { 'cycle(a,b)': [{ a: ['c'] }, 'b'] }, { 'cycle(self)': ['self'] }]);
    assert.equal(find(tree.roots, 'a')?.inCycle, true);
    assert.equal(find(tree.roots, 'c')?.inCycle, false);
    // A deep chain still ends.
    const chain = Array.from({ length: 200 }, (_, i) => cache(`n${i}`, [i === 0 ? SERVER : `https://n${i - 1}.example:5000`]));
    let depth = 0;
    let node: TreeNodeJson | undefined = buildCacheTree({ originUrl: ORIGIN, serverUrls: [SERVER], admin: true, caches: chain }).roots[0]?.children[0];
    while (node && node.children.length) {
      node = node.children[0];
      depth++;
    }
    assert.equal(depth, 200);
  });

  it('figures of the hour, disk, health, and warm jobs in flight from the warmer', () => {
    const latest = sample(HOUR, { hits: 30, misses: 10, bytesServed: 5000, bytesFilled: 2000, upstreams: [{ url: urlKey(SERVER) as string, requests: 5, errors: 4, up: false }] });
    const first = sample(HOUR - 60_000, { hits: 10, misses: 0, bytesServed: 1000, bytesFilled: 0, upstreams: [{ url: urlKey(SERVER) as string, requests: 1, errors: 1, up: true }] });
    const inFlight = new Map([['id-a', 3]]);
    const tree = buildCacheTree({
      originUrl: ORIGIN,
      serverUrls: [SERVER],
      admin: false,
      warmJobsInFlight: (id) => inFlight.get(id) ?? 0,
      caches: [
        cache('a', [SERVER], {
          health: { status: 'down', lastError: 'connect ECONNREFUSED', lastErrorAt: new Date(HOUR) },
          diskBytes: 4096,
          latest,
          figures: windowFigures([first, latest], HOUR),
        }),
        cache('b', [SERVER]),
      ],
    });
    const a = find(tree.roots, 'a');
    assert.deepEqual(
      { ...a, children: undefined, upstreams: undefined },
      {
        kind: 'cache',
        id: 'id-a',
        name: 'a',
        host: 'https://a.example:5000',
        health: 'down',
        lastError: 'connect ECONNREFUSED',
        lastErrorAt: new Date(HOUR).toISOString(),
        upstreamUnknown: false,
        inCycle: false,
        hitRatio: 20 / 30,
        bytesServed: 4000,
        bytesFilled: 2000,
        upstreamErrors: 3,
        diskBytes: 4096,
        warmJobsInFlight: 3,
        since: new Date(HOUR - 60_000).toISOString(),
        children: undefined,
        upstreams: undefined,
      },
    );
    assert.equal(find(tree.roots, 'b')?.warmJobsInFlight, 0);
    assert.equal(tree.windowSeconds, 3600);
    // Not an admin: the origin's URL and the server's as an upstream are not shown; caches' hosts are.
    assert.equal(tree.roots[0]?.kind === 'origin' && tree.roots[0].url, null);
    assert.deepEqual(a?.upstreams, [{ url: null, target: { kind: 'server' }, parent: true, up: false, errors: 3 }]);
    const c = find(buildCacheTree({ originUrl: ORIGIN, serverUrls: [SERVER], admin: false, caches: [cache('x', [SERVER]), cache('y', ['https://x.example:5000'])] }).roots, 'y');
    assert.equal(c?.upstreams[0]?.url, 'https://x.example:5000');
  });
});

describe('the health checker keeps the samples', () => {
  const state = new SqliteStateRepository(':memory:');
  after(() => state.close());

  it('reads a cache\'s counters on each check; the tree input has the increase and the upstreams', async () => {
    let counters = { hits: 1, misses: 1, filled: 100, served: 200, errors: 0 };
    const server: Server = createHttpServer((req, res) => {
      if (req.url === '/v2/') res.writeHead(200).end('{}');
      else if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end(
          [
            `cascade_cache_blob_requests_total{result="hit"} ${counters.hits}`,
            `cascade_cache_blob_requests_total{result="miss"} ${counters.misses}`,
            `cascade_cache_bytes_total{source="upstream"} ${counters.filled}`,
            `cascade_cache_bytes_served_total ${counters.served}`,
            `cascade_upstream_requests_total{upstream="http://upstream.example:5000"} 3`,
            `cascade_upstream_errors_total{upstream="http://upstream.example:5000"} ${counters.errors}`,
            '',
          ].join('\n'),
        );
      } else res.writeHead(404).end();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const registered = await state.create({ name: 'a', host: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
      const checker = new HealthChecker({ state, intervalMs: 60_000, logger: pino({ level: 'silent' }), timeoutMs: 2000 });
      assert.equal(checker.treeInput(registered).health.status, 'unknown');
      assert.equal(checker.treeInput(registered).latest, null);
      await checker.checkAll();
      counters = { hits: 4, misses: 2, filled: 400, served: 900, errors: 2 };
      await checker.checkAll();
      const input = checker.treeInput(registered);
      assert.equal(input.health.status, 'up');
      assert.deepEqual(input.latest?.upstreams, [{ url: 'http://upstream.example:5000', requests: 3, errors: 2, up: null }]);
      assert.equal(input.figures?.hits, 3);
      assert.equal(input.figures?.misses, 1);
      assert.equal(input.figures?.bytesFilled, 300);
      assert.equal(input.figures?.bytesServed, 700);
      assert.equal(input.figures?.upstreamErrors, 2);
      checker.stop();
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
