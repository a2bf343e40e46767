/**
 * The cache namespace over real HTTP: a registry-core origin and a cache app, both on real ports, with an
 * upstream that can be slowed or broken per test.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createRegistryApp,
  Digest,
  FilesystemDriver,
  InMemoryDriver,
  listen,
  loadSendfile,
  paths,
  StorageNamespace,
  type RunningServer,
  type Sendfile,
  type StorageDriver,
} from '@cascade/registry-core';
import { sha256, startFakeRegistry, type Exchange, type FakeRegistry } from '@cascade/testkit';
import { CacheNamespace } from '../src/cache.js';
import { UpstreamPool } from '../src/upstream.js';

const silent = pino({ level: 'silent' });
const sha = sha256;

/** The testkit's fake registry, its blobs answered as the test says per request: normal, slow, truncated, corrupt or 500. */
class Origin {
  fake!: FakeRegistry;
  mode: 'ok' | 'slow' | 'truncate' | 'corrupt' | 'error' = 'ok';
  chunkDelayMs = 20;
  /** The next this many GETs are cut halfway through their body (whatever the mode; 'truncate' cuts all). */
  cutNext = 0;
  /** Answers ranged GETs with the whole blob (200), as some servers do. */
  ignoreRange = false;
  /** The Range header of every ranged GET. */
  ranges: string[] = [];

  get url(): string {
    return this.fake.url;
  }

  async start(): Promise<void> {
    this.fake = await startFakeRegistry({ hook: (x) => this.answer(x) });
  }

  add(data: Buffer): string {
    return this.fake.addBlob(data);
  }

  /** GETs of a blob so far. */
  gets(digest: string): number {
    return this.fake.count(digest, 'GET');
  }

  private answer({ req, res, record, content, serve }: Exchange): boolean {
    if (record.kind !== 'blob' || content === undefined) return false;
    req.resume();
    if (this.mode === 'error') {
      res.writeHead(500).end();
      return true;
    }
    const range = req.headers.range;
    if (range !== undefined && /^bytes=(\d+)-(\d+)$/.test(range) && req.method === 'GET') this.ranges.push(range);
    void serve({
      ...(this.mode === 'corrupt' ? { bytes: Buffer.from(content.bytes).fill(0x41, 0, 16) } : {}),
      ignoreRange: this.ignoreRange,
      chunkBytes: 64 * 1024,
      ...(this.mode === 'slow' ? { chunkDelayMs: this.chunkDelayMs } : {}),
      cutHalfway: this.mode === 'truncate' || (req.method === 'GET' && this.cutNext > 0 && this.cutNext-- > 0),
    });
    return true;
  }
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

// In memory, bodies are streamed; on the filesystem they are streamed (followers read the partial file with
// positional reads) or go out with sendfile, hits and followers of a running fill alike, and the counts prove it.
for (const kind of ['in-memory, streamed', 'filesystem, streamed', 'filesystem, sendfile'] as const) describe(`cache namespace (${kind})`, () => {
  const origin = new Origin();
  let driver: StorageDriver;
  let cache: CacheNamespace;
  let server: RunningServer;
  let url = '';
  let root: string | undefined;
  const sent = { transfers: 0 };

  before(async () => {
    await origin.start();
    let sendfile: Sendfile | undefined;
    if (kind === 'in-memory, streamed') driver = new InMemoryDriver();
    else {
      root = await mkdtemp(join(tmpdir(), 'cascade-cache-test-'));
      driver = new FilesystemDriver({ rootDirectory: root });
    }
    if (kind === 'filesystem, sendfile') {
      const real = loadSendfile();
      if (typeof real === 'string') throw new Error(real);
      sendfile = { threads: real.threads, send: (...a) => (sent.transfers++, real.send(...a)) };
    }
    const upstreams = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent, deadForMs: 1 });
    cache = new CacheNamespace({ driver, upstreams, logger: silent, forwardAuthorization: true, fillTimeoutMs: 60_000, rangeAheadBytes: 1 << 20 });
    server = await listen(createRegistryApp({ namespace: cache, logger: silent, ...(sendfile ? { sendfile } : {}) }).callback(), { addr: '127.0.0.1:0' }, silent);
    url = server.url;
  });
  after(async () => {
    await server.close();
    await cache.close();
    await origin.fake.stop();
    if (root) await rm(root, { recursive: true, force: true });
    if (kind === 'filesystem, sendfile') assert.ok(sent.transfers > 20, `bodies went out with sendfile (${sent.transfers} transfers)`);
  });

  it('a miss fills from the origin and the next request is a hit', async () => {
    origin.mode = 'ok';
    const data = Buffer.alloc(3 << 20, 1);
    const d = origin.add(data);
    const first = await get(`${url}/v2/a/b/blobs/${d}`);
    assert.equal(first.status, 200);
    assert.equal(sha(first.body), d);
    const second = await get(`${url}/v2/a/b/blobs/${d}`);
    assert.equal(sha(second.body), d);
    assert.equal(origin.gets(d), 1);
    // The last byte goes out once the digest is verified; the file is synced and moved into place after.
    await cache.fills.get(Digest.parse(d))?.finished;
    assert.equal((await driver.stat(paths.blobData(Digest.parse(d)))).size, data.length);
    assert.ok(cache.metrics.hits >= 1 && cache.metrics.misses >= 1);
  });

  it('concurrent misses share one upstream fetch; late joiners get the whole blob', async () => {
    origin.mode = 'slow';
    const data = Buffer.from(Array.from({ length: 2 << 20 }, (_, i) => i % 251));
    const d = origin.add(data);
    const early = Array.from({ length: 5 }, () => get(`${url}/v2/x/blobs/${d}`));
    await new Promise((r) => setTimeout(r, 150));
    const late = Array.from({ length: 5 }, () => get(`${url}/v2/x/blobs/${d}`));
    const all = await Promise.all([...early, ...late]);
    for (const r of all) {
      assert.equal(r.status, 200);
      assert.equal(sha(r.body), d);
    }
    assert.equal(origin.gets(d), 1);
  });

  it('a range far ahead of a running fill is fetched from upstream; a range on disk is served at once', async () => {
    origin.mode = 'slow';
    origin.chunkDelayMs = 30;
    const data = Buffer.from(Array.from({ length: 4 << 20 }, (_, i) => (i * 7) % 256));
    const d = origin.add(data);
    const whole = get(`${url}/v2/x/blobs/${d}`);
    await new Promise((r) => setTimeout(r, 100));
    const tail = await get(`${url}/v2/x/blobs/${d}`, { range: `bytes=${data.length - 10}-${data.length - 1}` });
    assert.equal(tail.status, 206);
    assert.deepEqual(tail.body, data.subarray(data.length - 10));
    assert.equal(cache.metrics.rangePassthrough, 1);
    const head = await get(`${url}/v2/x/blobs/${d}`, { range: 'bytes=0-99' });
    assert.deepEqual(head.body, data.subarray(0, 100));
    assert.equal(sha((await whole).body), d);
    origin.chunkDelayMs = 20;
  });

  it('a client that disconnects does not abort the fill', async () => {
    origin.mode = 'slow';
    const data = Buffer.alloc(2 << 20, 9);
    const d = origin.add(data);
    await new Promise<void>((resolve) => {
      const req = request(`${url}/v2/x/blobs/${d}`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined).end();
    });
    const fill = cache.fills.get(Digest.parse(d));
    assert.ok(fill, 'the fill is still running');
    await fill.finished;
    assert.equal(fill.state, 'done');
    const hit = await get(`${url}/v2/x/blobs/${d}`);
    assert.equal(sha(hit.body), d);
    assert.equal(origin.gets(d), 1);
  });

  for (const mode of ['truncate', 'corrupt', 'error'] as const) {
    it(`an upstream that ${mode === 'error' ? 'answers 500' : mode === 'truncate' ? 'dies mid-stream' : 'sends wrong bytes'} stores nothing`, async () => {
      origin.mode = mode;
      const failedBefore = cache.metrics.fillsFailed;
      const data = Buffer.alloc(1 << 20, mode.length);
      const d = origin.add(data);
      const res = await get(`${url}/v2/x/blobs/${d}`).catch((err: Error) => ({ status: -1, body: Buffer.alloc(0), headers: {}, err }));
      assert.notEqual(sha(res.body), d, 'the client never gets a complete, valid-looking blob');
      assert.ok(res.body.length < data.length, `the client never gets a complete body with wrong content (got ${res.body.length} of ${data.length} bytes)`);
      if (mode === 'error') assert.equal(res.status, 502);
      await new Promise((r) => setTimeout(r, 50));
      await assert.rejects(driver.stat(paths.blobData(Digest.parse(d))), 'nothing stored');
      assert.equal(cache.metrics.fillsFailed, failedBefore + 1);
      origin.mode = 'ok';
      const again = await get(`${url}/v2/x/blobs/${d}`);
      assert.equal(again.status, 200);
      assert.equal(sha(again.body), d);
    });
  }

  it('a 404 upstream is an answer, not a failure: a range request right after it is served once the blob exists', async () => {
    const data = randomBytes(300_000);
    const d = sha(data);
    assert.equal((await get(`${url}/v2/x/blobs/${d}`)).status, 404, 'not upstream yet');
    origin.add(data);
    const res = await get(`${url}/v2/x/blobs/${d}`, { range: 'bytes=100-199' });
    assert.equal(res.status, 206);
    assert.deepEqual(res.body, data.subarray(100, 200));
  });

  it('a range request right after a fill failed on its upstream is refused at once (a downstream resume does not start another fill)', async () => {
    origin.mode = 'truncate';
    try {
      const data = randomBytes(1 << 20);
      const d = origin.add(data);
      const first = await get(`${url}/v2/x/blobs/${d}`).catch(() => ({ status: -1, body: Buffer.alloc(0) }));
      assert.ok(first.body.length < data.length, 'the first client gets a cut transfer');
      await new Promise((r) => setTimeout(r, 50));
      const gets = origin.gets(d) ?? 0;
      assert.equal(gets, 4, 'the fill made its GET and 3 resumes');
      const resume = await get(`${url}/v2/x/blobs/${d}`, { range: `bytes=${first.body.length}-${data.length - 1}` });
      assert.equal(resume.status, 502, "a downstream's resume gets 502 at once");
      assert.equal(origin.gets(d), gets, 'and costs the upstream nothing');
      // A client's new attempt (no range) starts a new fill.
      origin.mode = 'ok';
      const again = await get(`${url}/v2/x/blobs/${d}`);
      assert.equal(sha(again.body), d);
    } finally {
      origin.mode = 'ok';
    }
  });

  for (const ignoreRange of [false, true]) {
    it(`an upstream that dies mid-stream once: the fill resumes with a range request${ignoreRange ? ' (answered with the whole blob, whose first bytes are dropped)' : ''}; the client gets the blob, it is stored`, async () => {
      origin.mode = 'ok';
      origin.cutNext = 1;
      origin.ignoreRange = ignoreRange;
      origin.ranges = [];
      try {
        const failedBefore = cache.metrics.fillsFailed;
        const data = randomBytes(1 << 20);
        const d = origin.add(data);
        const res = await get(`${url}/v2/x/blobs/${d}`);
        assert.equal(res.status, 200);
        assert.equal(sha(res.body), d, 'every byte, in order, once');
        assert.equal(origin.gets(d), 2, 'the cut GET and the resumed one');
        assert.equal(origin.ranges.length, 1);
        const [start, end] = (/^bytes=(\d+)-(\d+)$/.exec(origin.ranges[0] ?? '') ?? []).slice(1).map(Number);
        assert.ok(start !== undefined && start > 0 && start <= data.length / 2, `resumed from the byte the cut GET stopped at: ${origin.ranges[0]}`);
        assert.equal(end, data.length - 1);
        assert.equal(cache.metrics.fillsFailed, failedBefore);
        await cache.fills.get(Digest.parse(d))?.finished;
        assert.equal(sha(await driver.getContent(paths.blobData(Digest.parse(d)))), d, 'the stored copy is the blob');
      } finally {
        origin.ignoreRange = false;
        origin.cutNext = 0;
      }
    });
  }

  it('a big blob: a file-backed fill hands the rest of the body to the native pump, which a cut mid-body does not stop from resuming', async () => {
    origin.mode = 'ok';
    for (const cut of [0, 1]) {
      origin.cutNext = cut;
      origin.ranges = [];
      try {
        const pumpedBefore = cache.metrics.bytesPumped;
        // Bigger than the receive ring (4 MiB): the socket pauses, the body is handed over.
        const data = randomBytes(24 << 20);
        const d = origin.add(data);
        const res = await get(`${url}/v2/x/blobs/${d}`);
        assert.equal(res.status, 200);
        assert.equal(sha(res.body), d, 'every byte, in order, once');
        assert.equal(origin.gets(d), 1 + cut);
        await cache.fills.get(Digest.parse(d))?.finished;
        assert.equal(sha(await driver.getContent(paths.blobData(Digest.parse(d)))), d, 'the stored copy is the blob');
        const pumped = cache.metrics.bytesPumped - pumpedBefore;
        // The in-memory driver has no file to hand over: its fills stay on the JavaScript path.
        if (kind === 'in-memory, streamed') assert.equal(pumped, 0);
        else assert.ok(pumped >= data.length / 2 - (4 << 20), `the native pump received ${pumped} of the ${data.length} bytes`);
        if (cut) {
          const start = Number(/^bytes=(\d+)-/.exec(origin.ranges[0] ?? '')?.[1]);
          assert.ok(start > 0 && start <= data.length / 2, `resumed from the byte the cut GET stopped at: ${origin.ranges[0]}`);
        }
      } finally {
        origin.cutNext = 0;
      }
    }
  });

  it('HEAD on a miss asks upstream without filling; unknown blobs are 404 BLOB_UNKNOWN', async () => {
    origin.mode = 'ok';
    const d = origin.add(Buffer.from('head only'));
    const res = await fetch(`${url}/v2/x/blobs/${d}`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), '9');
    assert.equal(origin.gets(d) ?? 0, 0);
    const missing = await fetch(`${url}/v2/x/blobs/${sha(Buffer.from('nope'))}`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'BLOB_UNKNOWN');
  });

  it('refuses pushes with 405 UNSUPPORTED', async () => {
    const res = await fetch(`${url}/v2/x/blobs/uploads/`, { method: 'POST' });
    assert.equal(res.status, 405);
    assert.equal(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNSUPPORTED');
  });
});

describe('cache in front of a registry-core origin', () => {
  it('passes manifests through and serves blobs of a pushed image', async (t) => {
    const originDriver = new InMemoryDriver();
    const origin = await listen(createRegistryApp({ namespace: new StorageNamespace(originDriver), logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(() => origin.close());
    const layer = Buffer.alloc(100_000, 5);
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    for (const b of [layer, config]) assert.equal((await fetch(`${origin.url}/v2/team/app/blobs/uploads/?digest=${sha(b)}`, { method: 'POST', body: b })).status, 201);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
      }),
    );
    assert.equal((await fetch(`${origin.url}/v2/team/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } })).status, 201);

    const upstreams = new UpstreamPool({ upstreamhosts: [origin.url], logger: silent });
    const cache = new CacheNamespace({ driver: new InMemoryDriver(), upstreams, logger: silent, forwardAuthorization: true });
    const server = await listen(createRegistryApp({ namespace: cache, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(async () => {
      await server.close();
      await cache.close();
    });
    const m = await fetch(`${server.url}/v2/team/app/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('docker-content-digest'), sha(manifest));
    assert.deepEqual(Buffer.from(await m.arrayBuffer()), manifest);
    const tags = (await (await fetch(`${server.url}/v2/team/app/tags/list`)).json()) as { tags: string[] };
    assert.deepEqual(tags.tags, ['v1']);
    const blob = await fetch(`${server.url}/v2/team/app/blobs/${sha(layer)}`);
    assert.equal(sha(Buffer.from(await blob.arrayBuffer())), sha(layer));
    assert.equal((await fetch(`${server.url}/v2/team/app/manifests/nope`)).status, 404);
  });
});

describe('cache with a full disk', () => {
  it('a fill that hits ENOSPC stores nothing, the client gets an error, and the node keeps serving', async (t) => {
    const origin = new Origin();
    await origin.start();
    t.after(() => origin.fake.stop());
    const inner = new InMemoryDriver();
    let full = true;
    // The in-memory driver with writers that fail like a disk with 100 KB free while `full` is set: a write
    // that would go past it fails (whatever the size of the writes).
    const failingWriter: InMemoryDriver['writer'] = async (path, options) => {
      const w = await inner.writer(path, options);
      const writev = async (chunks: readonly Uint8Array[]) => {
        if (full && w.size + chunks.reduce((n, c) => n + c.length, 0) > 100_000) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        await w.writev(chunks);
      };
      return {
        get size() {
          return w.size;
        },
        write: (chunk: Uint8Array) => writev([chunk]),
        writev,
        commit: () => w.commit(),
        cancel: () => w.cancel(),
        close: () => w.close(),
      };
    };
    const driver = new Proxy(inner, {
      get: (target, prop) => {
        if (prop === 'writer') return failingWriter;
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const upstreams = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent });
    const cache = new CacheNamespace({ driver, upstreams, logger: silent, forwardAuthorization: true });
    const server = await listen(createRegistryApp({ namespace: cache, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(async () => {
      await server.close();
      await cache.close();
    });
    const data = Buffer.alloc(1 << 20, 3);
    const d = origin.add(data);
    const res = await get(`${server.url}/v2/x/blobs/${d}`).catch(() => ({ status: -1, body: Buffer.alloc(0) }));
    assert.ok(res.body.length < data.length, 'no complete body');
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(inner.stat(paths.blobData(Digest.parse(d))), 'nothing stored');
    assert.deepEqual(await inner.list('/docker/registry/v2/_cascade_fills/sha256').catch(() => []), [], 'no partial file left');
    assert.equal(cache.metrics.fillsFailed, 1);
    assert.equal(cache.metrics.storageErrors, 1, 'counted as a storage error');
    assert.deepEqual(
      upstreams.stats().map((s) => ({ down: s.down, errors: s.errors })),
      [{ down: false, errors: 0 }],
      'the upstream is not blamed for a full disk',
    );
    full = false;
    const again = await get(`${server.url}/v2/x/blobs/${d}`);
    assert.equal(sha(again.body), d, 'once there is space, the blob is filled');
  });

  it('a disk full from the first byte: 507 before any body, every upstream left in rotation', async (t) => {
    const origins = [new Origin(), new Origin()];
    for (const o of origins) await o.start();
    t.after(() => Promise.all(origins.map((o) => o.fake.stop())));
    const inner = new InMemoryDriver();
    const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const driver = new Proxy(inner, {
      get: (target, prop) => {
        if (prop === 'writer') return async () => Promise.reject(enospc());
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const upstreams = new UpstreamPool({ upstreamhosts: [origins[0]!.url], originhost: origins[1]!.url, logger: silent });
    const cache = new CacheNamespace({ driver, upstreams, logger: silent, forwardAuthorization: true });
    const server = await listen(createRegistryApp({ namespace: cache, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
    t.after(async () => {
      await server.close();
      await cache.close();
    });
    const data = Buffer.alloc(256 << 10, 5);
    const d = origins[0]!.add(data);
    origins[1]!.add(data);
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${server.url}/v2/x/blobs/${d}`);
      assert.equal(res.status, 507, 'Insufficient Storage');
      const body = (await res.json()) as { errors: { code: string; message: string }[] };
      assert.equal(body.errors[0]?.code, 'STORAGE_FULL');
      assert.match(body.errors[0]?.message ?? '', /disk is full/);
    }
    assert.equal(cache.metrics.storageErrors, 3);
    assert.ok(upstreams.stats().every((s) => !s.down && s.errors === 0), `no upstream marked down: ${JSON.stringify(upstreams.stats())}`);
    assert.equal(upstreams.nextOrder()[0]?.url, origins[0]!.url, 'the upstream host is still tried first');
  });
});

describe('cache: GET /v2/ with auth: passthrough', () => {
  it('answers as the upstream does: its challenge to anonymous clients, 200 to good credentials, 401 to bad ones', async (t) => {
    const good = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    const upstream = await startFakeRegistry({ challenge: { scheme: 'basic', username: 'alice', password: 'pw', realm: 'origin-realm' } });
    t.after(() => upstream.stop());
    const pings = () => upstream.requests.filter((r) => r.kind === 'ping').length;
    const url = upstream.url;
    const start = async (forwardAuthorization: boolean, originhost: string) => {
      const cache = new CacheNamespace({ driver: new InMemoryDriver(), upstreams: new UpstreamPool({ upstreamhosts: [], originhost, logger: silent }), logger: silent, forwardAuthorization });
      const namespace = { repository: cache.repository.bind(cache), catalog: cache.catalog.bind(cache), ping: cache.ping.bind(cache) };
      const server = await listen(createRegistryApp({ namespace, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
      t.after(async () => {
        await server.close();
        await cache.close();
      });
      return server.url;
    };
    const passthrough = await start(true, url);
    const anonymous = await fetch(`${passthrough}/v2/`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Basic realm="origin-realm"', "the upstream's challenge");
    assert.equal((await fetch(`${passthrough}/v2/`, { headers: { authorization: good } })).status, 200);
    const wrong = await fetch(`${passthrough}/v2/`, { headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` } });
    assert.equal(wrong.status, 401);
    const before = pings();
    for (let i = 0; i < 5; i++) assert.equal((await fetch(`${passthrough}/v2/`)).status, 401);
    assert.equal(pings(), before, 'the anonymous answer is remembered, not asked upstream each time');
    // auth: none fetches without credentials: the client has nothing to send, and gets 200.
    assert.equal((await fetch(`${await start(false, url)}/v2/`)).status, 200);
    // No upstream reachable: the cache answers itself (its stored blobs can still be served).
    assert.equal((await fetch(`${await start(true, 'http://127.0.0.1:1')}/v2/`)).status, 200);
  });

  it('an upstream whose /v2/ fails, cuts its answer, stalls its body or redirects in a loop: the cache answers 200 itself and keeps serving', async (t) => {
    const modes = ['500', 'cut-before-headers', 'cut-after-headers', 'huge-header', 'redirect-loop'] as const;
    for (const mode of modes) {
      const upstream = await startFakeRegistry({
        hook: ({ req, res, record }) => {
          if (record.kind !== 'ping') return false;
          req.resume();
          if (mode === '500') res.writeHead(500).end();
          else if (mode === 'cut-before-headers') res.socket?.destroy();
          else if (mode === 'huge-header') res.writeHead(200, { 'x-huge': 'x'.repeat(100 * 1024) }).end('{}');
          else if (mode === 'redirect-loop') res.writeHead(307, { location: '/v2/' }).end();
          else {
            res.writeHead(200, { 'content-length': 1000 });
            res.flushHeaders();
            res.socket?.destroy();
          }
          return true;
        },
      });
      t.after(() => upstream.stop());
      const cache = new CacheNamespace({ driver: new InMemoryDriver(), upstreams: new UpstreamPool({ upstreamhosts: [], originhost: upstream.url, logger: silent }), logger: silent, forwardAuthorization: true });
      const namespace = { repository: cache.repository.bind(cache), catalog: cache.catalog.bind(cache), ping: cache.ping.bind(cache) };
      const server = await listen(createRegistryApp({ namespace, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
      t.after(async () => {
        await server.close();
        await cache.close();
      });
      assert.equal((await fetch(`${server.url}/v2/`)).status, 200, mode);
      assert.equal((await fetch(`${server.url}/v2/`, { headers: { authorization: 'Basic eDp5' } })).status, 200, `${mode}, with credentials`);
    }
  });
});

describe('cache namespace: one call serves a blob', () => {
  const origin = new Origin();
  let root: string;
  let server: RunningServer;
  let cache: CacheNamespace;
  /** Driver calls by method and path, since the last reset. */
  let calls: string[] = [];

  before(async () => {
    await origin.start();
    root = await mkdtemp(join(tmpdir(), 'cascade-serve-test-'));
    const real = new FilesystemDriver({ rootDirectory: root });
    const counting = new Proxy(real, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.push(`${String(prop)} ${String(args[0])}`);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const upstreams = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent });
    cache = new CacheNamespace({ driver: counting, upstreams, logger: silent, forwardAuthorization: false });
    server = await listen(createRegistryApp({ namespace: cache, logger: silent }).callback(), { addr: '127.0.0.1:0' }, silent);
  });

  after(async () => {
    await server.close();
    await cache.close();
    await origin.fake.stop();
    await rm(root, { recursive: true, force: true });
  });

  const onBlob = (digest: string) => calls.filter((c) => c.endsWith(paths.blobData(Digest.parse(digest))));

  it('a warm GET opens the blob file once and does nothing else with the disk', async () => {
    const data = randomBytes(300_000);
    const digest = origin.add(data);
    assert.deepEqual((await get(`${server.url}/v2/a/b/blobs/${digest}`)).body, data);
    // The client had its last byte once the digest was checked; the file is then synced and moved into place.
    while (cache.fills.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
    calls = [];
    const warm = await get(`${server.url}/v2/a/b/blobs/${digest}`);
    assert.deepEqual(warm.body, data);
    assert.deepEqual(calls, [`openForRead ${paths.blobData(Digest.parse(digest))}`]);
  });

  it('a cold GET looks for the blob once, then fetches it once', async () => {
    const data = randomBytes(700_000);
    const digest = origin.add(data);
    calls = [];
    assert.deepEqual((await get(`${server.url}/v2/a/b/blobs/${digest}`)).body, data);
    // The request's one look (a failed open), and the fill's check that no other fill stored it meanwhile.
    assert.deepEqual(onBlob(digest).filter((c) => !c.startsWith('move')), [`openForRead ${paths.blobData(Digest.parse(digest))}`, `stat ${paths.blobData(Digest.parse(digest))}`]);
    assert.equal(origin.gets(digest), 1);
  });

  it('HEAD of a blob not stored, and stat, start no fill: the upstream is asked for the size only', async () => {
    const data = randomBytes(50_000);
    const digest = origin.add(data);
    const head = await new Promise<{ status: number; length: string | undefined }>((resolve, reject) => {
      request(`${server.url}/v2/a/b/blobs/${digest}`, { method: 'HEAD' }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'] });
      })
        .on('error', reject)
        .end();
    });
    assert.deepEqual(head, { status: 200, length: String(data.length) });
    assert.deepEqual(await cache.repository('a/b').blobs.stat(Digest.parse(digest)), { digest: Digest.parse(digest), size: data.length });
    assert.equal(cache.fills.get(Digest.parse(digest)), undefined, 'no fill started');
    assert.equal(origin.gets(digest), 0, 'no GET upstream');
  });
});

describe('cache namespace: a blob is pinned against expiry while it is sent', () => {
  it('a miss pins its blob until the body is closed, as a hit does', async (t) => {
    // A client still reading a blob through its fill when the fill commits must keep it on disk: a sweeper (in
    // a region, another node's) removed it from under such a client (seen in the region e2e test).
    const origin = new Origin();
    await origin.start();
    t.after(() => origin.fake.stop());
    const root = await mkdtemp(join(tmpdir(), 'cascade-pin-test-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const pinned = new Map<string, number>();
    const tracker = {
      touch: () => undefined,
      pin: (digest: Digest) => {
        const key = digest.toString();
        pinned.set(key, (pinned.get(key) ?? 0) + 1);
        let done = false;
        return () => {
          if (done) return;
          done = true;
          pinned.set(key, (pinned.get(key) ?? 1) - 1);
        };
      },
    };
    const upstreams = new UpstreamPool({ upstreamhosts: [], originhost: origin.url, logger: silent });
    const cache = new CacheNamespace({ driver: new FilesystemDriver({ rootDirectory: root }), upstreams, logger: silent, forwardAuthorization: false, tracker });
    t.after(() => cache.close());
    const data = randomBytes(400_000);
    const digest = Digest.parse(origin.add(data));
    for (const kind of ['miss', 'hit']) {
      const served = await cache.repository('a/b').blobs.serve(digest, { method: 'GET' });
      assert.ok(served.body, `${kind}: a body`);
      assert.equal(pinned.get(digest.toString()), 1, `${kind}: pinned while the body is open`);
      const bytes: Buffer[] = [];
      for await (const chunk of served.body.stream()) bytes.push(chunk as Buffer);
      assert.deepEqual(Buffer.concat(bytes), data);
      served.body.close(true);
      assert.equal(pinned.get(digest.toString()), 0, `${kind}: released once the body is closed`);
      while (cache.fills.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
    }
  });
});
