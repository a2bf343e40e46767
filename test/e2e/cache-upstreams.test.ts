/**
 * Choosing an upstream: `upstreamhosts` are used round-robin, the origin last; an upstream that fails
 * (connection refused/reset, 5xx) is skipped over to the next one, and is marked down for a while so
 * later misses do not pay for it again.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertBlob, blobRequests, pushBlob, randomBlob, settle, startCacheNode, startCascadeOrigin, type Hop, testScope } from '../lib/cache.js';
import { startFaultUpstream, startResettingPeer } from '../lib/fault-upstream.js';

const NAME = 'team/app';

describe('cache node: upstream selection', () => {
  it('round-robins misses over upstreamhosts; a dead upstream is skipped and marked down', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-upstreams-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const blobs = Array.from({ length: 9 }, (_, i) => randomBlob(`rr-${i}`, 64 * 1024 + i));
    const digests: string[] = [];
    for (const b of blobs) digests.push(await pushBlob(origin.url, NAME, b));

    const a = await startCacheNode(dir, 'cache-a', { origin: origin.url });
    defer(() => a.stop());
    const b = await startCacheNode(dir, 'cache-b', { origin: origin.url });
    defer(() => b.stop());
    const c = await startCacheNode(dir, 'cache-c', { origin: origin.url, upstreamhosts: [a.url, b.url], config: { log: { level: 'debug' } } });
    defer(() => c.stop());

    // phase 1: sequential misses alternate A, B, A, B...
    const servedBy: string[] = [];
    for (let i = 0; i < 4; i++) {
      await assertBlob(c, NAME, digests[i]!, blobs[i]!.length, `miss ${i}`);
      await Promise.all([settle(a), settle(b)]);
      const who = [a, b].filter((h: Hop) => blobRequests(h, digests[i]!, 'GET').length > 0).map((h) => h.name);
      servedBy.push(who.join('+') || 'neither');
    }
    assert.ok(
      JSON.stringify(servedBy) === JSON.stringify(['cache-a', 'cache-b', 'cache-a', 'cache-b']) ||
        JSON.stringify(servedBy) === JSON.stringify(['cache-b', 'cache-a', 'cache-b', 'cache-a']),
      `misses alternate between the upstream caches, got ${JSON.stringify(servedBy)}\n${c.diagnostics()}`,
    );
    await settle(origin);
    for (let i = 0; i < 4; i++) assert.equal(blobRequests(origin, digests[i]!, 'GET').length, 1, `the origin served blob ${i} once (to A or B)`);

    // phase 2: B dies; a listener on its port resets every connection, and counts them
    const bPort = Number(new URL(b.url).port);
    await b.stop('SIGKILL');
    const dead = await startResettingPeer(bPort);
    defer(() => dead.stop());
    const connectionsAfterMiss: number[] = [];
    for (let i = 4; i < 9; i++) {
      await assertBlob(c, NAME, digests[i]!, blobs[i]!.length, `miss ${i}, with B down`);
      connectionsAfterMiss.push(dead.connections.length);
    }
    // Round-robin reaches B within two misses; once it failed, B must be skipped for a while.
    const afterSecond = connectionsAfterMiss[1]!;
    assert.ok(afterSecond >= 1 && afterSecond <= 3, `round-robin tried B (once, or a few retries) within two misses; connections to B after each miss: ${JSON.stringify(connectionsAfterMiss)}`);
    assert.equal(
      connectionsAfterMiss[4],
      afterSecond,
      `after failing, B is skipped: connections to B after each miss ${JSON.stringify(connectionsAfterMiss)}\n${c.diagnostics()}`,
    );
    await settle(c);
    const bHost = `127.0.0.1:${bPort}`;
    const named = c.proc!.logs.filter((l) => l.msg !== 'request' && JSON.stringify(l).includes(bHost));
    assert.ok(
      named.some((l) => /down|unhealthy|unavailable|skip|backoff|fail/i.test(JSON.stringify(l))),
      `a log line names ${bHost} as failed / marked down; lines naming it: ${JSON.stringify(named)}\n${c.diagnostics()}`,
    );
  });

  it('fails over from an upstream answering 500 to the origin', { timeout: 30_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-upstreams-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const blob = randomBlob('failover-500', 300_000);
    const digest = await pushBlob(origin.url, NAME, blob);
    const broken = await startFaultUpstream();
    defer(() => broken.stop());
    broken.addBlob(blob, { kind: 'status', status: 500 });
    const c = await startCacheNode(dir, 'cache', { origin: origin.url, upstreamhosts: [broken.url] });
    defer(() => c.stop());

    await assertBlob(c, NAME, digest, blob.length, 'upstream cache answers 500');
    assert.ok(broken.count(digest) >= 1, 'the broken upstream was asked first');
    await settle(origin);
    assert.equal(blobRequests(origin, digest, 'GET').length, 1, 'then the origin served it');
  });

  it('fails over from a refused connection to the origin', { timeout: 30_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-upstreams-');
    const origin = await startCascadeOrigin(dir);
    defer(() => origin.stop());
    const blob = randomBlob('failover-refused', 300_000);
    const digest = await pushBlob(origin.url, NAME, blob);
    const dead = await startResettingPeer();
    defer(() => dead.stop());
    const c = await startCacheNode(dir, 'cache', { origin: origin.url, upstreamhosts: [`http://127.0.0.1:${dead.port}`] });
    defer(() => c.stop());
    await assertBlob(c, NAME, digest, blob.length, 'upstream cache resets the connection');
    await settle(origin);
    assert.equal(blobRequests(origin, digest, 'GET').length, 1, 'the origin served it');
  });
});
