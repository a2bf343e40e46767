/**
 * Where a registry's token service may be, and what is asked of it: the realm checks every client of a
 * registry applies before it sends credentials there, and the token request URL of a Bearer challenge.
 */
import { isIP } from 'node:net';
import { parseChallenge } from '@cascade/registry-core';

/** A Bearer challenge's token service: the realm (a URL) and the service it names. */
export interface TokenRealm {
  readonly realm: string;
  readonly service?: string;
}

/** The registrable domain of a host name, approximately (`auth.docker.io` -> `docker.io`, `a.b.co.uk` -> `b.co.uk`). */
export function registrableDomain(hostname: string): string {
  const labels = hostname.toLowerCase().replace(/\.$/, '').split('.');
  if (labels.length <= 2) return labels.join('.');
  const tld = labels[labels.length - 1] as string;
  const sld = labels[labels.length - 2] as string;
  const keep = tld.length === 2 && (sld.length <= 3 || ['co', 'com', 'net', 'org', 'gov', 'edu', 'ac'].includes(sld)) ? 3 : 2;
  return labels.slice(-keep).join('.');
}

/**
 * Why a token realm may not receive the credentials configured for the registry at `registry`, or
 * undefined when it may: the realm must be https unless the registry itself is plain http, and on the
 * registry's host or its registrable domain (`auth.docker.io` for `registry-1.docker.io`; an IP address
 * must be the registry's own).
 */
export function realmRefusal(realm: URL, registry: URL): string | undefined {
  if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && registry.protocol === 'http:')) {
    return `the realm is ${realm.protocol.replace(':', '')} while the remote is https`;
  }
  const a = realm.hostname.toLowerCase();
  const b = registry.hostname.toLowerCase();
  if (a === b) return undefined;
  if (isIP(a.replace(/^\[|\]$/g, '')) || isIP(b.replace(/^\[|\]$/g, ''))) return `the realm's host ${a} is not the remote's host ${b}`;
  if (registrableDomain(a) === registrableDomain(b)) return undefined;
  return `the realm's host ${a} is not on the remote's domain ${registrableDomain(b)}`;
}

/** The scope a request needs: pull on the repository of its `/v2/` path (undefined for `/v2/` itself). */
export function scopeOf(path: string): string | undefined {
  const m = /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(path);
  return m ? `repository:${m[1]}:pull` : undefined;
}

/** The token service of a `WWW-Authenticate` value, when it is a Bearer challenge with a realm. */
export function tokenRealmOf(header: string | undefined): (TokenRealm & { readonly scope?: string }) | undefined {
  const challenge = parseChallenge(header);
  const realm = challenge?.params['realm'];
  if (challenge?.scheme !== 'bearer' || !realm) return undefined;
  const { service, scope } = challenge.params;
  return { realm, ...(service ? { service } : {}), ...(scope ? { scope } : {}) };
}

/**
 * The token request URL of a Bearer challenge: its realm with its service and, when given, a scope.
 * @throws TypeError when the realm is not a URL.
 */
export function tokenUrl(challenge: TokenRealm, scope?: string): URL {
  const url = new URL(challenge.realm);
  if (challenge.service) url.searchParams.set('service', challenge.service);
  if (scope !== undefined) url.searchParams.set('scope', scope);
  return url;
}

/** `Basic base64(user:password)`. */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}
