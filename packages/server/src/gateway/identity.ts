/**
 * Who a request is from, read from its Authorization header. The server never checks passwords itself:
 * the origin decides (every request is authorized through it), and the name read here is used only once
 * the origin has accepted the credentials, to pick the user's cache.
 */
import { parseJwsPayload } from '@cascade/registry-core';

/** The user name of a Basic header, or the `sub` of a Bearer JWT; undefined for anonymous requests. */
export function userOf(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const [scheme, value] = authorization.trim().split(/\s+/, 2);
  if (!scheme || !value) return undefined;
  if (scheme.toLowerCase() === 'basic') {
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon > 0 ? decoded.slice(0, colon) : undefined;
  }
  if (scheme.toLowerCase() === 'bearer') {
    const payload = value.split('.')[1];
    if (!payload) return undefined;
    try {
      const { sub } = parseJwsPayload(payload);
      return typeof sub === 'string' && sub.length > 0 ? sub : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
