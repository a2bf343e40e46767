/**
 * Assertions over OCI layouts and registries shared by the end-to-end tests.
 */
import assert from 'node:assert/strict';
import { layoutBlobs, readLayoutTop, type BlobInfo, type OciLayout } from './image.js';

/**
 * Asserts that the OCI layout in `dir` holds, under `tag`, exactly the image `expected` describes:
 * the same top-level manifest digest and bytes, and every expected blob with its size, each blob file's
 * content hashing to its name. With `exact` (the default) the layout holds no other blob.
 */
export async function assertLayoutHolds(dir: string, tag: string, expected: OciLayout, options: { exact?: boolean; blobs?: readonly BlobInfo[] } = {}): Promise<void> {
  const top = await readLayoutTop(dir, tag);
  assert.equal(top.digest, expected.digest, `${dir}: top-level manifest digest`);
  assert.equal(top.mediaType, expected.mediaType, `${dir}: top-level media type`);
  assert.ok(top.bytes.equals(expected.manifestBytes), `${dir}: top-level manifest bytes differ:\n${top.bytes.toString()}`);
  const have = await layoutBlobs(dir);
  const want = new Map((options.blobs ?? expected.blobs).map((b) => [b.digest, b.size]));
  for (const [digest, size] of want) {
    assert.ok(have.has(digest), `${dir}: blob ${digest} (${size} bytes) is missing`);
    assert.equal(have.get(digest), size, `${dir}: blob ${digest} size`);
  }
  if (options.exact ?? true) {
    const extra = [...have.keys()].filter((d) => !want.has(d));
    assert.deepEqual(extra, [], `${dir}: unexpected blobs`);
  }
}

/** GET `url` and parse the JSON body, asserting a 200. */
export async function getJson<T>(url: string, headers: Record<string, string> = {}): Promise<T> {
  const res = await fetch(url, { headers });
  const body = await res.text();
  assert.equal(res.status, 200, `GET ${url} -> ${res.status}: ${body}`);
  return JSON.parse(body) as T;
}
