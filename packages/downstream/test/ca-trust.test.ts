import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync, sign } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import forge from 'node-forge';
import { makeCert as signedCert, rsaKeys, subjectAltName, type TestKeys } from '@cascade/testkit';
import { CaError, CaStore, loadCAs, validateCaFiles } from '../src/ca-trust.js';

const { asn1, pki } = forge;

const caKeys = rsaKeys();
const leafKeys = rsaKeys();
const DAY = 86_400_000;

interface CertSpec {
  readonly cn: string;
  /** true/false: basicConstraints with that cA; 'none': no extensions at all. */
  readonly ca?: boolean | 'none';
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Signed by this CA certificate (with caKeys) instead of self-signed. */
  readonly issuer?: forge.pki.Certificate;
  readonly keys?: TestKeys;
  readonly dns?: string[];
}

/** A certificate signed with caKeys, subject `CN=<cn>, O=Cascade`. */
function makeCert(spec: CertSpec): forge.pki.Certificate {
  const ca = spec.ca ?? true;
  const extensions: object[] = [{ name: 'basicConstraints', cA: ca, critical: true }];
  if (spec.dns !== undefined) extensions.push(subjectAltName(['127.0.0.1'], spec.dns));
  return signedCert({
    subject: [
      { name: 'commonName', value: spec.cn },
      { name: 'organizationName', value: 'Cascade' },
    ],
    keys: spec.keys ?? caKeys,
    ...(spec.issuer === undefined ? {} : { issuer: { cert: spec.issuer, keys: caKeys } }),
    signWith: caKeys,
    notBefore: spec.notBefore ?? new Date(Date.now() - DAY),
    // After 2049, so the GeneralizedTime encoding is read too.
    notAfter: spec.notAfter ?? new Date('2060-01-01T00:00:00Z'),
    ...(ca === 'none' ? {} : { extensions }),
  });
}

const toPem = (cert: forge.pki.Certificate): string => pki.certificateToPem(cert);

/** Signs a hand-edited TBSCertificate with the CA key (sha256WithRSAEncryption, as forge wrote it). */
function resign(tbs: forge.asn1.Asn1): string {
  const sigAlg = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(pki.oids['sha256WithRSAEncryption'] ?? '').getBytes()),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
  ]);
  const signature = sign('sha256', Buffer.from(asn1.toDer(tbs).getBytes(), 'latin1'), caKeys.keyPem);
  const cert = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    sigAlg,
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, `\x00${signature.toString('latin1')}`),
  ]);
  return forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(cert).getBytes() });
}

function tbsOf(cert: forge.pki.Certificate): forge.asn1.Asn1[] {
  const root = pki.certificateToAsn1(cert).value;
  const tbs = Array.isArray(root) ? root[0] : undefined;
  if (tbs === undefined || !Array.isArray(tbs.value)) throw new Error('no TBSCertificate');
  return tbs.value;
}

/** A self-signed version 1 certificate as `openssl x509 -req` without extensions makes: no version field, no extensions. */
function v1Certificate(cn: string): string {
  const fields = tbsOf(makeCert({ cn, ca: 'none' })).slice(1);
  return resign(asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, fields));
}

/** A CA whose key is ECDSA P-256 (signed by the RSA CA key): forge's certificateFromPem cannot read it. */
function ecCa(cn: string): string {
  const fields = tbsOf(makeCert({ cn }));
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  fields[6] = asn1.fromDer(publicKey.export({ type: 'spki', format: 'der' }).toString('latin1'));
  return resign(asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, fields));
}

const dir = mkdtempSync(join(tmpdir(), 'cascade-cas-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** Runs `fn`, expecting a CaError, and returns it. */
function caError(fn: () => unknown): CaError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CaError, `expected a CaError, got ${String(e)}`);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    assert.equal(e.message, `${e.file}: ${e.reason}`);
    return e;
  }
  assert.fail('expected a CaError');
}

const validCa = makeCert({ cn: 'Test CA' });
const validCaFile = file('ca.pem', toPem(validCa));

describe('loadCAs', () => {
  test('a valid CA: its PEM and what was read from it', () => {
    const { pem, certificates } = loadCAs([validCaFile]);
    assert.equal(pem.length, 1);
    const x509 = new X509Certificate(pem[0] ?? '');
    assert.equal(x509.ca, true);
    assert.deepEqual(certificates, [
      {
        file: validCaFile,
        subject: 'CN=Test CA, O=Cascade',
        issuer: 'CN=Test CA, O=Cascade',
        // Certificates hold whole seconds.
        notBefore: new Date(Math.floor(validCa.validity.notBefore.getTime() / 1000) * 1000),
        notAfter: new Date('2060-01-01T00:00:00Z'),
        fingerprint: x509.fingerprint256,
      },
    ]);
  });

  test('the PEM is what Node TLS takes as `ca`: a server with a certificate the CA issued is trusted', async (t) => {
    const leaf = makeCert({ cn: 'localhost', ca: false, issuer: validCa, keys: leafKeys, dns: ['localhost'] });
    const server: Server = createServer({ cert: toPem(leaf), key: leafKeys.keyPem }, (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const { port } = server.address() as AddressInfo;
    const { pem } = loadCAs([validCaFile]);
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, servername: 'localhost', path: '/', ca: pem }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(body, 'ok');
  });

  test('several files and several certificates per file, in order; other PEM blocks are left out', () => {
    const second = makeCert({ cn: 'Second CA' });
    const bundle = file('bundle.pem', `# comment\n${toPem(second)}${caKeys.keyPem}${toPem(validCa)}`);
    const { pem, certificates } = loadCAs([validCaFile, bundle]);
    assert.deepEqual(
      certificates.map((c) => [c.file, c.subject]),
      [
        [validCaFile, 'CN=Test CA, O=Cascade'],
        [bundle, 'CN=Second CA, O=Cascade'],
        [bundle, 'CN=Test CA, O=Cascade'],
      ],
    );
    assert.equal(pem.length, 3);
    assert.ok(pem.every((p) => p.startsWith('-----BEGIN CERTIFICATE-----') && !p.includes('PRIVATE KEY')));
  });

  test('an ECDSA CA is read (forge alone reads only RSA keys)', () => {
    const path = file('ec-ca.pem', ecCa('EC CA'));
    assert.throws(() => pki.certificateFromPem(ecCa('EC CA')), /not RSA/);
    const { certificates, pem } = loadCAs([path]);
    assert.equal(certificates[0]?.subject, 'CN=EC CA, O=Cascade');
    assert.equal(new X509Certificate(pem[0] ?? '').publicKey.asymmetricKeyType, 'ec');
  });

  test('a leaf certificate is not a CA, and the message names its issuer', () => {
    const leaf = file('leaf.pem', toPem(makeCert({ cn: 'registry.example', ca: false, issuer: validCa, keys: leafKeys })));
    const e = caError(() => loadCAs([leaf]));
    assert.equal(e.file, leaf);
    assert.match(e.reason, /^certificate "CN=registry\.example, O=Cascade" is not a CA \(its basicConstraints say cA: false\)/);
    assert.match(e.reason, /use the CA that issued it \("CN=Test CA, O=Cascade"\)/);
    assert.match(e.reason, /curl -k https:\/\/<host>\/ca/);
  });

  test('a certificate without basicConstraints is not a CA', () => {
    const bare = makeCert({ cn: 'No Extensions', issuer: validCa, keys: leafKeys, ca: 'none' });
    const e = caError(() => loadCAs([file('bare.pem', toPem(bare))]));
    assert.match(e.reason, /is not a CA \(it has no basicConstraints extension with cA: true\)/);
  });

  test('a self-signed version 1 certificate is not a CA, and the message says so', () => {
    const pem = v1Certificate('Old Style CA');
    assert.equal(new X509Certificate(pem).ca, false);
    const e = caError(() => loadCAs([file('v1.pem', pem)]));
    assert.match(e.reason, /^certificate "CN=Old Style CA, O=Cascade" is a self-signed X\.509 version 1 certificate; without the basicConstraints extension \(cA: true\) it is not a CA/);
    assert.match(e.reason, /basicConstraints=critical,CA:TRUE/);
  });

  test('an expired CA', () => {
    const path = file('expired.pem', toPem(makeCert({ cn: 'My CA', notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2024-01-01T00:00:00Z') })));
    const e = caError(() => loadCAs([path]));
    assert.equal(e.message, `${path}: certificate "CN=My CA, O=Cascade" expired on 2024-01-01T00:00:00Z; get a current CA certificate from the upstream (curl -k https://<host>/ca)`);
  });

  test('a CA that is not valid yet; validity is checked against `now`', () => {
    const notBefore = new Date('2040-06-01T12:00:00Z');
    const path = file('future.pem', toPem(makeCert({ cn: 'Future CA', notBefore })));
    const e = caError(() => loadCAs([path]));
    assert.match(e.reason, /^certificate "CN=Future CA, O=Cascade" is not valid until 2040-06-01T12:00:00Z \(now is .*\); check this machine's clock/);
    assert.equal(loadCAs([path], new Date('2041-01-01T00:00:00Z')).certificates.length, 1);
    assert.throws(() => loadCAs([validCaFile], new Date('2061-01-01T00:00:00Z')), /expired on 2060-01-01T00:00:00Z/);
  });

  test('a missing file, a directory', () => {
    const missing = join(dir, 'missing.pem');
    assert.equal(caError(() => loadCAs([missing])).message, `${missing}: file not found; check the path, or get the CA certificate from the upstream (curl -k https://<host>/ca > ${missing})`);
    const sub = join(dir, 'a-directory');
    mkdirSync(sub);
    assert.match(caError(() => loadCAs([sub])).reason, /^is a directory/);
  });

  test('files without a usable certificate', () => {
    assert.match(caError(() => loadCAs([file('garbage.pem', 'this is not a certificate\n')])).reason, /^contains no PEM CERTIFICATE block \(-----BEGIN CERTIFICATE-----\); get the CA certificate/);
    assert.match(caError(() => loadCAs([file('empty.pem', '')])).reason, /^is empty; /);
    assert.match(caError(() => loadCAs([file('key.pem', caKeys.keyPem)])).reason, /^contains no PEM CERTIFICATE block \(found RSA PRIVATE KEY\)/);
    const der = Buffer.from(asn1.toDer(pki.certificateToAsn1(validCa)).getBytes(), 'latin1');
    assert.match(caError(() => loadCAs([file('ca.der', der)])).reason, /^looks like a DER \(binary\) certificate, not PEM; convert it with: openssl x509 -inform der/);
    const corrupt = file('corrupt.pem', '-----BEGIN CERTIFICATE-----\nTUlJQm9uZQ==\n-----END CERTIFICATE-----\n');
    assert.match(caError(() => loadCAs([corrupt])).reason, /^certificate is not a valid X\.509 certificate \(.+\); the file may be truncated or corrupted/);
    // A certificate cut short: the base64 is fine, the DER is not.
    const truncated = forge.pem.encode({ type: 'CERTIFICATE', body: asn1.toDer(pki.certificateToAsn1(validCa)).getBytes().slice(0, 300) });
    assert.match(caError(() => loadCAs([file('truncated.pem', truncated)])).reason, /^certificate is not a valid X\.509 certificate/);
  });

  test('a file with two certificates, one of them bad, is refused, naming which', () => {
    const expired = makeCert({ cn: 'Expired CA', notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2021-01-01T00:00:00Z') });
    const path = file('two.pem', toPem(validCa) + toPem(expired));
    const e = caError(() => loadCAs([path]));
    assert.match(e.reason, /^certificate 2 of 2 "CN=Expired CA, O=Cascade" expired on 2021-01-01T00:00:00Z/);
    const leafFirst = file('two-leaf.pem', toPem(makeCert({ cn: 'leaf', ca: false, issuer: validCa, keys: leafKeys })) + toPem(validCa));
    assert.match(caError(() => loadCAs([leafFirst])).reason, /^certificate 1 of 2 "CN=leaf, O=Cascade" is not a CA/);
  });
});

describe('validateCaFiles', () => {
  test('one message per bad file, keyed by its index', () => {
    const missing = join(dir, 'nope.pem');
    const garbage = file('garbage2.pem', 'nope');
    const key = 'middleware.registry[0].options.upstreams[0].cas';
    const messages = validateCaFiles([validCaFile, missing, garbage], key);
    assert.equal(messages.length, 2);
    assert.ok(messages[0]?.startsWith(`${key}[1]: ${missing}: file not found;`), messages[0]);
    assert.ok(messages[1]?.startsWith(`${key}[2]: ${garbage}: contains no PEM CERTIFICATE block`), messages[1]);
    assert.deepEqual(validateCaFiles([validCaFile], key), []);
    assert.deepEqual(validateCaFiles([], key), []);
  });
});

describe('CaStore', () => {
  test('reads each file once: the certificates are kept, and served after the file is gone', () => {
    const copy = file('store-ca.pem', toPem(validCa));
    const missing = join(dir, 'store-missing.pem');
    const cas = new CaStore();
    const bad = cas.read([copy, missing]);
    assert.deepEqual(bad.map(({ index, error }) => [index, error.file]), [[1, missing]]);
    assert.match(bad[0]?.error.reason ?? '', /^file not found/);
    rmSync(copy);
    assert.deepEqual(cas.pem([copy]), loadCAs([validCaFile]).pem);
    assert.deepEqual(cas.read([copy]), [], 'a file read before is not read again');
    assert.equal(cas.pem([]), undefined);
  });

  test('reads a file it was not given at load time when asked for its certificates, and refuses a bad one', () => {
    const cas = new CaStore();
    assert.deepEqual(cas.pem([validCaFile]), loadCAs([validCaFile]).pem);
    assert.throws(() => cas.pem([join(dir, 'never-there.pem')]), (e: unknown) => e instanceof CaError && /file not found/.test(e.reason));
  });
});
