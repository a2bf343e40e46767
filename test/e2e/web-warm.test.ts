/**
 * The web page's "Warm on push" panel in a real browser (headless Chromium, as web.test.ts drives it): alice
 * (an admin) sets the warm rule `team` -> region-a, region-b with the form, a push's event warms both caches
 * and the panel shows the jobs done; she warms an image by hand on region-a and removes the rule. The page's
 * console stays free of errors (the strict CSP, the module).
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { testScope } from '../lib/cascade.js';
import { makeOciImage } from '../lib/image.js';
import { skopeo } from '../lib/peers.js';
import { api, basic, startStack, USERS } from '../lib/stack.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SECRET = 'web-warm-events-secret-0123456789';

describe('web page: warm on push', () => {
  it('alice sets a warm rule, sees the jobs of a push, warms an image by hand and removes the rule', { timeout: 120_000 }, async (t) => {
    await access(CHROMIUM).catch(() => assert.fail(`${CHROMIUM} is missing: run scripts/install-peers.sh`));
    const { dir, defer } = await testScope(t, 'e2e-web-warm-');
    const { server, regionA, regionB, origin } = await startStack(dir, defer, { serverExtra: { events: { tokens: [SECRET] } } });
    const ids: Record<string, string> = {};
    for (const [name, cache] of [['region-a', regionA], ['region-b', regionB]] as const) {
      ids[name] = ((await api(server, 'POST', '/api/v0/content_caches', 'alice', { name, host: cache.url })).json as { id: string }).id;
    }

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    defer(() => browser.close());
    const errors: string[] = [];
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${server.url}/ui/#manage`);
    await page.fill('#signin-username', 'alice');
    await page.fill('#signin-password', USERS.alice);
    await page.click('#signin-submit');
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

    // A push and its event (as the origin sends it): the panel shows both jobs done.
    const image = await makeOciImage(join(dir, 'src'), { layers: [200_000], tag: 'v1', seed: 'web-warm' });
    await skopeo(['copy', '--dest-creds', `alice:${USERS.alice}`, image.ref, `docker://${server.host}/team/app:v1`]);
    const head = await fetch(`${origin.url}/v2/team/app/manifests/v1`, { method: 'HEAD', headers: { authorization: basic('alice'), accept: image.mediaType } });
    const envelope = { events: [{ id: 'web-1', action: 'push', target: { mediaType: head.headers.get('content-type'), digest: head.headers.get('docker-content-digest'), repository: 'team/app', tag: 'v1' } }] };
    const posted = await fetch(`${server.url}/api/v0/events`, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/vnd.docker.distribution.events.v1+json' }, body: JSON.stringify(envelope) });
    assert.equal(posted.status, 200);
    await page.waitForSelector('#warm-jobs .warm-job[data-state="done"] >> nth=1', { timeout: 30_000 });
    const jobsText = (await page.textContent('#warm-jobs')) ?? '';
    assert.match(jobsText, /region-a/);
    assert.match(jobsText, /region-b/);
    assert.match(jobsText, /2\/2 layers/);

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
