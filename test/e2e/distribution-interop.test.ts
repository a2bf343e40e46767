/**
 * Cascade keeps distribution's storage layout (`<root>/docker/registry/v2/...`), so one folder can be
 * served by either program: a user can move from distribution to Cascade, and back, without migrating.
 *
 * (a) push into Cascade, stop it, serve the folder with distribution's `docker-registry`, pull;
 * (b) push into distribution, stop it, serve the folder with Cascade, pull.
 * Each side must see the same manifests (digest and bytes), blobs, tags and catalog.
 *
 * With `E2E_REGISTRY=distribution` the "Cascade" side is distribution too, which checks the test itself.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tempDir, testScope } from '../lib/cascade.js';
import { makeOciImage, makeOciIndex, type OciImageLayout, type OciIndexLayout } from '../lib/image.js';
import { assertLayoutHolds, getJson } from '../lib/oci-assert.js';
import { skopeo, startDistribution } from '../lib/peers.js';
import { distributionTarget, startTarget, TARGET_KIND, withDiagnostics, type Target } from '../lib/target.js';

const MiB = 1 << 20;

describe(`one storage folder, served by ${TARGET_KIND} and by distribution`, () => {
  let fixtures: { dir: string; cleanup: () => Promise<void> };
  let image: OciImageLayout;
  let index: OciIndexLayout;

  before(async () => {
    fixtures = await tempDir('e2e-interop-fixtures-');
    image = await makeOciImage(join(fixtures.dir, 'image'), { layers: [512 * 1024, 6 * MiB, 10], tag: 'v1', seed: 'interop-image' });
    index = await makeOciIndex(join(fixtures.dir, 'index'), { layers: [128 * 1024, 1 * MiB], tag: 'v1', seed: 'interop-index' });
  });
  after(async () => {
    await fixtures?.cleanup();
  });

  async function push(target: Target): Promise<void> {
    await withDiagnostics(target, async () => {
      await skopeo(['copy', image.ref, `docker://${target.host}/team/app:v1`]);
      await skopeo(['copy', '--all', index.ref, `docker://${target.host}/team/multi:v1`]);
    });
  }

  async function pullAndCompare(target: Target, work: string): Promise<void> {
    await withDiagnostics(target, async () => {
      const out = join(work, 'out-image');
      await skopeo(['copy', `docker://${target.host}/team/app:v1`, `oci:${out}:v1`]);
      await assertLayoutHolds(out, 'v1', image);

      const outIndex = join(work, 'out-index');
      await skopeo(['copy', '--all', `docker://${target.host}/team/multi:v1`, `oci:${outIndex}:v1`]);
      await assertLayoutHolds(outIndex, 'v1', index);

      assert.deepEqual(await getJson(`${target.url}/v2/team/app/tags/list`), { name: 'team/app', tags: ['v1'] });
      assert.deepEqual(await getJson(`${target.url}/v2/team/multi/tags/list`), { name: 'team/multi', tags: ['v1'] });
      assert.deepEqual(await getJson(`${target.url}/v2/_catalog`), { repositories: ['team/app', 'team/multi'] });
    });
  }

  test(`(a) pushed into ${TARGET_KIND}, pulled from distribution`, async (t) => {
    const work = await testScope(t, 'e2e-interop-');

    const first = await startTarget(work.dir);
    work.defer(() => first.stop());
    await push(first);
    await first.stop();

    const dist = distributionTarget(await startDistribution({ rootdirectory: first.rootdirectory }));
    work.defer(() => dist.stop());
    await pullAndCompare(dist, work.dir);
  });

  test(`(b) pushed into distribution, pulled from ${TARGET_KIND}`, async (t) => {
    const work = await testScope(t, 'e2e-interop-');

    const dist = distributionTarget(await startDistribution({ rootdirectory: join(work.dir, 'data') }));
    work.defer(() => dist.stop());
    await push(dist);
    await dist.stop();

    const second = await startTarget(work.dir);
    work.defer(() => second.stop());
    assert.equal(second.rootdirectory, dist.rootdirectory);
    await pullAndCompare(second, work.dir);
  });
});
