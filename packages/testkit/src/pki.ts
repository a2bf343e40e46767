/**
 * A throw-away PKI for TLS tests, built with node-forge: keys, a CA, and the server and client certificates it
 * signs (SAN IP 127.0.0.1 and DNS localhost by default). Keys come from node's crypto (forge's own key
 * generation takes seconds), certificates from forge.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';

const DAY = 86_400_000;

/**
 * A random certificate serial number (hex), positive and minimally encoded in DER: the first byte from 0x01 to
 * 0x7f, as `cascade certs` makes them. An odd-length hex string can encode with a leading zero byte, which
 * OpenSSL refuses now and then ("illegal padding"): a flaky test.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) || 0x01;
  return bytes.toString('hex');
}

/** An RSA key pair: its PKCS#1 PEM, and the same keys as forge objects. */
export interface TestKeys {
  readonly keyPem: string;
  readonly privateKey: forge.pki.rsa.PrivateKey;
  readonly publicKey: forge.pki.rsa.PublicKey;
}

/** A new 2048-bit RSA key pair (from node's crypto: fast). */
export function rsaKeys(): TestKeys {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const priv = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { keyPem, privateKey: priv, publicKey: forge.pki.setRsaPublicKey(priv.n, priv.e) };
}

/** What a certificate made by {@link makeCert} says; everything but `subject` has a default. */
export interface CertSpec {
  /** Subject attributes (forge's `{ name, value }`), or a common name. */
  readonly subject: string | forge.pki.CertificateField[];
  /** The certificate's key (default: new keys). */
  readonly keys?: TestKeys;
  /** The issuer: its certificate and the keys that sign (default: self-signed with `keys`). */
  readonly issuer?: { readonly cert: forge.pki.Certificate; readonly keys: TestKeys };
  /** The signing key when it is not the issuer's (a certificate signed by the wrong key). */
  readonly signWith?: TestKeys;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Extensions as forge takes them; undefined: none at all. */
  readonly extensions?: object[];
}

/** Makes and signs a certificate (sha256, a {@link randomSerial}). */
export function makeCert(spec: CertSpec): forge.pki.Certificate {
  const keys = spec.keys ?? rsaKeys();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = spec.notBefore ?? new Date(Date.now() - 60_000);
  cert.validity.notAfter = spec.notAfter ?? new Date(Date.now() + DAY);
  cert.setSubject(typeof spec.subject === 'string' ? [{ name: 'commonName', value: spec.subject }] : spec.subject);
  cert.setIssuer(spec.issuer === undefined ? cert.subject.attributes : spec.issuer.cert.subject.attributes);
  if (spec.extensions !== undefined) cert.setExtensions(spec.extensions);
  cert.sign((spec.signWith ?? spec.issuer?.keys ?? keys).privateKey, forge.md.sha256.create());
  return cert;
}

/** A certificate's PEM. */
export const certificatePem = (cert: forge.pki.Certificate): string => forge.pki.certificateToPem(cert);

/** The SubjectAltName extension for IP addresses and DNS names. */
export function subjectAltName(ips: readonly string[], dns: readonly string[]): object {
  return { name: 'subjectAltName', altNames: [...ips.map((ip) => ({ type: 7, ip })), ...dns.map((value) => ({ type: 2, value }))] };
}

export interface KeyPairPem {
  readonly certPem: string;
  readonly keyPem: string;
}

/** What {@link TestCa.issue} makes. */
export interface IssueOptions {
  /** Default 127.0.0.1. */
  readonly commonName?: string;
  /** SAN IP addresses (default 127.0.0.1). */
  readonly ips?: string[];
  /** SAN DNS names (default localhost). */
  readonly dns?: string[];
  /** `server` (default: extKeyUsage serverAuth) or `client` (clientAuth). */
  readonly usage?: 'server' | 'client';
}

export interface TestCa extends KeyPairPem {
  readonly cert: forge.pki.Certificate;
  readonly keys: TestKeys;
  /** Issues a certificate for `ips` (default 127.0.0.1) and `dns` (default localhost), valid for a day. */
  issue(options?: IssueOptions): KeyPairPem;
}

/** Makes a new CA (self-signed, `basicConstraints cA`, keyCertSign), valid for a week. */
export function makeCa(commonName = 'Cascade Test CA'): TestCa {
  const keys = rsaKeys();
  const cert = makeCert({
    subject: commonName,
    keys,
    notAfter: new Date(Date.now() + 7 * DAY),
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      { name: 'subjectKeyIdentifier' },
    ],
  });
  return {
    cert,
    keys,
    certPem: certificatePem(cert),
    keyPem: keys.keyPem,
    issue(options = {}) {
      const k = rsaKeys();
      const leaf = makeCert({
        subject: options.commonName ?? '127.0.0.1',
        keys: k,
        issuer: { cert, keys },
        extensions: [
          { name: 'basicConstraints', cA: false },
          { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
          { name: 'extKeyUsage', ...(options.usage === 'client' ? { clientAuth: true } : { serverAuth: true }) },
          subjectAltName(options.ips ?? ['127.0.0.1'], options.dns ?? ['localhost']),
          { name: 'authorityKeyIdentifier', keyIdentifier: cert.generateSubjectKeyIdentifier().getBytes() },
        ],
      });
      return { certPem: certificatePem(leaf), keyPem: k.keyPem };
    },
  };
}

/** Writes `<name>.pem` (certificate) and `<name>-key.pem` (mode 0600) into `dir`; returns their paths. */
export async function writePair(dir: string, name: string, pair: KeyPairPem): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}-key.pem`);
  await writeFile(cert, pair.certPem);
  await writeFile(key, pair.keyPem, { mode: 0o600 });
  return { cert, key };
}
