/**
 * Chains of cache nodes: cache-b -> cache-a -> origin, with the origin being `cascade registry` and
 * distribution's `docker-registry`. An image pushed to the origin with skopeo is fetched blob by blob
 * through cache-b: each hop fetches once, keeps a copy, and a second pass (or another cache behind
 * cache-a) makes no request further up. Concurrent cold requests through the chain cost one GET per hop.
 * Finally skopeo pulls through the chain, with a small redirecting front standing in for the server.
 *
 * Request counts come from each hop's own access log.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  assertBlob,
  assertStoreIntegrity,
  blobRequests,
  blobUrl,
  contentRequests,
  fetchBlob,
  hasBlobData,
  MiB,
  pushBlob,
  randomBlob,
  settle,
  startCacheNode,
  startCascadeOrigin,
  startDistributionOrigin,
  type Hop,
  testScope,
  waitFor,
} from '../lib/cache.js';
import { makeOciImage, type OciImageLayout } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';
import { startRedirectingOrigin } from '../lib/redirecting-origin.js';

const ORIGINS = [
  ['cascade registry', startCascadeOrigin],
  ['distribution', startDistributionOrigin],
] as const;

/** The config and layer blobs of an image (what a client GETs from /blobs/). */
function layerBlobs(image: OciImageLayout): Array<{ digest: string; size: number }> {
  return [image.image.config, ...image.image.layers].map((b) => ({ digest: b.digest, size: b.size }));
}

function diagnostics(...hops: Hop[]): string {
  return hops.map((h) => h.diagnostics(30)).join('\n');
}

/** Blob GETs per digest at a hop, as `{digest: count}`. */
function getCounts(hop: Hop, digests: string[]): Record<string, number> {
  return Object.fromEntries(digests.map((d) => [d, blobRequests(hop, d, 'GET').length]));
}

for (const [originKind, startOrigin] of ORIGINS) {
  describe(`cache chain, origin: ${originKind}`, () => {
    it('cache-b -> cache-a -> origin: one GET per blob per hop, then hits; cache-a serves another cache warm', { timeout: 90_000 }, async (t) => {
      const { dir, defer } = await testScope(t, 'e2e-chain-');
      const origin = await startOrigin(dir, 'origin');
      defer(() => origin.stop());
      const image = await makeOciImage(join(dir, 'src'), { layers: [3 * MiB, 1 * MiB, 200_000, 2 * MiB + 17], tag: 'v1', seed: `chain-${originKind}` });
      await skopeo(['copy', image.ref, `docker://${origin.host}/team/app:v1`]);
      const blobs = layerBlobs(image);
      const digests = blobs.map((b) => b.digest);

      const cacheA = await startCacheNode(dir, 'cache-a', { origin: origin.url });
      defer(() => cacheA.stop());
      const cacheB = await startCacheNode(dir, 'cache-b', { origin: origin.url, upstreamhosts: [cacheA.url] });
      defer(() => cacheB.stop());

      await settle(origin);
      const originBefore = contentRequests(origin).length;

      // pass 1: every blob is cold everywhere
      for (const b of blobs) await assertBlob(cacheB, 'team/app', b.digest, b.size, 'pass 1, cold');
      await Promise.all([settle(origin), settle(cacheA), settle(cacheB)]);
      const ones = Object.fromEntries(digests.map((d) => [d, 1]));
      assert.deepEqual(getCounts(cacheA, digests), ones, `one GET per blob at cache-a\n${diagnostics(cacheA, cacheB)}`);
      assert.deepEqual(getCounts(origin, digests), ones, `one GET per blob at the origin (from cache-a, not cache-b)\n${diagnostics(origin, cacheA)}`);
      assert.ok(
        blobRequests(cacheA, digests[0]!, 'GET').every((r) => r.status === 200),
        `cache-a answered 200\n${diagnostics(cacheA)}`,
      );
      for (const hop of [cacheA, cacheB]) {
        // A fill's file is synced and moved into place after the client's last byte: wait for it, briefly.
        for (const d of digests) await waitFor(`${hop.name} stored ${d}`, () => hasBlobData(hop.rootdirectory, d), 5000);
        assert.deepEqual((await assertStoreIntegrity(hop.rootdirectory)).sort(), [...digests].sort(), `${hop.name} stores exactly the blobs fetched`);
      }

      // pass 2: every blob is a hit at cache-b
      const aBefore = contentRequests(cacheA).length;
      const oBefore = contentRequests(origin).length;
      for (const b of blobs) await assertBlob(cacheB, 'team/app', b.digest, b.size, 'pass 2, warm');
      await Promise.all([settle(origin), settle(cacheA)]);
      assert.deepEqual(contentRequests(cacheA).slice(aBefore), [], `pass 2 made no request to cache-a\n${diagnostics(cacheA)}`);
      assert.deepEqual(contentRequests(origin).slice(oBefore), [], `pass 2 made no request to the origin\n${diagnostics(origin)}`);

      // another cache behind cache-a: hits at cache-a, nothing at the origin
      const cacheB2 = await startCacheNode(dir, 'cache-b2', { origin: origin.url, upstreamhosts: [cacheA.url] });
      defer(() => cacheB2.stop());
      for (const b of blobs) await assertBlob(cacheB2, 'team/app', b.digest, b.size, 'through cache-b2');
      await Promise.all([settle(origin), settle(cacheA)]);
      assert.deepEqual(contentRequests(origin).slice(oBefore), [], `cache-b2's misses were hits at cache-a: nothing at the origin\n${diagnostics(origin)}`);
      assert.deepEqual(getCounts(cacheA, digests), Object.fromEntries(digests.map((d) => [d, 2])), `cache-a served each blob once more\n${diagnostics(cacheA)}`);
      assert.deepEqual(
        contentRequests(origin).slice(originBefore).map((r) => `${r.method} ${r.path.split('/blobs/')[1] ?? r.path}`).sort(),
        digests.map((d) => `GET ${d}`).sort(),
        'all the origin saw from the chain: one GET per blob, nothing else (no extra HEAD round trips)',
      );
    });

    it('20 concurrent cold requests through cache-b -> cache-a: one GET per hop', { timeout: 60_000 }, async (t) => {
      const { dir, defer } = await testScope(t, 'e2e-chain-');
      const origin = await startOrigin(dir, 'origin');
      defer(() => origin.stop());
      const blob = randomBlob(`chain-concurrent-${originKind}`, 8 * MiB);
      const digest = await pushBlob(origin.url, 'team/app', blob);
      const cacheA = await startCacheNode(dir, 'cache-a', { origin: origin.url });
      defer(() => cacheA.stop());
      const cacheB = await startCacheNode(dir, 'cache-b', { origin: origin.url, upstreamhosts: [cacheA.url] });
      defer(() => cacheB.stop());

      const results = await Promise.all(Array.from({ length: 20 }, () => fetchBlob(blobUrl(cacheB.url, 'team/app', digest), { keepBody: 4096 })));
      assert.deepEqual(
        results.filter((r) => r.status !== 200 || !r.complete || r.digest !== digest).map((r) => `${r.status} ${r.size} ${r.error ?? ''}`),
        [],
        `all 20 clients get the blob\n${diagnostics(cacheB)}`,
      );
      await Promise.all([settle(origin), settle(cacheA)]);
      assert.equal(blobRequests(cacheA, digest, 'GET').length, 1, `one GET at cache-a\n${diagnostics(cacheA)}`);
      assert.equal(blobRequests(origin, digest, 'GET').length, 1, `one GET at the origin\n${diagnostics(origin)}`);
    });

    it('skopeo pulls through the chain: manifests from the origin, blobs redirected to cache-b', { timeout: 90_000 }, async (t) => {
      const { dir, defer } = await testScope(t, 'e2e-chain-');
      const origin = await startOrigin(dir, 'origin');
      defer(() => origin.stop());
      const image = await makeOciImage(join(dir, 'src'), { layers: [2 * MiB, 300_000, 1 * MiB], tag: 'v1', seed: `chain-skopeo-${originKind}` });
      await skopeo(['copy', image.ref, `docker://${origin.host}/team/app:v1`]);
      const cacheA = await startCacheNode(dir, 'cache-a', { origin: origin.url });
      defer(() => cacheA.stop());
      const cacheB = await startCacheNode(dir, 'cache-b', { origin: origin.url, upstreamhosts: [cacheA.url] });
      defer(() => cacheB.stop());
      const front = await startRedirectingOrigin({ origin: origin.url, cache: cacheB.url });
      defer(() => front.stop());

      const out = join(dir, 'out');
      try {
        await skopeo(['copy', `docker://${front.host}/team/app:v1`, `oci:${out}:v1`]);
      } catch (err) {
        if (err instanceof Error) err.message += `\n--- front ---\n${front.proxied.join('\n')}\nredirects: ${front.redirects.join('\n')}\n${diagnostics(cacheB, cacheA, origin)}`;
        throw err;
      }
      await assertLayoutHolds(out, 'v1', image);

      const digests = layerBlobs(image).map((b) => b.digest);
      assert.deepEqual([...new Set(front.redirects.map((l) => l.split('/blobs/')[1]))].sort(), [...digests].sort(), 'every blob GET was redirected');
      await Promise.all([settle(origin), settle(cacheA), settle(cacheB)]);
      for (const d of digests) {
        const served = blobRequests(cacheB, d, 'GET');
        assert.ok(served.length >= 1 && served.every((r) => r.status === 200), `cache-b served ${d}: ${JSON.stringify(served)}\n${diagnostics(cacheB)}`);
        assert.equal(blobRequests(cacheA, d, 'GET').length, 1, `cache-a fetched ${d} once`);
        assert.equal(blobRequests(origin, d, 'GET').length, 1, `the origin served ${d} once (to cache-a)`);
      }
      for (const hop of [cacheA, cacheB]) {
        for (const d of digests) await waitFor(`${hop.name} stored ${d}`, () => hasBlobData(hop.rootdirectory, d), 5000);
        assert.deepEqual((await assertStoreIntegrity(hop.rootdirectory)).sort(), [...digests].sort(), `${hop.name} keeps a copy of each blob`);
      }

      // a second pull is all hits at cache-b
      const aBefore = contentRequests(cacheA).length;
      await skopeo(['copy', `docker://${front.host}/team/app:v1`, `oci:${join(dir, 'out2')}:v1`]);
      await assertLayoutHolds(join(dir, 'out2'), 'v1', image);
      await settle(cacheA);
      assert.deepEqual(contentRequests(cacheA).slice(aBefore), [], 'the second pull made no request to cache-a');
    });
  });
}
