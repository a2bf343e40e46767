/**
 * The HTTP kit's routing for every path outside `/v2/` (which keeps its own table, `http/dispatch.ts`):
 * @koa/router, with its `allowedMethods` answering a known path asked with another method. An app is a
 * list of routes on the kit's middleware.
 */
import Router, { type RouterContext } from '@koa/router';
import type Koa from 'koa';
import { RegistryError, type CodedError } from '../../errors.js';

/**
 * A handler for one method at one exact path outside `/v2/` (the token endpoint, `/metrics`, a cache's
 * `/api/v0/keys`). A GET route answers HEAD too, as @koa/router does. It runs inside the kit's error mapper,
 * so a thrown {@link CodedError} becomes an error response.
 */
export interface ExtraRoute {
  /** Upper-case HTTP method. */
  readonly method: string;
  /** The exact request path: case-sensitive, no trailing slash added or removed, no pattern syntax. */
  readonly path: string;
  readonly handler: (ctx: Koa.Context) => Promise<void>;
}

/** The error for a method a known path does not have, given the methods it has (the `Allow` header). */
export type NotAllowed = (method: string, allow: string) => CodedError;

/** The registry's answer: 405 `UNSUPPORTED` with `Allow`. */
export const unsupported: NotAllowed = (method, allow) => new RegistryError('UNSUPPORTED', `${method} is not supported on this resource`, { headers: { Allow: allow } });

/**
 * A router with `routes` at their exact paths. Paths are matched as RegExps, not as path-to-regexp patterns:
 * a configured path (a token realm's) may hold `:`, `*` or `(`, and was always matched exactly.
 */
export function routerOf(routes: readonly ExtraRoute[]): Router {
  const router = new Router();
  for (const route of routes) {
    const exact = new RegExp(`^${route.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
    router.register(exact, [route.method], route.handler, { pathAsRegExp: true });
  }
  return router;
}

/**
 * Serves `router`'s routes. A path none of them has goes on to the rest of the app (`next`). A path one of
 * them has, asked with another method, goes no further: @koa/router's `allowedMethods` answers it (OPTIONS:
 * 200 with `Allow`), and its 405 or 501 (a method it does not know) is thrown as `notAllowed` (405), so the
 * kit's error mapper writes the app's envelope and a made-up method is the client's fault, never a 5xx.
 */
export function serveRoutes(router: Router, notAllowed: NotAllowed = unsupported): Koa.Middleware {
  const routes = router.routes();
  const allowed = router.allowedMethods();
  return (ctx, next) => {
    const routed = ctx as RouterContext;
    return routes(routed, async () => {
      if (!routed.matched?.some((layer) => layer.methods.length > 0)) return next();
      await allowed(routed, async () => undefined);
      if (ctx.status === 405 || ctx.status === 501) throw notAllowed(ctx.method, ctx.response.get('Allow'));
    });
  };
}
