/**
 * Upstream faults and crashes: whatever goes wrong during a fill (the upstream dies mid-stream, sends wrong
 * or extra bytes, answers 404/401/500), the client gets an error (or a cut connection once the body has
 * started), nothing is stored, the next healthy request refetches the right bytes, and the node keeps
 * serving other blobs. A client that gives up on a slow or silent upstream stops the fill when
 * `filltimeout` is 0 (the upstream request is closed), and leaves it to complete in the background with the
 * default. A cache killed with SIGKILL mid-fill leaves nothing partial visible or on disk after its restart.
 *
 * The upstream is the programmable fake in test/lib/fault-upstream.ts.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import {
  assertBlob,
  assertStoreIntegrity,
  blobUrl,
  errorCodes,
  fetchBlob,
  filesNaming,
  hasBlobData,
  listFiles,
  MiB,
  randomBlob,
  startCacheNode,
  tempLeftovers,
  waitFor,
  type BlobResponse,
  type Hop,
  testScope,
} from '../lib/cache.js';
import { startFaultUpstream, type FaultUpstream, type Scenario } from '../lib/fault-upstream.js';

const NAME = 'team/app';

/** What the client must see for a fault. */
type Expect = 'cut-or-5xx' | { status: number; code?: string; header?: [string, string] };

interface FaultCase {
  readonly title: string;
  readonly scenario: Scenario;
  readonly size: number;
  readonly expect: Expect;
}

const CASES: FaultCase[] = [
  { title: 'dies mid-stream (socket destroyed after 300 KiB)', scenario: { kind: 'die', afterBytes: 300 * 1024 }, size: 1 * MiB, expect: 'cut-or-5xx' },
  { title: 'sends wrong bytes (right length, last byte flipped)', scenario: { kind: 'wrong-bytes' }, size: 1 * MiB, expect: 'cut-or-5xx' },
  { title: 'sends 16 extra bytes (Content-Length counts them)', scenario: { kind: 'extra-bytes', extra: 16 }, size: 256 * 1024, expect: 'cut-or-5xx' },
  { title: 'answers 500', scenario: { kind: 'status', status: 500 }, size: 64 * 1024, expect: 'cut-or-5xx' },
  { title: 'answers 404', scenario: { kind: 'status', status: 404 }, size: 64 * 1024, expect: { status: 404, code: 'BLOB_UNKNOWN' } },
  {
    title: 'answers 401 with WWW-Authenticate',
    scenario: { kind: 'status', status: 401, headers: { 'www-authenticate': 'Bearer realm="http://127.0.0.1:1/token",service="origin",scope="repository:team/app:pull"' } },
    size: 64 * 1024,
    expect: { status: 401, code: 'UNAUTHORIZED', header: ['www-authenticate', 'Bearer realm="http://127.0.0.1:1/token",service="origin",scope="repository:team/app:pull"'] },
  },
];

function describeResponse(res: BlobResponse): string {
  return `${res.status} ${res.complete ? 'complete' : `cut (${res.error})`} ${res.size} bytes ${res.digest} ${res.size < 2048 ? (res.body?.toString() ?? '') : ''}`;
}

/** Asserts that nothing of `digest` is stored and no temp file of the failed fill is left. */
async function assertNothingStored(cache: Hop, digest: string, what: string): Promise<void> {
  await sleep(200);
  assert.equal(await hasBlobData(cache.rootdirectory, digest), false, `${what}: no blob data file for ${digest}\n${(await listFiles(cache.rootdirectory)).join('\n')}`);
  await assertStoreIntegrity(cache.rootdirectory);
  await waitFor(`${what}: no file naming ${digest} in the storage folder`, async () => (await filesNaming(cache.rootdirectory, digest)).length === 0, 3000).catch(async (err: Error) => {
    err.message += `\n${(await filesNaming(cache.rootdirectory, digest)).join('\n')}`;
    throw err;
  });
  await waitFor(`${what}: temp files of the failed fill removed`, async () => (await tempLeftovers(cache.rootdirectory)).length === 0, 3000).catch(async (err: Error) => {
    err.message += `\n${(await tempLeftovers(cache.rootdirectory)).join('\n')}`;
    throw err;
  });
}

describe('cache node: upstream faults', () => {
  for (const c of CASES) {
    it(`upstream ${c.title}: the client gets an error, nothing is stored, a healthy retry refetches`, { timeout: 30_000 }, async (t) => {
      const { dir, defer } = await testScope(t, 'e2e-faults-');
      const up: FaultUpstream = await startFaultUpstream();
      defer(() => up.stop());
      const blob = randomBlob(`fault-${c.title}`, c.size);
      const digest = up.addBlob(blob, c.scenario);
      const healthy = randomBlob(`healthy-${c.title}`, 200_000);
      const healthyDigest = up.addBlob(healthy);
      const cache = await startCacheNode(dir, 'cache', { origin: up.url });
      defer(() => cache.stop());

      // the faulty fill, and, while it runs, another blob
      const faulty = fetchBlob(blobUrl(cache.url, NAME, digest), { timeoutMs: 20_000 });
      await sleep(100);
      const other = await assertBlob(cache, NAME, healthyDigest, healthy.length, 'another blob while the fault is in progress');
      assert.ok(other.totalMs < 1000, `another blob is served promptly during the faulty fill (${other.totalMs} ms)`);
      const res = await faulty;

      if (c.expect === 'cut-or-5xx') {
        const clean = res.status === 200 && res.complete;
        assert.ok(!clean, `the client must not get a clean 200 for a failed fill: ${describeResponse(res)}\n${cache.diagnostics()}`);
        if (res.status !== 200) {
          assert.ok(res.status >= 500 && res.status <= 504, `an error before the body is a 5xx: ${describeResponse(res)}`);
          assert.ok(errorCodes(res).length > 0, `with an OCI error body: ${describeResponse(res)}`);
        }
      } else {
        assert.equal(res.status, c.expect.status, `${describeResponse(res)}\n${cache.diagnostics()}`);
        if (c.expect.code) assert.deepEqual(errorCodes(res), [c.expect.code], describeResponse(res));
        if (c.expect.header) assert.equal(res.headers[c.expect.header[0]], c.expect.header[1], `${c.expect.header[0]} relayed`);
      }
      const fetchesBefore = up.count(digest, 'GET');
      assert.ok(fetchesBefore >= 1, 'the upstream was asked');
      await assertNothingStored(cache, digest, c.title);

      // the node keeps serving: a warm hit, then the same blob once the upstream is healthy
      await assertBlob(cache, NAME, healthyDigest, healthy.length, 'hit after the fault');
      up.setScenario(digest, { kind: 'ok' });
      await assertBlob(cache, NAME, digest, blob.length, 'healthy retry');
      assert.ok(up.count(digest, 'GET') > fetchesBefore, 'the retry refetched from the upstream (nothing was kept from the failed fill)');
      await waitFor('the blob stored after the healthy retry', () => hasBlobData(cache.rootdirectory, digest), 5000);
      assert.deepEqual((await assertStoreIntegrity(cache.rootdirectory)).sort(), [digest, healthyDigest].sort());
    });
  }

  it('upstream dies mid-stream once: the fill resumes with a Range request from the byte it stopped at; the client gets every byte, one copy is stored', { timeout: 30_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-faults-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('resumed', 4 * MiB);
    const digest = up.addBlob(blob, { kind: 'die', afterBytes: 1 * MiB, times: 1 });
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());

    await assertBlob(cache, NAME, digest, blob.length, 'the blob, through a cut transfer and a resumed one');
    const gets = up.requests.filter((r) => r.digest === digest && r.method === 'GET');
    assert.equal(gets.length, 2, `the cut GET and the resumed one:\n${cache.diagnostics()}`);
    assert.equal(gets[0]?.headers.range, undefined);
    const [start, end] = (/^bytes=(\d+)-(\d+)$/.exec(String(gets[1]?.headers.range)) ?? []).slice(1).map(Number);
    assert.ok(start !== undefined && start > 0 && start <= 1 * MiB, `resumed from the byte the cut GET stopped at: ${String(gets[1]?.headers.range)}`);
    assert.equal(end, blob.length - 1);
    const logs = cache.proc?.logs ?? [];
    assert.ok(logs.some((l) => l.msg === 'fill interrupted: resuming with a range request' && l.received === start), 'the node logs the resume and where it resumed');
    await waitFor('the resumed blob stored', () => hasBlobData(cache.rootdirectory, digest), 5000);
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [digest]);
    // and it is a hit now
    await assertBlob(cache, NAME, digest, blob.length, 'hit after the resumed fill');
    assert.equal(up.requests.filter((r) => r.digest === digest && r.method === 'GET').length, 2);
  });

  for (const kind of ['slow', 'hang'] as const) {
    it(`a client gives up on a ${kind === 'slow' ? 'trickling' : 'silent'} upstream with filltimeout 0: the fill stops, the upstream request is closed, nothing is stored`, { timeout: 30_000 }, async (t) => {
      const { dir, defer } = await testScope(t, 'e2e-faults-');
      const up = await startFaultUpstream();
      defer(() => up.stop());
      const blob = randomBlob(`gives-up-${kind}`, 2 * MiB);
      // the trickle would need ~12 s
      const digest = up.addBlob(blob, kind === 'slow' ? { kind: 'slow', chunkBytes: 16 * 1024, intervalMs: 100 } : { kind: 'hang' });
      const healthy = randomBlob(`gives-up-healthy-${kind}`, 200_000);
      const healthyDigest = up.addBlob(healthy);
      const cache = await startCacheNode(dir, 'cache', { origin: up.url, options: { filltimeout: '0s' } });
      defer(() => cache.stop());

      const abort = new AbortController();
      const pending = fetchBlob(blobUrl(cache.url, NAME, digest), { signal: abort.signal });
      await sleep(800);
      const other = await assertBlob(cache, NAME, healthyDigest, healthy.length, 'another blob while the upstream is slow');
      assert.ok(other.totalMs < 1000, `another blob is served promptly (${other.totalMs} ms)`);
      const gaveUpAt = Date.now();
      abort.abort();
      const res = await pending;
      assert.ok(!(res.status === 200 && res.complete), `the client gave up: ${describeResponse(res)}`);

      const upstreamGet = up.requests.find((r) => r.digest === digest && r.method === 'GET');
      assert.ok(upstreamGet, 'the fill asked the upstream');
      await waitFor('the cache to close its upstream request once no client reads the fill (filltimeout 0)', () => upstreamGet.closedEarlyAt !== undefined, 3000).catch((err: Error) => {
        err.message += `\n${cache.diagnostics()}`;
        throw err;
      });
      assert.ok(upstreamGet.closedEarlyAt! - gaveUpAt < 2000, `upstream request closed ${upstreamGet.closedEarlyAt! - gaveUpAt} ms after the client left`);
      const fetchesBefore = up.count(digest, 'GET');
      await assertNothingStored(cache, digest, `client gave up (${kind})`);

      up.setScenario(digest, { kind: 'ok' });
      await assertBlob(cache, NAME, digest, blob.length, 'healthy retry');
      assert.equal(up.count(digest, 'GET'), fetchesBefore + 1, 'the retry refetched from the upstream');
      assert.deepEqual((await assertStoreIntegrity(cache.rootdirectory)).sort(), [digest, healthyDigest].sort());
    });
  }

  it('a client gives up on a slow fill with the default filltimeout: the fill completes, the right bytes are stored, the next GET is a hit', { timeout: 30_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-faults-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('gives-up-default', 2 * MiB);
    // ~2 s in all
    const digest = up.addBlob(blob, { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 120 });
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());

    const abort = new AbortController();
    const res = await fetchBlob(blobUrl(cache.url, NAME, digest), {
      signal: abort.signal,
      onData: (n) => {
        if (n >= 256 * 1024) abort.abort();
      },
    });
    assert.ok(!res.complete, 'the client left early');
    await waitFor('the fill to complete in the background and commit', () => hasBlobData(cache.rootdirectory, digest), 10_000).catch((err: Error) => {
      err.message += `\n${cache.diagnostics()}`;
      throw err;
    });
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [digest]);
    await assertBlob(cache, NAME, digest, blob.length, 'after the background fill');
    assert.equal(up.count(digest, 'GET'), 1, 'served from storage: one upstream GET in all');
  });

  it('404 at the upstream for a HEAD: 404 to the client, nothing stored', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-faults-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());
    const unknown = `sha256:${'ab'.repeat(32)}`;
    const head = await fetchBlob(blobUrl(cache.url, NAME, unknown), { method: 'HEAD' });
    assert.equal(head.status, 404, cache.diagnostics());
    const get = await fetchBlob(blobUrl(cache.url, NAME, unknown));
    assert.equal(get.status, 404);
    assert.deepEqual(errorCodes(get), ['BLOB_UNKNOWN']);
  });
});

describe('cache node: crash mid-fill', () => {
  it('SIGKILL during a fill: after restart nothing partial is served or left on disk, and a GET refetches', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-crash-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const blob = randomBlob('crash-mid-fill', 4 * MiB);
    // ~3.2 s to send it all
    const digest = up.addBlob(blob, { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 100 });
    const warm = randomBlob('crash-warm', 300_000);
    const warmDigest = up.addBlob(warm);

    let cache = await startCacheNode(dir, 'cache', { origin: up.url });
    const first = cache;
    defer(() => first.stop());
    await assertBlob(cache, NAME, warmDigest, warm.length, 'a committed blob before the crash');
    await waitFor('the warm blob stored', () => hasBlobData(cache.rootdirectory, warmDigest), 5000);
    const filesBefore = new Set(await listFiles(cache.rootdirectory));

    let reached!: () => void;
    const halfway = new Promise<void>((r) => (reached = r));
    const inFlight = fetchBlob(blobUrl(cache.url, NAME, digest), {
      onData: (n) => {
        if (n >= 1 * MiB) reached();
      },
      timeoutMs: 30_000,
    });
    await halfway;
    const filesDuring = await listFiles(cache.rootdirectory);
    const partial = filesDuring.filter((f) => !filesBefore.has(f));
    await cache.stop('SIGKILL');
    const res = await inFlight;
    assert.ok(!res.complete, `the client's response was cut by the crash: ${describeResponse(res)}`);
    assert.equal(await hasBlobData(cache.rootdirectory, digest), false, 'no blob data file was committed before the crash');

    cache = await startCacheNode(dir, 'cache', { origin: up.url });
    defer(() => cache.stop());
    // Files written during the fill that name the blob or look temporary are its partial data (other new
    // files, such as an access journal for the warm blob, are legitimate).
    const hex = digest.slice('sha256:'.length);
    const temps = new Set(await tempLeftovers(cache.rootdirectory));
    const partialOfFill = partial.filter((f) => f.includes(hex) || /(_cascade\/tmp|fills?|partial|\.tmp$|\.part)/.test(f));
    assert.ok(partialOfFill.length > 0, `the test caught the fill in progress: a partial file existed (new files during the fill: ${JSON.stringify(partial)})`);
    const filesAfter = new Set(await listFiles(cache.rootdirectory));
    assert.deepEqual(
      partialOfFill.filter((f) => filesAfter.has(f)),
      [],
      `partial files of the interrupted fill are gone after start-up (they were: ${JSON.stringify(partialOfFill)})`,
    );
    assert.deepEqual([...temps], [], 'no temp/partial files after start-up');
    assert.deepEqual(await filesNaming(cache.rootdirectory, digest), [], `no file names the interrupted blob after start-up`);
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [warmDigest], 'only the committed blob is stored');

    const fetches = up.count(digest, 'GET');
    up.setScenario(digest, { kind: 'ok' });
    await assertBlob(cache, NAME, digest, blob.length, 'after the restart');
    assert.equal(up.count(digest, 'GET'), fetches + 1, 'the blob was refetched, not served from a partial file');
    const warmFetches = up.count(warmDigest, 'GET');
    await assertBlob(cache, NAME, warmDigest, warm.length, 'the committed blob survives the crash');
    assert.equal(up.count(warmDigest, 'GET'), warmFetches, 'and is a hit');
  });
});
