/**
 * Adversarial local faults, black box: a full disk and kill -9.
 *
 * 1. Disk full: a cache node whose storage root is a small tmpfs (8 MiB, mounted by this test as root),
 *    with two healthy upstream caches (`upstreamhosts`) and an origin, is asked for a blob bigger than its
 *    free space. The client gets 507 with an OCI error body (the node looks at the free space before it
 *    answers), nothing partial is stored or served, the node stays up, the upstreams are not marked down (metrics and
 *    logs: the disk is this node's problem, not theirs), the log names a local storage error, and a small
 *    blob still fills afterwards.
 * 2. kill -9 mid-fill: a trickling upstream, SIGKILL of a node while it fills (a cache node; either hop of a
 *    chain; a mirror), restart on the same storage: no partial file left, nothing partial served (the blob is
 *    refetched and correct), every node healthy.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import {
  assertBlob,
  assertStoreIntegrity,
  blobRequests,
  blobUrl,
  cascadeHop,
  errorCodes,
  fetchBlob,
  filesNaming,
  hasBlobData,
  listFiles,
  MiB,
  randomBlob,
  settle,
  startCacheNode,
  tempLeftovers,
  waitFor,
  type BlobResponse,
  type Hop,
} from '../lib/cache.js';
import { guardTrips, startCascade, testScope } from '../lib/cascade.js';
import { startFaultUpstream, type FaultUpstream } from '../lib/fault-upstream.js';
import { freePort } from '../lib/peers.js';

const run = promisify(execFile);
const NAME = 'team/app';

function describeResponse(res: BlobResponse): string {
  const body = res.size < 2048 ? ` ${res.body?.toString().slice(0, 400) ?? ''}` : '';
  return `${res.status} ${res.complete ? 'complete' : `cut (${res.error})`} ${res.size} bytes ${res.digest}${body}`;
}

const alive = (hop: Hop): boolean => hop.proc !== undefined && hop.proc.child.exitCode === null && hop.proc.child.signalCode === null;

/** The node is running, answers GET /v2/ with 200, and no node ended on an unhandled error since `tripsBefore`. */
async function assertHealthy(hop: Hop, tripsBefore: number, context: string): Promise<void> {
  assert.ok(alive(hop), `${context}: ${hop.name} is still running (exit ${hop.proc?.child.exitCode}, signal ${hop.proc?.child.signalCode})\n${hop.proc?.text.slice(-20).join('\n')}`);
  const ping = await fetchBlob(`${hop.url}/v2/`, { timeoutMs: 5000 });
  assert.equal(ping.status, 200, `${context}: ${hop.name} GET /v2/ -> ${describeResponse(ping)}`);
  assert.deepEqual(guardTrips.slice(tripsBefore), [], `${context}: no node ended on an unhandled error`);
}

/** Prometheus samples `name{labels} value` of a node's /metrics. */
async function samples(url: string, name: string): Promise<Array<{ labels: string; value: number }>> {
  const res = await fetchBlob(`${url}/metrics`, { timeoutMs: 5000 });
  assert.equal(res.status, 200, `GET ${url}/metrics`);
  const out: Array<{ labels: string; value: number }> = [];
  for (const line of (res.body?.toString() ?? '').split('\n')) {
    const m = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) out.push({ labels: m[2] ?? '', value: Number(m[3]) });
  }
  return out;
}

/** Nothing of `digest` in the storage folder: no data file, no file naming it, no temp file; every blob file right. */
async function assertNothingOf(root: string, digest: string, context: string): Promise<void> {
  assert.equal(await hasBlobData(root, digest), false, `${context}: no blob data file for ${digest}`);
  await waitFor(`${context}: no file naming ${digest}`, async () => (await filesNaming(root, digest)).length === 0, 5000).catch(async (err: Error) => {
    err.message += `\n${(await filesNaming(root, digest)).join('\n')}`;
    throw err;
  });
  await waitFor(`${context}: no temp/partial files`, async () => (await tempLeftovers(root)).length === 0, 5000).catch(async (err: Error) => {
    err.message += `\n${(await tempLeftovers(root)).join('\n')}`;
    throw err;
  });
  await assertStoreIntegrity(root);
}

describe('adversarial: disk full', () => {
  it('a blob bigger than the free space: 507 for the client, nothing partial, upstreams not blamed, the node fills on', { timeout: 90_000 }, async (t: TestContext) => {
    if (process.getuid?.() !== 0) {
      t.skip('needs root to mount a tmpfs as the storage root');
      return;
    }
    const { dir, defer } = await testScope(t, 'adv-disk-full-');
    const root = join(dir, 'cache', 'data');
    await mkdir(root, { recursive: true });
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', root]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    // registered first, so it runs last: after the node has stopped, before the folder is removed
    defer(() => run('umount', [root]).catch(() => run('umount', ['-l', root])));

    const ups: FaultUpstream[] = [];
    for (let i = 0; i < 3; i++) {
      const up = await startFaultUpstream();
      defer(() => up.stop());
      ups.push(up);
    }
    const big = randomBlob('disk-full-big', 12 * MiB);
    const small = randomBlob('disk-full-small', 64 * 1024);
    let bigDigest = '';
    let smallDigest = '';
    for (const up of ups) {
      bigDigest = up.addBlob(big);
      smallDigest = up.addBlob(small);
    }
    const [up1, up2, origin] = ups as [FaultUpstream, FaultUpstream, FaultUpstream];
    const tripsBefore = guardTrips.length;
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url, upstreamhosts: [up1.url, up2.url] });
    defer(() => cache.stop());
    const free = await statfs(root);
    assert.ok(free.bavail * free.bsize < big.length, `the tmpfs has less free space (${free.bavail * free.bsize}) than the blob (${big.length})`);

    const problems: string[] = [];
    const gets = () => ups.reduce((n, up) => n + up.count(bigDigest, 'GET'), 0);
    for (const attempt of [1, 2]) {
      const res = await fetchBlob(blobUrl(cache.url, NAME, bigDigest), { timeoutMs: 30_000 });
      t.diagnostic(`attempt ${attempt}: the client got ${describeResponse(res)}`);
      // The node looks at the free space before it answers: a blob bigger than it is a 507, never a 200 cut short.
      if (res.status !== 507) problems.push(`attempt ${attempt}: expected 507 (insufficient storage) before the body, got ${describeResponse(res)}`);
      else if (!errorCodes(res).includes('STORAGE_FULL')) problems.push(`attempt ${attempt}: the error has no OCI error body with STORAGE_FULL: ${describeResponse(res)}`);
      if (res.error && /timeout/.test(res.error)) problems.push(`attempt ${attempt}: the response hung: ${describeResponse(res)}`);
      await assertNothingOf(root, bigDigest, `after attempt ${attempt}`).catch((err: Error) => problems.push(err.message));
      if (!alive(cache)) break;
    }
    await assertHealthy(cache, tripsBefore, 'after the disk filled up').catch((err: Error) => problems.push(err.message));

    if (alive(cache)) {
      // the space of the failed fill is free again
      const after = await statfs(root);
      if (after.bavail * after.bsize < 6 * MiB) problems.push(`the failed fill's space was not released: ${after.bavail * after.bsize} bytes free\n${(await listFiles(root)).join('\n')}`);
      // the upstreams are fine: not marked down, no error counted against them
      for (const s of await samples(cache.url, 'cascade_upstream_up')) if (s.value !== 1) problems.push(`cascade_upstream_up${s.labels} = ${s.value}: an upstream was marked down for a local disk error`);
      for (const s of await samples(cache.url, 'cascade_upstream_errors_total')) if (s.value !== 0) problems.push(`cascade_upstream_errors_total${s.labels} = ${s.value}: a local disk error was counted against an upstream`);
      // a disk error is not worth fetching the blob again from every upstream
      if (gets() > 2 * 4) problems.push(`${gets()} upstream GETs of the big blob for 2 client requests`);
    }

    if (alive(cache)) {
      // a disk that is already full when the fill starts: the first write fails
      const filler = join(root, 'filler');
      await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k']).catch(() => undefined);
      const res = await fetchBlob(blobUrl(cache.url, NAME, smallDigest), { timeoutMs: 30_000 });
      t.diagnostic(`a small blob on a full disk: the client got ${describeResponse(res)}`);
      if (res.status !== 507 || !errorCodes(res).includes('STORAGE_FULL')) problems.push(`a small blob on a full disk: expected 507 with an OCI error body, got ${describeResponse(res)}`);
      await run('rm', ['-f', filler]);
      await assertNothingOf(root, smallDigest, 'after the small blob failed on a full disk').catch((err: Error) => problems.push(err.message));
      await assertHealthy(cache, tripsBefore, 'after a fill on a full disk').catch((err: Error) => problems.push(err.message));
      for (const s of await samples(cache.url, 'cascade_upstream_up')) if (s.value !== 1) problems.push(`after a fill on a full disk: cascade_upstream_up${s.labels} = ${s.value}`);
    }
    if (alive(cache)) {
      // the node fills on: a small blob fits
      await assertBlob(cache, NAME, smallDigest, small.length, 'a small blob after the disk was full').catch((err: Error) => problems.push(err.message));
      await waitFor('the small blob stored', () => hasBlobData(root, smallDigest), 5000).catch((err: Error) => problems.push(err.message));
      await assertStoreIntegrity(root).catch((err: Error) => problems.push(err.message));
    }
    const logs = cache.proc?.logs ?? [];
    const markedDown = logs.filter((l) => l.msg === 'upstream marked down');
    if (markedDown.length > 0) problems.push(`the log marks upstreams down for a local disk error:\n${markedDown.map((l) => JSON.stringify(l)).join('\n')}`);
    // a line that says, in its message, that the failure is this node's storage (not only an ENOSPC reason
    // code on an upstream's failure), and names the cause
    const storageLine = (l: (typeof logs)[number]) => /storage|disk/i.test(String(l.msg)) && /ENOSPC|no space left|disk is full|insufficient storage/i.test(JSON.stringify(l));
    if (!logs.some(storageLine)) problems.push(`no log line says the fill failed on a local storage error (ENOSPC / disk full); fill failures logged:\n${logs.filter((l) => /fill/.test(String(l.msg))).slice(-4).map((l) => JSON.stringify(l)).join('\n')}`);
    if (problems.length > 0) assert.fail(`disk full:\n- ${problems.join('\n- ')}\n${alive(cache) ? cache.diagnostics(20) : (cache.proc?.text.slice(-30).join('\n') ?? '')}`);
  });
});

/** A topology for the kill -9 test: nodes client-facing first, restartable on the same storage and port. */
interface CrashSetup {
  readonly id: string;
  readonly title: string;
  /** Which node (index, client-facing first) is killed. */
  readonly victim: number;
  start(dir: string, up: FaultUpstream, ports: number[]): Promise<Hop[]>;
  /** Restarts node `i` on its storage and port. */
  restart(dir: string, up: FaultUpstream, ports: number[], i: number): Promise<Hop>;
}

const cacheAt = (dir: string, name: string, origin: string, port: number) => startCacheNode(dir, name, { origin, config: { http: { addr: `127.0.0.1:${port}` } } });
const mirrorAt = async (dir: string, up: FaultUpstream, port: number): Promise<Hop> => {
  const rootdirectory = join(dir, 'mirror', 'data');
  const proc = await startCascade(join(dir, 'mirror'), {
    storage: { filesystem: { rootdirectory }, delete: { enabled: true } },
    proxy: { remotes: [{ url: up.url, default: true }] },
    http: { addr: `127.0.0.1:${port}` },
  });
  return cascadeHop('mirror', proc, rootdirectory);
};
const chainAt = async (dir: string, up: FaultUpstream, ports: number[], i: number): Promise<Hop> =>
  i === 0 ? cacheAt(dir, 'cache-b', `http://127.0.0.1:${ports[1]}`, ports[0]!) : cacheAt(dir, 'cache-a', up.url, ports[1]!);

/** cache-b -> cache-a -> the fake upstream: cache-a first (cache-b needs its port), returned client side first. */
const startChain = async (dir: string, up: FaultUpstream, ports: number[]): Promise<Hop[]> => {
  const a = await chainAt(dir, up, ports, 1);
  return [await chainAt(dir, up, ports, 0), a];
};

const CRASHES: readonly CrashSetup[] = [
  {
    id: 'cache',
    title: 'a cache node',
    victim: 0,
    start: async (dir, up, ports) => [await cacheAt(dir, 'cache', up.url, ports[0]!)],
    restart: (dir, up, ports) => cacheAt(dir, 'cache', up.url, ports[0]!),
  },
  {
    id: 'chain-a',
    title: 'cache-a, the upstream hop of cache-b -> cache-a',
    victim: 1,
    start: startChain,
    restart: chainAt,
  },
  {
    id: 'chain-b',
    title: 'cache-b, the client-facing hop of cache-b -> cache-a',
    victim: 0,
    start: startChain,
    restart: chainAt,
  },
  {
    id: 'mirror',
    title: 'a mirror',
    victim: 0,
    start: async (dir, up, ports) => [await mirrorAt(dir, up, ports[0]!)],
    restart: (dir, up, ports) => mirrorAt(dir, up, ports[0]!),
  },
];

describe('adversarial: kill -9 mid-fill and restart', () => {
  for (const c of CRASHES) {
    it(`SIGKILL of ${c.title} during a fill: after restart nothing partial is left or served, the blob is refetched`, { timeout: 60_000 }, async (t: TestContext) => {
      const { dir, defer } = await testScope(t, `adv-kill-${c.id}-`);
      const up = await startFaultUpstream();
      defer(() => up.stop());
      const blob = randomBlob(`kill-${c.id}`, 4 * MiB);
      // ~3.2 s to send it all
      const digest = up.addBlob(blob, { kind: 'slow', chunkBytes: 128 * 1024, intervalMs: 100 });
      const warm = randomBlob(`kill-warm-${c.id}`, 200_000);
      const warmDigest = up.addBlob(warm);
      const ports = [await freePort(), await freePort()];
      const tripsBefore = guardTrips.length;
      const nodes = await c.start(dir, up, ports);
      defer(() => Promise.all(nodes.map((n) => n.stop())));
      const entry = () => nodes[0]!;

      await assertBlob(entry(), NAME, warmDigest, warm.length, 'a committed blob before the crash');
      for (const n of nodes) await waitFor(`${n.name}: the warm blob stored`, () => hasBlobData(n.rootdirectory, warmDigest), 5000);

      const victim = nodes[c.victim]!;
      let reached!: () => void;
      const halfway = new Promise<void>((r) => (reached = r));
      const inFlight = fetchBlob(blobUrl(entry().url, NAME, digest), {
        onData: (n) => {
          if (n >= 1 * MiB) reached();
        },
        timeoutMs: 30_000,
      });
      await Promise.race([halfway, inFlight]);
      const partialDuring = (await filesNaming(victim.rootdirectory, digest)).concat(await tempLeftovers(victim.rootdirectory));
      await victim.stop('SIGKILL');
      const res = await inFlight;
      assert.ok(!(res.status === 200 && res.complete && res.digest !== digest), `never a clean 200 with wrong bytes: ${describeResponse(res)}`);
      assert.ok(!(res.status === 200 && res.complete), `the client's transfer was cut by the crash: ${describeResponse(res)}`);
      assert.ok(partialDuring.length > 0, `the test caught the fill in progress on ${victim.name} (a partial file existed)`);
      assert.equal(await hasBlobData(victim.rootdirectory, digest), false, `${victim.name}: nothing committed before the crash`);

      // the surviving hops are up; those between the client and the victim have nothing partial of the cut
      // transfer (a hop behind the victim may finish its fill: its client left, filltimeout keeps it going)
      for (const [i, n] of nodes.entries()) {
        if (n === victim) continue;
        await assertHealthy(n, tripsBefore, `${n.name}, while ${victim.name} is down`);
        if (i < c.victim) await assertNothingOf(n.rootdirectory, digest, `${n.name}, after its transfer from ${victim.name} was cut`);
        else await assertStoreIntegrity(n.rootdirectory);
      }

      const restarted = await c.restart(dir, up, ports, c.victim);
      nodes[c.victim] = restarted;
      // start-up removed the partial files of the interrupted fill, and kept the committed blob
      assert.deepEqual(await tempLeftovers(restarted.rootdirectory), [], `${restarted.name}: no temp/partial files after start-up`);
      assert.deepEqual(await filesNaming(restarted.rootdirectory, digest), [], `${restarted.name}: no file names the interrupted blob after start-up`);
      assert.deepEqual((await assertStoreIntegrity(restarted.rootdirectory)).sort(), [warmDigest], `${restarted.name}: only the committed blob is stored`);

      // nothing partial is served: the blob is fetched again, whole and right
      // GETs of the blob the victim sent to its next hop
      const victimGets = async (): Promise<number> => {
        const next = nodes[c.victim + 1];
        if (!next) return up.count(digest, 'GET');
        await settle(next);
        return blobRequests(next, digest, 'GET').length;
      };
      const fetches = await victimGets();
      up.setScenario(digest, { kind: 'ok' });
      // a fill of the surviving hop may still be finishing its own failure: let it end
      await sleep(200);
      await assertBlob(entry(), NAME, digest, blob.length, 'after the restart');
      assert.ok((await victimGets()) > fetches, `${restarted.name} refetched the blob from its upstream, it did not serve a partial file`);
      for (const n of nodes) {
        await waitFor(`${n.name}: the blob stored after the restart`, () => hasBlobData(n.rootdirectory, digest), 5000);
        assert.deepEqual((await assertStoreIntegrity(n.rootdirectory)).sort(), [digest, warmDigest].sort(), `${n.name}: the right bytes are stored`);
        await assertHealthy(n, tripsBefore, `${n.name} at the end`);
      }
      const warmFetches = up.count(warmDigest, 'GET');
      await assertBlob(entry(), NAME, warmDigest, warm.length, 'the committed blob survives the crash');
      assert.equal(up.count(warmDigest, 'GET'), warmFetches, 'and is a hit');
    });
  }
});
