/**
 * The server's web page (`/ui/`): static files shipped in the package (`packages/server/ui/`), read once at
 * start-up and served from memory. The page is plain HTML, CSS and JavaScript: no framework, nothing
 * fetched from elsewhere; it talks to the `/api/v0` API like any other client.
 *
 * Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline script or
 * style, no framing), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Koa from 'koa';

/** Where the page is served. */
export const UI_PREFIX = '/ui/';

/** The page's files in the package: `dist/src/web/ui.js` -> `packages/server/ui/`. */
export const UI_DIR = fileURLToPath(new URL('../../../ui/', import.meta.url));

/** The Content-Security-Policy of every UI answer. */
export const UI_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

interface UiFile {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

/** Reads the page's files (one level, known types only). */
function loadFiles(dir: string): Map<string, UiFile> {
  const files = new Map<string, UiFile>();
  for (const name of readdirSync(dir)) {
    const type = TYPES[extname(name).toLowerCase()];
    if (type === undefined || name.startsWith('.') || !statSync(join(dir, name)).isFile()) continue;
    const body = readFileSync(join(dir, name));
    files.set(name, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  if (!files.has('index.html')) throw new Error(`${dir}: the web page's index.html is missing`);
  return files;
}

/** True for the paths the page owns: `/`, `/ui` and everything under `/ui/`. */
export function isUiPath(path: string): boolean {
  return path === '/' || path === '/ui' || path.startsWith(UI_PREFIX);
}

/**
 * The middleware that serves the page. `/` and `/ui` redirect to `/ui/`; `/ui/` is `index.html`; other
 * paths are files of `dir` by name (no sub-folders). GET and HEAD only.
 */
export function createUiMiddleware(options: { dir?: string } = {}): Koa.Middleware {
  const files = loadFiles(options.dir ?? UI_DIR);
  return async (ctx) => {
    ctx.set('Content-Security-Policy', UI_CSP);
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Cross-Origin-Opener-Policy', 'same-origin');
    ctx.set('Cross-Origin-Resource-Policy', 'same-origin');
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.set('Allow', 'GET, HEAD');
      ctx.status = 405;
      ctx.type = 'text/plain';
      ctx.body = 'method not allowed\n';
      return;
    }
    if (ctx.path === '/' || ctx.path === '/ui') {
      // Body first: Koa turns a null body into 204 unless the status comes after it.
      ctx.body = null;
      ctx.status = 302;
      ctx.set('Location', UI_PREFIX);
      return;
    }
    const name = ctx.path === UI_PREFIX ? 'index.html' : ctx.path.slice(UI_PREFIX.length);
    const file = files.get(name);
    if (file === undefined) {
      ctx.status = 404;
      ctx.type = 'text/plain';
      ctx.body = 'not found\n';
      return;
    }
    // Revalidated on every load, so a new server version is picked up at once.
    ctx.set('Cache-Control', 'no-cache');
    ctx.set('ETag', file.etag);
    if (ctx.get('if-none-match') === file.etag) {
      ctx.body = null;
      ctx.status = 304;
      return;
    }
    ctx.status = 200;
    ctx.type = file.type;
    // Koa answers HEAD with the headers of this body and no bytes.
    ctx.body = file.body;
  };
}
