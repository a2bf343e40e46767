/**
 * A cache node's warm route, for warm on push: the server asks the cache to hold a blob before anyone pulls
 * it, without the bytes travelling back to the server.
 *
 *     POST /api/v0/warm?repository=team/app&digest=sha256:...      X-Cascade-Grant: <the server's grant>
 *     200 {"digest": "sha256:...", "size": 1234, "present": false}
 *
 * The grant is checked exactly as a redirected blob GET's is (for this repository and digest, current, signed
 * with the server's key, for this cache or one it fills for); the blob is then filled as a miss is, by the
 * same single-flight fill, from the next hop with the same grant, so every hop of a chain fetches once and
 * keeps a copy. The answer comes once the blob is stored (`present: false`), or at once when it was already
 * here (`present: true`, and it counts as an access: its TTL starts again, as on a hit).
 */
import type Koa from 'koa';
import { Digest, RegistryError, validateName, type ExtraRoute } from '@cascade/registry-core';
import type { CacheNamespace } from './cache.js';
import { statBlob } from './cache.js';
import { GRANT_HEADER, type GrantVerification } from './grants/authorizer.js';

/** Where a cache node in `auth: grant` mode answers warm requests. */
export const WARM_PATH = '/api/v0/warm';

/** A cache's answer to a warm request. */
export interface WarmAnswer {
  readonly digest: string;
  readonly size: number;
  /** True when the blob was already stored (nothing was fetched). */
  readonly present: boolean;
}

/**
 * The cache namespace a warm request fills into. The route exists before the namespace (the middleware
 * builds it when the registry starts), so the middleware attaches it here once it is built.
 */
export class CacheWarmTarget {
  private cache: CacheNamespace | undefined;

  /** Called by the `downstream` middleware with the namespace it built. */
  attach(cache: CacheNamespace): void {
    this.cache = cache;
  }

  /**
   * Makes sure `digest` of `repository` is stored: answers at once when it is (recording the access), else
   * starts or joins its fill with `grant` for the next hop, and answers once the blob is in place.
   * @throws RegistryError UNAVAILABLE before the cache is ready, the fill's error when it fails.
   */
  async warm(repository: string, digest: Digest, grant: string): Promise<WarmAnswer> {
    const cache = this.cache;
    if (cache === undefined) throw new RegistryError('UNAVAILABLE', 'the cache is starting');
    const stored = await statBlob(cache.options.driver, digest);
    if (stored !== undefined) {
      cache.options.tracker?.touch(digest, stored, 'hit');
      return { digest: digest.toString(), size: stored, present: true };
    }
    const fill = cache.fills.get(digest) ?? cache.fills.start(repository, digest, { [GRANT_HEADER]: grant });
    // The fill runs to its end whether or not the server still waits: nothing else aborts it.
    await fill.finished;
    if (fill.state !== 'done') {
      const reason = fill.error?.message ?? 'the fill failed';
      throw fill.error instanceof RegistryError ? fill.error : new RegistryError('UPSTREAM_FAILED', `the fill of ${digest.toString()} failed: ${reason}`);
    }
    return { digest: digest.toString(), size: fill.size ?? fill.written, present: false };
  }
}

/** The `POST /api/v0/warm` route of a cache node whose grants `verifier` checks, filling into `target`. */
export function warmRoute(target: CacheWarmTarget, verifier: GrantVerification): ExtraRoute {
  return {
    method: 'POST',
    path: WARM_PATH,
    handler: async (ctx: Koa.Context) => {
      const repository = validateName(single(ctx.query['repository'], 'repository'));
      const digest = Digest.parse(single(ctx.query['digest'], 'digest'));
      const grant = ctx.get(GRANT_HEADER);
      if (!grant) throw new RegistryError('UNAUTHORIZED', `a warm request needs the server's grant in ${GRANT_HEADER}`);
      await verifier.verify(grant, { repo: repository, digest: digest.toString() });
      ctx.body = await target.warm(repository, digest, grant);
      ctx.set('Cache-Control', 'no-store');
    },
  };
}

/** The one value of a query parameter. */
function single(value: string | string[] | undefined, name: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new RegistryError('REQUEST_INVALID', `the query needs exactly one ${name}`);
  return value;
}
