/**
 * The web page's "Warm on push" panel in a real browser (headless Chromium, as web.test.ts drives it): alice
 * (an admin) sets the warm rule `team` -> region-a, region-b with the form, a push's event (sent by the Cascade
 * origin itself) warms both caches
 * and the panel shows the jobs done; she warms an image by hand on region-a and removes the rule. The page's
 * console stays free of errors (the strict CSP, the module).
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { launchChromium, signIn } from '../lib/browser.js';
import { testScope } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { freePort, skopeo } from '../lib/peers.js';
import { api, registerCaches, startStack, USERS } from '../lib/stack.js';

const ROOT = join(import.meta.dirname, '../../..');
const SECRET = 'web-warm-events-secret-0123456789';

describe('web page: warm on push', () => {
  it('alice sets a warm rule, sees the jobs of a push, warms an image by hand and removes the rule', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-web-warm-');
    const shots = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs/screenshots') : join(dir, 'screenshots');
    await mkdir(shots, { recursive: true });
    // The origin (Cascade) sends its notifications to the server, as `cascade up` sets it up.
    const serverPort = await freePort();
    const { server, regionA, regionB } = await startStack(dir, defer, {
      serverAddr: `127.0.0.1:${serverPort}`,
      serverExtra: { events: { tokens: [SECRET] } },
      originNotifications: { endpoints: [{ name: 'cascade-server', url: `http://127.0.0.1:${serverPort}/api/v0/events`, headers: { Authorization: [`Bearer ${SECRET}`] }, timeout: '5s', threshold: 3, backoff: '1s' }] },
    });
    const ids = await registerCaches(server, { 'region-a': regionA, 'region-b': regionB });

    const browser = await launchChromium();
    defer(() => browser.close());
    const errors: string[] = [];
    const { page } = await signIn(browser, server, 'alice', errors);
    await page.click('#tabs .tab[data-tab="manage"]');
    await page.waitForSelector('#warm-panel:not([hidden])');
    await page.waitForSelector('#warm-rules .empty');

    // The rule, through the form.
    await page.fill('#warm-namespace', 'team/');
    await page.check(`#warm-caches input[value="${ids['region-a']}"]`);
    await page.check(`#warm-caches input[value="${ids['region-b']}"]`);
    await page.click('#warm-form button[type="submit"]');
    await page.waitForSelector('#warm-status.ok');
    assert.match((await page.textContent('#warm-status')) ?? '', /team warm region-a, region-b/);
    assert.deepEqual((await api(server, 'GET', '/api/v0/warm_rules', 'alice')).json, [{ namespace: 'team', contentCacheUUIDs: [ids['region-a'], ids['region-b']].sort() }]);
    assert.match((await page.textContent('#warm-rules .warm-rule[data-namespace="team"]')) ?? '', /region-a, region-b/);

    // A push: the origin's event warms both caches, and the panel shows both jobs done.
    const image = await makeOciImage(join(dir, 'src'), { layers: [200_000], tag: 'v1', seed: 'web-warm' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, image.ref, `docker://${server.host}/team/app:v1`]);
    await page.waitForSelector('#warm-jobs .warm-job[data-state="done"] >> nth=1', { timeout: 30_000 });
    const jobsText = (await page.textContent('#warm-jobs')) ?? '';
    assert.match(jobsText, /region-a/);
    assert.match(jobsText, /region-b/);
    assert.match(jobsText, /2\/2 layers/);
    await page.screenshot({ path: join(shots, 'warm-desktop.png'), fullPage: true });

    // A warm by hand: every layer already there.
    await page.fill('#warm-repository', 'team/app');
    await page.fill('#warm-reference', 'v1');
    await page.selectOption('#warm-cache', ids['region-a'] ?? '');
    await page.click('#warm-now-form button[type="submit"]');
    await page.waitForSelector('#warm-status.ok');
    assert.match((await page.textContent('#warm-status')) ?? '', /Warming team\/app:v1 on region-a/);
    await page.waitForSelector('#warm-jobs .warm-job[data-state="done"] >> nth=2', { timeout: 30_000 });

    // Removing the rule.
    await page.click('#warm-rules .warm-rule[data-namespace="team"] button');
    await page.waitForSelector('#warm-rules .empty');
    assert.deepEqual((await api(server, 'GET', '/api/v0/warm_rules', 'alice')).json, []);
    assert.deepEqual(errors, []);
  });
});
