/**
 * Notifications end to end: `cascade registry` with `notifications.endpoints` POSTs distribution's event
 * envelopes to a listener in this test. skopeo pushes and pulls a generated image; the API mounts and
 * deletes; every field of every event is checked, and the configured headers and ignore rules. The listener
 * goes down while events are produced, the registry is stopped with SIGTERM and killed with SIGKILL after
 * its answers: no event is lost. A cache node reports its hits and misses as pulls.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { startCascade, testScope, type CascadeProcess } from '../lib/cascade.js';
import { pushBlob, randomBlob, sha256, startCacheNode, startCascadeOrigin, waitFor } from '../lib/cache.js';
import { makeOciImage } from '../lib/image.js';
import { freePort, skopeo } from '../lib/peers.js';
import { creds, USERS, writeUsers } from '../lib/token.js';

const EVENTS_MEDIA_TYPE = 'application/vnd.docker.distribution.events.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Event {
  id: string;
  timestamp: string;
  action: string;
  target: Record<string, unknown> & { mediaType?: string; size?: number; digest?: string; length?: number; repository?: string; url?: string; tag?: string; fromRepository?: string };
  request: { id: string; addr?: string; host?: string; method: string; useragent: string };
  actor: { name?: string };
  source: { addr?: string; instanceID?: string };
}

/** An HTTP listener in the test, on a port of its own, that can go down and come back on the same port. */
class Listener {
  readonly envelopes: Array<{ path: string; headers: IncomingHttpHeaders; events: Event[] }> = [];
  #server: Server | undefined;
  constructor(readonly port: number) {}

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: Event[] };
        assert.deepEqual(Object.keys(body), ['events']);
        this.envelopes.push({ path: req.url ?? '', headers: req.headers, events: body.events });
        res.statusCode = 200;
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.#server = server;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  events(path = '/hook'): Event[] {
    return this.envelopes.filter((e) => e.path === path).flatMap((e) => e.events);
  }
}

async function startListener(defer: (fn: () => unknown) => void, up = true): Promise<Listener> {
  const l = new Listener(await freePort());
  if (up) await l.start();
  defer(() => l.stop());
  return l;
}

const basic = (user: keyof typeof USERS) => `Basic ${Buffer.from(creds(user)).toString('base64')}`;

/** Metric value of `name{...labels}` from `/metrics`. */
async function metric(proc: CascadeProcess, name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`${proc.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((kv) => l.includes(kv)));
  return line ? Number(line.split(' ').at(-1)) : undefined;
}

/** The ids of the events waiting in an endpoint's queue folder on disk. */
async function queuedIds(rootdirectory: string, endpoint: string): Promise<string[]> {
  const dir = join(rootdirectory, 'docker/registry/v2/_cascade_events', endpoint);
  const files = (await readdir(dir)).filter((f) => f.endsWith('.log')).sort();
  const [seq, offset] = (await readFile(join(dir, 'head'), 'utf8').catch(() => '0 0')).split(' ').map(Number);
  const ids: string[] = [];
  for (const f of files) {
    const n = Number(f.slice(0, -4));
    if (n < (seq ?? 0)) continue;
    const text = (await readFile(join(dir, f), 'utf8')).slice(n === seq ? offset : 0);
    for (const line of text.split('\n')) if (line) ids.push((JSON.parse(line) as Event).id);
  }
  return ids;
}

describe('notifications', () => {
  test('a push, pulls, a mount and deletes send well-formed events in distribution\'s format, with the headers, honouring ignore rules', async (t) => {
    const work = await testScope(t, 'e2e-notify-');
    const listener = await startListener(work.defer);
    const rootdirectory = join(work.dir, 'data');
    const proc = await startCascade(work.dir, {
      storage: { filesystem: { rootdirectory }, delete: { enabled: true } },
      auth: { htpasswd: { realm: 'notify', path: await writeUsers(work.dir) } },
      notifications: {
        events: { includereferences: true },
        endpoints: [
          { name: 'ci', url: listener.url('/hook'), headers: { Authorization: ['Bearer hook-secret'], 'X-Env': ['test', 'e2e'] }, timeout: '2s', threshold: 3, backoff: '100ms' },
          { name: 'audit', url: listener.url('/audit'), ignoredmediatypes: ['application/octet-stream'], ignore: { actions: ['pull'] } },
          { name: 'off', url: listener.url('/off'), disabled: true },
        ],
      },
    });
    work.defer(() => proc.stop());
    const port = new URL(proc.url).port;
    const image = await makeOciImage(join(work.dir, 'image'), { layers: [300_000, 0], tag: 'v1', seed: 'notify' });
    const blobs = [image.image.config, ...image.image.layers];
    const started = Date.now();

    await skopeo(['copy', `--dest-creds=${creds('alice')}`, image.ref, `docker://${proc.host}/team/app:v1`]);
    await skopeo(['copy', `--src-creds=${creds('bob')}`, `docker://${proc.host}/team/app:v1`, `oci:${join(work.dir, 'out')}:v1`]);
    const layer = image.image.layers[0]!;
    const mount = await fetch(`${proc.url}/v2/other/app/blobs/uploads/?mount=${layer.digest}&from=team/app`, { method: 'POST', headers: { authorization: basic('alice'), 'user-agent': 'mount-test/1' } });
    assert.equal(mount.status, 201);
    const del = await fetch(`${proc.url}/v2/team/app/manifests/${image.digest}`, { method: 'DELETE', headers: { authorization: basic('alice'), 'user-agent': 'delete-test/1', 'x-forwarded-for': '203.0.113.9' } });
    assert.equal(del.status, 202);

    const events = await waitFor('the delete events', () => {
      const got = listener.events();
      return got.filter((e) => e.action === 'delete').length >= 2 ? got : undefined;
    });
    const ended = Date.now();

    // Common fields of every event.
    const instanceIds = new Set(events.map((e) => e.source.instanceID));
    assert.equal(instanceIds.size, 1);
    assert.match([...instanceIds][0] ?? '', UUID);
    assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'event ids are unique');
    for (const e of events) {
      assert.deepEqual(Object.keys(e), ['id', 'timestamp', 'action', 'target', 'request', 'actor', 'source']);
      assert.match(e.id, UUID);
      const at = Date.parse(e.timestamp);
      assert.ok(at >= started - 1000 && at <= ended + 1000, e.timestamp);
      assert.deepEqual(e.source, { addr: `${hostname()}:${port}`, instanceID: e.source.instanceID });
      assert.deepEqual(Object.keys(e.request), ['id', 'addr', 'host', 'method', 'useragent']);
      assert.match(e.request.id, UUID);
      assert.equal(e.request.host, proc.host);
      if (e.request.method !== 'DELETE') assert.match(e.request.addr ?? '', /^127\.0\.0\.1:\d+$/);
    }
    const at = (action: string, digest?: string) => events.filter((e) => e.action === action && (digest === undefined || e.target.digest === digest));

    // Pushes: each blob on its upload's commit (in skopeo's order), then the manifest with its tag; by alice.
    const pushes = at('push');
    assert.deepEqual(pushes.slice(0, -1).map((e) => e.target.digest).sort(), blobs.map((b) => b.digest).sort());
    assert.equal(pushes.at(-1)?.target.digest, image.digest);
    for (const b of blobs) {
      const e = pushes.find((p) => p.target.digest === b.digest)!;
      assert.deepEqual(e.target, { mediaType: 'application/octet-stream', ...(b.size ? { size: b.size } : {}), digest: b.digest, ...(b.size ? { length: b.size } : {}), repository: 'team/app', url: `http://${proc.host}/v2/team/app/blobs/${b.digest}` });
      assert.equal(e.request.method, 'PUT');
      assert.match(e.request.useragent, /skopeo|containers|go/i);
      assert.deepEqual(e.actor, { name: 'alice' });
    }
    const manifestPush = pushes.at(-1)!;
    const manifestSize = image.manifestBytes.length;
    // `includereferences`: the manifest's config and layers, as descriptors.
    const references = blobs.map((b) => ({ mediaType: b.mediaType, size: b.size, digest: b.digest }));
    assert.deepEqual(manifestPush.target, { mediaType: OCI_MANIFEST, size: manifestSize, digest: image.digest, length: manifestSize, repository: 'team/app', url: `http://${proc.host}/v2/team/app/manifests/${image.digest}`, tag: 'v1', references });
    assert.equal(manifestPush.request.method, 'PUT');
    assert.deepEqual(manifestPush.actor, { name: 'alice' });

    // Pulls: the manifest by tag, every blob (GET; a HEAD is a pull too, as in distribution), by bob.
    const manifestPulls = at('pull', image.digest);
    assert.ok(manifestPulls.length >= 1);
    assert.ok(manifestPulls.some((e) => e.target.tag === 'v1' && e.request.method === 'GET'));
    for (const e of manifestPulls) {
      assert.deepEqual({ ...e.target, tag: undefined }, { mediaType: OCI_MANIFEST, size: manifestSize, digest: image.digest, length: manifestSize, repository: 'team/app', url: `http://${proc.host}/v2/team/app/manifests/${image.digest}`, tag: undefined, references });
      assert.deepEqual(e.actor, { name: 'bob' });
    }
    for (const b of blobs) {
      const pulls = at('pull', b.digest);
      assert.ok(pulls.some((e) => e.request.method === 'GET'), `a pull of ${b.digest}`);
      for (const e of pulls) {
        assert.deepEqual(e.target, { mediaType: 'application/octet-stream', ...(b.size ? { size: b.size } : {}), digest: b.digest, ...(b.size ? { length: b.size } : {}), repository: 'team/app', url: `http://${proc.host}/v2/team/app/blobs/${b.digest}` });
        assert.deepEqual(e.actor, { name: 'bob' });
      }
    }

    // The mount, from the API.
    const [mounted, ...moreMounts] = at('mount');
    assert.equal(moreMounts.length, 0);
    assert.deepEqual(mounted?.target, { mediaType: 'application/octet-stream', size: layer.size, digest: layer.digest, length: layer.size, repository: 'other/app', fromRepository: 'team/app', url: `http://${proc.host}/v2/other/app/blobs/${layer.digest}` });
    assert.deepEqual(mounted?.request, { id: mount.headers.get('x-request-id'), addr: mounted?.request.addr, host: proc.host, method: 'POST', useragent: 'mount-test/1' });
    assert.deepEqual(mounted?.actor, { name: 'alice' });

    // The delete by digest: the manifest, then the tag that pointed at it (distribution 2.8).
    const deletes = at('delete');
    assert.deepEqual(deletes.map((e) => e.target), [{ digest: image.digest, repository: 'team/app' }, { repository: 'team/app', tag: 'v1' }]);
    for (const e of deletes) {
      assert.deepEqual(e.request, { id: del.headers.get('x-request-id'), addr: '203.0.113.9', host: proc.host, method: 'DELETE', useragent: 'delete-test/1' });
      assert.deepEqual(e.actor, { name: 'alice' });
    }
    assert.equal(events.length, pushes.length + events.filter((e) => e.action === 'pull').length + 1 + deletes.length);

    // The envelope: POSTed with distribution's media type and the configured headers, one event each.
    for (const env of listener.envelopes.filter((e) => e.path === '/hook')) {
      assert.equal(env.headers['content-type'], EVENTS_MEDIA_TYPE);
      assert.equal(env.headers.authorization, 'Bearer hook-secret');
      assert.equal(env.headers['x-env'], 'test, e2e');
      assert.equal(env.events.length, 1);
    }
    // `audit` ignores pulls and blob media types: the manifest push and the deletes; `off` gets nothing.
    const audit = await waitFor('the audit events', () => (listener.events('/audit').length >= 3 ? listener.events('/audit') : undefined));
    assert.deepEqual(audit.map((e) => [e.action, e.target.digest ?? e.target.tag]), [['push', image.digest], ['delete', image.digest], ['delete', 'v1']]);
    for (const env of listener.envelopes.filter((e) => e.path === '/audit')) assert.equal(env.headers.authorization, undefined);
    assert.equal(listener.events('/off').length, 0);
    assert.equal(await metric(proc, 'cascade_notifications_pending', 'endpoint="ci"'), 0);
    assert.equal(await metric(proc, 'cascade_notifications_events_total', 'endpoint="ci",result="sent"'), events.length);
    assert.equal(await metric(proc, 'cascade_notifications_events_total', 'endpoint="audit",result="sent"'), 3);
    // Headers are never logged.
    assert.ok(!JSON.stringify(proc.logs).includes('hook-secret'));
  });

  test('an endpoint outage, a SIGTERM and a SIGKILL after the answers lose no event; each arrives once after a clean stop', async (t) => {
    const work = await testScope(t, 'e2e-notify-outage-');
    const listener = await startListener(work.defer, false);
    const rootdirectory = join(work.dir, 'data');
    const config = {
      storage: { filesystem: { rootdirectory }, delete: { enabled: true } },
      notifications: { endpoints: [{ name: 'ci', url: listener.url('/hook'), timeout: '1s', threshold: 2, backoff: '200ms' }] },
    };
    let proc = await startCascade(work.dir, config);
    work.defer(() => proc.stop());
    const image = await makeOciImage(join(work.dir, 'image'), { layers: [100_000, 50_000], tag: 'v1', seed: 'outage' });

    // The endpoint is down: events queue on disk, the pushes are not slowed down by it.
    await skopeo(['copy', image.ref, `docker://${proc.host}/team/app:v1`]);
    const whileDown = await queuedIds(rootdirectory, 'ci');
    assert.equal(whileDown.length, 4, 'three blob pushes and the manifest push, on disk');
    assert.equal(await metric(proc, 'cascade_notifications_pending', 'endpoint="ci"'), 4);
    assert.ok(((await metric(proc, 'cascade_notifications_events_total', 'endpoint="ci",result="failed"')) ?? 0) > 0);
    const failing = proc.logs.filter((l) => l.msg?.startsWith('notification endpoint failing'));
    assert.equal(failing.length, 1, 'an outage is logged once, not per attempt');

    // It comes back: everything arrives, in order.
    await listener.start();
    await waitFor('the queued events', () => listener.events().length >= 4);
    assert.deepEqual(listener.events().map((e) => e.id), whileDown);
    await waitFor('the recovery log line', () => proc.logs.some((l) => l.msg === 'notification endpoint accepts events again'));

    // Down again; pulls and a delete queue; SIGTERM writes what is pending and the queue's head.
    await listener.stop();
    await skopeo(['copy', `docker://${proc.host}/team/app:v1`, `oci:${join(work.dir, 'out')}:v1`]);
    const del = await fetch(`${proc.url}/v2/team/app/blobs/${image.image.layers[1]!.digest}`, { method: 'DELETE' });
    assert.equal(del.status, 202);
    assert.equal(await proc.stop('SIGTERM'), 0);
    const afterTerm = await queuedIds(rootdirectory, 'ci');
    assert.ok(afterTerm.length >= 5, `pulls of the manifest and three blobs, and the delete: ${afterTerm.length}`);

    // Restarted, still down: a push answered 201 is on disk before its answer, so SIGKILL right after loses it not.
    proc = await startCascade(work.dir, config);
    const blob = randomBlob('kill', 5000);
    const digest = await pushBlob(proc.url, 'team/killed', blob);
    process.kill(proc.pid, 'SIGKILL');
    await proc.stop();
    const afterKill = await queuedIds(rootdirectory, 'ci');
    const pushed = afterKill.filter((id) => !afterTerm.includes(id));
    assert.equal(pushed.length, 1);
    assert.deepEqual(afterKill, [...afterTerm, ...pushed]);

    // Restarted with the endpoint up: everything queued arrives, in order, and nothing already delivered.
    await listener.start();
    proc = await startCascade(work.dir, config);
    await waitFor('the events queued across the restarts', () => listener.events().length >= 4 + afterKill.length, 15_000);
    await new Promise((r) => setTimeout(r, 500));
    const delivered = listener.events().map((e) => e.id);
    assert.deepEqual(delivered, [...whileDown, ...afterKill], 'none lost, none twice');
    const last = listener.events().at(-1)!;
    assert.deepEqual([last.action, last.target.digest, last.target.repository, last.target.size], ['push', digest, 'team/killed', 5000]);
    assert.notEqual(last.source.instanceID, listener.events()[0]?.source.instanceID, 'the instance id changes with each start');
    assert.equal(sha256(blob), digest);
    assert.equal(await metric(proc, 'cascade_notifications_pending', 'endpoint="ci"'), 0);
  });

  test('a cache node reports a miss and a hit as pulls', async (t) => {
    const work = await testScope(t, 'e2e-notify-cache-');
    const listener = await startListener(work.defer);
    const origin = await startCascadeOrigin(work.dir);
    work.defer(() => origin.proc?.stop());
    const cache = await startCacheNode(work.dir, 'cache', {
      origin: origin.url,
      config: { notifications: { endpoints: [{ name: 'region', url: listener.url('/hook') }] } },
    });
    work.defer(() => cache.proc?.stop());
    const blob = randomBlob('cached', 70_000);
    const digest = await pushBlob(origin.url, 'team/app', blob);
    for (const kind of ['miss', 'hit']) {
      const res = await fetch(`${cache.url}/v2/team/app/blobs/${digest}`, { headers: { 'user-agent': `cache-${kind}` } });
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    }
    const events = await waitFor('two pulls', () => (listener.events().length >= 2 ? listener.events() : undefined));
    assert.deepEqual(events.map((e) => [e.action, e.request.useragent]), [['pull', 'cache-miss'], ['pull', 'cache-hit']]);
    for (const e of events) {
      assert.deepEqual(e.target, { mediaType: 'application/octet-stream', size: 70_000, digest, length: 70_000, repository: 'team/app', url: `http://${cache.host}/v2/team/app/blobs/${digest}` });
      assert.equal(e.source.addr, `${hostname()}:${new URL(cache.url).port}`);
    }
  });

  test('a mirror reports a miss and a hit as pulls of the repository as clients name it', async (t) => {
    const work = await testScope(t, 'e2e-notify-mirror-');
    const listener = await startListener(work.defer);
    const origin = await startCascadeOrigin(work.dir);
    work.defer(() => origin.proc?.stop());
    const mirror = await startCascade(join(work.dir, 'mirror'), {
      storage: { filesystem: { rootdirectory: join(work.dir, 'mirror', 'data') } },
      proxy: { remoteurl: origin.url },
      notifications: { endpoints: [{ name: 'audit', url: listener.url('/hook') }] },
    });
    work.defer(() => mirror.stop());
    const blob = randomBlob('mirrored', 50_000);
    const digest = await pushBlob(origin.url, 'library/app', blob);
    for (const kind of ['miss', 'hit']) {
      const res = await fetch(`${mirror.url}/v2/library/app/blobs/${digest}`, { headers: { 'user-agent': `mirror-${kind}` } });
      assert.equal(res.status, 200);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    }
    const events = await waitFor('two pulls', () => (listener.events().length >= 2 ? listener.events() : undefined));
    assert.deepEqual(events.map((e) => [e.action, e.request.useragent, e.target.repository, e.target.digest]), [
      ['pull', 'mirror-miss', 'library/app', digest],
      ['pull', 'mirror-hit', 'library/app', digest],
    ]);
  });
});
