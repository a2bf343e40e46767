/**
 * Warm on push, end to end: the origin's notifications reach the server's `/api/v0/events` (with the events
 * secret), a warm rule `team/` -> region-a, region-b has both caches fetch every blob of the pushed image at
 * once, through the chain (region-b -> region-a -> server -> origin), before anyone pulls; bob's first pull
 * through region-b then makes no request upstream of region-b. A cache that is down during the warm is
 * retried, reported meanwhile, and warm once it is back. Distribution 2.8.2 sends its notifications itself.
 * So does a Cascade origin (`notifications` in its config.yml), with the same section.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { startCascade, testScope, type CascadeProcess } from '../lib/cascade.js';
import { hasBlobData, waitFor } from '../lib/cache.js';
import { makeOciImage, type OciImageLayout } from '../lib/image.js';
import { freePort, skopeo } from '../lib/peers.js';
import { api, basic, startStack, USERS } from '../lib/stack.js';


const SECRET = 'warm-e2e-events-secret-0123456789';
const EVENTS_TYPE = 'application/vnd.docker.distribution.events.v1+json';

interface Job {
  id: string;
  contentCacheName: string;
  repository: string;
  digest: string | null;
  state: string;
  attempts: number;
  blobsTotal: number | null;
  blobsDone: number;
  blobsPresent: number;
  lastError: string | null;
}

/** The jobs the server keeps, as alice (an admin) reads them. */
async function jobs(server: CascadeProcess): Promise<Job[]> {
  const res = await api(server, 'GET', '/api/v0/warm_jobs', 'alice');
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return res.json as Job[];
}

/** Waits until `cache`'s job for `repository` is in `state`, and answers it. */
function jobIn(server: CascadeProcess, cache: string, repository: string, state: string, timeoutMs = 30_000): Promise<Job> {
  return waitFor(`${cache}'s warm job of ${repository} to be ${state}`, async () => (await jobs(server)).find((j) => j.contentCacheName === cache && j.repository === repository && j.state === state), timeoutMs, 200);
}

/** Posts `body` to the server's events endpoint. */
function postEvents(server: CascadeProcess, body: string, authorization?: string, contentType = EVENTS_TYPE): Promise<Response> {
  return fetch(`${server.url}/api/v0/events`, { method: 'POST', headers: { 'content-type': contentType, ...(authorization ? { authorization } : {}) }, body });
}

/** Config and layer digests of a single-platform image (the manifest itself is served by the origin). */
const blobsOf = (image: OciImageLayout): string[] => [image.image.config.digest, ...image.image.layers.map((l) => l.digest)];

/** Restarts a cache node that was stopped, on the same port, from the config file it was started with. */
async function restart(dir: string, proc: CascadeProcess): Promise<CascadeProcess> {
  const config = parse(await readFile(join(dir, 'config.yml'), 'utf8')) as Record<string, unknown>;
  return startCascade(dir, { ...config, http: { addr: proc.host } });
}

for (const originKind of ['distribution', 'cascade'] as const) describe(`warm on push, origin ${originKind}`, () => {
  it('a push warms region-a and region-b before any pull; a cache down during the warm is retried; bad events are refused', { timeout: 240_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-warm-');
    const serverPort = await freePort();
    const stack = await startStack(dir, defer, {
      originKind,
      serverAddr: `127.0.0.1:${serverPort}`,
      serverExtra: { events: { tokens: [SECRET] }, warm: { backoff: '300ms', maxbackoff: '1s', attempts: 60 } },
      originNotifications: {
        endpoints: [{ name: 'cascade-server', url: `http://127.0.0.1:${serverPort}/api/v0/events`, headers: { Authorization: [`Bearer ${SECRET}`] }, timeout: '5s', threshold: 3, backoff: '1s' }],
      },
    });
    const { server, regionA, origin } = stack;
    let regionB = stack.regionB;
    defer(() => regionB.stop());

    // The events endpoint: only with the secret, only an envelope.
    const envelope = JSON.stringify({ events: [] });
    for (const authorization of [undefined, 'Bearer wrong-secret-wrong-secret', `Basic ${Buffer.from(`x:${SECRET}`).toString('base64')}`, basic('alice')]) {
      const res = await postEvents(server, envelope, authorization);
      assert.equal(res.status, 401, `events with ${authorization ?? 'no credentials'}`);
      assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAUTHORIZED');
    }
    for (const [body, code] of [
      ['{"events": "nope"}', 'INVALID_EVENTS'],
      ['{"events": [{"action": "push"}]}', 'INVALID_EVENTS'],
      ['[1, 2]', 'INVALID_EVENTS'],
      ['{"events": [', 'INVALID_JSON'],
    ] as const) {
      const res = await postEvents(server, body, `Bearer ${SECRET}`);
      assert.equal(res.status, 400, body);
      assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code, code, body);
    }
    const ok = await postEvents(server, JSON.stringify({ events: [{ id: 'e0', action: 'pull', target: { mediaType: 'application/octet-stream' } }] }), `Bearer ${SECRET}`, 'application/json');
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { events: 1, jobs: [] });

    // Caches and the warm rule team/ -> region-a, region-b (admin only).
    const a = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-a', host: regionA.url });
    const b = await api(server, 'POST', '/api/v0/content_caches', 'alice', { name: 'region-b', host: regionB.url });
    const [aId, bId] = [(a.json as { id: string }).id, (b.json as { id: string }).id];
    assert.equal((await api(server, 'PUT', '/api/v0/warm_rules/team/', 'bob', { contentCacheUUIDs: [aId] })).status, 403);
    const rule = await api(server, 'PUT', '/api/v0/warm_rules/team/', 'alice', { contentCacheUUIDs: [bId, aId] });
    assert.equal(rule.status, 200, JSON.stringify(rule.json));
    assert.deepEqual(rule.json, { namespace: 'team', contentCacheUUIDs: [aId, bId].sort() });
    assert.equal((await api(server, 'PATCH', '/api/v0/accounts/bob/settings', 'bob', { contentCacheUUID: bId })).status, 200);

    // Alice pushes through the server; the origin's event makes both caches fetch every blob.
    const image = await makeOciImage(join(dir, 'src'), { layers: [1_500_000, 300_000], tag: 'v1', seed: 'warm-app' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, image.ref, `docker://${server.host}/team/app:v1`]);
    const [jobA, jobB] = [await jobIn(server, 'region-a', 'team/app', 'done'), await jobIn(server, 'region-b', 'team/app', 'done')];
    for (const job of [jobA, jobB]) {
      assert.equal(job.digest, image.digest);
      assert.equal(job.blobsTotal, blobsOf(image).length);
      assert.equal(job.blobsDone, blobsOf(image).length);
    }
    for (const d of blobsOf(image)) {
      assert.ok(await hasBlobData(join(dir, 'region-a-data'), d), `region-a holds ${d} before any pull`);
      assert.ok(await hasBlobData(join(dir, 'region-b-data'), d), `region-b holds ${d} before any pull`);
    }
    // One fetch per hop: the origin served each blob once (region-a's fill; region-b's came through region-a).
    for (const d of blobsOf(image)) assert.equal(origin.gets().filter((p) => p.endsWith(`/blobs/${d}`)).length, 1, `the origin served ${d} once`);

    // Bob's first pull through region-b: no request upstream of region-b.
    const aBefore = regionA.requests().length;
    const originBefore = origin.gets().filter((p) => p.includes('/blobs/')).length;
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    assert.equal(regionA.requests().slice(aBefore).filter((r) => String(r.path).includes('/blobs/')).length, 0, 'no blob request reached region-a');
    assert.equal(origin.gets().filter((p) => p.includes('/blobs/')).length, originBefore, 'no blob request reached the origin');
    const servedByB = regionB.requests().filter((r) => r.method === 'GET' && r.status === 200 && String(r.path).includes('/blobs/')).length;
    assert.ok(servedByB >= blobsOf(image).length, 'region-b served bob\'s blobs');

    // The caches' warm route takes only a grant for that repository and blob, as a blob GET does.
    const [first, second] = blobsOf(image) as [string, string];
    const redirect = await fetch(`${server.url}/v2/team/app/blobs/${first}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    assert.equal(redirect.status, 307);
    const grant = new URL(redirect.headers.get('location') ?? '').searchParams.get('grant') ?? '';
    const warmAt = (query: string, headers: Record<string, string>) => fetch(`${regionB.url}/api/v0/warm?${query}`, { method: 'POST', headers });
    assert.equal((await warmAt(`repository=team/app&digest=${first}`, {})).status, 401, 'no grant');
    assert.equal((await warmAt(`repository=team/app&digest=${first}`, { 'x-cascade-grant': 'garbage' })).status, 401, 'not a grant');
    assert.equal((await warmAt(`repository=team/app&digest=${second}`, { 'x-cascade-grant': grant })).status, 403, 'a grant for another blob');
    assert.equal((await warmAt(`repository=team/other&digest=${first}`, { 'x-cascade-grant': grant })).status, 403, 'a grant for another repository');
    assert.equal((await warmAt(`repository=team/app`, { 'x-cascade-grant': grant })).status, 400, 'no digest');
    const present = await warmAt(`repository=team/app&digest=${first}`, { 'x-cascade-grant': grant });
    assert.equal(present.status, 200);
    assert.deepEqual(await present.json(), { digest: first, size: image.image.config.size, present: true });

    // A manual warm of what region-a holds: every blob already present.
    const manual = await api(server, 'POST', `/api/v0/content_caches/${aId}/warm`, 'alice', { repository: 'team/app', reference: 'v1' });
    assert.equal(manual.status, 202, JSON.stringify(manual.json));
    const manualId = (manual.json as { id: string }).id;
    const manualDone = await waitFor('the manual warm', async () => {
      const r = await api(server, 'GET', `/api/v0/warm_jobs/${manualId}`, 'alice');
      return (r.json as Job).state === 'done' ? (r.json as Job) : undefined;
    });
    assert.equal(manualDone.blobsPresent, blobsOf(image).length);
    assert.equal((await api(server, 'GET', '/api/v0/warm_jobs', 'bob')).status, 403, 'jobs are for admins');
    assert.equal((await api(server, 'POST', `/api/v0/content_caches/${aId}/warm`, 'alice', { repository: 'Team/App', reference: 'v1' })).status, 400);

    // region-b is down during the next push: its job is retried and reported, region-a's is done.
    await regionB.stop();
    const other = await makeOciImage(join(dir, 'src2'), { layers: [400_000], tag: 'v2', seed: 'warm-other' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, other.ref, `docker://${server.host}/team/other:v2`]);
    await jobIn(server, 'region-a', 'team/other', 'done');
    const failing = await waitFor('region-b\'s job to report its failure', async () => (await jobs(server)).find((j) => j.contentCacheName === 'region-b' && j.repository === 'team/other' && j.state === 'retrying' && j.attempts >= 2));
    assert.match(failing.lastError ?? '', /region-b/);
    const metricsDown = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metricsDown, /cascade_server_warm_attempt_failures_total\{cache="region-b",role="server"\} [1-9]/);
    assert.match(metricsDown, /cascade_server_warm_jobs\{state="retrying",role="server"\} 1/);
    regionB = await restart(join(dir, 'region-b'), regionB);
    await jobIn(server, 'region-b', 'team/other', 'done');
    for (const d of blobsOf(other)) assert.ok(await hasBlobData(join(dir, 'region-b-data'), d), `region-b holds ${d} once back`);

    // Metrics: jobs, blobs and events.
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /cascade_server_warm_jobs_total\{result="done",role="server"\} 5/);
    assert.match(metrics, /cascade_server_warm_blobs_total\{result="filled",role="server"\} [1-9]/);
    assert.match(metrics, /cascade_server_events_total\{action="push",result="warm",role="server"\} 2/);

    // Deleting a cache takes it out of the rule.
    assert.equal((await api(server, 'DELETE', `/api/v0/content_caches/${aId}`, 'alice')).status, 204);
    assert.deepEqual((await api(server, 'GET', '/api/v0/warm_rules', 'bob')).json, [{ namespace: 'team', contentCacheUUIDs: [bId] }]);
    assert.equal((await api(server, 'PUT', '/api/v0/warm_rules/team', 'alice', { contentCacheUUIDs: [aId] })).status, 400, 'a rule to a deleted cache is refused');

    // The secret is never logged.
    for (const line of [...server.text, ...server.logs.map((l) => JSON.stringify(l))]) assert.ok(!line.includes(SECRET), `the events secret was logged: ${line}`);
  });
});
