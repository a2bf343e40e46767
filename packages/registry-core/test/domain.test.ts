import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Digest } from '../src/digest.js';
import { RegistryError } from '../src/errors.js';
import { matchRoute } from '../src/http/routes.js';
import { resolveRange } from '../src/store/range.js';
import { parseManifest } from '../src/manifest.js';
import { MediaType } from '../src/mediatypes.js';
import { NAME_MAX_LENGTH, parseReference, validateName } from '../src/names.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    return err.code;
  }
  return undefined;
}

describe('Digest', () => {
  const hex = 'a'.repeat(64);
  it('parses sha256 and sha512', () => {
    assert.equal(Digest.parse(`sha256:${hex}`).toString(), `sha256:${hex}`);
    assert.equal(Digest.parse(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
  });
  it('rejects malformed digests, wrong lengths, upper case and unsupported algorithms', () => {
    for (const bad of ['', 'sha256', `sha256:${hex.slice(1)}`, `sha256:${hex.toUpperCase()}`, `md5:${'a'.repeat(32)}`, `sha256:${hex}/x`, `SHA256:${hex}`]) {
      assert.equal(code(() => Digest.parse(bad)), 'DIGEST_INVALID', bad);
    }
  });
  it('hashes content', () => {
    assert.equal(Digest.of('').toString(), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});

describe('names', () => {
  it('accepts the name grammar', () => {
    for (const ok of ['a', 'library/alpine', 'a-b/c_d/e.f', 'a__b', 'a--b', 'x'.repeat(NAME_MAX_LENGTH)]) validateName(ok);
  });
  it('rejects upper case, "..", empty components, leading separators and long names', () => {
    for (const bad of ['', 'A', 'a/../b', 'a//b', '/a', 'a/', '-a', 'a_', 'a..b', 'a___b', 'x'.repeat(NAME_MAX_LENGTH + 1)]) {
      assert.equal(code(() => validateName(bad)), 'NAME_INVALID', bad);
    }
  });
  it('parses references', () => {
    assert.deepEqual(parseReference('v1.0'), { kind: 'tag', tag: 'v1.0' });
    assert.equal(parseReference(`sha256:${'c'.repeat(64)}`).kind, 'digest');
    assert.equal(code(() => parseReference('-bad')), 'TAG_INVALID');
    assert.equal(code(() => parseReference('x'.repeat(129))), 'TAG_INVALID');
    assert.equal(code(() => parseReference('sha256:zz')), 'DIGEST_INVALID');
  });
});

describe('routes', () => {
  it('matches every resource, with slashes in names', () => {
    assert.equal(matchRoute('/v2/')?.route.name, 'base');
    assert.equal(matchRoute('/v2')?.route.name, 'base');
    assert.equal(matchRoute('/v2/_catalog')?.route.name, 'catalog');
    assert.deepEqual(matchRoute('/v2/a/b/tags/list')?.params, { name: 'a/b' });
    assert.deepEqual(matchRoute('/v2/a/b/manifests/latest')?.params, { name: 'a/b', reference: 'latest' });
    assert.deepEqual(matchRoute('/v2/a/manifests/b/manifests/c')?.params, { name: 'a/manifests/b', reference: 'c' });
    assert.equal(matchRoute('/v2/a/blobs/uploads/')?.route.name, 'upload');
    assert.equal(matchRoute('/v2/a/blobs/uploads')?.route.name, 'upload');
    assert.deepEqual(matchRoute('/v2/a/blobs/uploads/123')?.params, { name: 'a', uuid: '123' });
    assert.deepEqual(matchRoute('/v2/a/blobs/sha256:x')?.params, { name: 'a', digest: 'sha256:x' });
    assert.equal(matchRoute('/v2/a/referrers/sha256:x')?.route.name, 'referrers');
    assert.equal(matchRoute('/v1/foo'), undefined);
    assert.equal(matchRoute('/v2/a/unknown/x'), undefined);
  });
});

describe('resolveRange', () => {
  it('resolves single ranges', () => {
    assert.equal(resolveRange(undefined, 10), undefined);
    assert.deepEqual(resolveRange('bytes=0-4', 10), { start: 0, end: 4 });
    assert.deepEqual(resolveRange('bytes=5-', 10), { start: 5, end: 9 });
    assert.deepEqual(resolveRange('bytes=-3', 10), { start: 7, end: 9 });
    assert.deepEqual(resolveRange('bytes=-30', 10), { start: 0, end: 9 });
    assert.deepEqual(resolveRange('bytes=8-100', 10), { start: 8, end: 9 });
  });
  it('ignores other units and multiple ranges', () => {
    assert.equal(resolveRange('items=0-1', 10), undefined);
    assert.equal(resolveRange('bytes=0-1,3-4', 10), undefined);
  });
  it('refuses unsatisfiable and malformed ranges with 416', () => {
    for (const bad of ['bytes=10-', 'bytes=5-2', 'bytes=-0', 'bytes=x-y', 'bytes=-', 'bytes=1-2-3']) {
      try {
        resolveRange(bad, 10);
        assert.fail(`expected ${bad} to throw`);
      } catch (err) {
        assert.ok(err instanceof RegistryError);
        assert.equal(err.status, 416, bad);
        assert.equal(err.headers['Content-Range'], 'bytes */10');
      }
    }
  });
});

describe('parseManifest', () => {
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  const image = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('1'), size: 10 },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('2'), size: 20 },
      { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: d('3'), size: 30, urls: ['https://x'] },
    ],
  };
  it('parses an OCI image manifest and lists the blobs it needs', () => {
    const m = parseManifest(Buffer.from(JSON.stringify(image)), MediaType.OciManifest);
    assert.equal(m.mediaType, MediaType.OciManifest);
    assert.deepEqual(m.blobs.map((b) => b.digest), [d('1'), d('2')]);
    assert.equal(m.artifactType, 'application/vnd.oci.image.config.v1+json');
  });
  it('infers the media type of an OCI manifest without one', () => {
    const { mediaType: _omit, ...rest } = image;
    assert.equal(parseManifest(Buffer.from(JSON.stringify(rest)), undefined).mediaType, MediaType.OciManifest);
  });
  it('parses indexes and subjects', () => {
    const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciManifest, digest: d('4'), size: 5, platform: { os: 'linux', architecture: 'arm64' } }], subject: { mediaType: MediaType.OciManifest, digest: d('5'), size: 3 } };
    const m = parseManifest(Buffer.from(JSON.stringify(index)), MediaType.OciIndex);
    assert.ok(m.isIndex);
    assert.equal(m.subject?.digest, d('5'));
  });
  it('refuses bad manifests with MANIFEST_INVALID', () => {
    const cases: Array<[string, string | undefined]> = [
      ['not json', MediaType.OciManifest],
      ['[]', MediaType.OciManifest],
      [JSON.stringify({ ...image, schemaVersion: 1 }), MediaType.OciManifest],
      [JSON.stringify({ ...image, mediaType: 'application/x-unknown' }), 'application/x-unknown'],
      [JSON.stringify({ ...image, config: { digest: 'sha256:bad', size: 1, mediaType: 'x' } }), MediaType.OciManifest],
      [JSON.stringify({ ...image, layers: 'x' }), MediaType.OciManifest],
      [JSON.stringify({ ...image, config: { ...image.config, size: -1 } }), MediaType.OciManifest],
      [JSON.stringify(image), MediaType.DockerManifest],
      [JSON.stringify({ schemaVersion: 2 }), undefined],
    ];
    for (const [body, type] of cases) assert.equal(code(() => parseManifest(Buffer.from(body), type)), 'MANIFEST_INVALID', body.slice(0, 80));
  });
  it('refuses manifests over 4 MiB with 413', () => {
    try {
      parseManifest(Buffer.alloc(4 * 1024 * 1024 + 1, 32), MediaType.OciManifest);
      assert.fail('expected a throw');
    } catch (err) {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 413);
    }
  });
});

describe('documentation', () => {
  it('docs/registry-api.md lists every error code with its status', async () => {
    const { readFile } = await import('node:fs/promises');
    const { ERROR_CODES } = await import('../src/errors.js');
    const doc = await readFile(new URL('../../../../docs/registry-api.md', import.meta.url), 'utf8');
    for (const [code, { status }] of Object.entries(ERROR_CODES)) {
      assert.match(doc, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), `docs/registry-api.md is missing ${code} (${status})`);
    }
  });
});
