/**
 * CA trust for upstream TLS: the `cas` of the downstream middleware are PEM files of the CAs that signed
 * the upstreams' certificates. They are checked once, at start-up, so that a wrong file fails there with
 * the file and the reason, instead of every fill failing later with an opaque TLS error (DTR's most
 * common cache failure).
 *
 * Certificates are read with node-forge's PEM and ASN.1 decoders rather than `pki.certificateFromPem`,
 * because that one only reads RSA keys and would refuse the ECDSA CAs many registries use.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import forge from 'node-forge';

/** What was read from one CA certificate. */
export interface CaInfo {
  /** The file the certificate came from. */
  readonly file: string;
  /** Subject distinguished name, attributes in certificate order: `CN=My CA, O=Example`. */
  readonly subject: string;
  /** Issuer distinguished name, same format; equal to `subject` for a root CA. */
  readonly issuer: string;
  /** Start of validity. */
  readonly notBefore: Date;
  /** End of validity. */
  readonly notAfter: Date;
  /** SHA-256 of the DER encoding, as colon-separated upper-case hex (the format of `openssl x509 -fingerprint -sha256`). */
  readonly fingerprint: string;
}

/**
 * A CA file that cannot be trusted. `message` is one line, `<file>: <reason>`, and the reason ends with
 * how to fix it.
 */
export class CaError extends Error {
  /** The file, as configured. */
  readonly file: string;
  /** Why it was refused, with the fix. */
  readonly reason: string;

  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = 'CaError';
    this.file = file;
    this.reason = reason;
  }
}

/** The fix common to most problems: DTR publishes its CA at `/ca`, and the message shows where to save it. */
function getCa(file: string): string {
  return `get the CA certificate from the upstream (curl -k https://<host>/ca > ${file})`;
}

/**
 * Reads and checks CA files for the TLS connections to upstreams. Every file must exist and be readable,
 * hold at least one PEM `CERTIFICATE` block, and every certificate in it must parse, be a CA
 * (basicConstraints `cA: true`) and be valid at `now` (notBefore <= now <= notAfter). Other PEM blocks
 * (a private key saved alongside, say) are ignored and never returned.
 *
 * @returns `pem`: one PEM string per certificate, in file order, ready for the `ca` option of Node's TLS;
 *   `certificates`: what was read from each, in the same order.
 * @throws CaError for the first file or certificate that fails a check.
 * @example
 * const { pem } = loadCAs(['/certs/dtr-ca.pem']);
 * https.get(url, { ca: pem });
 */
export function loadCAs(files: readonly string[], now: Date = new Date()): { pem: string[]; certificates: CaInfo[] } {
  const pem: string[] = [];
  const certificates: CaInfo[] = [];
  for (const file of files) {
    for (const cert of readCaFile(file, now)) {
      pem.push(cert.pem);
      certificates.push(cert.info);
    }
  }
  return { pem, certificates };
}

/**
 * Checks CA files as {@link loadCAs} does and returns one configuration message per bad file (empty when
 * all are good): `<keyPrefix>[<i>]: <file>: <reason>`. `keyPrefix` is the key of the list, such as
 * `middleware.registry[0].options.upstreams[0].cas`.
 */
export function validateCaFiles(files: readonly string[], keyPrefix: string, now: Date = new Date()): string[] {
  return new CaStore().read(files, now).map(({ index, error }) => `${keyPrefix}[${index}]: ${error.message}`);
}

/**
 * The CA certificates of one node, by file: the options' parsers read and check each file once, when the
 * config is loaded, and the node's TLS clients (upstreams, a mirror's remotes, the grant key fetchers) take
 * the certificates from here without reading the file again.
 *
 * @example
 * const cas = new CaStore();
 * const problems = cas.read(['/certs/dtr-ca.pem']); // at load time: empty when the file is good
 * https.get(url, { ca: cas.pem(['/certs/dtr-ca.pem']) }); // later: no second read
 */
export class CaStore {
  readonly #pem = new Map<string, readonly string[]>();

  /**
   * Reads and checks the files of `files` not read yet, as {@link loadCAs} does, and keeps the certificates of
   * the good ones. Returns the bad ones (a file that failed is read again the next time it is asked for).
   */
  read(files: readonly string[], now: Date = new Date()): Array<{ index: number; error: CaError }> {
    const bad: Array<{ index: number; error: CaError }> = [];
    files.forEach((file, index) => {
      if (this.#pem.has(file)) return;
      try {
        this.#pem.set(file, readCaFile(file, now).map((c) => c.pem));
      } catch (e) {
        bad.push({ index, error: e instanceof CaError ? e : new CaError(file, e instanceof Error ? e.message : String(e)) });
      }
    });
    return bad;
  }

  /**
   * The PEM certificates of `files`, in order, for the `ca` option of Node's TLS; undefined for no file (only
   * the default roots are trusted). A file not read yet (options made in code) is read now.
   * @throws CaError for a file that cannot be trusted.
   */
  pem(files: readonly string[]): string[] | undefined {
    if (files.length === 0) return undefined;
    const bad = this.read(files)[0];
    if (bad) throw bad.error;
    return files.flatMap((file) => this.#pem.get(file) ?? []);
  }
}

/** `2024-01-01T00:00:00Z`: whole seconds are what certificates hold. */
function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'latin1');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CaError(file, `file not found; check the path, or ${getCa(file)}`);
    if (code === 'EACCES' || code === 'EPERM') throw new CaError(file, 'cannot be read (permission denied); make it readable by the user the cache runs as');
    if (code === 'EISDIR') throw new CaError(file, 'is a directory; give the path of a PEM file holding the CA certificate');
    throw new CaError(file, `cannot be read (${e instanceof Error ? e.message : String(e)})`);
  }
}

/** Reads one CA file and checks every certificate in it. */
function readCaFile(file: string, now: Date): Array<{ pem: string; info: CaInfo }> {
  // latin1 keeps every byte, so a DER file can be recognised below.
  const text = readText(file);
  let blocks: forge.pem.ObjectPEM[] = [];
  // forge throws when it finds no block at all; that case gets its own, more helpful, reason below.
  if (text.includes('-----BEGIN ')) {
    try {
      blocks = forge.pem.decode(text);
    } catch (e) {
      throw new CaError(file, `is not a valid PEM file (${firstLine(e)}); ${getCa(file)}`);
    }
  }
  const certBlocks = blocks.filter((b) => b.type === 'CERTIFICATE');
  if (certBlocks.length === 0) throw new CaError(file, noCertificateReason(file, text, blocks));

  const out: Array<{ pem: string; info: CaInfo }> = [];
  certBlocks.forEach((block, index) => {
    const which = certBlocks.length === 1 ? 'certificate' : `certificate ${index + 1} of ${certBlocks.length}`;
    let cert: ParsedCertificate;
    try {
      cert = parseCertificate(block.body);
    } catch (e) {
      throw new CaError(file, `${which} is not a valid X.509 certificate (${firstLine(e)}); the file may be truncated or corrupted: ${getCa(file)}`);
    }
    const named = `${which} ${JSON.stringify(cert.subject)}`;
    if (cert.isCa !== true) throw new CaError(file, notCaReason(file, named, cert));
    if (cert.notAfter.getTime() < now.getTime()) {
      throw new CaError(file, `${named} expired on ${isoSeconds(cert.notAfter)}; get a current CA certificate from the upstream (curl -k https://<host>/ca)`);
    }
    if (cert.notBefore.getTime() > now.getTime()) {
      throw new CaError(
        file,
        `${named} is not valid until ${isoSeconds(cert.notBefore)} (now is ${isoSeconds(now)}); check this machine's clock, or use a CA certificate that is already valid`,
      );
    }
    out.push({
      pem: forge.pem.encode({ type: 'CERTIFICATE', body: block.body }),
      info: {
        file,
        subject: cert.subject,
        issuer: cert.issuer,
        notBefore: cert.notBefore,
        notAfter: cert.notAfter,
        fingerprint: cert.fingerprint,
      },
    });
  });
  return out;
}

function noCertificateReason(file: string, text: string, blocks: readonly forge.pem.ObjectPEM[]): string {
  if (text.trim() === '') return `is empty; ${getCa(file)}`;
  // DER certificates start with a SEQUENCE (0x30) and a long-form length (0x82 for any real certificate).
  if (text.charCodeAt(0) === 0x30 && text.charCodeAt(1) >= 0x81 && text.charCodeAt(1) <= 0x84) {
    return `looks like a DER (binary) certificate, not PEM; convert it with: openssl x509 -inform der -in ${file} -out ${file}.pem, and configure the .pem file`;
  }
  if (blocks.length > 0) {
    const types = [...new Set(blocks.map((b) => b.type))].join(', ');
    return `contains no PEM CERTIFICATE block (found ${types}); ${getCa(file)}`;
  }
  return `contains no PEM CERTIFICATE block (-----BEGIN CERTIFICATE-----); ${getCa(file)}`;
}

function notCaReason(file: string, named: string, cert: ParsedCertificate): string {
  if (cert.version === 1 && cert.selfSigned) {
    return (
      `${named} is a self-signed X.509 version 1 certificate; without the basicConstraints extension (cA: true) it is not a CA. ` +
      `Regenerate it as a CA (openssl req -x509 ... -addext basicConstraints=critical,CA:TRUE), or ${getCa(file)}`
    );
  }
  const constraint = cert.isCa === false ? 'its basicConstraints say cA: false' : 'it has no basicConstraints extension with cA: true';
  const issued = cert.selfSigned ? '' : `; it is probably the upstream's own server certificate: use the CA that issued it (${JSON.stringify(cert.issuer)})`;
  return `${named} is not a CA (${constraint})${issued}; ${getCa(file)}`;
}

function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return (text.split('\n')[0] ?? '').replace(/\.$/, '');
}

/** The fields of a certificate that the checks need. */
interface ParsedCertificate {
  /** 1, 2 or 3. */
  readonly version: number;
  readonly subject: string;
  readonly issuer: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** basicConstraints cA; undefined when the extension is absent. */
  readonly isCa: boolean | undefined;
  /** Issuer and subject are the same name (byte for byte, as the TLS stack compares them). */
  readonly selfSigned: boolean;
  readonly fingerprint: string;
}

const { Class, Type } = forge.asn1;

/** The children of a constructed ASN.1 value of the given universal type, or an error naming the field. */
function children(node: forge.asn1.Asn1 | undefined, field: string, type: number = Type.SEQUENCE): forge.asn1.Asn1[] {
  if (node === undefined || node.tagClass !== Class.UNIVERSAL || node.type !== type || !Array.isArray(node.value)) {
    throw new Error(`bad ${field}`);
  }
  return node.value;
}

function bytesOf(node: forge.asn1.Asn1 | undefined, field: string): string {
  if (node === undefined || typeof node.value !== 'string') throw new Error(`bad ${field}`);
  return node.value;
}

function isContext(node: forge.asn1.Asn1 | undefined, tag: number): node is forge.asn1.Asn1 {
  return node !== undefined && node.tagClass === Class.CONTEXT_SPECIFIC && node.type === tag;
}

const OID_BASIC_CONSTRAINTS = '2.5.29.19';

/** Short names of the attributes found in CA names; others print as dotted OIDs. */
const ATTRIBUTE_NAMES: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.9': 'street',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '1.2.840.113549.1.9.1': 'emailAddress',
  '0.9.2342.19200300.100.1.25': 'DC',
};

function stringValue(node: forge.asn1.Asn1): string {
  const raw = typeof node.value === 'string' ? node.value : '';
  if (node.type === Type.UTF8) return forge.util.decodeUtf8(raw);
  if (node.type === Type.BMPSTRING) return Buffer.from(raw, 'latin1').swap16().toString('utf16le');
  return raw;
}

/** An RDNSequence as `CN=My CA, O=Example`. */
function nameToString(node: forge.asn1.Asn1 | undefined, field: string): string {
  const parts: string[] = [];
  for (const rdn of children(node, field)) {
    for (const attribute of children(rdn, field, Type.SET)) {
      const [oid, value] = children(attribute, field);
      if (value === undefined) throw new Error(`bad ${field}`);
      const dotted = forge.asn1.derToOid(bytesOf(oid, field));
      parts.push(`${ATTRIBUTE_NAMES[dotted] ?? dotted}=${stringValue(value)}`);
    }
  }
  return parts.join(', ');
}

function timeOf(node: forge.asn1.Asn1 | undefined, field: string): Date {
  if (node?.type === Type.UTCTIME) return forge.asn1.utcTimeToDate(bytesOf(node, field));
  if (node?.type === Type.GENERALIZEDTIME) return forge.asn1.generalizedTimeToDate(bytesOf(node, field));
  throw new Error(`bad ${field}`);
}

/** basicConstraints cA from the `[3]` extensions, or undefined without the extension. */
function basicConstraintsCa(extensions: forge.asn1.Asn1 | undefined): boolean | undefined {
  if (extensions === undefined) return undefined;
  const list = Array.isArray(extensions.value) ? extensions.value[0] : undefined;
  for (const extension of children(list, 'extensions')) {
    const [oid, ...rest] = children(extension, 'extension');
    if (forge.asn1.derToOid(bytesOf(oid, 'extension')) !== OID_BASIC_CONSTRAINTS) continue;
    // `critical` is optional, so the value is the last element.
    const value = forge.asn1.fromDer(bytesOf(rest.at(-1), 'basicConstraints'));
    const [first] = children(value, 'basicConstraints');
    // cA is DEFAULT FALSE, so it is omitted (not encoded as false) in a leaf's basicConstraints.
    if (first === undefined || first.type !== Type.BOOLEAN) return false;
    return bytesOf(first, 'basicConstraints') !== '\x00';
  }
  return undefined;
}

/** Reads the checked fields from a certificate's DER bytes (as forge's binary string). */
function parseCertificate(der: string): ParsedCertificate {
  const root = forge.asn1.fromDer(der);
  const [tbs] = children(root, 'certificate');
  const fields = children(tbs, 'tbsCertificate');
  let i = 0;
  let version = 1;
  const explicitVersion = fields[0];
  if (isContext(explicitVersion, 0)) {
    const inner = Array.isArray(explicitVersion.value) ? explicitVersion.value[0] : undefined;
    const v = bytesOf(inner, 'version');
    version = v.charCodeAt(v.length - 1) + 1;
    i = 1;
  }
  // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then optional [1] [2] [3].
  const issuerNode = fields[i + 2];
  const validity = children(fields[i + 3], 'validity');
  const subjectNode = fields[i + 4];
  if (fields[i + 5] === undefined) throw new Error('bad subjectPublicKeyInfo');
  const extensions = fields.slice(i + 6).find((f) => isContext(f, 3));
  const issuer = nameToString(issuerNode, 'issuer');
  const subject = nameToString(subjectNode, 'subject');
  const sameName = issuerNode !== undefined && subjectNode !== undefined && forge.asn1.toDer(issuerNode).getBytes() === forge.asn1.toDer(subjectNode).getBytes();
  const hex = createHash('sha256').update(Buffer.from(der, 'latin1')).digest('hex').toUpperCase();
  return {
    version,
    subject,
    issuer,
    notBefore: timeOf(validity[0], 'notBefore'),
    notAfter: timeOf(validity[1], 'notAfter'),
    isCa: basicConstraintsCa(extensions),
    selfSigned: sameName,
    fingerprint: hex.match(/../g)?.join(':') ?? hex,
  };
}
