/**
 * The server's web page in a real browser (Debian's headless Chromium, driven by playwright-core): bob
 * signs in with his registry credentials, sees the caches and their health, picks region-a, and his next
 * pull is redirected there; alice, an admin, registers, renames and deletes a cache, sets the default and
 * rules. Screenshots of the main views go to a temporary folder, or to docs/screenshots/ with
 * UPDATE_SCREENSHOTS=1.
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
import { api, basic, registerCaches, startStack, USERS } from '../lib/stack.js';

interface Health {
  status: string;
  latencyMs: number | null;
  hitRatio?: number | null;
  diskBytes?: number | null;
  lastError?: string | null;
  metricsAt?: string | null;
}

describe('web page: pick a cache, see health, manage caches', () => {
  it('bob picks region-a and his next pull goes there; alice registers, renames and deletes a cache and sets rules', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-web-');
    const shots = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/screenshots') : join(dir, 'screenshots');
    await mkdir(shots, { recursive: true });
    const { server, regionA, regionB, origin } = await startStack(dir, defer);

    // Setup through the API: alice registers the two caches and pushes an image.
    const created = await registerCaches(server, { 'region-a': regionA, 'region-b': regionB });
    const image = await makeOciImage(join(dir, 'src'), { layers: [400_000, 60_000], tag: 'v1', seed: 'web-page' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, `oci:${join(dir, 'src')}:v1`, `docker://${server.host}/team/app:v1`]);
    const layers = image.blobs.map((b) => b.digest).filter((d) => d !== image.digest);
    const health = async (id: string) => (await api(server, 'GET', `/api/v0/content_caches/${id}/health`, 'bob')).json as Health;
    await waitFor('both caches checked, with their metrics', async () => {
      const all = await Promise.all(Object.values(created).map(health));
      return all.every((h) => h.status === 'healthy' && h.metricsAt);
    });

    const browser = await launchChromium();
    defer(() => browser.close());
    const errors: string[] = [];

    // `/` leads to the page; every answer has the strict CSP.
    const anonymous = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const start = await anonymous.newPage();
    const first = await start.goto(`${server.url}/`);
    assert.equal(new URL(start.url()).pathname, '/ui/');
    assert.match(first?.headers()['content-security-policy'] ?? '', /default-src 'self'/);
    assert.equal(first?.headers()['x-content-type-options'], 'nosniff');
    await start.waitForSelector('#signin-view:not([hidden])');
    // A wrong password is refused with a message (and no browser dialog).
    await start.fill('#signin-username', 'bob');
    await start.fill('#signin-password', 'not-his-password');
    await start.click('#signin-submit');
    await start.waitForSelector('#signin-status.error');
    assert.match((await start.textContent('#signin-status')) ?? '', /did not accept/);
    await start.fill('#signin-password', '');
    await start.fill('#signin-username', '');
    await start.evaluate("document.getElementById('signin-status').textContent = ''");
    await start.evaluate('document.activeElement.blur()');
    await start.screenshot({ path: join(shots, 'sign-in.png') });
    await anonymous.close();

    // 1. bob signs in: no admin tools; every cache with its health.
    const bob = await signIn(browser, server, 'bob', errors);
    assert.equal(await bob.page.isVisible('#tabs .tab[data-tab="manage"]'), false, 'no admin tab for bob');
    assert.equal(await bob.page.isVisible('#manage-view'), false);
    for (const name of ['region-a', 'region-b']) {
      const card = `#cache-list .option[data-name="${name}"]`;
      await bob.page.waitForSelector(`${card} .badge[data-status="healthy"]`);
      assert.match((await bob.page.textContent(`${card} .host`)) ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match((await bob.page.textContent(`${card} .stat.latency dd`)) ?? '', /^\d+ ms$/);
    }
    // He picks region-a and saves.
    await bob.page.click('#cache-list .option[data-name="region-a"]');
    await bob.page.click('#pick-save');
    await bob.page.waitForSelector('#pick-status.ok');
    assert.match((await bob.page.textContent('#pick-status')) ?? '', /region-a/);
    const settings = await api(server, 'GET', '/api/v0/accounts/bob/settings', 'bob');
    assert.deepEqual(settings.json, { contentCacheUUID: created['region-a'] }, 'saved with PATCH /api/v0/accounts/bob/settings');
    // The credentials stay in the tab: no cookie, nothing in localStorage.
    assert.deepEqual(await bob.context.cookies(), []);
    assert.equal(await bob.page.evaluate('localStorage.length'), 0);

    // His next pull is redirected to region-a.
    const redirect = await fetch(`${server.url}/v2/team/app/blobs/${layers[0]}`, { headers: { authorization: basic('bob') }, redirect: 'manual' });
    assert.equal(redirect.status, 307);
    assert.equal(new URL(redirect.headers.get('location') ?? '').origin, regionA.url);
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob')}:v1`]);
    await assertLayoutHolds(join(dir, 'bob'), 'v1', image);
    const servedByA = regionA.requests().filter((r) => r.method === 'GET' && r.status === 200 && layers.some((d) => String(r.path).endsWith(d)));
    assert.ok(servedByA.length >= layers.length, 'region-a served bob\'s layers');
    assert.equal(regionB.requests().filter((r) => String(r.path).includes('/blobs/')).length, 0, 'region-b served none');
    // A second pull is served from region-a's disk: its hit ratio shows on the page.
    await skopeo(['copy', '--src-creds', `bob:${USERS.bob}`, `docker://${server.host}/team/app:v1`, `oci:${join(dir, 'bob2')}:v1`]);
    const a = await waitFor('region-a\'s hit ratio', async () => {
      const h = await health(created['region-a'] as string);
      return typeof h.hitRatio === 'number' && h.hitRatio > 0 && typeof h.diskBytes === 'number' && h.diskBytes > 0 ? h : undefined;
    });
    assert.ok(a.hitRatio !== null && a.hitRatio! < 1, `hits and misses: ${a.hitRatio}`);
    await bob.page.reload();
    await bob.page.waitForSelector('#cache-list .option[data-name="region-a"] .badge[data-status="healthy"]');
    assert.match((await bob.page.textContent('#cache-list .option[data-name="region-a"] .stat.hit-ratio dd')) ?? '', /^\d+(\.\d)? %$/);
    assert.match((await bob.page.textContent('#cache-list .option[data-name="region-a"] .stat.disk dd')) ?? '', /KiB|MiB/);
    assert.equal(await bob.page.isChecked('#cache-list .option[data-name="region-a"] input[type="radio"]'), true, 'his choice is shown after a reload');
    await bob.page.screenshot({ path: join(shots, 'user-desktop.png'), fullPage: true });

    // The same on a phone: one column, nothing wider than the screen.
    const phone = await signIn(browser, server, 'bob', errors, { width: 375, height: 812 });
    await phone.page.waitForSelector('#cache-list .option[data-name="region-a"] .badge[data-status="healthy"]');
    assert.ok((await phone.page.evaluate<number>('document.documentElement.scrollWidth')) <= 375, 'no horizontal scrolling at 375 px');
    await phone.page.screenshot({ path: join(shots, 'user-phone.png'), fullPage: true });
    await phone.context.close();

    // 2. alice, an admin, manages the caches.
    const alice = await signIn(browser, server, 'alice', errors);
    assert.equal(await alice.page.isVisible('#who-admin'), true);
    await alice.page.click('#tabs .tab[data-tab="manage"]');
    await alice.page.waitForSelector('#manage-view:not([hidden])');
    await alice.page.waitForSelector('#admin-caches .cache-row[data-name="region-b"]');
    // Register a cache (nothing listens there: it shows as unreachable).
    await alice.page.fill('#add-name', 'region-c');
    await alice.page.fill('#add-host', 'http://127.0.0.1:9');
    await alice.page.click('#add-form button[type="submit"]');
    await alice.page.waitForSelector('#admin-caches .cache-row[data-name="region-c"]');
    const listed = (await api(server, 'GET', '/api/v0/content_caches', 'alice')).json as Array<{ id: string; name: string; host: string }>;
    const regionC = listed.find((c) => c.name === 'region-c');
    assert.ok(regionC, 'region-c is registered');
    assert.equal(regionC.host, 'http://127.0.0.1:9');
    // Rename it.
    await alice.page.fill('#admin-caches .cache-row[data-name="region-c"] input[name="name"]', 'region-c-renamed');
    await alice.page.click('#admin-caches .cache-row[data-name="region-c"] button[data-action="save"]');
    await alice.page.waitForSelector('#admin-caches .cache-row[data-name="region-c-renamed"]');
    assert.equal(((await api(server, 'GET', `/api/v0/content_caches/${regionC.id}`, 'alice')).json as { name: string }).name, 'region-c-renamed');
    // The default and rules.
    await alice.page.selectOption('#default-select', { label: 'region-b' });
    await alice.page.click('#default-form button[type="submit"]');
    await alice.page.waitForSelector('#default-status.ok');
    assert.deepEqual((await api(server, 'GET', '/api/v0/content_caches_default', 'bob')).json, { contentCacheUUID: created['region-b'] });
    await alice.page.fill('#namespace-input', 'team/app');
    await alice.page.selectOption('#namespace-cache', { label: 'region-a' });
    await alice.page.click('#namespace-form button[type="submit"]');
    await alice.page.waitForSelector('#namespace-rules .rule-row[data-key="team/app"]');
    await alice.page.fill('#network-input', '10.20.0.0/16');
    await alice.page.selectOption('#network-cache', { label: 'region-b' });
    await alice.page.click('#network-form button[type="submit"]');
    await alice.page.waitForSelector('#network-rules .rule-row[data-key="10.20.0.0/16"]');
    assert.deepEqual((await api(server, 'GET', '/api/v0/content_cache_rules', 'bob')).json, {
      namespaces: [{ namespace: 'team/app', contentCacheUUID: created['region-a'] }],
      networks: [{ cidr: '10.20.0.0/16', contentCacheUUID: created['region-b'] }],
    });
    // The new cache is checked as unreachable; the page shows it after a reload (it stays on Manage).
    await waitFor('region-c checked', async () => (await health(regionC.id)).status === 'unhealthy');
    await alice.page.reload();
    await alice.page.waitForSelector('#manage-view:not([hidden]) #admin-caches .cache-row[data-name="region-c-renamed"] .badge[data-status="unhealthy"]');
    await alice.page.screenshot({ path: join(shots, 'admin-desktop.png'), fullPage: true });
    const alicePhone = await signIn(browser, server, 'alice', errors, { width: 375, height: 812 });
    await alicePhone.page.click('#tabs .tab[data-tab="manage"]');
    await alicePhone.page.waitForSelector('#admin-caches .cache-row[data-name="region-c-renamed"] .badge[data-status="unhealthy"]');
    assert.ok((await alicePhone.page.evaluate<number>('document.documentElement.scrollWidth')) <= 375, 'no horizontal scrolling at 375 px (admin)');
    await alicePhone.page.screenshot({ path: join(shots, 'admin-phone.png'), fullPage: true });
    await alicePhone.context.close();
    // The user view tells why it is down.
    await alice.page.click('#tabs .tab[data-tab="pick"]');
    assert.match((await alice.page.textContent('#cache-list .option[data-name="region-c-renamed"] .stat.last-error dd')) ?? '', /ECONNREFUSED/);
    await alice.page.click('#tabs .tab[data-tab="manage"]');
    // Delete it: two clicks (the first arms the button).
    await alice.page.click('#admin-caches .cache-row[data-name="region-c-renamed"] button[data-action="delete"]');
    await alice.page.click('#admin-caches .cache-row[data-name="region-c-renamed"] button[data-action="delete"]');
    await alice.page.waitForSelector('#admin-caches .cache-row[data-name="region-c-renamed"]', { state: 'detached' });
    assert.equal((await api(server, 'GET', `/api/v0/content_caches/${regionC.id}`, 'alice')).status, 404);

    // bob cannot write, whatever the page shows.
    assert.equal((await api(server, 'POST', '/api/v0/content_caches', 'bob', { name: 'x', host: 'http://127.0.0.1:1' })).status, 403);
    assert.deepEqual(errors, [], 'no script error and no CSP violation on the page');
    // No password reaches a log.
    const logs = [...[server, regionA, regionB].flatMap((proc) => [...proc.text, ...proc.logs.map((l) => JSON.stringify(l))]), ...origin.text()].join('\n');
    for (const secret of Object.values(USERS)) assert.ok(!logs.includes(secret), `password ${secret} not logged`);
  });
});
