/**
 * containerd pulls from the registry under test what skopeo pushed into it.
 *
 * containerd's content store verifies every blob against its digest when it commits it, so a digest
 * listed by `ctr content ls` is a blob whose bytes were right.
 *
 * Two ways in, on purpose:
 * - `ctr images pull` is what users and the kubelet do: resolve, fetch, then unpack into a snapshotter.
 *   Unpacking needs mount(2): the overlayfs snapshotter bind-mounts the bottom layer to apply it, which
 *   needs CAP_SYS_ADMIN. Root on this machine has it; a CI container without it skips that test
 *   rather than fail on a privilege that has nothing to do with the registry.
 * - `ctr content fetch` runs the same resolver and fetcher (HEAD/GET manifest, GET blobs) without a
 *   snapshotter, so it works anywhere; the multi-platform test uses it with `--all-platforms`.
 *
 * Runs against Cascade; `E2E_REGISTRY=distribution` runs it against distribution (see lib/target.ts).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tempDir, testScope } from '../lib/cascade.js';
import { makeOciImage, makeOciIndex, type OciImageLayout, type OciIndexLayout } from '../lib/image.js';
import { canMount, skopeo, startContainerd, type Containerd } from '../lib/peers.js';
import { startTarget, TARGET_KIND, withDiagnostics } from '../lib/target.js';

const MiB = 1 << 20;
/** The digests in containerd's content store. */
async function contentDigests(ctrd: Containerd): Promise<Set<string>> {
  const { stdout } = await ctrd.ctr(['content', 'ls', '--quiet']);
  return new Set(stdout.split('\n').map((l) => l.trim()).filter(Boolean));
}

describe(`containerd <- ${TARGET_KIND}`, () => {
  let fixtures: { dir: string; cleanup: () => Promise<void> };
  let image: OciImageLayout;
  let index: OciIndexLayout;
  let mountable = false;

  before(async () => {
    fixtures = await tempDir('e2e-containerd-fixtures-');
    image = await makeOciImage(join(fixtures.dir, 'image'), { layers: [1 * MiB, 8 * MiB, 16 * MiB], tag: 'v1', seed: 'containerd-image' });
    index = await makeOciIndex(join(fixtures.dir, 'index'), { layers: [256 * 1024, 2 * MiB], tag: 'v1', seed: 'containerd-index' });
    mountable = await canMount();
  });
  after(async () => {
    await fixtures?.cleanup();
  });

  test('ctr images pull fetches every blob and unpacks the image', async (t) => {
    if (!mountable) {
      t.skip('no CAP_SYS_ADMIN: containerd cannot mount snapshots to unpack here (content fetch is still tested)');
      return;
    }
    const work = await testScope(t, 'e2e-containerd-');
    const target = await startTarget(work.dir);
    work.defer(() => target.stop());
    const ctrd = await startContainerd();
    work.defer(() => ctrd.stop());
    const ref = `${target.host}/team/app:v1`;

    await withDiagnostics(target, async () => {
      await skopeo(['copy', image.ref, `docker://${ref}`]);

      const pulled = await ctrd.ctr(['images', 'pull', '--plain-http', '--platform', 'linux/amd64', ref]);
      assert.match(pulled.stdout, new RegExp(`unpacking linux/amd64 ${image.digest}`));

      const have = await contentDigests(ctrd);
      for (const blob of image.blobs) assert.ok(have.has(blob.digest), `content store lacks ${blob.mediaType} ${blob.digest}`);

      const listed = (await ctrd.ctr(['images', 'ls'])).stdout.split('\n').find((l) => l.startsWith(`${ref} `));
      assert.ok(listed, `ctr images ls does not list ${ref}`);
      assert.ok(listed.includes(image.digest), `ctr images ls: ${listed}`);

      const manifest = await ctrd.ctr(['content', 'get', image.digest]);
      assert.equal(manifest.stdout, image.manifestBytes.toString('utf8'));
    });
  });

  test('ctr content fetch --all-platforms stores every blob of a multi-platform index', async (t) => {
    const work = await testScope(t, 'e2e-containerd-');
    const target = await startTarget(work.dir);
    work.defer(() => target.stop());
    const ctrd = await startContainerd();
    work.defer(() => ctrd.stop());
    const ref = `${target.host}/team/multi:v1`;

    await withDiagnostics(target, async () => {
      await skopeo(['copy', '--all', index.ref, `docker://${ref}`]);

      await ctrd.ctr(['content', 'fetch', '--plain-http', '--all-platforms', ref]);

      const have = await contentDigests(ctrd);
      for (const blob of index.blobs) assert.ok(have.has(blob.digest), `content store lacks ${blob.mediaType} ${blob.digest}`);
      const got = await ctrd.ctr(['content', 'get', index.digest]);
      assert.equal(got.stdout, index.manifestBytes.toString('utf8'));
    });
  });
});
