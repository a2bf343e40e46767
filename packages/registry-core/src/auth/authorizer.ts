/**
 * The authorization seam of the `/v2/` API. The dispatcher names the access a request needs (as in the
 * Docker token spec: `repository:<name>:pull,push`) and an {@link Authorizer} decides. htpasswd checks the
 * identity only; the token mode and the cache's signed grants plug in here too.
 */
import type { IncomingHttpHeaders } from 'node:http';

/** An action on a repository. */
export type Action = 'pull' | 'push' | 'delete';

/** One resource and the actions a request needs on it. */
export type Access = { type: 'repository'; name: string; actions: Action[] } | { type: 'registry'; name: 'catalog'; actions: ['*'] };

/** Who made the request. */
export interface Identity {
  /** User name, when the request was authenticated. */
  readonly user?: string;
}

/** Decides whether a request may have `access`. */
export interface Authorizer {
  /**
   * Resolves with the identity, or rejects with RegistryError UNAUTHORIZED (with a `WWW-Authenticate`
   * header) or DENIED. The base route `/v2/` is checked with an empty `access`. `query` is the request's
   * parsed query string, for credentials that travel in the URL (the cache's `?grant=`, since a redirect
   * cannot set headers).
   */
  authorize(headers: IncomingHttpHeaders, access: Access[], path: string, query?: Readonly<Record<string, string | string[] | undefined>>): Promise<Identity>;
}

/** Lets every request through, anonymously (`auth` absent from the config). */
export const allowAll: Authorizer = {
  authorize: async () => ({}),
};

/** Formats access as a token scope string, e.g. `repository:team/app:pull,push`. */
export function scopeOf(access: Access): string {
  return `${access.type}:${access.name}:${access.actions.join(',')}`;
}
