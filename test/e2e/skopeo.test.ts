/**
 * skopeo, a real registry client, pushes generated OCI images into the registry under test and pulls
 * them back out: every byte must survive the round trip.
 *
 * Runs against Cascade; `E2E_REGISTRY=distribution` runs it against distribution (see lib/target.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tempDir, testScope } from '../lib/cascade.js';
import { makeOciImage, makeOciIndex, type OciImageLayout, type OciIndexLayout } from '../lib/image.js';
import { assertLayoutHolds, getJson } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';
import { startTarget, TARGET_KIND, withDiagnostics } from '../lib/target.js';

const MiB = 1 << 20;

describe(`skopeo <-> ${TARGET_KIND}`, () => {
  let fixtures: { dir: string; cleanup: () => Promise<void> };
  let image: OciImageLayout;
  let index: OciIndexLayout;

  before(async () => {
    fixtures = await tempDir('e2e-skopeo-fixtures-');
    // tens of MiB in total, and an empty file as the top layer (a gzip'd tar of 1.5 KiB)
    image = await makeOciImage(join(fixtures.dir, 'image'), { layers: [1 * MiB, 8 * MiB, 24 * MiB, 0], tag: 'v1', seed: 'skopeo-image' });
    index = await makeOciIndex(join(fixtures.dir, 'index'), { layers: [512 * 1024, 2 * MiB], tag: 'v1', seed: 'skopeo-index' });
  });
  after(async () => {
    await fixtures?.cleanup();
  });

  test('an image copied in and back out is byte-identical', async (t) => {
    const work = await testScope(t, 'e2e-skopeo-');
    const target = await startTarget(work.dir);
    work.defer(() => target.stop());
    const ref = `docker://${target.host}/team/app:v1`;

    await withDiagnostics(target, async () => {
      await skopeo(['copy', image.ref, ref]);

      // the registry reports the digest the client computed, and the tag lists it
      const inspected = JSON.parse((await skopeo(['inspect', ref])).stdout) as { Digest: string; Layers: string[] };
      assert.equal(inspected.Digest, image.digest);
      assert.deepEqual(inspected.Layers, image.image.layers.map((l) => l.digest));
      const tags = JSON.parse((await skopeo(['list-tags', `docker://${target.host}/team/app`])).stdout) as { Tags: string[] };
      assert.deepEqual(tags.Tags, ['v1']);

      const out = join(work.dir, 'out');
      await skopeo(['copy', ref, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', image);

      // by digest too
      const byDigest = join(work.dir, 'by-digest');
      await skopeo(['copy', `docker://${target.host}/team/app@${image.digest}`, `oci:${byDigest}:pulled`]);
      await assertLayoutHolds(byDigest, 'pulled', image);
    });
  });

  test('a multi-platform index round-trips with --all, and one platform resolves from it', async (t) => {
    const work = await testScope(t, 'e2e-skopeo-');
    const target = await startTarget(work.dir);
    work.defer(() => target.stop());
    const ref = `docker://${target.host}/team/multi:v1`;

    await withDiagnostics(target, async () => {
      await skopeo(['copy', '--all', index.ref, ref]);

      const out = join(work.dir, 'out');
      await skopeo(['copy', '--all', ref, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', index);

      // without --all, skopeo picks the platform's manifest out of the index the registry serves
      const arm = index.images.find((i) => i.platform.architecture === 'arm64')!;
      const armOut = join(work.dir, 'arm64');
      await skopeo(['copy', ref, `oci:${armOut}:arm`], { global: ['--override-os', 'linux', '--override-arch', 'arm64', '--override-variant', 'v8'] });
      const armLayout = { ...index, digest: arm.digest, mediaType: arm.manifest.mediaType, manifestBytes: arm.manifest.bytes };
      await assertLayoutHolds(armOut, 'arm', armLayout, { blobs: [arm.manifest, arm.config, ...arm.layers] });
    });
  });

  test('inspect --raw returns the exact manifest bytes, by tag and by digest', async (t) => {
    const work = await testScope(t, 'e2e-skopeo-');
    const small = await makeOciImage(join(work.dir, 'small'), { layers: [4096, 100], tag: 'v2', seed: 'skopeo-raw' });
    const target = await startTarget(work.dir);
    work.defer(() => target.stop());

    await withDiagnostics(target, async () => {
      await skopeo(['copy', small.ref, `docker://${target.host}/team/app:v2`]);
      await skopeo(['copy', '--all', index.ref, `docker://${target.host}/team/app:multi`]);

      for (const [layout, reference] of [
        [small, 'v2'],
        [small, small.digest],
        [index, 'multi'],
        [index, index.digest],
      ] as const) {
        const sep = reference.startsWith('sha256:') ? '@' : ':';
        const raw = await skopeo(['inspect', '--raw', `docker://${target.host}/team/app${sep}${reference}`]);
        assert.equal(raw.stdout, layout.manifestBytes.toString('utf8'), `inspect --raw team/app${sep}${reference}`);
      }
      for (const img of index.images) {
        const raw = await skopeo(['inspect', '--raw', `docker://${target.host}/team/app@${img.digest}`]);
        assert.equal(raw.stdout, img.manifest.bytes.toString('utf8'), `inspect --raw ${img.platform.architecture} manifest`);
      }

      const tags = await getJson<{ name: string; tags: string[] }>(`${target.url}/v2/team/app/tags/list`);
      assert.deepEqual({ ...tags, tags: [...tags.tags].sort() }, { name: 'team/app', tags: ['multi', 'v2'] });
    });
  });
});
