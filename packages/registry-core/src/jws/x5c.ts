/**
 * `x5c` (RFC 7515 4.1.6) as distribution 2 verifies it: a chain of certificates, leaf first, that must lead
 * to a trust anchor of the configured bundle before the leaf's key may verify a token.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { JwsError } from './compact.js';

/** Certificates parsed from `x5c` are refused beyond this chain length. */
const MAX_CHAIN = 10;

/**
 * The leaf public key of an `x5c` chain that leads to a certificate of `roots`: each link issued and signed
 * by the next, intermediates being CAs, all valid at `nowMs`. A root may also appear in the chain itself.
 *
 * @throws JwsError `key` when the chain is malformed or leads nowhere trusted.
 */
export function verifyX5c(x5c: readonly unknown[], roots: readonly X509Certificate[], nowMs: number): KeyObject {
  if (x5c.length === 0 || x5c.length > MAX_CHAIN) throw new JwsError('key', `x5c holds ${x5c.length} certificates`);
  const chain = x5c.map((entry, i) => {
    if (typeof entry !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(entry)) throw new JwsError('key', `x5c[${i}] is not base64`);
    try {
      return new X509Certificate(Buffer.from(entry, 'base64'));
    } catch {
      throw new JwsError('key', `x5c[${i}] is not a certificate`);
    }
  });
  const valid = (c: X509Certificate) => Date.parse(c.validFrom) <= nowMs && nowMs <= Date.parse(c.validTo);
  const leaf = chain[0] as X509Certificate;
  let current = leaf;
  const intermediates = chain.slice(1);
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    if (!valid(current)) throw new JwsError('key', `certificate ${current.subject.replace(/\n/g, ', ')} is not valid now`);
    if (roots.some((r) => r.raw.equals(current.raw))) return leaf.publicKey;
    const cert = current;
    const signedBy = (issuer: X509Certificate) => issuer.ca && cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
    if (roots.some((r) => signedBy(r) && valid(r))) return leaf.publicKey;
    const next = intermediates.find(signedBy);
    if (next === undefined) throw new JwsError('key', 'x5c does not lead to a certificate of the root bundle');
    current = next;
  }
  throw new JwsError('key', 'x5c chain is too long');
}
