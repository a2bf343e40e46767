/**
 * The server's web page in Debian's headless Chromium, driven by playwright-core (no browser is downloaded):
 * the executable, its flags for a closed network, and signing in as a stack user with console errors
 * collected. Used by the web page's end-to-end tests.
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { CascadeProcess } from './cascade.js';
import { USERS, type StackUser } from './stack.js';

/** Debian's chromium (scripts/install-peers.sh installs it); playwright downloads no browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Flags for a closed network and no sandbox (root in CI): nothing to wait for, nothing to fetch. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Starts Chromium; fails with what to install when it is missing. */
export async function launchChromium(): Promise<Browser> {
  await access(CHROMIUM).catch(() => assert.fail(`${CHROMIUM} is missing: run scripts/install-peers.sh (Debian packages chromium and chromium-driver)`));
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** Opens the page in a new context and signs in; script errors and CSP violations go to `errors`. */
export async function signIn(browser: Browser, server: CascadeProcess, user: StackUser, errors: string[], viewport = { width: 1280, height: 860 }): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport, ...(viewport.width < 500 ? { isMobile: true, hasTouch: true } : {}) });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`${user}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`${user}: ${err.message}`));
  await page.goto(`${server.url}/ui/`);
  await page.fill('#signin-username', user);
  await page.fill('#signin-password', USERS[user]);
  await page.click('#signin-submit');
  await page.waitForSelector('#app-view:not([hidden])');
  assert.equal(await page.textContent('#who-name'), user);
  return { context, page };
}
