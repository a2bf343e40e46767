/**
 * The distribution API end to end over real HTTP on a real port: every endpoint, its success and error
 * cases, for both storage drivers.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createRegistryApp } from '../src/http/app.js';
import { listen, type RunningServer } from '../src/http/listen.js';
import { loadSendfile } from '../src/http/sendfile.js';
import { MediaType } from '../src/mediatypes.js';
import type { StorageDriver } from '../src/drivers/driver.js';
import { FilesystemDriver } from '../src/drivers/filesystem.js';
import { InMemoryDriver } from '../src/drivers/inmemory.js';
import { StorageNamespace } from '../src/store/namespace.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const silent = pino({ level: 'silent' });

interface Harness {
  url: string;
  driver: StorageDriver;
  root?: string;
}

async function start(driver: StorageDriver, deleteEnabled = true): Promise<{ server: RunningServer; url: string }> {
  await driver.recover();
  // The filesystem driver's blob bodies go out with sendfile, as they do in `cascade registry`.
  const sendfile = driver instanceof FilesystemDriver ? loadSendfile() : undefined;
  if (typeof sendfile === 'string') throw new Error(sendfile);
  const app = createRegistryApp({ namespace: new StorageNamespace(driver), logger: silent, deleteEnabled, headers: { 'X-Content-Type-Options': ['nosniff'] }, ...(sendfile ? { sendfile } : {}) });
  const server = await listen(app.callback(), { addr: '127.0.0.1:0' }, silent);
  return { server, url: server.url };
}

/** A request with the path exactly as given (fetch would normalise `..`). */
function rawRequest(url: string, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const req = request({ host: hostname, port, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}

describe('request targets', () => {
  let server: RunningServer;
  before(async () => {
    ({ server } = await start(new InMemoryDriver()));
  });
  after(() => server.close(100));

  it('absolute-form and asterisk-form targets get 400 REQUEST_INVALID: the registry is no proxy', async () => {
    for (const path of ['http://127.0.0.1:1/v2/', 'https://example.invalid/v2/team/app/tags/list', '*']) {
      for (const method of ['GET', 'OPTIONS', 'PUT']) {
        const res = await rawRequest(server.url, method, path);
        assert.equal(res.status, 400, `${method} ${path}: ${res.body}`);
        assert.equal((JSON.parse(res.body) as { errors: { code: string }[] }).errors[0]?.code, 'REQUEST_INVALID', `${method} ${path}`);
      }
    }
    assert.equal((await fetch(`${server.url}/v2/`)).status, 200, 'origin-form requests are served');
  });
});

async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors: Array<{ code: string }> };
  assert.ok(Array.isArray(body.errors) && body.errors.length > 0, 'OCI error envelope');
  return body.errors[0]!.code;
}

async function pushBlob(url: string, repo: string, data: Buffer): Promise<string> {
  const digest = sha(data);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(res.status, 201, await res.text());
  return digest;
}

function imageManifest(config: { digest: string; size: number }, layers: Array<{ digest: string; size: number }>, extra: Record<string, unknown> = {}) {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
      ...extra,
    }),
  );
}

async function pushImage(url: string, repo: string, tag: string, seed: string) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = Buffer.from(`layer-${seed}-`.repeat(1000));
  const configDigest = await pushBlob(url, repo, config);
  const layerDigest = await pushBlob(url, repo, layer);
  const manifest = imageManifest({ digest: configDigest, size: config.length }, [{ digest: layerDigest, size: layer.length }]);
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': MediaType.OciManifest } });
  assert.equal(res.status, 201, await res.text());
  return { manifest, digest: sha(manifest), configDigest, layerDigest, layer, config };
}

for (const kind of ['filesystem', 'inmemory'] as const) {
  describe(`registry API (${kind} storage)`, () => {
    const h: Harness = { url: '', driver: new InMemoryDriver() };
    let server: RunningServer;
    before(async () => {
      if (kind === 'filesystem') {
        h.root = await mkdtemp(join(tmpdir(), 'cascade-api-'));
        h.driver = new FilesystemDriver({ rootDirectory: h.root });
      }
      const s = await start(h.driver);
      server = s.server;
      h.url = s.url;
    });
    after(async () => {
      await server.close();
      if (h.root) await rm(h.root, { recursive: true, force: true });
    });

    it('GET /v2/ answers 200 with the API version header and configured headers', async () => {
      const res = await fetch(`${h.url}/v2/`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.deepEqual(await res.json(), {});
      assert.equal((await fetch(`${h.url}/v2`, { method: 'HEAD' })).status, 200);
    });

    it('unknown paths get 404 and unknown methods 405, in the OCI envelope', async () => {
      const res = await fetch(`${h.url}/v2/a/nothing/here`);
      assert.equal(res.status, 404);
      assert.equal(await errorCode(res), 'NOT_FOUND');
      const m = await fetch(`${h.url}/v2/a/tags/list`, { method: 'POST' });
      assert.equal(m.status, 405);
      assert.equal(await errorCode(m), 'UNSUPPORTED');
      assert.equal(m.headers.get('allow'), 'GET');
    });

    it('malformed names get 400 NAME_INVALID', async () => {
      for (const name of ['UPPER', 'a/../b', 'x'.repeat(256), 'a//b', '_a', 'a/./b']) {
        const res = await rawRequest(h.url, 'GET', `/v2/${name}/tags/list`);
        assert.equal(res.status, 400, name);
        assert.equal((JSON.parse(res.body) as { errors: Array<{ code: string }> }).errors[0]?.code, 'NAME_INVALID', name);
      }
    });

    describe('blobs', () => {
      const repo = 'blobs/test';
      const data = Buffer.from('0123456789abcdefghij');
      let digest: string;
      before(async () => {
        digest = await pushBlob(h.url, repo, data);
      });

      it('monolithic POST with digest stores the blob (201, Location, Docker-Content-Digest)', async () => {
        const d = Buffer.from('monolithic');
        const res = await fetch(`${h.url}/v2/${repo}/blobs/uploads/?digest=${sha(d)}`, { method: 'POST', body: d });
        assert.equal(res.status, 201);
        assert.equal(res.headers.get('location'), `/v2/${repo}/blobs/${sha(d)}`);
        assert.equal(res.headers.get('docker-content-digest'), sha(d));
        assert.equal(await res.text(), '');
      });

      it('GET returns the bytes with digest headers; HEAD the headers only', async () => {
        const res = await fetch(`${h.url}/v2/${repo}/blobs/${digest}`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('docker-content-digest'), digest);
        assert.equal(res.headers.get('content-length'), String(data.length));
        assert.equal(res.headers.get('content-type'), 'application/octet-stream');
        assert.deepEqual(Buffer.from(await res.arrayBuffer()), data);
        const head = await fetch(`${h.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.equal(head.headers.get('content-length'), String(data.length));
        assert.equal(head.headers.get('docker-content-digest'), digest);
      });

      it('Range requests get 206 with the slice; unsatisfiable ones 416', async () => {
        const res = await fetch(`${h.url}/v2/${repo}/blobs/${digest}`, { headers: { range: 'bytes=5-9' } });
        assert.equal(res.status, 206);
        assert.equal(res.headers.get('content-range'), `bytes 5-9/${data.length}`);
        assert.equal(await res.text(), '56789');
        const suffix = await fetch(`${h.url}/v2/${repo}/blobs/${digest}`, { headers: { range: 'bytes=-3' } });
        assert.equal(await suffix.text(), 'hij');
        const bad = await fetch(`${h.url}/v2/${repo}/blobs/${digest}`, { headers: { range: 'bytes=100-' } });
        assert.equal(bad.status, 416);
        assert.equal(bad.headers.get('content-range'), `bytes */${data.length}`);
        assert.equal(await errorCode(bad), 'RANGE_INVALID');
      });

      it('unknown blobs get 404 BLOB_UNKNOWN, also from another repository', async () => {
        const res = await fetch(`${h.url}/v2/${repo}/blobs/${sha('nope')}`);
        assert.equal(res.status, 404);
        assert.equal(await errorCode(res), 'BLOB_UNKNOWN');
        const other = await fetch(`${h.url}/v2/other/repo/blobs/${digest}`);
        assert.equal(other.status, 404, 'a blob is visible only in repositories it was pushed or mounted to');
        const head = await fetch(`${h.url}/v2/${repo}/blobs/${sha('nope')}`, { method: 'HEAD' });
        assert.equal(head.status, 404);
      });

      it('malformed and unsupported digests get 400 DIGEST_INVALID', async () => {
        for (const d of ['sha256:abc', 'md5:d41d8cd98f00b204e9800998ecf8427e', 'nodigest', `sha256:${'A'.repeat(64)}`]) {
          const res = await fetch(`${h.url}/v2/${repo}/blobs/${d}`);
          assert.equal(res.status, 400, d);
          assert.equal(await errorCode(res), 'DIGEST_INVALID', d);
        }
      });

      it('a digest mismatch on upload gets 400 DIGEST_INVALID and stores nothing', async () => {
        const body = Buffer.from('the real content');
        const claimed = sha('other content');
        const res = await fetch(`${h.url}/v2/${repo}/blobs/uploads/?digest=${claimed}`, { method: 'POST', body });
        assert.equal(res.status, 400);
        assert.equal(await errorCode(res), 'DIGEST_INVALID');
        assert.equal((await fetch(`${h.url}/v2/${repo}/blobs/${claimed}`)).status, 404);
        assert.equal((await fetch(`${h.url}/v2/${repo}/blobs/${sha(body)}`)).status, 404);
        const uploads = await h.driver.list(`/docker/registry/v2/repositories/${repo}/_uploads`).catch(() => []);
        assert.deepEqual(uploads, [], 'no upload session left behind');
      });

      it('POST then PUT with the whole body', async () => {
        const body = Buffer.from('post-then-put');
        const post = await fetch(`${h.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        assert.equal(post.status, 202);
        const location = post.headers.get('location')!;
        assert.match(location, new RegExp(`^/v2/${repo}/blobs/uploads/[0-9a-f-]{36}$`));
        assert.equal(post.headers.get('range'), '0-0');
        assert.ok(post.headers.get('docker-upload-uuid'));
        const put = await fetch(`${h.url}${location}?digest=${sha(body)}`, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' } });
        assert.equal(put.status, 201, await put.text());
        assert.equal(put.headers.get('docker-content-digest'), sha(body));
        assert.deepEqual(Buffer.from(await (await fetch(`${h.url}/v2/${repo}/blobs/${sha(body)}`)).arrayBuffer()), body);
      });

      it('chunked PATCH uploads with Content-Range, status GET, and 416 on out-of-order chunks', async () => {
        const chunks = [Buffer.from('aaaa'), Buffer.from('bbbbbb'), Buffer.from('cc')];
        const whole = Buffer.concat(chunks);
        const post = await fetch(`${h.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        let location = post.headers.get('location')!;
        let offset = 0;
        for (const [i, chunk] of chunks.entries()) {
          if (i === 1) {
            const wrong = await fetch(`${h.url}${location}`, { method: 'PATCH', body: chunk, headers: { 'content-range': `${offset + 1}-${offset + chunk.length}`, 'content-type': 'application/octet-stream' } });
            assert.equal(wrong.status, 416);
            assert.equal(await errorCode(wrong), 'RANGE_INVALID');
            assert.equal(wrong.headers.get('range'), `0-${offset - 1}`);
          }
          const res = await fetch(`${h.url}${location}`, { method: 'PATCH', body: chunk, headers: { 'content-range': `${offset}-${offset + chunk.length - 1}`, 'content-type': 'application/octet-stream' } });
          assert.equal(res.status, 202, await res.text());
          offset += chunk.length;
          assert.equal(res.headers.get('range'), `0-${offset - 1}`);
          location = res.headers.get('location')!;
        }
        const status = await fetch(`${h.url}${location}`);
        assert.equal(status.status, 204);
        assert.equal(status.headers.get('range'), `0-${whole.length - 1}`);
        const put = await fetch(`${h.url}${location}?digest=${sha(whole)}`, { method: 'PUT' });
        assert.equal(put.status, 201, await put.text());
        assert.equal(await (await fetch(`${h.url}/v2/${repo}/blobs/${sha(whole)}`)).text(), whole.toString());
        assert.equal((await fetch(`${h.url}${location}`)).status, 404, 'the session is gone after commit');
      });

      it('PATCH without Content-Range appends (streamed chunk), then PUT with a final chunk', async () => {
        const post = await fetch(`${h.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        const location = post.headers.get('location')!;
        const first = Buffer.alloc(3 * 1024 * 1024, 7);
        const res = await fetch(`${h.url}${location}`, { method: 'PATCH', body: first });
        assert.equal(res.status, 202);
        const last = Buffer.from('tail');
        const whole = Buffer.concat([first, last]);
        const put = await fetch(`${h.url}${location}?digest=${sha(whole)}`, { method: 'PUT', body: last, headers: { 'content-range': `${first.length}-${whole.length - 1}` } });
        assert.equal(put.status, 201, await put.text());
      });

      it('PUT without digest gets DIGEST_INVALID; a wrong digest removes the session', async () => {
        const post = await fetch(`${h.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        const location = post.headers.get('location')!;
        await fetch(`${h.url}${location}`, { method: 'PATCH', body: 'xyz' });
        const none = await fetch(`${h.url}${location}`, { method: 'PUT' });
        assert.equal(none.status, 400);
        assert.equal(await errorCode(none), 'DIGEST_INVALID');
        const wrong = await fetch(`${h.url}${location}?digest=${sha('abc')}`, { method: 'PUT' });
        assert.equal(wrong.status, 400);
        assert.equal(await errorCode(wrong), 'DIGEST_INVALID');
        assert.equal((await fetch(`${h.url}${location}`)).status, 404);
      });

      it('DELETE cancels an upload; unknown sessions get 404 BLOB_UPLOAD_UNKNOWN', async () => {
        const post = await fetch(`${h.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
        const location = post.headers.get('location')!;
        assert.equal((await fetch(`${h.url}${location}`, { method: 'DELETE' })).status, 204);
        const gone = await fetch(`${h.url}${location}`);
        assert.equal(gone.status, 404);
        assert.equal(await errorCode(gone), 'BLOB_UPLOAD_UNKNOWN');
        for (const id of ['not-a-uuid', '00000000-0000-4000-8000-000000000000']) {
          const res = await fetch(`${h.url}/v2/${repo}/blobs/uploads/${id}`, { method: 'PATCH', body: 'x' });
          assert.equal(res.status, 404, id);
          assert.equal(await errorCode(res), 'BLOB_UPLOAD_UNKNOWN');
        }
      });

      it('cross-repository mount links an existing blob (201) and falls back to a session (202)', async () => {
        const res = await fetch(`${h.url}/v2/mounted/repo/blobs/uploads/?mount=${digest}&from=${repo}`, { method: 'POST' });
        assert.equal(res.status, 201);
        assert.equal(res.headers.get('location'), `/v2/mounted/repo/blobs/${digest}`);
        assert.equal(await (await fetch(`${h.url}/v2/mounted/repo/blobs/${digest}`)).text(), data.toString());
        const miss = await fetch(`${h.url}/v2/mounted/repo/blobs/uploads/?mount=${sha('absent')}&from=${repo}`, { method: 'POST' });
        assert.equal(miss.status, 202);
        assert.match(miss.headers.get('location')!, /\/blobs\/uploads\//);
        const badFrom = await fetch(`${h.url}/v2/mounted/repo/blobs/uploads/?mount=${digest}&from=BAD`, { method: 'POST' });
        assert.equal(badFrom.status, 400);
        assert.equal(await errorCode(badFrom), 'NAME_INVALID');
      });

      it('DELETE of a blob removes it from the repository (202), then 404', async () => {
        const d = await pushBlob(h.url, 'del/blob', Buffer.from('to delete'));
        const res = await fetch(`${h.url}/v2/del/blob/blobs/${d}`, { method: 'DELETE' });
        assert.equal(res.status, 202);
        assert.equal((await fetch(`${h.url}/v2/del/blob/blobs/${d}`)).status, 404);
        const again = await fetch(`${h.url}/v2/del/blob/blobs/${d}`, { method: 'DELETE' });
        assert.equal(again.status, 404);
        assert.equal(await errorCode(again), 'BLOB_UNKNOWN');
      });

      it('concurrent uploads of the same blob all succeed and store it once', async () => {
        const body = Buffer.alloc(1024 * 1024, 3);
        const results = await Promise.all(
          Array.from({ length: 8 }, () => fetch(`${h.url}/v2/${repo}/blobs/uploads/?digest=${sha(body)}`, { method: 'POST', body }).then((r) => r.status)),
        );
        assert.deepEqual(results, Array(8).fill(201));
        const got = Buffer.from(await (await fetch(`${h.url}/v2/${repo}/blobs/${sha(body)}`)).arrayBuffer());
        assert.equal(sha(got), sha(body));
      });
    });

    describe('manifests', () => {
      const repo = 'team/app';
      let img: Awaited<ReturnType<typeof pushImage>>;
      before(async () => {
        img = await pushImage(h.url, repo, 'v1', 'one');
      });

      it('GET by tag and by digest returns the exact bytes, type and digest', async () => {
        for (const ref of ['v1', img.digest]) {
          const res = await fetch(`${h.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: MediaType.OciManifest } });
          assert.equal(res.status, 200);
          assert.equal(res.headers.get('content-type'), MediaType.OciManifest);
          assert.equal(res.headers.get('docker-content-digest'), img.digest);
          assert.deepEqual(Buffer.from(await res.arrayBuffer()), img.manifest);
        }
        const head = await fetch(`${h.url}/v2/${repo}/manifests/v1`, { method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.equal(head.headers.get('content-length'), String(img.manifest.length));
        assert.equal(head.headers.get('docker-content-digest'), img.digest);
      });

      it('PUT answers 201 with Location and Docker-Content-Digest; PUT by digest checks the digest', async () => {
        const res = await fetch(`${h.url}/v2/${repo}/manifests/${img.digest}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(res.status, 201);
        assert.equal(res.headers.get('location'), `/v2/${repo}/manifests/${img.digest}`);
        assert.equal(res.headers.get('docker-content-digest'), img.digest);
        const wrong = await fetch(`${h.url}/v2/${repo}/manifests/${sha('x')}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(wrong.status, 400);
        assert.equal(await errorCode(wrong), 'DIGEST_INVALID');
      });

      it('Docker schema 2 manifests and manifest lists round-trip with their media types', async () => {
        const schema2 = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MediaType.DockerManifest,
            config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: img.configDigest, size: img.config.length },
            layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: img.layerDigest, size: img.layer.length }],
          }),
        );
        const put = await fetch(`${h.url}/v2/${repo}/manifests/docker`, { method: 'PUT', body: schema2, headers: { 'content-type': MediaType.DockerManifest } });
        assert.equal(put.status, 201, await put.text());
        const list = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MediaType.DockerManifestList,
            manifests: [{ mediaType: MediaType.DockerManifest, digest: sha(schema2), size: schema2.length, platform: { architecture: 'amd64', os: 'linux' } }],
          }),
        );
        const putList = await fetch(`${h.url}/v2/${repo}/manifests/multi`, { method: 'PUT', body: list, headers: { 'content-type': MediaType.DockerManifestList } });
        assert.equal(putList.status, 201, await putList.text());
        const got = await fetch(`${h.url}/v2/${repo}/manifests/multi`, { headers: { accept: `${MediaType.DockerManifestList}, ${MediaType.DockerManifest}` } });
        assert.equal(got.headers.get('content-type'), MediaType.DockerManifestList);
        assert.deepEqual(Buffer.from(await got.arrayBuffer()), list);
        // A client that cannot read lists gets the linux/amd64 image, as from distribution.
        const old = await fetch(`${h.url}/v2/${repo}/manifests/multi`, { headers: { accept: MediaType.DockerManifest } });
        assert.equal(old.status, 200);
        assert.equal(old.headers.get('docker-content-digest'), sha(schema2));
        // A client that accepts only OCI gets 404 for a Docker manifest.
        const oci = await fetch(`${h.url}/v2/${repo}/manifests/docker`, { headers: { accept: MediaType.OciManifest } });
        assert.equal(oci.status, 404);
        assert.equal(await errorCode(oci), 'MANIFEST_UNKNOWN');
      });

      it('an OCI index referencing an unknown manifest gets MANIFEST_BLOB_UNKNOWN', async () => {
        const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciManifest, digest: sha('missing'), size: 3 }] }));
        const res = await fetch(`${h.url}/v2/${repo}/manifests/idx`, { method: 'PUT', body: index, headers: { 'content-type': MediaType.OciIndex } });
        assert.equal(res.status, 400);
        assert.equal(await errorCode(res), 'MANIFEST_BLOB_UNKNOWN');
      });

      it('a manifest referencing unknown blobs gets MANIFEST_BLOB_UNKNOWN and is not stored', async () => {
        const m = imageManifest({ digest: sha('no config'), size: 9 }, [{ digest: img.layerDigest, size: img.layer.length }]);
        const res = await fetch(`${h.url}/v2/${repo}/manifests/broken`, { method: 'PUT', body: m, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(res.status, 400);
        assert.equal(await errorCode(res), 'MANIFEST_BLOB_UNKNOWN');
        assert.equal((await fetch(`${h.url}/v2/${repo}/manifests/broken`)).status, 404);
        assert.equal((await fetch(`${h.url}/v2/${repo}/manifests/${sha(m)}`)).status, 404);
      });

      it('bad JSON, unknown media types and bad tags are refused', async () => {
        const bad = await fetch(`${h.url}/v2/${repo}/manifests/bad`, { method: 'PUT', body: '{not json', headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(bad.status, 400);
        assert.equal(await errorCode(bad), 'MANIFEST_INVALID');
        const unknown = await fetch(`${h.url}/v2/${repo}/manifests/bad`, { method: 'PUT', body: JSON.stringify({ schemaVersion: 2, mediaType: 'application/x-foo' }), headers: { 'content-type': 'application/x-foo' } });
        assert.equal(unknown.status, 400);
        assert.equal(await errorCode(unknown), 'MANIFEST_INVALID');
        const tag = await fetch(`${h.url}/v2/${repo}/manifests/-bad-tag`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(tag.status, 400);
        assert.equal(await errorCode(tag), 'TAG_INVALID');
      });

      it('oversized manifests get 413 without being read', async () => {
        const big = Buffer.alloc(4 * 1024 * 1024 + 10, 0x20);
        const res = await fetch(`${h.url}/v2/${repo}/manifests/big`, { method: 'PUT', body: big, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(res.status, 413);
        assert.equal(await errorCode(res), 'SIZE_INVALID');
        assert.equal((await fetch(`${h.url}/v2/`)).status, 200, 'the server keeps serving');
      });

      it('references that are neither a tag nor a digest get 404 MANIFEST_UNKNOWN on GET, HEAD and DELETE (the spec: a manifest that does not exist)', async () => {
        for (const ref of ['.INVALID_MANIFEST_NAME', '-bad', 'x'.repeat(129), 'sha256:zz', `sha256:${'a'.repeat(63)}`]) {
          for (const method of ['GET', 'HEAD', 'DELETE']) {
            const res = await fetch(`${h.url}/v2/${repo}/manifests/${ref}`, { method });
            assert.equal(res.status, 404, `${method} ${ref}`);
            if (method !== 'HEAD') assert.equal(await errorCode(res), 'MANIFEST_UNKNOWN', `${method} ${ref}`);
          }
        }
      });

      it('unknown tags and digests get 404 MANIFEST_UNKNOWN', async () => {
        for (const ref of ['nope', sha('nope')]) {
          const res = await fetch(`${h.url}/v2/${repo}/manifests/${ref}`);
          assert.equal(res.status, 404);
          assert.equal(await errorCode(res), 'MANIFEST_UNKNOWN');
        }
      });

      it('referrers: a manifest with a subject is listed, filterable by artifactType', async () => {
        const empty = Buffer.from('{}');
        const emptyDigest = await pushBlob(h.url, repo, empty);
        const sig = Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MediaType.OciManifest,
            artifactType: 'application/vnd.example.signature',
            config: { mediaType: MediaType.OciEmpty, digest: emptyDigest, size: 2 },
            layers: [{ mediaType: MediaType.OciEmpty, digest: emptyDigest, size: 2 }],
            subject: { mediaType: MediaType.OciManifest, digest: img.digest, size: img.manifest.length },
            annotations: { 'org.example.kind': 'sig' },
          }),
        );
        const put = await fetch(`${h.url}/v2/${repo}/manifests/${sha(sig)}`, { method: 'PUT', body: sig, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(put.status, 201, await put.text());
        assert.equal(put.headers.get('oci-subject'), img.digest);
        const res = await fetch(`${h.url}/v2/${repo}/referrers/${img.digest}`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), MediaType.OciIndex);
        const index = (await res.json()) as { manifests: Array<Record<string, unknown>> };
        assert.deepEqual(index.manifests, [
          { mediaType: MediaType.OciManifest, digest: sha(sig), size: sig.length, artifactType: 'application/vnd.example.signature', annotations: { 'org.example.kind': 'sig' } },
        ]);
        const filtered = await fetch(`${h.url}/v2/${repo}/referrers/${img.digest}?artifactType=application/other`);
        assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
        assert.deepEqual(((await filtered.json()) as { manifests: unknown[] }).manifests, []);
        const none = await fetch(`${h.url}/v2/${repo}/referrers/${sha('no subject')}`);
        assert.equal(none.status, 200);
        assert.deepEqual(((await none.json()) as { manifests: unknown[] }).manifests, []);
        const bad = await fetch(`${h.url}/v2/${repo}/referrers/notadigest`);
        assert.equal(bad.status, 400);
      });

      it('DELETE by tag removes the tag; by digest removes the manifest and its tags', async () => {
        const other = await pushImage(h.url, 'del/manifest', 'a', 'two');
        const tagB = await fetch(`${h.url}/v2/del/manifest/manifests/b`, { method: 'PUT', body: other.manifest, headers: { 'content-type': MediaType.OciManifest } });
        assert.equal(tagB.status, 201);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/a`, { method: 'DELETE' })).status, 202);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/a`)).status, 404);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/b`)).status, 200);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/${other.digest}`, { method: 'DELETE' })).status, 202);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/${other.digest}`)).status, 404);
        assert.equal((await fetch(`${h.url}/v2/del/manifest/manifests/b`)).status, 404);
        const again = await fetch(`${h.url}/v2/del/manifest/manifests/${other.digest}`, { method: 'DELETE' });
        assert.equal(again.status, 404);
        assert.equal(await errorCode(again), 'MANIFEST_UNKNOWN');
      });
    });

    describe('tags and catalog', () => {
      before(async () => {
        const img = await pushImage(h.url, 'list/app', 't0', 'list');
        for (const tag of ['t1', 't2', 't3', 'a']) {
          await fetch(`${h.url}/v2/list/app/manifests/${tag}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': MediaType.OciManifest } });
        }
      });

      it('tags/list returns sorted tags with n/last pagination and a Link header', async () => {
        const all = await fetch(`${h.url}/v2/list/app/tags/list`);
        assert.deepEqual(await all.json(), { name: 'list/app', tags: ['a', 't0', 't1', 't2', 't3'] });
        const page = await fetch(`${h.url}/v2/list/app/tags/list?n=2`);
        assert.deepEqual(await page.json(), { name: 'list/app', tags: ['a', 't0'] });
        assert.equal(page.headers.get('link'), '</v2/list/app/tags/list?n=2&last=t0>; rel="next"');
        const next = await fetch(`${h.url}/v2/list/app/tags/list?n=2&last=t0`);
        assert.deepEqual(((await next.json()) as { tags: string[] }).tags, ['t1', 't2']);
        const last = await fetch(`${h.url}/v2/list/app/tags/list?n=2&last=t2`);
        assert.deepEqual(((await last.json()) as { tags: string[] }).tags, ['t3']);
        assert.equal(last.headers.get('link'), null);
        const zero = await fetch(`${h.url}/v2/list/app/tags/list?n=0`);
        assert.deepEqual(((await zero.json()) as { tags: string[] }).tags, []);
      });

      it('tags/list of an unknown repository gets NAME_UNKNOWN; bad n gets PAGINATION_NUMBER_INVALID', async () => {
        const res = await fetch(`${h.url}/v2/never/pushed/tags/list`);
        assert.equal(res.status, 404);
        assert.equal(await errorCode(res), 'NAME_UNKNOWN');
        for (const n of ['-1', 'abc', '1.5']) {
          const bad = await fetch(`${h.url}/v2/list/app/tags/list?n=${n}`);
          assert.equal(bad.status, 400, n);
          assert.equal(await errorCode(bad), 'PAGINATION_NUMBER_INVALID');
        }
      });

      it('_catalog lists repositories in order with pagination', async () => {
        const all = (await (await fetch(`${h.url}/v2/_catalog`)).json()) as { repositories: string[] };
        assert.ok(all.repositories.includes('list/app'));
        assert.ok(all.repositories.includes('team/app'));
        assert.ok(!all.repositories.includes('never/pushed'));
        const first = await fetch(`${h.url}/v2/_catalog?n=1`);
        const firstBody = (await first.json()) as { repositories: string[] };
        assert.equal(firstBody.repositories.length, 1);
        assert.equal(firstBody.repositories[0], all.repositories[0]);
        assert.equal(first.headers.get('link'), `</v2/_catalog?n=1&last=${encodeURIComponent(all.repositories[0]!)}>; rel="next"`);
        const rest = (await (await fetch(`${h.url}/v2/_catalog?n=1000&last=${encodeURIComponent(all.repositories[0]!)}`)).json()) as { repositories: string[] };
        assert.deepEqual(rest.repositories, all.repositories.slice(1));
      });
    });

    if (kind === 'filesystem') {
      it('writes distribution\'s on-disk layout', async () => {
        const base = join(h.root!, 'docker/registry/v2');
        assert.ok((await readdir(join(base, 'blobs/sha256'))).length > 0);
        assert.ok((await readdir(join(base, 'repositories/team/app/_manifests/tags/v1/current'))).includes('link'));
        assert.ok((await readdir(join(base, 'repositories/team/app/_layers/sha256'))).length > 0);
      });
    }
  });
}

describe('deletes disabled', () => {
  it('DELETE of blobs and manifests gets 405 UNSUPPORTED', async () => {
    const { server, url } = await start(new InMemoryDriver(), false);
    try {
      const img = await pushImage(url, 'nodelete/app', 'v1', 'nd');
      for (const path of [`/v2/nodelete/app/blobs/${img.layerDigest}`, `/v2/nodelete/app/manifests/${img.digest}`, '/v2/nodelete/app/manifests/v1']) {
        const res = await fetch(`${url}${path}`, { method: 'DELETE' });
        assert.equal(res.status, 405, path);
        assert.equal(await errorCode(res), 'UNSUPPORTED');
      }
      assert.equal((await fetch(`${url}/v2/nodelete/app/manifests/v1`)).status, 200);
    } finally {
      await server.close();
    }
  });
});
