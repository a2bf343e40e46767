/**
 * Content for the fuzzer to pull: small OCI images (a config and two layers of seeded bytes, tagged
 * `v1` and `latest`) pushed with fetch before the fuzz starts.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { BlobRef, ManifestRef } from './gen.js';
import { Rng } from './prng.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function pushBlob(base: string, repo: string, bytes: Buffer, auth?: string): Promise<string> {
  const digest = sha(bytes);
  const headers: Record<string, string> = auth ? { authorization: auth } : {};
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  await start.arrayBuffer();
  assert.equal(start.status, 202, `seed: POST ${base}/v2/${repo}/blobs/uploads/ -> ${start.status}`);
  const location = new URL(start.headers.get('location') ?? '', base);
  location.searchParams.set('digest', digest);
  const put = await fetch(location, { method: 'PUT', body: bytes, headers: { ...headers, 'content-type': 'application/octet-stream' } });
  const text = await put.text();
  assert.equal(put.status, 201, `seed: PUT ${location} -> ${put.status}: ${text}`);
  return digest;
}

/** Pushes one small image to `base` as `repo:v1` and `repo:latest`; names in the result are `as`. */
export async function seedImage(base: string, repo: string, seed: string, options: { auth?: string; as?: string } = {}): Promise<{ blobs: BlobRef[]; manifest: ManifestRef[] }> {
  const rng = new Rng(`seed-image/${seed}/${repo}`);
  const name = options.as ?? repo;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed }));
  const layers = [rng.bytes(rng.int(1000, 70_000)), rng.bytes(rng.int(100, 5000))];
  const blobs: BlobRef[] = [];
  for (const b of [config, ...layers]) blobs.push({ repo: name, digest: await pushBlob(base, repo, b, options.auth), size: b.length });
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: blobs[0]!.digest, size: blobs[0]!.size },
      layers: blobs.slice(1).map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: b.digest, size: b.size })),
    }),
  );
  const refs: ManifestRef[] = [];
  for (const tag of ['v1', 'latest']) {
    const res = await fetch(`${base}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': mediaType, ...(options.auth ? { authorization: options.auth } : {}) } });
    const text = await res.text();
    assert.equal(res.status, 201, `seed: PUT ${base}/v2/${repo}/manifests/${tag} -> ${res.status}: ${text}`);
    refs.push({ repo: name, tag, digest: sha(manifest), mediaType, config: blobs[0]!, layers: blobs.slice(1) });
  }
  return { blobs, manifest: refs };
}
