/**
 * Operations endpoints of every role on real processes: `/metrics` passes `promtool check metrics`
 * (Debian's prometheus package) for a registry, a cache node, a mirror and the server; the cache's hit
 * ratio moves as blobs are read; `/health` answers; `/ready` turns 503 on a cache node whose upstreams are
 * all gone, while a mirror (which serves its store without remotes) stays ready.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { blobUrl, fetchBlob, pushBlob, randomBlob, startCacheNode, startCascadeOrigin } from '../lib/cache.js';
import { spawnCascade, startCascade, testScope } from '../lib/cascade.js';

/** Runs `promtool check metrics` on a scrape; resolves with its exit code and output. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

async function scrape(base: string): Promise<string> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return res.text();
}

/**
 * Scrapes until `settled` holds or 2 s pass, and returns the last scrape. Byte counters move when the
 * server's read stream ends, which can come a moment after the client has the last byte.
 */
async function scrapeSettled(base: string, settled: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const text = await scrape(base);
    if (settled(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The value of one sample (`name{labels}`, labels in any order given as a substring match), or undefined. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

async function assertValidMetrics(base: string, what: string): Promise<string> {
  const text = await scrape(base);
  const { code, output } = await promtool(text);
  assert.equal(code, 0, `promtool check metrics on ${what}:\n${output}`);
  assert.equal(output.trim(), '', `promtool has no lint findings for ${what}`);
  return text;
}

describe('/metrics, /health and /ready on every role', () => {
  test('registry and cache node: valid metrics, the hit ratio moves with hits and misses, readiness follows the upstream', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-metrics-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url });
    defer(() => cache.stop());
    const digest = await pushBlob(origin.url, 'team/app', randomBlob('metrics', 300_000));

    await assertValidMetrics(origin.url, 'the registry');
    let text = await assertValidMetrics(cache.url, 'the cache node');
    assert.equal(sample(text, 'cascade_cache_hit_ratio'), 0, 'no reads yet');

    const expected = [
      { hits: 0, misses: 1, ratio: 0 },
      { hits: 1, misses: 1, ratio: 0.5 },
      { hits: 2, misses: 1, ratio: 2 / 3 },
    ];
    for (const step of expected) {
      const res = await fetchBlob(blobUrl(cache.url, 'team/app', digest));
      assert.equal(res.status, 200);
      text = await scrapeSettled(cache.url, (t) => sample(t, 'cascade_cache_bytes_total', { source: 'disk' }) === step.hits * 300_000);
      assert.equal(sample(text, 'cascade_cache_blob_requests_total', { result: 'hit' }), step.hits);
      assert.equal(sample(text, 'cascade_cache_bytes_total', { source: 'disk' }), step.hits * 300_000);
      assert.equal(sample(text, 'cascade_cache_blob_requests_total', { result: 'miss' }), step.misses);
      assert.ok(Math.abs((sample(text, 'cascade_cache_hit_ratio') ?? -1) - step.ratio) < 1e-9, `hit ratio ${step.ratio}`);
    }
    // The fill counts as completed once its file is synced and moved into place, which follows the last byte.
    text = await scrapeSettled(cache.url, (t) => sample(t, 'cascade_cache_fills_total', { result: 'completed' }) === 1);
    assert.equal(sample(text, 'cascade_cache_bytes_total', { source: 'upstream' }), 300_000);
    assert.equal(sample(text, 'cascade_cache_bytes_total', { source: 'disk' }), 600_000);
    // Sent to clients: the miss's bytes too.
    assert.equal(sample(text, 'cascade_cache_bytes_served_total'), 900_000);
    assert.equal(sample(text, 'cascade_cache_fills_total', { result: 'completed' }), 1);
    assert.ok((sample(text, 'cascade_upstream_request_duration_seconds_count', { upstream: origin.url, outcome: 'ok' }) ?? 0) >= 1);
    assert.ok((sample(text, 'cascade_http_requests_total', { route: 'blob', method: 'GET', status: '200' }) ?? 0) >= 3);
    assert.ok((sample(text, 'cascade_storage_free_bytes') ?? 0) > 0);
    await assertValidMetrics(cache.url, 'the cache node after traffic');

    assert.equal((await fetch(`${cache.url}/health`)).status, 200);
    const ready = await fetch(`${cache.url}/ready`);
    assert.equal(ready.status, 200, await ready.clone().text());
    const body = (await ready.json()) as { checks: { name: string; ok: boolean }[] };
    assert.deepEqual(body.checks.map((c) => [c.name, c.ok]), [['storage writable', true], ['upstream reachable', true]]);
    // Several probes at once (two load balancers, a kubelet) each get their own answer: 200, not each other's failure.
    const probes = await Promise.all(Array.from({ length: 20 }, () => fetch(`${origin.url}/ready`).then(async (r) => [r.status, await r.text()] as const)));
    assert.deepEqual(probes.filter(([status]) => status !== 200), [], 'concurrent /ready probes');

    await origin.stop();
    const notReady = await fetch(`${cache.url}/ready`);
    assert.equal(notReady.status, 503);
    const why = (await notReady.json()) as { checks: { name: string; ok: boolean; detail?: string }[] };
    assert.match(why.checks.find((c) => c.name === 'upstream reachable')?.detail ?? '', /ECONNREFUSED/);
    assert.equal((await fetch(`${cache.url}/health`)).status, 200, 'still alive');
  });

  test('mirror and server: valid metrics; a mirror stays ready with its remote down', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-metrics-roles-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const mirror = await startCascade(join(dir, 'mirror'), {
      storage: { filesystem: { rootdirectory: join(dir, 'mirror', 'data') } },
      proxy: { remoteurl: origin.url },
    });
    defer(() => mirror.stop());
    await pushBlob(origin.url, 'app', randomBlob('m', 1000));
    await fetch(`${mirror.url}/v2/app/tags/list`).then((r) => r.arrayBuffer());
    const text = await assertValidMetrics(mirror.url, 'the mirror');
    assert.ok(sample(text, 'cascade_mirror_tags_total', { outcome: 'checked' }) !== undefined);

    const serverFile = join(dir, 'server.yml');
    await writeFile(
      serverFile,
      stringify({
        http: { addr: '127.0.0.1:0' },
        origin: { url: origin.url },
        grants: { keysdir: join(dir, 'keys'), ttl: '60s', issuer: 'cascade-test' },
        database: { sqlite: join(dir, 'state.db') },
        admins: ['alice'],
      }),
    );
    const server = await spawnCascade(['server', serverFile]);
    defer(() => server.stop());
    await fetch(`${server.url}/v2/`).then((r) => r.arrayBuffer());
    const serverText = await assertValidMetrics(server.url, 'the server');
    assert.ok((sample(serverText, 'cascade_http_requests_total', { role: 'server', route: 'base' }) ?? 0) >= 1);
    const serverReady = await fetch(`${server.url}/ready`);
    assert.equal(serverReady.status, 200, await serverReady.clone().text());

    await origin.stop();
    const mirrorReady = await fetch(`${mirror.url}/ready`);
    assert.equal(mirrorReady.status, 200, 'a mirror serves its store with every remote down');
    const checks = ((await mirrorReady.json()) as { checks: { name: string; ok: boolean }[] }).checks;
    assert.deepEqual(checks.map((c) => [c.name, c.ok]), [['storage writable', true], ['upstream reachable', false]]);
    assert.equal((await fetch(`${server.url}/ready`)).status, 503, 'the server needs its origin');
  });
});
