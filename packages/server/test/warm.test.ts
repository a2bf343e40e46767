/**
 * Warm on push, in parts: the events envelope and which events start a warm, the events secret, the warm rules'
 * matching, and the warmer's jobs against a fake cache (progress, dedupe, retries with backoff, a final
 * failure, a deleted cache, the concurrency limit), and the events service over a real state repository.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { ContentCache } from '../src/state/repository.js';
import { SqliteStateRepository } from '../src/state/sqlite.js';
import { coveredBy, EventsTokens, eventsEnvelopeSchema, tokensOfFile, verdictOf, type RegistryEvent } from '../src/warm/events.js';
import { warmCachesFor, WarmService } from '../src/warm/service.js';
import { Warmer, type BlobWarmed, type WarmBlob, type WarmerOptions, type WarmJob } from '../src/warm/warmer.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const D3 = `sha256:${'3'.repeat(64)}`;
const MANIFEST = `sha256:${'a'.repeat(64)}`;
const silent = pino({ level: 'silent' });

const push = (over: Partial<RegistryEvent> & { target?: Record<string, unknown> } = {}): RegistryEvent =>
  eventsEnvelopeSchema.parse({
    events: [{ id: 'e1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'team/app', tag: 'v1' }, ...over }],
  }).events[0] as RegistryEvent;

describe('events envelope', () => {
  it('accepts distribution\'s envelope, with fields it does not know', () => {
    const parsed = eventsEnvelopeSchema.safeParse({
      events: [{ id: 'x', timestamp: '2030-01-01T00:00:00Z', action: 'push', target: { mediaType: 'application/octet-stream', size: 3, digest: D1, length: 3, repository: 'a', url: 'http://o/v2/a/blobs/x' }, request: { id: 'r' }, actor: {}, source: { addr: 'o:5000' } }],
      extra: true,
    });
    assert.ok(parsed.success);
  });

  it('refuses what is not an envelope', () => {
    for (const body of [{}, { events: 'x' }, { events: [{}] }, { events: [{ id: 'x' }] }, { events: [{ id: '', action: 'push' }] }, { events: [{ id: 'x', action: 'push', target: 'y' }] }, { events: Array.from({ length: 1001 }, (_, i) => ({ id: String(i), action: 'pull' })) }]) {
      assert.equal(eventsEnvelopeSchema.safeParse(body).success, false, JSON.stringify(body).slice(0, 100));
    }
  });

  it('starts a warm only for the push of a manifest with a valid repository and digest', () => {
    assert.deepEqual(verdictOf(push()), { kind: 'push', repository: 'team/app', digest: MANIFEST, tag: 'v1' });
    for (const mediaType of ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.index.v1+json']) {
      assert.equal(verdictOf(push({ target: { mediaType, digest: MANIFEST, repository: 'team/app' } })).kind, 'push', mediaType);
    }
    assert.equal(verdictOf(push({ action: 'pull' })).kind, 'ignored');
    assert.equal(verdictOf(push({ action: 'delete' })).kind, 'ignored');
    assert.equal(verdictOf(push({ target: { mediaType: 'application/octet-stream', digest: D1, repository: 'team/app' } })).kind, 'ignored', 'a blob push');
    assert.equal(verdictOf(push({ target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: 'sha256:nope', repository: 'team/app' } })).kind, 'ignored');
    assert.equal(verdictOf(push({ target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'Team/App' } })).kind, 'ignored');
    assert.equal(verdictOf(push({ target: undefined })).kind, 'ignored');
  });
});

describe('events secret', () => {
  it('accepts a configured secret as a Bearer token, nothing else', () => {
    const tokens = new EventsTokens(['first-secret-0123456789', 'second-secret-0123456789']);
    assert.ok(tokens.configured);
    assert.ok(tokens.accepts('Bearer first-secret-0123456789'));
    assert.ok(tokens.accepts('bearer   second-secret-0123456789'));
    for (const bad of [undefined, '', 'Bearer', 'Bearer first-secret', 'Basic first-secret-0123456789', 'first-secret-0123456789', 'Bearer first-secret-0123456789x']) assert.equal(tokens.accepts(bad), false, String(bad));
    const none = new EventsTokens([]);
    assert.equal(none.configured, false);
    assert.equal(none.accepts('Bearer '), false);
  });

  it('reads a token file: one per line, comments and blank lines skipped', () => {
    assert.deepEqual(tokensOfFile('# origin\nfirst-secret-0123456789\r\n\n  second-secret-0123456789  \n'), ['first-secret-0123456789', 'second-secret-0123456789']);
  });
});

describe('warm rules matching', () => {
  it('covers whole path components, and unites every matching rule', () => {
    assert.ok(coveredBy('team/app', 'team'));
    assert.ok(coveredBy('team', 'team'));
    assert.ok(coveredBy('team/sub/app', 'team/sub'));
    assert.equal(coveredBy('teamwork/app', 'team'), false);
    assert.equal(coveredBy('team', 'team/sub'), false);
    const rules = [
      { namespace: 'team', cacheIds: ['a', 'b'] },
      { namespace: 'team/sub', cacheIds: ['b', 'c'] },
      { namespace: 'other', cacheIds: ['d'] },
    ];
    assert.deepEqual(warmCachesFor(rules, 'team/sub/app').sort(), ['a', 'b', 'c']);
    assert.deepEqual(warmCachesFor(rules, 'team/app'), ['a', 'b']);
    assert.deepEqual(warmCachesFor(rules, 'teamwork/app'), []);
  });
});

/** A cache that fails while `down()` says so, and records what it was asked. */
function fakeCache(o: { down?: () => boolean; present?: Set<string>; delayMs?: number } = {}) {
  const asked: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const warmBlob = async (cache: ContentCache, _repository: string, blob: WarmBlob): Promise<BlobWarmed> => {
    asked.push(`${cache.name} ${blob.digest}`);
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      await new Promise((r) => setTimeout(r, o.delayMs ?? 1));
      if (o.down?.()) throw new Error(`content cache ${cache.name} http://127.0.0.1:1 failed: connect ECONNREFUSED`);
      const present = o.present?.has(blob.digest) ?? false;
      o.present?.add(blob.digest);
      return { present, size: blob.size };
    } finally {
      inFlight -= 1;
    }
  };
  return { asked, warmBlob, maxInFlight: () => maxInFlight };
}

const CACHE: ContentCache = { id: '11111111-1111-4111-8111-111111111111', name: 'region-a', host: 'http://127.0.0.1:1' };
const IMAGE = { digest: MANIFEST, blobs: [{ digest: D1, size: 10 }, { digest: D2, size: 20 }, { digest: D3, size: 30 }] };

function warmer(t: TestContext, over: Partial<WarmerOptions>): Warmer {
  const w = new Warmer({ resolve: async () => IMAGE, warmBlob: fakeCache().warmBlob, cacheById: async () => CACHE, logger: silent, backoffMs: 5, maxBackoffMs: 20, ...over });
  t.after(() => w.close());
  return w;
}

async function until(job: WarmJob, states: WarmJob['state'][], timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!states.includes(job.state)) {
    if (Date.now() > end) assert.fail(`job stayed ${job.state}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('warmer', () => {
  it('warms every blob, with progress; the same image on the same cache in flight is one job', async (t) => {
    const cache = fakeCache({ present: new Set([D2]) });
    const w = warmer(t, { warmBlob: cache.warmBlob });
    const { job } = w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e1' });
    assert.equal(job.state, 'queued');
    assert.equal(w.inFlight(CACHE.id), 1);
    const again = w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e2' });
    assert.equal(again.joined, true);
    assert.equal(again.job.id, job.id);
    await until(job, ['done']);
    assert.deepEqual({ blobsTotal: job.blobsTotal, blobsDone: job.blobsDone, blobsPresent: job.blobsPresent, bytesTotal: job.bytesTotal, bytesDone: job.bytesDone, attempts: job.attempts }, { blobsTotal: 3, blobsDone: 3, blobsPresent: 1, bytesTotal: 60, bytesDone: 60, attempts: 1 });
    assert.equal(cache.asked.length, 3);
    assert.equal(w.inFlight(CACHE.id), 0);
    assert.deepEqual({ filled: w.stats.blobsFilled, present: w.stats.blobsPresent, bytes: w.stats.bytesFilled, done: w.stats.jobsDone }, { filled: 2, present: 1, bytes: 40, done: 1 });
    assert.equal(w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'manual', user: 'alice' }).joined, false, 'a finished job is not joined');
  });

  it('retries a cache that is down with a doubling backoff, reports it meanwhile, and warms it once back', async (t) => {
    let down = true;
    const cache = fakeCache({ down: () => down });
    const w = warmer(t, { warmBlob: cache.warmBlob, backoffMs: 10, maxBackoffMs: 40 });
    const { job } = w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e1' });
    await until(job, ['retrying']);
    assert.match(job.lastError ?? '', /3 blobs failed; first: .*ECONNREFUSED/);
    assert.ok(job.nextAttemptAt instanceof Date);
    while (job.attempts < 3) await new Promise((r) => setTimeout(r, 2));
    assert.equal(job.blobsDone, 0);
    down = false;
    await until(job, ['done']);
    assert.equal(job.blobsDone, 3);
    assert.ok((w.stats.attemptFailures['region-a'] ?? 0) >= 2);
  });

  it('retries only the blobs that failed', async (t) => {
    let calls = 0;
    const seen: string[] = [];
    const w = warmer(t, {
      warmBlob: async (_c, _r, blob) => {
        calls += 1;
        seen.push(blob.digest);
        if (blob.digest === D3 && calls <= 3) throw new Error('fill failed');
        return { present: false, size: blob.size };
      },
    });
    const { job } = w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e1' });
    await until(job, ['done']);
    assert.equal(job.attempts, 2);
    assert.deepEqual(seen.filter((d) => d !== D3).sort(), [D1, D2], 'D1 and D2 were warmed once');
  });

  it('reports a job failed after its last attempt, and a job whose cache was deleted at once', async (t) => {
    const w = warmer(t, { attempts: 3, warmBlob: fakeCache({ down: () => true }).warmBlob });
    const { job } = w.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e1' });
    await until(job, ['failed']);
    assert.equal(job.attempts, 3);
    assert.match(job.lastError ?? '', /ECONNREFUSED/);
    assert.equal(w.stats.jobsFailed, 1);

    const gone = warmer(t, { cacheById: async () => undefined });
    const deleted = gone.enqueue(CACHE, 'team/app', MANIFEST, { kind: 'push', event: 'e1' }).job;
    await until(deleted, ['failed']);
    assert.equal(deleted.attempts, 1);
    assert.match(deleted.lastError ?? '', /deleted/);
  });

  it('retries an origin that fails to resolve the image', async (t) => {
    let fails = 2;
    const w = warmer(t, {
      resolve: async () => {
        if (fails-- > 0) throw new Error('the origin answered 503');
        return IMAGE;
      },
    });
    const { job } = w.enqueue(CACHE, 'team/app', 'v1', { kind: 'manual', user: 'alice' });
    assert.equal(job.digest, null, 'a tag is resolved by the job');
    await until(job, ['done']);
    assert.equal(job.attempts, 3);
    assert.equal(job.digest, MANIFEST);
  });

  it('keeps at most `concurrency` blob requests in flight per cache', async (t) => {
    const cache = fakeCache({ delayMs: 10 });
    const many = { digest: MANIFEST, blobs: Array.from({ length: 12 }, (_, i) => ({ digest: `sha256:${i.toString(16).padStart(64, '0')}`, size: 1 })) };
    const w = warmer(t, { concurrency: 3, resolve: async () => many, warmBlob: cache.warmBlob });
    const jobs = ['a', 'b'].map((r) => w.enqueue(CACHE, `team/${r}`, MANIFEST, { kind: 'push', event: r }).job);
    for (const job of jobs) await until(job, ['done']);
    assert.equal(cache.maxInFlight(), 3);
  });

  it('keeps the last `history` finished jobs, newest first', async (t) => {
    const w = warmer(t, { history: 2 });
    const jobs = [];
    for (const r of ['a', 'b', 'c']) {
      const { job } = w.enqueue(CACHE, `team/${r}`, MANIFEST, { kind: 'push', event: r });
      await until(job, ['done']);
      jobs.push(job);
    }
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(w.list().map((j) => j.repository), ['team/c', 'team/b']);
    assert.equal(w.get(jobs[0]!.id), undefined);
  });
});

describe('events service', () => {
  it('queues a job per cache of the matching rules, ignores what is not a manifest push, and each event id once', async (t) => {
    const state = new SqliteStateRepository(':memory:');
    t.after(() => state.close());
    const a = await state.create({ name: 'region-a', host: 'http://a' });
    const b = await state.create({ name: 'region-b', host: 'http://b' });
    await state.setWarmRule({ namespace: 'team', cacheIds: [a.id, b.id] });
    const w = warmer(t, { cacheById: (id) => state.get(id) });
    const service = new WarmService({ state, warmer: w, logger: silent });
    const envelope = eventsEnvelopeSchema.parse({
      events: [
        { id: 'm1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'team/app' } },
        { id: 'b1', action: 'push', target: { mediaType: 'application/octet-stream', digest: D1, repository: 'team/app' } },
        { id: 'p1', action: 'pull', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'team/app' } },
        { id: 'o1', action: 'push', target: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: MANIFEST, repository: 'other/app' } },
        { id: 'x1', action: 'weird', target: {} },
      ],
    });
    const receipt = await service.receive(envelope.events);
    assert.equal(receipt.events, 5);
    assert.equal(receipt.jobs.length, 2);
    assert.deepEqual(w.list().map((j) => j.cache.name).sort(), ['region-a', 'region-b']);
    const again = await service.receive(envelope.events.slice(0, 1));
    assert.deepEqual(again.jobs, [], 'an event the origin sends again is not warmed twice');
    assert.deepEqual(Object.fromEntries(service.eventCounts), { 'push warm': 1, 'push ignored': 1, 'pull ignored': 1, 'push no_rule': 1, 'other ignored': 1, 'push duplicate': 1 });
  });
});
