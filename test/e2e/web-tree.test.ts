/**
 * The cache tree on the server's web page, in headless Chromium: the stack `cascade up` runs (origin,
 * server, region-a filling from the server, region-b filling from region-a with the server as its
 * origin), bob's pulls through region-b, and the tree shows origin → server → region-a → region-b with
 * the hour's figures read from the caches' metrics; region-b stopped shows down. Screenshots (desktop,
 * phone) go to a temporary folder, or to docs/screenshots/ with UPDATE_SCREENSHOTS=1.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { launchChromium, signIn } from '../lib/browser.js';
import { waitFor } from '../lib/cache.js';
import { ROOT, testScope } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { skopeo } from '../lib/peers.js';
import { api, registerCaches, startStack, USERS } from '../lib/stack.js';

interface TreeUpstream {
  url: string | null;
  target: { kind: string; name?: string };
  parent: boolean;
}
interface TreeNode {
  kind: string;
  name?: string;
  url?: string | null;
  health?: string;
  hitRatio?: number | null;
  bytesServed?: number | null;
  bytesFilled?: number | null;
  upstreamErrors?: number | null;
  warmJobsInFlight?: number | null;
  upstreams?: TreeUpstream[];
  children: TreeNode[];
}
interface Tree {
  windowSeconds: number;
  roots: TreeNode[];
}

/** The node of a cache, searched through the whole tree. */
function find(nodes: readonly TreeNode[], name: string): TreeNode | undefined {
  for (const n of nodes) {
    if (n.kind === 'cache' && n.name === name) return n;
    const inner = find(n.children, name);
    if (inner) return inner;
  }
  return undefined;
}

/** The CSS path of a cache in the drawn tree: origin > server > region-a > region-b. */
const TREE_PATH = {
  server: '#cache-tree > ul.tree > li[data-kind="origin"] > ul > li[data-kind="server"]',
  get regionA() {
    return `${this.server} > ul > li[data-name="region-a"]`;
  },
  get regionB() {
    return `${this.regionA} > ul > li[data-name="region-b"]`;
  },
};

describe('web page: the cache tree', () => {
  it('shows origin → server → region-a → region-b with the hour\'s figures after a pull through region-b; a stopped cache shows down', { timeout: 150_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-web-tree-');
    const shots = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/screenshots') : join(dir, 'screenshots');
    await mkdir(shots, { recursive: true });
    const { server, regionA, regionB, origin } = await startStack(dir, defer);

    // As `cascade up` does: both caches registered, bob's cache is region-b.
    const created = await registerCaches(server, { 'region-a': regionA, 'region-b': regionB });
    assert.equal((await api(server, 'PATCH', '/api/v0/accounts/bob/settings', 'bob', { contentCacheUUID: created['region-b'] })).status, 200);
    const tree = async (user: 'alice' | 'bob') => {
      const res = await api(server, 'GET', '/api/v0/content_caches_tree', user);
      assert.equal(res.status, 200, JSON.stringify(res.json));
      return res.json as Tree;
    };
    assert.equal((await api(server, 'GET', '/api/v0/content_caches_tree', undefined)).status, 401);

    // Before any pull, the chain is already right: every configured upstream is reported from the start.
    const before = await waitFor('both caches placed', async () => {
      const t0 = await tree('alice');
      const b = find(t0.roots, 'region-b');
      return find(t0.roots, 'region-a')?.children.some((c) => c.name === 'region-b') && b?.health === 'up' ? t0 : undefined;
    });
    const server0 = before.roots[0]?.children[0];
    assert.equal(before.roots[0]?.kind, 'origin');
    assert.equal(before.roots[0]?.url, origin.url, 'the origin\'s URL, for an admin');
    assert.equal(server0?.kind, 'server');
    assert.deepEqual(server0?.children.map((c) => c.name), ['region-a']);
    assert.deepEqual(
      find(before.roots, 'region-b')?.upstreams?.map((u) => [u.target.kind, u.target.name ?? null, u.parent]),
      [
        ['cache', 'region-a', true],
        ['server', null, false],
      ],
    );

    // bob pulls twice through the server: redirected to region-b, which fills from region-a, which fills
    // from the server; the second pull is served from region-b's disk.
    const image = await makeOciImage(join(dir, 'src'), { layers: [300_000, 50_000], tag: 'v1', seed: 'web-tree' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${server.host}/team/app:v1`]);
    for (const target of ['bob1', 'bob2']) {
      await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, target)}:v1`]);
      await assertLayoutHolds(join(dir, target), 'v1', image);
    }
    const layerBytes = image.blobs.filter((b) => b.digest !== image.digest).reduce((a, b) => a + b.size, 0);
    const after = await waitFor(
      'the pulls in both caches\' figures',
      async () => {
        const t1 = await tree('bob');
        const a = find(t1.roots, 'region-a');
        const b = find(t1.roots, 'region-b');
        return (a?.bytesFilled ?? 0) > 0 && (b?.bytesFilled ?? 0) > 0 && (b?.hitRatio ?? 0) > 0 && (b?.bytesServed ?? 0) >= 2 * layerBytes ? t1 : undefined;
      },
      20_000,
      200,
    );
    const a = find(after.roots, 'region-a') as TreeNode;
    const b = find(after.roots, 'region-b') as TreeNode;
    // region-b filled each layer once and served it twice; region-a filled from the server what it passed on.
    assert.ok((b.bytesFilled ?? 0) >= layerBytes, `region-b filled ${b.bytesFilled}`);
    assert.ok((a.bytesFilled ?? 0) >= layerBytes, `region-a filled ${a.bytesFilled}`);
    assert.ok((a.bytesServed ?? 0) >= layerBytes, `region-a served ${a.bytesServed} to region-b`);
    assert.ok(b.hitRatio !== null && b.hitRatio! > 0 && b.hitRatio! < 1, `region-b: misses then hits, ${b.hitRatio}`);
    assert.equal(a.hitRatio, 0, 'region-a only filled');
    assert.equal(b.upstreamErrors, 0);
    assert.equal(b.warmJobsInFlight, 0, 'no warm job yet');
    // bob is no admin: the origin's URL is not his to see; the caches' hosts are (as on the cards).
    assert.equal(after.roots[0]?.url, null);
    assert.equal(find(after.roots, 'region-b')?.upstreams?.[0]?.url, regionA.url);

    // The page draws it.
    const browser = await launchChromium();
    defer(() => browser.close());
    const errors: string[] = [];
    const bob = await signIn(browser, server, 'bob', errors);
    await bob.page.click('#tabs .tab[data-tab="tree"]');
    await bob.page.waitForSelector('#tree-view:not([hidden])');
    await bob.page.waitForSelector(`${TREE_PATH.regionB} .badge[data-status="up"]`);
    await bob.page.waitForSelector(`${TREE_PATH.regionA} > article .badge[data-status="up"]`);
    const stat = (node: string, key: string) => bob.page.textContent(`${node} > article .stat.${key} dd`);
    assert.match((await stat(TREE_PATH.regionB, 'hit-ratio')) ?? '', /^\d+(\.\d)? %$/);
    assert.notEqual(await stat(TREE_PATH.regionB, 'hit-ratio'), '0 %');
    assert.equal(await stat(TREE_PATH.regionA, 'hit-ratio'), '0 %');
    for (const node of [TREE_PATH.regionA, TREE_PATH.regionB]) {
      assert.match((await stat(node, 'filled')) ?? '', /KiB|MiB/);
      assert.match((await stat(node, 'served')) ?? '', /KiB|MiB/);
      assert.equal(await stat(node, 'upstream-errors'), '0');
      assert.equal(await stat(node, 'warm-jobs'), '0');
    }
    assert.match((await bob.page.textContent(`${TREE_PATH.regionB} > article .upstreams`)) ?? '', /region-a \(parent\).*this server/);
    assert.match((await bob.page.textContent('#cache-tree li[data-kind="origin"] > article')) ?? '', /URL shown to admins/);
    assert.equal(await bob.page.getAttribute('#cache-tree ul.tree', 'aria-label'), 'The cache tree; figures over the last 60 minutes');
    await bob.page.screenshot({ path: join(shots, 'tree-desktop.png'), fullPage: true });

    // alice (admin) sees the origin's URL; on a phone the tree fits the screen.
    const alice = await signIn(browser, server, 'alice', errors, { width: 375, height: 812 });
    await alice.page.click('#tabs .tab[data-tab="tree"]');
    await alice.page.waitForSelector(`${TREE_PATH.regionB} .badge[data-status="up"]`);
    assert.equal(await alice.page.textContent('#cache-tree li[data-kind="origin"] > article .host'), origin.url);
    assert.ok((await alice.page.evaluate<number>('document.documentElement.scrollWidth')) <= 375, 'no horizontal scrolling at 375 px');
    await alice.page.screenshot({ path: join(shots, 'tree-phone.png'), fullPage: true });
    // A reload keeps the tab (#tree).
    await alice.page.reload();
    await alice.page.waitForSelector(`#tree-view:not([hidden]) ${TREE_PATH.regionB}`);
    await alice.context.close();

    // region-b stops: the server's next check finds it down, and the tree says so.
    await regionB.stop();
    await waitFor('region-b down in the tree', async () => find((await tree('bob')).roots, 'region-b')?.health === 'down', 15_000, 200);
    await bob.page.click('#tree-refresh');
    await bob.page.waitForSelector(`${TREE_PATH.regionB} > article .badge[data-status="down"]`);
    assert.match((await bob.page.textContent(`${TREE_PATH.regionB} > article .node-error`)) ?? '', /ECONNREFUSED/);
    // Its hour stays (the figures it published before stopping); region-a is still up.
    assert.match((await stat(TREE_PATH.regionB, 'filled')) ?? '', /KiB|MiB/);
    await bob.page.waitForSelector(`${TREE_PATH.regionA} > article .badge[data-status="up"]`);

    // alice warms the image on region-b by hand while it is down: the job waits to retry, in flight on the tree.
    const warm = await api(server, 'POST', `/api/v0/content_caches/${created['region-b']}/warm`, 'alice', { repository: 'team/app', reference: 'v1' });
    assert.equal(warm.status, 202, JSON.stringify(warm.json));
    await waitFor('a warm job in flight on region-b', async () => find((await tree('bob')).roots, 'region-b')?.warmJobsInFlight === 1, 15_000, 200);
    assert.equal(find((await tree('bob')).roots, 'region-a')?.warmJobsInFlight, 0);
    await bob.page.click('#tree-refresh');
    await bob.page.waitForSelector(`${TREE_PATH.regionB} > article .stat.warm-jobs dd:text-is("1")`);

    assert.deepEqual(errors, [], 'no script error and no CSP violation on the page');
  });
});
