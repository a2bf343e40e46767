/**
 * Mirror mode over real HTTP: registry-core origins and fake remotes (the testkit's) on real ports, a mirror started
 * in-process with `startRegistry` and the mirror middleware.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { parseConfig, startRegistry, type RegistryConfig, type RunningRegistry } from '@cascade/registry-core';
import { freePort, OCI_MANIFEST, sha256, startFakeRegistry, startRedis, type Challenge, type FakeRegistry, type FakeRegistryOptions, type RedisServer } from '@cascade/testkit';
import { mirrorMiddleware, type MirrorSettings } from '../src/mirror/middleware.js';
import type { MirrorNamespace } from '../src/mirror/namespace.js';
import { parseMirrorOptions, validateMirrorConfig, type MirrorOptions } from '../src/mirror/options.js';
import { createNode, parseNodeConfig, type NodeConfig } from '../src/node.js';
import { realmRefusal, registrableDomain, scopeOf } from '../src/registry-client/index.js';

const silent = pino({ level: 'silent' });
const sha = sha256;

const HEAD = 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {inmemory: {}}\nhttp: {addr: "127.0.0.1:0"}\n';

function config(yaml: string, checks = true): RegistryConfig {
  return parseConfig(`${HEAD}${yaml}`, 'test.yml', {}, checks ? { checks: [validateMirrorConfig] } : {}).config;
}

/** A mirror's config, loaded as `cascade registry` loads it: the options parsed once. */
function mirrorNode(yaml: string): NodeConfig & { mirror: MirrorOptions } {
  const node = parseNodeConfig(`${HEAD}${yaml}`, 'test.yml', {});
  assert.ok(node.mirror, 'a mirror config');
  return { ...node, mirror: node.mirror };
}

interface Res {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function req(url: string, init: RequestInit = {}): Promise<Res> {
  const res = await fetch(url, { redirect: 'manual', ...init });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** Pushes a one-layer image to a registry over HTTP; returns the manifest digest and the blobs. */
async function pushImage(base: string, name: string, tag: string, seed: string): Promise<{ digest: string; manifest: Buffer; layer: Buffer; layerDigest: string }> {
  const layer = Buffer.from(`layer of ${seed} `.repeat(5000));
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  for (const blob of [layer, cfg]) {
    const res = await req(`${base}/v2/${name}/blobs/uploads/?digest=${sha(blob)}`, { method: 'POST', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 201, res.body.toString());
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
    }),
  );
  const res = await req(`${base}/v2/${name}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': OCI_MANIFEST } });
  assert.equal(res.status, 201, res.body.toString());
  return { digest: sha(manifest), manifest, layer, layerDigest: sha(layer) };
}

/** A registry-core origin that counts the requests it serves. */
async function startOrigin(yaml = ''): Promise<{ reg: RunningRegistry; seen: string[] }> {
  const seen: string[] = [];
  const reg = await startRegistry({ config: config(yaml), logger: silent });
  reg.server.prependListener('request', (r: IncomingMessage) => seen.push(`${r.method} ${(r.url ?? '').split('?')[0]}`));
  return { reg, seen };
}

async function startMirror(yaml: string, settings: MirrorSettings = {}): Promise<{ reg: RunningRegistry; mirror: MirrorNamespace }> {
  const node = mirrorNode(yaml);
  let mirror: MirrorNamespace | undefined;
  const reg = await startRegistry({ config: node.config, logger: silent, middleware: [mirrorMiddleware(node.mirror, { nodeId: 'test-mirror', cas: node.cas, ...settings }, (m) => (mirror = m))] });
  return { reg, mirror: mirror as MirrorNamespace };
}

describe('mirror options', () => {
  it('reads distribution\'s form: one remote, the default', () => {
    const o = mirrorNode('proxy: {remoteurl: "https://registry-1.docker.io", ttl: 1h}').mirror;
    assert.equal(o.remotes.length, 1);
    assert.equal(o.remotes[0]?.name, 'docker.io');
    assert.equal(o.remotes[0]?.dockerHub, true);
    assert.deepEqual(o.remotes[0]?.hosts, ['registry-1.docker.io', 'docker.io', 'index.docker.io']);
    assert.equal(o.defaultRemote?.name, 'docker.io');
    assert.equal(o.ttlMs, 3600_000);
  });

  it('reads sealer\'s form: Docker Hub is the default, remotes named by host', () => {
    const o = mirrorNode('proxy:\n  remoteregistries:\n    - {url: "http://reg.test1.com:5000"}\n    - {url: "https://registry-1.docker.io"}\n').mirror;
    assert.deepEqual(o?.remotes.map((r) => r.name), ['reg.test1.com-5000', 'docker.io']);
    assert.equal(o?.defaultRemote?.name, 'docker.io');
  });

  it('reads Cascade\'s form: names, aliases, per-remote revalidation, local prefixes; no default unless one is marked', () => {
    const o = mirrorNode('proxy:\n  revalidate: 30s\n  local: [team/]\n  remotes:\n    - {url: "https://ghcr.io", name: ghcr, revalidate: 5m}\n    - {url: "https://quay.io", aliases: [Quay.Example.com]}\n').mirror;
    assert.deepEqual(o?.remotes.map((r) => [r.name, r.revalidateMs, r.hosts]), [
      ['ghcr', 300_000, ['ghcr.io']],
      ['quay.io', 30_000, ['quay.io', 'quay.example.com']],
    ]);
    assert.equal(o?.defaultRemote, undefined);
    assert.deepEqual(o?.local, ['team']);
  });

  it('refuses configs that would proxy anything or leak private content, naming the key', () => {
    const errors = (yaml: string) => parseMirrorOptions(config(yaml, false)).errors;
    assert.match(errors('proxy: {on: true}')[0] ?? '', /^proxy: expected at least one remote .*got on: true without any/);
    assert.match(errors('proxy: {remoteurl: "https://r.example", username: u, password: p}')[0] ?? '', /^proxy\.username: expected client authentication .*anonymous: true/);
    assert.deepEqual(errors('proxy: {remoteurl: "https://r.example", username: u, password: p, anonymous: true}'), []);
    assert.deepEqual(errors('auth: {htpasswd: {realm: r, path: /nonexistent}}\nproxy: {remoteurl: "https://r.example", username: u, password: p}'), []);
    assert.match(errors('proxy: {remotes: [{url: "https://a.example", username: u}]}')[0] ?? '', /^proxy\.remotes\[0\]\.password: expected it next to username/);
    assert.match(errors('proxy: {remotes: [{url: "https://a.example", name: x}, {url: "https://b.example", name: x}]}')[0] ?? '', /^proxy\.remotes\[1\]\.name: expected a name no other remote has/);
    assert.match(errors('proxy: {remotes: [{url: "https://a.example", default: true}, {url: "https://b.example", default: true}]}')[0] ?? '', /^proxy\.remotes\[1\]\.default: expected one default remote/);
    assert.match(errors('proxy: {remotes: [{url: "https://a.example", name: "A_"}]}')[0] ?? '', /^proxy\.remotes\[0\]\.name: expected a lower-case repository path component/);
    assert.match(errors('proxy: {remoteurl: "https://a.example", local: [a.example]}')[0] ?? '', /^proxy\.local\[0\]: expected a prefix that is not a remote's name/);
    assert.match(errors('proxy: {remotes: [{url: "https://a.example", cas: [/nonexistent/ca.pem]}]}')[0] ?? '', /^proxy\.remotes\[0\]\.cas\[0\]: \/nonexistent\/ca\.pem/);
  });

  describe('proxy.region (checked by the cache\'s region schema)', () => {
    const FS = 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: /srv/shared}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:0"}\n';
    const REDIS = 'redis://redis.eu-west.internal:6379/0';
    const load = (yaml: string, env: NodeJS.ProcessEnv = {}, head = FS) => parseNodeConfig(`${head}${yaml}`, 'mirror.yml', env, { checkCaFiles: false });
    const messages = (yaml: string, env: NodeJS.ProcessEnv = {}, head = FS): string[] => {
      try {
        load(yaml, env, head);
        return [];
      } catch (err) {
        return (err as Error).message.split('\n').map((l) => l.replace(/^mirror\.yml: /, ''));
      }
    };

    it('accepts a region under proxy: the mirror joins the region of its storage folder, and shares the folder', () => {
      const node = load(`proxy: {remoteurl: "https://r.example", region: {redis: "${REDIS}", name: eu-west}}`);
      assert.deepEqual(node.mirror?.region, { redis: REDIS, name: 'eu-west', storageRoot: '/srv/shared' });
      assert.equal(createNode(node, silent).sharedStorage, true, 'a mirror in a region shares its folder');
      assert.equal(createNode(load('proxy: {remoteurl: "https://r.example"}'), silent).sharedStorage, undefined);
    });

    it('CASCADE_REGION_REDIS supplies proxy.region.redis, and wins over the file', () => {
      assert.equal(load('proxy: {remoteurl: "https://r.example"}', { CASCADE_REGION_REDIS: REDIS }).mirror?.region?.redis, REDIS);
      assert.equal(load('proxy: {remoteurl: "https://r.example", region: {redis: "redis://other:6379"}}', { CASCADE_REGION_REDIS: REDIS }).mirror?.region?.redis, REDIS);
      assert.deepEqual(load('proxy: {remoteurl: "https://r.example", region: {name: eu}}', { CASCADE_REGION_REDIS: REDIS }).mirror?.region, { redis: REDIS, name: 'eu', storageRoot: '/srv/shared' });
      assert.equal(load('proxy: {remoteurl: "https://r.example"}', { CASCADE_REGION_REDIS: '' }).mirror?.region, undefined, 'empty means unset');
    });

    it('refuses a bad region, naming proxy.region and never showing the password', () => {
      const [bad, ...rest] = messages('proxy: {remoteurl: "https://r.example", region: {redis: "http://:hunter2@redis.example:6379"}}');
      assert.deepEqual(rest, []);
      assert.match(bad ?? '', /proxy\.region\.redis: expected a redis:\/\/ or rediss:\/\/ URL/);
      assert.ok(!bad?.includes('hunter2'), bad);
      const fromEnv = messages('proxy: {remoteurl: "https://r.example"}', { CASCADE_REGION_REDIS: 'http://:hunter2@x' });
      assert.equal(fromEnv.length, 1, fromEnv.join('\n'));
      assert.match(fromEnv[0] ?? '', /proxy\.region\.redis: .*\(from CASCADE_REGION_REDIS\)$/);
      assert.ok(!fromEnv[0]?.includes('hunter2'));
      assert.match(messages('proxy: {remoteurl: "https://r.example", region: {}}')[0] ?? '', /proxy\.region\.redis: expected .* \(or set CASCADE_REGION_REDIS\), got nothing$/);
      assert.match(messages('proxy: {remoteurl: "https://r.example", region: {redis: "redis://r:6379", name: "a b"}}')[0] ?? '', /proxy\.region\.name: expected a region name/);
      // The registry config's schema checks the shape (an unknown key, a value not text).
      assert.match(messages('proxy: {remoteurl: "https://r.example", region: {redis: "redis://r:6379", nodes: 3}}').join('\n'), /proxy\.region/);
    });

    it('refuses a region on storage of the process\'s memory (inmemory): the nodes share a folder', () => {
      assert.deepEqual(messages(`proxy: {remoteurl: "https://r.example", region: {redis: "${REDIS}"}}`, {}, HEAD), [
        'storage: expected storage.filesystem (a folder every node of the region mounts) because proxy.region is set, got inmemory',
      ]);
      assert.deepEqual(messages('proxy: {remoteurl: "https://r.example"}', { CASCADE_REGION_REDIS: REDIS }, HEAD), [
        'storage: expected storage.filesystem (a folder every node of the region mounts) because proxy.region is set, got inmemory',
      ]);
    });
  });

  it('reports its problems through the config loader, with the file name', () => {
    assert.throws(
      () => parseConfig('version: 0.1\nstorage: {inmemory: {}}\nproxy: {on: true}\n', 'mirror.yml', {}, { checks: [validateMirrorConfig] }),
      (err: Error) => err.message.startsWith('mirror.yml: proxy: expected at least one remote'),
    );
  });
});

describe('remote credentials', () => {
  it('accepts a realm on the remote\'s host or registrable domain only, over https unless the remote is http', () => {
    const ok = (realm: string, remote: string) => realmRefusal(new URL(realm), new URL(remote));
    assert.equal(ok('https://auth.docker.io/token', 'https://registry-1.docker.io'), undefined);
    assert.equal(ok('https://ghcr.io/token', 'https://ghcr.io'), undefined);
    assert.equal(ok('http://127.0.0.1:9/token', 'http://127.0.0.1:5000'), undefined);
    assert.match(ok('https://evil.example/token', 'https://registry-1.docker.io') ?? '', /not on the remote's domain docker\.io/);
    assert.match(ok('http://auth.docker.io/token', 'https://registry-1.docker.io') ?? '', /realm is http while the remote is https/);
    assert.match(ok('http://localhost:9/token', 'http://127.0.0.1:5000') ?? '', /not the remote's host/);
    assert.equal(registrableDomain('a.b.example.co.uk'), 'example.co.uk');
    assert.equal(scopeOf('/v2/library/alpine/blobs/sha256:00'), 'repository:library/alpine:pull');
    assert.equal(scopeOf('/v2/a/b/tags/list'), 'repository:a/b:pull');
  });
});

describe('mirror over HTTP', () => {
  let origin: { reg: RunningRegistry; seen: string[] };
  let m: { reg: RunningRegistry; mirror: MirrorNamespace };
  let image: Awaited<ReturnType<typeof pushImage>>;

  before(async () => {
    origin = await startOrigin();
    image = await pushImage(origin.reg.url, 'library/alpine', 'v1', 'one');
    m = await startMirror(`proxy:\n  local: [team]\n  remotes:\n    - {url: "${origin.reg.url}", name: hub, aliases: [docker.io], default: true, revalidate: 1h}\n    - {url: "${origin.reg.url.replace('127.0.0.1', 'localhost')}/", name: other, aliases: [other.example]}\n`);
  });
  after(async () => {
    await m?.reg.close();
    await origin?.reg.close();
  });

  const accept = { accept: OCI_MANIFEST };

  it('routes by ns, by domain, by prefix and by default, normalizing Docker Hub names', async () => {
    for (const path of ['/v2/alpine/manifests/v1', '/v2/library/alpine/manifests/v1', '/v2/hub/alpine/manifests/v1', '/v2/docker.io/library/alpine/manifests/v1', '/v2/library/alpine/manifests/v1?ns=docker.io']) {
      const res = await req(`${m.reg.url}${path}`, { headers: accept });
      assert.equal(res.status, 200, `${path}: ${res.body.toString()}`);
      assert.equal(res.headers.get('docker-content-digest'), image.digest, path);
      assert.deepEqual(res.body, image.manifest, path);
    }
    const byDomain = await req(`${m.reg.url}/v2/library/alpine/manifests/${image.digest}`, { headers: { ...accept, domain: 'other.example' } });
    assert.equal(byDomain.status, 200);
  });

  it('refuses a registry it does not proxy without contacting anything', async () => {
    const before = origin.seen.length;
    const res = await req(`${m.reg.url}/v2/library/alpine/manifests/v1?ns=quay.io`, { headers: accept });
    assert.equal(res.status, 403);
    assert.match(res.body.toString(), /"code":"DENIED".*does not proxy quay\.io/);
    assert.equal(origin.seen.length, before);
  });

  it('checks a tag at most once per revalidate interval, and stores manifests by digest for good', async () => {
    const before = origin.seen.length;
    for (let i = 0; i < 3; i++) assert.equal((await req(`${m.reg.url}/v2/alpine/manifests/v1`, { headers: accept })).status, 200);
    assert.equal((await req(`${m.reg.url}/v2/alpine/manifests/${image.digest}`, { headers: accept })).status, 200);
    assert.deepEqual(origin.seen.slice(before), [], 'a fresh tag and a stored digest cost nothing upstream');
  });

  it('serves a blob once from the remote, then from disk', async () => {
    const before = origin.seen.length;
    for (let i = 0; i < 2; i++) {
      const res = await req(`${m.reg.url}/v2/alpine/blobs/${image.layerDigest}`);
      assert.equal(res.status, 200);
      assert.equal(sha(res.body), image.layerDigest);
    }
    assert.deepEqual(origin.seen.slice(before), [`GET /v2/library/alpine/blobs/${image.layerDigest}`]);
  });

  it('serves stored bytes to another repository only after its remote confirmed the repository has them', async () => {
    const before = origin.seen.length;
    const other = await req(`${m.reg.url}/v2/library/nothere/blobs/${image.layerDigest}`);
    assert.equal(other.status, 404, 'the remote does not have the blob in library/nothere');
    assert.match(other.body.toString(), /BLOB_UNKNOWN/);
    assert.deepEqual(origin.seen.slice(before), [`HEAD /v2/library/nothere/blobs/${image.layerDigest}`]);
  });

  it('accepts pushes to local repositories and refuses them for proxied ones', async () => {
    const local = await pushImage(m.reg.url, 'team/app', 'v1', 'local');
    const got = await req(`${m.reg.url}/v2/team/app/manifests/v1`, { headers: accept });
    assert.equal(got.headers.get('docker-content-digest'), local.digest);
    const res = await req(`${m.reg.url}/v2/library/alpine/manifests/v9`, { method: 'PUT', body: image.manifest, headers: { 'content-type': OCI_MANIFEST } });
    assert.equal(res.status, 405);
    assert.match(res.body.toString(), /UNSUPPORTED.*mirror of/);
    const names = JSON.parse((await req(`${m.reg.url}/v2/_catalog`)).body.toString()) as { repositories: string[] };
    assert.ok(names.repositories.includes('team/app') && names.repositories.includes('hub/library/alpine'), JSON.stringify(names));
  });

  it('lists tags from the remote', async () => {
    await pushImage(origin.reg.url, 'library/alpine', 'v2', 'two');
    const res = await req(`${m.reg.url}/v2/alpine/tags/list`);
    assert.deepEqual(JSON.parse(res.body.toString()).tags, ['v1', 'v2']);
  });
});

describe('mirror expiry (proxy.ttl)', () => {
  it('removes manifests and blobs not used for ttl, keeps the ones used, and fetches a removed one again', async (t) => {
    const origin = await startOrigin();
    t.after(() => origin.reg.close());
    const used = await pushImage(origin.reg.url, 'app', 'used', 'used');
    const idle = await pushImage(origin.reg.url, 'app', 'idle', 'idle');
    const HOUR = 3600_000;
    let now = Date.now();
    // The sweep runs when the test says so (its timer would first fire in an hour of real time).
    const m = await startMirror(`proxy:\n  remoteurl: "${origin.reg.url}"\n  ttl: 1h\n`, { now: () => now, sweepIntervalMs: HOUR });
    t.after(() => m.reg.close());
    const expiry = m.mirror.expiry;
    assert.ok(expiry, 'proxy.ttl gives the mirror an expiry index');
    await expiry.whenReconciled();
    const pull = async (image: typeof used) => {
      const manifest = await req(`${m.reg.url}/v2/app/manifests/${image.digest}`, { headers: { accept: OCI_MANIFEST } });
      assert.equal(manifest.status, 200);
      assert.equal(sha(manifest.body), image.digest);
      const layer = await req(`${m.reg.url}/v2/app/blobs/${image.layerDigest}`);
      assert.equal(layer.status, 200);
      assert.equal(sha(layer.body), image.layerDigest);
    };
    await pull(used);
    await pull(idle);
    await expiry.flush();

    now += HOUR / 2;
    await pull(used); // served from storage: this use restarts its TTL
    await expiry.flush();

    now += HOUR / 2 + HOUR / 10;
    assert.deepEqual(await expiry.sweep(), { expired: 2, evicted: 0, bytesFreed: idle.manifest.length + idle.layer.length }, 'the idle manifest and layer');
    let before = origin.seen.length;
    await pull(used);
    assert.deepEqual(origin.seen.slice(before), [], 'what was used within the TTL is still stored');
    before = origin.seen.length;
    await pull(idle);
    assert.deepEqual(origin.seen.slice(before), [`GET /v2/app/manifests/${idle.digest}`, `GET /v2/app/blobs/${idle.layerDigest}`], 'a removed manifest and blob are fetched again');
  });
});

describe('mirror tag revalidation and outages', () => {
  it('follows a moved tag with one HEAD and one GET, and serves the stored tag with a Warning when the remote is down', async (t) => {
    const origin = await startOrigin();
    t.after(() => origin.reg.close());
    const first = await pushImage(origin.reg.url, 'app', 'latest', 'first');
    const m = await startMirror(`proxy:\n  remoteurl: "${origin.reg.url}"\n`);
    t.after(() => m.reg.close());
    const get = () => req(`${m.reg.url}/v2/app/manifests/latest`, { headers: { accept: OCI_MANIFEST } });
    assert.equal((await get()).headers.get('docker-content-digest'), first.digest);
    const second = await pushImage(origin.reg.url, 'app', 'latest', 'second');
    const mark = origin.seen.length;
    const res = await get();
    assert.equal(res.headers.get('docker-content-digest'), second.digest);
    assert.deepEqual(origin.seen.slice(mark), ['HEAD /v2/app/manifests/latest', `GET /v2/app/manifests/${second.digest}`]);
    const mark2 = origin.seen.length;
    assert.equal((await get()).headers.get('docker-content-digest'), second.digest);
    assert.deepEqual(origin.seen.slice(mark2), ['HEAD /v2/app/manifests/latest'], 'revalidate 0: a HEAD per request, no GET when unchanged');
    const blob = await req(`${m.reg.url}/v2/app/blobs/${second.layerDigest}`);
    assert.equal(blob.status, 200);

    await origin.reg.close();
    const stale = await get();
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get('docker-content-digest'), second.digest);
    assert.match(stale.headers.get('warning') ?? '', /^110 /);
    assert.equal(m.mirror.metrics.tagStale, 1);
    const byDigest = await req(`${m.reg.url}/v2/app/manifests/${second.digest}`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(byDigest.status, 200);
    assert.equal(byDigest.headers.get('warning'), null, 'a digest is never stale');
    const cachedBlob = await req(`${m.reg.url}/v2/app/blobs/${second.layerDigest}`);
    assert.equal(sha(cachedBlob.body), second.layerDigest);
    const tags = await req(`${m.reg.url}/v2/app/tags/list`);
    assert.deepEqual(JSON.parse(tags.body.toString()).tags, ['latest']);
    assert.match(tags.headers.get('warning') ?? '', /^110 /);
    const unknown = await req(`${m.reg.url}/v2/app/manifests/never-seen`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(unknown.status, 502, 'nothing stored and the remote is down');
  });

  it('shares one tag check among concurrent requests', async (t) => {
    const remote = await fakeRemote(t);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', digest: sha('c'), size: 1 }, layers: [] }));
    remote.addManifest(manifest, { name: 'app', tag: 'v1' });
    remote.delayMs = 300;
    const m = await startMirror(`proxy:\n  remoteurl: "${remote.url}"\n`);
    t.after(() => m.reg.close());
    const all = await Promise.all(Array.from({ length: 20 }, () => req(`${m.reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } })));
    assert.ok(all.every((r) => r.status === 200 && r.headers.get('docker-content-digest') === sha(manifest)));
    assert.deepEqual(
      seen(remote).map((s) => `${s.method} ${s.path}`),
      ['HEAD /v2/app/manifests/v1', `GET /v2/app/manifests/${sha(manifest)}`],
    );
  });
});

const ROBOT = { username: 'robot', password: 's3cret' };
/** A token service for robot:s3cret at the remote's `/token`. */
const TOKEN_AUTH: Challenge = { scheme: 'bearer', ...ROBOT, service: 'scripted' };

/** A remote: the testkit's fake registry, stopped after the test. */
async function fakeRemote(t: TestContext, options: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const remote = await startFakeRegistry(options);
  t.after(() => remote.stop());
  return remote;
}

/** What a remote was asked, but its token endpoint. */
const seen = (remote: FakeRegistry) => remote.requests.filter((r) => r.kind !== 'token');

/** The requests to a remote's token endpoint. */
const tokenRequests = (remote: FakeRegistry) =>
  remote.requests.filter((r) => r.kind === 'token').map((r) => ({ authorization: r.headers.authorization, scope: new URL(r.url, remote.url).searchParams.get('scope') ?? undefined }));

describe('mirror and misbehaving or protected remotes', () => {
  it('refuses a manifest whose bytes do not match the requested digest, and stores nothing', async (t) => {
    const remote = await fakeRemote(t);
    const wanted = sha('the real manifest');
    remote.addManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', digest: sha('c'), size: 1 }, layers: [] })), { digest: wanted });
    const m = await startMirror(`proxy:\n  remoteurl: "${remote.url}"\n`);
    t.after(() => m.reg.close());
    for (let i = 0; i < 2; i++) {
      const res = await req(`${m.reg.url}/v2/app/manifests/${wanted}`, { headers: { accept: OCI_MANIFEST } });
      assert.equal(res.status, 502);
      assert.match(res.body.toString(), /sent a manifest whose digest is sha256:[0-9a-f]+, not sha256:/);
    }
    assert.equal(seen(remote).filter((s) => s.method === 'GET').length, 2, 'nothing was stored: the second request asked again');
  });

  it('follows a blob redirect to another host without sending it the credentials', async (t) => {
    const bytes = Buffer.from('blob bytes from storage');
    const storage = await fakeRemote(t, {
      hook: ({ req, res }) => {
        req.resume();
        res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
        return true;
      },
    });
    const remote = await fakeRemote(t, { challenge: TOKEN_AUTH });
    remote.hook = ({ record, res }) => {
      if (record.kind !== 'blob') return false;
      res.writeHead(307, { location: `${storage.url.replace('127.0.0.1', 'localhost')}/storage/${record.digest}` }).end();
      return true;
    };
    const m2 = await startMirror(`proxy:\n  remotes: [{url: "${remote.url}", username: robot, password: s3cret, anonymous: true}]\n`);
    t.after(() => m2.reg.close());
    const res = await req(`${m2.reg.url}/v2/app/blobs/${sha(bytes)}`);
    assert.equal(res.status, 200, res.body.toString());
    assert.deepEqual(res.body, bytes);
    assert.equal(storage.requests.length, 1);
    assert.equal(storage.requests[0]?.headers.authorization, undefined, 'no credentials for the storage host');
    assert.ok(seen(remote).some((s) => s.headers.authorization?.startsWith('Bearer tok-')), 'the remote got the token');
  });

  it('gets a token with the configured credentials once and reuses it for the scope', async (t) => {
    const remote = await fakeRemote(t, { challenge: TOKEN_AUTH });
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', digest: sha('c'), size: 1 }, layers: [] }));
    remote.addManifest(manifest, { name: 'app', tag: 'v1' });
    const m = await startMirror(`proxy:\n  remotes: [{url: "${remote.url}", username: robot, password: s3cret, anonymous: true}]\n  revalidate: 0s\n`);
    t.after(() => m.reg.close());
    const all = await Promise.all(Array.from({ length: 5 }, () => req(`${m.reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } })));
    assert.ok(all.every((r) => r.status === 200), all.map((r) => r.body.toString()).join('\n'));
    for (let i = 0; i < 3; i++) assert.equal((await req(`${m.reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } })).status, 200);
    assert.equal(tokenRequests(remote).length, 1, JSON.stringify(tokenRequests(remote)));
    assert.equal(tokenRequests(remote)[0]?.scope, 'repository:app:pull');
    assert.equal(tokenRequests(remote)[0]?.authorization, `Basic ${Buffer.from('robot:s3cret').toString('base64')}`);
  });

  it('answers a Basic challenge for every request sent before it was seen, not only the first', async (t) => {
    const remote = await fakeRemote(t, { challenge: { scheme: 'basic', ...ROBOT, realm: 'scripted' } });
    remote.delayMs = 50;
    const digests = Array.from({ length: 8 }, (_, i) => {
      const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x', digest: sha(`c${i}`), size: 1 }, layers: [] }));
      return remote.addManifest(m);
    });
    const m = await startMirror(`proxy:\n  remotes: [{url: "${remote.url}", username: robot, password: s3cret, anonymous: true}]\n`);
    t.after(() => m.reg.close());
    const all = await Promise.all(digests.map((d) => req(`${m.reg.url}/v2/app/manifests/${d}`, { headers: { accept: OCI_MANIFEST } })));
    assert.deepEqual(all.map((r) => r.status), digests.map(() => 200), all.map((r) => r.body.toString()).join('\n'));
    const wrong = await startMirror(`proxy:\n  remotes: [{url: "${remote.url}", username: robot, password: wrong, anonymous: true}]\n`);
    t.after(() => wrong.reg.close());
    const refused = await req(`${wrong.reg.url}/v2/app/manifests/${digests[0]}`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(refused.status, 403, 'wrong credentials are refused once, not retried forever');
  });

  it('refuses a token realm off the remote\'s host: the credentials are never sent there', async (t) => {
    const remote = await fakeRemote(t);
    remote.challenge = { ...TOKEN_AUTH, realm: `${remote.url.replace('127.0.0.1', 'localhost')}/token` };
    remote.addManifest(Buffer.from('{}'), { name: 'app', tag: 'v1' });
    const m = await startMirror(`proxy:\n  remotes: [{url: "${remote.url}", username: robot, password: s3cret, anonymous: true}]\n`);
    t.after(() => m.reg.close());
    const res = await req(`${m.reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(res.status, 502);
    assert.match(res.body.toString(), /asked for a token from localhost:\d+, which this mirror refuses/);
    assert.equal(tokenRequests(remote).length, 0);
  });

  it('relays a refused anonymous pull as DENIED, without the remote\'s challenge', async (t) => {
    const remote = await fakeRemote(t, { challenge: TOKEN_AUTH });
    const m = await startMirror(`proxy:\n  remoteurl: "${remote.url}"\n`);
    t.after(() => m.reg.close());
    const res = await req(`${m.reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('www-authenticate'), null);
    assert.match(res.body.toString(), /DENIED/);
  });

  it('detects a mirror that is its own remote', async (t) => {
    const port = await freePort();
    const node = parseNodeConfig(`version: 0.1\nlog: {level: error}\nstorage: {inmemory: {}}\nhttp: {addr: "127.0.0.1:${port}"}\nproxy: {remoteurl: "http://127.0.0.1:${port}"}\n`, 'loop.yml', {});
    assert.ok(node.mirror);
    let mirror: MirrorNamespace | undefined;
    const reg = await startRegistry({ config: node.config, logger: silent, middleware: [mirrorMiddleware(node.mirror, { nodeId: 'loopy' }, (mm) => (mirror = mm))] });
    t.after(() => reg.close());
    const res = await req(`${reg.url}/v2/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(res.status, 508);
    assert.match(res.body.toString(), /request loop/);
    assert.equal(mirror?.metrics.loops, 1);
  });
});

describe('mirrors in a region (proxy.region, a real redis-server, one shared folder)', () => {
  let redis: RedisServer;
  let dir: string;
  const stops: Array<() => Promise<void>> = [];

  before(async () => {
    redis = await startRedis();
    dir = await mkdtemp(join(tmpdir(), 'mirror-region-unit-'));
  });
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await redis.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A mirror of `remote` in the region, on the shared folder, sweeping every 200 ms. */
  async function regionMirror(remote: string): Promise<RunningRegistry> {
    const yaml = `version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: "${join(dir, 'shared')}"}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:0"}\nproxy: {remoteurl: "${remote}", ttl: 2s, region: {redis: "${redis.url}"}}\n`;
    const node = parseNodeConfig(yaml, 'mirror.yml', {});
    assert.ok(node.mirror?.region);
    const reg = await startRegistry({ config: node.config, logger: silent, sharedStorage: true, middleware: [mirrorMiddleware(node.mirror, { cas: node.cas, sweepIntervalMs: 200 })] });
    stops.push(() => reg.close());
    return reg;
  }

  const sweeps = async (reg: RunningRegistry, result: string): Promise<number> => {
    const text = await reg.observability.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith('cascade_region_sweeps_total{') && l.includes(`result="${result}"`));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };

  it('hits on one mirror keep a blob another filled past its TTL; one sweeper for the region expires it once left alone', async () => {
    const origin = await startOrigin();
    stops.push(() => origin.reg.close());
    const image = await pushImage(origin.reg.url, 'team/app', 'v1', 'region');
    const a = await regionMirror(origin.reg.url);
    const b = await regionMirror(origin.reg.url);
    const data = join(dir, 'shared', 'docker/registry/v2/blobs/sha256', image.layerDigest.slice(7, 9), image.layerDigest.slice(7), 'data');
    const first = await req(`${a.url}/v2/team/app/blobs/${image.layerDigest}`);
    assert.equal(sha(first.body), image.layerDigest);
    // Hits on the other mirror for twice the TTL: the region's sweeper (whichever node) counts them.
    const until = Date.now() + 4000;
    while (Date.now() < until) {
      assert.equal(sha((await req(`${b.url}/v2/team/app/blobs/${image.layerDigest}`)).body), image.layerDigest);
      await sleep(300);
    }
    assert.ok(await stat(data).then(() => true, () => false), 'hits on the other mirror kept the blob past its TTL');
    assert.deepEqual(origin.seen.filter((l) => l.startsWith('GET ') && l.includes('/blobs/')), [`GET /v2/team/app/blobs/${image.layerDigest}`], 'one fill, then hits from the shared folder');
    const deadline = Date.now() + 15_000;
    while (await stat(data).then(() => true, () => false)) {
      assert.ok(Date.now() < deadline, 'the blob expires once left alone');
      await sleep(200);
    }
    // One sweep per interval for the region: the nodes take turns or one wins, and the others skip theirs.
    const ran = (await sweeps(a, 'ran')) + (await sweeps(b, 'ran'));
    const skipped = (await sweeps(a, 'skipped')) + (await sweeps(b, 'skipped'));
    assert.ok(ran > 0 && skipped > 0, `the region swept (ran ${ran}, skipped ${skipped})`);
  });
});
