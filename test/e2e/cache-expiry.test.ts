/**
 * Expiry by `blobttl`: a blob not accessed for the TTL is deleted (its data file disappears and the next
 * GET goes upstream again); a blob hit within the TTL survives; the schedule survives a restart.
 * TTL 2 s, `sweepinterval: 500ms`.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { assertBlob, assertStoreIntegrity, hasBlobData, randomBlob, startCacheNode, waitFor, type CacheOptions, testScope } from '../lib/cache.js';
import { startFaultUpstream } from '../lib/fault-upstream.js';

const NAME = 'team/app';
const TTL_MS = 2000;

describe('cache node: blob expiry (blobttl)', () => {
  it('deletes a blob ~blobttl after its last access; a blob hit within the TTL survives', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-expiry-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const x = randomBlob('expiry-x', 100_000);
    const y = randomBlob('expiry-y', 100_000);
    const dx = up.addBlob(x);
    const dy = up.addBlob(y);
    const options: CacheOptions = { origin: up.url, blobttl: '2s', options: { sweepinterval: '500ms' } };
    const cache = await startCacheNode(dir, 'cache', options);
    defer(() => cache.stop());

    await assertBlob(cache, NAME, dx, x.length, 'x, cold');
    const lastX = Date.now();
    await assertBlob(cache, NAME, dy, y.length, 'y, cold');
    await waitFor('x and y stored', async () => (await hasBlobData(cache.rootdirectory, dx)) && (await hasBlobData(cache.rootdirectory, dy)), 5000);

    // keep y hot (a GET every 400 ms) while watching x expire
    let xGoneAt: number | undefined;
    let xSeenAt1s = false;
    while (Date.now() - lastX < 5000) {
      await assertBlob(cache, NAME, dy, y.length, 'y, kept hot');
      const present = await hasBlobData(cache.rootdirectory, dx);
      const age = Date.now() - lastX;
      if (age < TTL_MS * 0.6 && present) xSeenAt1s = true;
      if (!present && xGoneAt === undefined) {
        xGoneAt = age;
        assert.ok(age >= TTL_MS * 0.75, `x was deleted ${age} ms after its last access, before its TTL of ${TTL_MS} ms`);
      }
      if (xGoneAt !== undefined && age > TTL_MS + 1500) break;
      await sleep(400);
    }
    assert.ok(xSeenAt1s, 'x was still stored well within its TTL');
    assert.ok(xGoneAt !== undefined, `x (last access ${Date.now() - lastX} ms ago) was not deleted; TTL ${TTL_MS} ms, sweep 500 ms\n${cache.diagnostics()}`);
    assert.ok(xGoneAt <= TTL_MS + 2000, `x deleted ${xGoneAt} ms after its last access (TTL ${TTL_MS} ms + sweep 500 ms)`);

    assert.equal(await hasBlobData(cache.rootdirectory, dy), true, 'y, hit every 400 ms, survives');
    assert.equal(up.count(dy, 'GET'), 1, 'y was served from storage every time');
    assert.deepEqual(await assertStoreIntegrity(cache.rootdirectory), [dy], 'only y remains');

    // an expired blob is fetched again
    assert.equal(up.count(dx, 'GET'), 1);
    await assertBlob(cache, NAME, dx, x.length, 'x, after expiry');
    assert.equal(up.count(dx, 'GET'), 2, 'the GET after expiry went upstream');
  });

  it('keeps the expiry schedule across a restart', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-expiry-');
    const up = await startFaultUpstream();
    defer(() => up.stop());
    const z = randomBlob('expiry-z', 100_000);
    const dz = up.addBlob(z);
    const options: CacheOptions = { origin: up.url, blobttl: '2s', options: { sweepinterval: '500ms' } };
    const first = await startCacheNode(dir, 'cache', options);
    defer(() => first.stop());
    await assertBlob(first, NAME, dz, z.length, 'z, cold');
    const lastZ = Date.now();
    await waitFor('z stored', () => hasBlobData(first.rootdirectory, dz), 5000);
    await first.stop('SIGTERM');

    const second = await startCacheNode(dir, 'cache', options);
    defer(() => second.stop());
    const sinceAccess = Date.now() - lastZ;
    if (sinceAccess < TTL_MS * 0.6) assert.equal(await hasBlobData(second.rootdirectory, dz), true, `z is still stored ${sinceAccess} ms after its last access`);
    // z is not touched after the restart: it must still expire
    await waitFor(
      `z (last access before the restart) to expire`,
      async () => !(await hasBlobData(second.rootdirectory, dz)),
      Math.max(1000, TTL_MS + 3000 - (Date.now() - lastZ)),
      100,
    ).catch((err: Error) => {
      err.message += `\n${second.diagnostics()}`;
      throw err;
    });
    const goneAfter = Date.now() - lastZ;
    assert.ok(goneAfter >= TTL_MS * 0.75, `z deleted ${goneAfter} ms after its last access, before its TTL`);
    await assertBlob(second, NAME, dz, z.length, 'z, after expiry');
    assert.equal(up.count(dz, 'GET'), 2, 'z was fetched again after it expired');
  });
});
