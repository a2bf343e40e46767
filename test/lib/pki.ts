/**
 * A throw-away PKI for TLS tests, built with node-forge: a CA, and server certificates it signs
 * (SAN IP 127.0.0.1 and DNS localhost by default). Keys come from node's crypto (fast), certificates
 * from forge.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';

export interface KeyPairPem {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface TestCa extends KeyPairPem {
  /** Issues a server certificate for `ips` (default 127.0.0.1) and `dns` (default localhost). */
  issue(options?: { commonName?: string; ips?: string[]; dns?: string[] }): KeyPairPem;
}

function forgeKeys(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; keyPem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const priv = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const pub = forge.pki.setRsaPublicKey(priv.n, priv.e);
  return { privateKey: priv, publicKey: pub, keyPem };
}

function serial(): string {
  // Positive and minimally encoded in DER: the first byte from 0x01 to 0x7f. (An odd-length hex string, as
  // this used to be, can encode with a leading zero byte, which TLS libraries may refuse now and then.)
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) || 0x01;
  return bytes.toString('hex');
}

/** Makes a new CA (self-signed, `basicConstraints cA`, keyCertSign). */
export function makeCa(commonName = 'Cascade Test CA'): TestCa {
  const keys = forgeKeys();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 7 * 86_400_000);
  const attrs = [{ name: 'commonName', value: commonName }];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  const caCert = cert;
  return {
    certPem: forge.pki.certificateToPem(cert),
    keyPem: keys.keyPem,
    issue(options = {}) {
      const k = forgeKeys();
      const c = forge.pki.createCertificate();
      c.publicKey = k.publicKey;
      c.serialNumber = serial();
      c.validity.notBefore = new Date(Date.now() - 60_000);
      c.validity.notAfter = new Date(Date.now() + 86_400_000);
      c.setSubject([{ name: 'commonName', value: options.commonName ?? '127.0.0.1' }]);
      c.setIssuer(caCert.subject.attributes);
      c.setExtensions([
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: [...(options.ips ?? ['127.0.0.1']).map((ip) => ({ type: 7, ip })), ...(options.dns ?? ['localhost']).map((value) => ({ type: 2, value }))],
        },
        { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
      ]);
      c.sign(keys.privateKey, forge.md.sha256.create());
      return { certPem: forge.pki.certificateToPem(c), keyPem: k.keyPem };
    },
  };
}

/** Writes `<name>.pem` (certificate) and `<name>-key.pem` into `dir`; returns their paths. */
export async function writePair(dir: string, name: string, pair: KeyPairPem): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}-key.pem`);
  await writeFile(cert, pair.certPem);
  await writeFile(key, pair.keyPem, { mode: 0o600 });
  return { cert, key };
}
