/**
 * The `auth: grant` mode of a cache node as an {@link Authorizer}: the cache serves a blob only to a client
 * holding a server grant for that repository and digest. Clients never talk to such a cache on their own;
 * the server redirects them there with the grant in the URL.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { matchRoute, RegistryError, type Access, type Authorizer, type Identity } from '@cascade/registry-core';
import { GRANT_REALM, type GrantClaims } from './grant.js';

/** The query parameter of the redirect URL that carries the grant. */
export const GRANT_QUERY_PARAMETER = 'grant';

/** A header that may carry the grant instead (lower case, as node presents headers). */
export const GRANT_HEADER = 'x-cascade-grant';

/** What the authorizer needs of a {@link GrantVerifier}. */
export interface GrantVerification {
  verify(token: string, expected: { readonly repo: string; readonly digest: string }): Promise<GrantClaims>;
  verifyToken(token: string): Promise<GrantClaims>;
}

/**
 * Authorizes cache requests by grant:
 * - `GET`/`HEAD /v2/<name>/blobs/<digest>`: needs a valid grant for `<name>` and `<digest>`;
 * - `/v2/`: needs a valid grant for any blob (401 with `WWW-Authenticate: Bearer realm="cascade-grant"`
 *   without one: a client that reaches the cache directly must pull through the server instead);
 * - anything else (manifests, tags, catalog, referrers, uploads, deletes): 403 DENIED, since grants are
 *   issued for blobs only and the server serves the rest.
 *
 * The grant is read from the `grant` query parameter (the server's redirect) or the `X-Cascade-Grant`
 * header; a request that carries two different grants is refused. The identity is the grant's user.
 */
export class GrantAuthorizer implements Authorizer {
  constructor(private readonly verifier: GrantVerification) {}

  async authorize(headers: IncomingHttpHeaders, access: Access[], path: string, query?: Readonly<Record<string, string | string[] | undefined>>): Promise<Identity> {
    const match = matchRoute(path);
    if (match?.route.name === 'base') return identityOf(await this.verifier.verifyToken(grantOf(headers, query)));
    const name = match?.params.name;
    const digest = match?.params.digest;
    // Only a pull of this one blob: DELETE reaches here as the 'delete' action on the same route.
    const pull = access.length === 1 && access[0]?.type === 'repository' && access[0].name === name && access[0].actions.length === 1 && access[0].actions[0] === 'pull';
    if (match?.route.name !== 'blob' || name === undefined || digest === undefined || !pull) {
      throw new RegistryError('DENIED', 'this cache serves blobs only with a server grant: pull through the Cascade server');
    }
    return identityOf(await this.verifier.verify(grantOf(headers, query), { repo: name, digest }));
  }
}

/** The one grant of the request, or a 401 saying it is missing or ambiguous. */
function grantOf(headers: IncomingHttpHeaders, query: Readonly<Record<string, string | string[] | undefined>> | undefined): string {
  const fromQuery = query?.[GRANT_QUERY_PARAMETER];
  const fromHeader = headers[GRANT_HEADER];
  const found = [...asList(fromQuery), ...asList(fromHeader)].filter((g) => g.length > 0);
  if (found.length === 0) {
    throw new RegistryError('UNAUTHORIZED', 'this cache serves blobs only with a grant from the Cascade server: pull through the server, which redirects here with one', {
      headers: { 'WWW-Authenticate': `Bearer realm="${GRANT_REALM}"` },
    });
  }
  if (new Set(found).size > 1) {
    throw new RegistryError('UNAUTHORIZED', 'the request carries more than one grant', {
      headers: { 'WWW-Authenticate': `Bearer realm="${GRANT_REALM}",error="invalid_request"` },
    });
  }
  return found[0] as string;
}

function asList(value: string | string[] | undefined): string[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

function identityOf(claims: GrantClaims): Identity {
  return claims.sub ? { user: claims.sub } : {};
}

/**
 * A mirror registered as a cache at the Cascade server: requests carrying a grant are checked as grants,
 * every other request by the mirror's own authorizer (its `auth` section, or none).
 */
export class GrantOrAuthorizer implements Authorizer {
  constructor(
    private readonly grants: GrantAuthorizer,
    private readonly otherwise: Authorizer,
  ) {}

  authorize(headers: IncomingHttpHeaders, access: Access[], path: string, query?: Readonly<Record<string, string | string[] | undefined>>): Promise<Identity> {
    const hasGrant = asList(query?.[GRANT_QUERY_PARAMETER]).length > 0 || asList(headers[GRANT_HEADER]).length > 0;
    return hasGrant ? this.grants.authorize(headers, access, path, query) : this.otherwise.authorize(headers, access, path, query);
  }
}
