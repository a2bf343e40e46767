/**
 * The region coordinator against a real `redis-server` (the testkit's: a free port, persisting nothing): fill
 * leases (one leader, renewal, loss, release), one sweep per interval for the region, pins seen by every node,
 * degraded mode when Redis stops (no throw, `alone`, no sweep, one log line each way) and the doctor's check.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { CASCADE_DIRS, Digest } from '@cascade/registry-core';
import { startRedis, type RedisServer } from '@cascade/testkit';
import { checkRegion, RegionCoordinator, type FillProgress } from '../src/region/coordinator.js';

const silent = pino({ level: 'silent' });
const DIGEST = Digest.of(Buffer.from('region test blob'));

/** A logger that keeps its lines' messages. */
function recordingLogger(): { logger: pino.Logger; messages: string[] } {
  const messages: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void messages.push(String((JSON.parse(line) as { msg?: string }).msg)) });
  return { logger, messages };
}

async function waitFor(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('region coordinator (real redis-server)', () => {
  let redis: RedisServer;
  let url: string;
  const coordinators: RegionCoordinator[] = [];
  const node = async (name: string, logger = silent, leaseMs = 300): Promise<RegionCoordinator> => {
    const c = new RegionCoordinator({ redis: url, name: 'unit', logger, nodeId: name, leaseMs });
    coordinators.push(c);
    await c.start();
    return c;
  };

  before(async () => {
    redis = await startRedis();
    url = redis.url;
  });

  after(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    await redis.close();
  });

  it('one node leads a fill; the lease is renewed by its holder only, lost when it expires, taken by another', async () => {
    const a = await node('a');
    const b = await node('b');
    const progress = (token: string): FillProgress => ({ token, state: 'filling', partial: `${CASCADE_DIRS.fills}/sha256/${token.replace('/', '-')}`, written: 0 });
    assert.equal(await a.claimFill(DIGEST, progress('a/1')), 'led');
    assert.equal(await b.claimFill(DIGEST, progress('b/1')), 'joined');
    assert.deepEqual(await b.peekFill(DIGEST), { leader: 'a/1', progress: progress('a/1') });
    await a.publishFill(DIGEST, { ...progress('a/1'), written: 42, size: 100 });
    assert.equal((await b.peekFill(DIGEST))?.progress?.written, 42);
    assert.equal(await a.renewFill(DIGEST, 'a/1'), 'ok');
    assert.equal(await b.renewFill(DIGEST, 'b/1'), 'lost', 'only the holder renews');
    // The holder stops renewing (it died): the lease expires, and the other node takes it.
    await sleep(400);
    const peek = await b.peekFill(DIGEST);
    assert.equal(peek?.leader, undefined);
    assert.equal(peek?.progress?.written, 42, 'the dead leader\'s progress stays readable');
    assert.equal(await b.claimFill(DIGEST, progress('b/2')), 'led');
    assert.equal(await a.renewFill(DIGEST, 'a/1'), 'lost', 'the old leader learns it lost the lease');
    await a.releaseFill(DIGEST, 'a/1');
    assert.equal((await a.peekFill(DIGEST))?.leader, 'b/2', 'a stale release does not end the new lease');
    await b.releaseFill(DIGEST, 'b/2');
    assert.equal((await a.peekFill(DIGEST))?.leader, undefined);
  });

  it('a progress record that names a file outside the fills folder, or is malformed, is not believed', async () => {
    const a = await node('ha');
    const b = await node('hb');
    const digest = Digest.of(Buffer.from('hostile progress'));
    const good: FillProgress = { token: 'ha/1', state: 'filling', partial: `${CASCADE_DIRS.fills}/sha256/x`, written: 0 };
    assert.equal(await a.claimFill(digest, good), 'led');
    for (const partial of ['/etc/passwd', `${CASCADE_DIRS.fills}/../blobs/sha256/ab/x/data`, '/docker/registry/v2/blobs/sha256/ab/x/data', `${CASCADE_DIRS.fills}/./x`]) {
      await a.publishFill(digest, { ...good, partial });
      assert.equal((await b.peekFill(digest))?.progress, undefined, partial);
    }
    await a.publishFill(digest, { ...good, written: -5 });
    assert.equal((await b.peekFill(digest))?.progress, undefined, 'a negative length');
    await a.publishFill(digest, { ...good, written: 7 });
    assert.equal((await b.peekFill(digest))?.progress?.written, 7);
    await a.releaseFill(digest, 'ha/1');
  });

  it('pins are seen by every node, and go when released', async () => {
    const a = await node('pa');
    const b = await node('pb');
    const key = DIGEST.toString();
    const release = a.pin(DIGEST);
    await sleep(50);
    assert.deepEqual(await b.pinned([key, 'sha256:' + '0'.repeat(64)]), new Set([key]));
    release();
    await sleep(50);
    assert.deepEqual(await b.pinned([key]), new Set());
  });

  it('one sweep per interval for the region, never two at once', async () => {
    const nodes = await Promise.all(['s1', 's2', 's3'].map((n) => node(n)));
    const interval = 200;
    let running = 0;
    let overlap = false;
    const sweep = async () => {
      running += 1;
      if (running > 1) overlap = true;
      await sleep(30);
      running -= 1;
      return 'swept';
    };
    const started = Date.now();
    let ran = 0;
    // Every node tries every 50 ms, 4 times per interval.
    while (Date.now() - started < 2000) {
      const results = await Promise.all(nodes.map((n) => n.exclusiveSweep(interval, sweep)));
      ran += results.filter((r) => r === 'swept').length;
      await sleep(50);
    }
    const intervals = (Date.now() - started) / interval;
    assert.equal(overlap, false);
    assert.ok(ran >= intervals - 2 && ran <= intervals + 1, `${ran} sweeps in ${intervals.toFixed(1)} intervals`);
  });

  it('the sweep lock of a node that died mid-sweep expires; then another node sweeps', async () => {
    const dying = new RegionCoordinator({ redis: url, name: 'lock', logger: silent, nodeId: 'dying', sweepLockMs: 1000 });
    await dying.start();
    const other = new RegionCoordinator({ redis: url, name: 'lock', logger: silent, nodeId: 'other', sweepLockMs: 1000 });
    coordinators.push(other);
    await other.start();
    let entered = false;
    // A sweep that never ends, on a node that then dies (no renewal, no release).
    void dying.exclusiveSweep(100, () => {
      entered = true;
      return new Promise<never>(() => undefined);
    });
    await waitFor('the dying node to sweep', () => entered);
    await dying.close();
    const started = Date.now();
    let result: string | undefined;
    while (result === undefined && Date.now() - started < 5000) {
      result = await other.exclusiveSweep(100, async () => 'swept');
      if (result === undefined) await sleep(50);
    }
    const waited = Date.now() - started;
    assert.equal(result, 'swept', 'another node sweeps once the stale lock expired');
    assert.ok(waited >= 600, `not before the lock expired (${waited} ms)`);
  });

  it('Redis down: nothing throws, fills go alone, no sweep; logged once each way; back when Redis is', async () => {
    const { logger, messages } = recordingLogger();
    const a = await node('d1', logger);
    const b = await node('d2');
    assert.equal(a.up, true);
    await waitFor('both nodes live in the heartbeat set', () => a.liveNodes.includes('d1') && a.liveNodes.includes('d2'), 5000);
    const check = await checkRegion(url, { timeoutMs: 1000 });
    assert.equal(check.ok, true, check.detail);
    assert.ok(check.nodes?.includes('d1') && check.nodes.includes('d2'), JSON.stringify(check));
    const withPassword = await checkRegion(url.replace('127.0.0.1', 'user:hunter2@127.0.0.1'), { timeoutMs: 1000 });
    assert.equal(withPassword.ok, false, 'Redis refuses an unknown user');
    assert.ok(!withPassword.detail.includes('hunter2'), withPassword.detail);
    await redis.stop({ kill: true });
    await waitFor('the node to see Redis down', () => !a.up && !b.up);
    assert.equal(await a.claimFill(DIGEST, { token: 'd1/1', state: 'filling', partial: '/p', written: 0 }), 'alone');
    assert.equal(await a.peekFill(DIGEST), undefined);
    assert.equal(await a.pinned([DIGEST.toString()]), undefined);
    assert.equal(await a.renewFill(DIGEST, 'd1/1'), 'unknown');
    assert.equal(await a.exclusiveSweep(100, async () => 'swept'), undefined, 'no sweep without Redis');
    a.pin(DIGEST)();
    a.addBytes(5);
    const down = await checkRegion(`redis://:hunter2@127.0.0.1:${redis.port}`, { timeoutMs: 300 });
    assert.equal(down.ok, false);
    assert.ok(!down.detail.includes('hunter2'), down.detail);
    await sleep(1500);
    assert.equal(messages.filter((m) => m.startsWith('region: Redis unreachable')).length, 1, messages.join('\n'));
    await redis.start();
    await waitFor('the node to see Redis back', () => a.up && b.up, 10_000);
    assert.equal(messages.filter((m) => m.startsWith('region: Redis is back')).length, 1, messages.join('\n'));
    assert.equal(await a.claimFill(DIGEST, { token: 'd1/2', state: 'filling', partial: '/p', written: 0 }), 'led');
    await a.releaseFill(DIGEST, 'd1/2');
  });
});
