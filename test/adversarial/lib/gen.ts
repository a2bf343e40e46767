/**
 * Request generators of the fuzzer: raw HTTP/1.1 requests built from a seeded {@link Rng} and a
 * {@link World} (what the node under test holds and where the canaries are), and scenarios (short
 * sequences of requests on one kept-alive connection: pulls, chunked pushes with out-of-order and
 * overlapping PATCHes, token and grant requests, mirror routing) mixing valid and hostile input.
 */
import { createHash } from 'node:crypto';
import type { RawOutcome, RawResponse } from '../../lib/raw-http.js';
import { header, printable } from '../../lib/raw-http.js';
import type { Rng } from './prng.js';

export type Role = 'registry' | 'cache' | 'mirror' | 'server' | 'grant-cache';

export interface BlobRef {
  readonly repo: string;
  readonly digest: string;
  readonly size: number;
}
export interface ManifestRef {
  readonly repo: string;
  readonly tag: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly config: BlobRef;
  readonly layers: readonly BlobRef[];
}

/** What the fuzzer knows of the node under test. */
export interface World {
  readonly role: Role;
  /** host:port of the node under test (the Host header of well-formed requests). */
  readonly nodeHost: string;
  /** host:port of each canary listener (`127.0.0.1:P`, `[::1]:Q`). */
  readonly canaryHosts: readonly string[];
  /** Paths (relative to the storage root, and absolute) of the canary files. */
  readonly canaryRelative: readonly string[];
  readonly canaryAbsolute: readonly string[];
  /** Repositories with content, as the node names them. */
  readonly repos: readonly string[];
  /** Repositories that accept pushes (pushes elsewhere are refused, which is fine too). */
  readonly pushRepos: readonly string[];
  readonly blobs: readonly BlobRef[];
  readonly manifests: readonly ManifestRef[];
  /** Authorization values the node (or its origin) accepts; empty for an open node. */
  readonly goodAuth: readonly string[];
  /** Authorization of a user that may push (server, htpasswd registry), if one is needed. */
  readonly pushAuth?: string;
  /** Authorization of an admin (server), used only on requests that change nothing that names a host. */
  readonly adminAuth?: string;
  /** Paths outside /v2/ the role serves. */
  readonly extraPaths: readonly string[];
  /** Hosts the node is configured for (mirror remotes: `?ns=` values that route). */
  readonly nsHosts: readonly string[];
  /** Valid grants seen in redirects (server), reused in later requests. */
  readonly grants: string[];
  /** The `Authorization` the server's `/api/v0/events` takes (its events secret), when it has one. */
  readonly eventsAuth?: string;
  /** A cache in grant mode: a grant the server issued for each blob, by `repo@digest`. */
  readonly grantFor?: ReadonlyMap<string, string>;
}

/** One request, ready to write. */
export interface FuzzRequest {
  readonly bytes: Buffer;
  /** The request line, printable, for reports. */
  readonly line: string;
  readonly head: boolean;
  /** Broken framing or hostile bytes: sent on a fresh connection, half-closed, every answer read. */
  readonly drain: boolean;
  /** For pipelined requests: which answers are to HEAD requests. */
  readonly heads?: readonly boolean[];
  /**
   * A well-formed request of a client flow (pull, push): a healthy node answers it, so a timeout is a
   * hang even when the node answers the next probe.
   */
  readonly valid?: boolean;
  /** Statuses the OCI distribution spec allows for this request (checked when set). */
  readonly expect?: readonly number[];
  /**
   * A cache in grant mode: true when the request carries no grant valid for what it asks, false when it does
   * (grantCacheScenario sets it). A 2xx answer to a content request (blobs, manifests, tags, catalog, warm) is
   * a finding unless `deny` is false: every other request of every scenario asks without a grant.
   */
  readonly deny?: boolean;
}

/** What a scenario can do. */
export interface ScenarioContext {
  readonly rng: Rng;
  readonly world: World;
  send(req: FuzzRequest): Promise<RawOutcome>;
}

type Framing = 'length' | 'chunked' | 'none' | 'cl-short' | 'cl-long' | 'chunked-bad' | 'cl-and-te' | 'cl-dup' | 'cl-garbage';

export interface RequestSpec {
  method: string;
  target: string;
  version?: string;
  headers: Array<[string, string]>;
  body?: Buffer;
  framing?: Framing;
  /** Line ending (default CRLF). */
  eol?: string;
  /** Force drain mode. */
  drain?: boolean;
  /** Omit the Host header. */
  noHost?: boolean;
  /** See {@link FuzzRequest.valid}. */
  valid?: boolean;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'application/json', 'text/plain', '*/*', '', 'application/vnd.oci.image.manifest.v1+json; charset=utf-8', 'x'.repeat(3000)];

export const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Serialises a request. */
export function build(spec: RequestSpec, world: World): FuzzRequest {
  const eol = spec.eol ?? '\r\n';
  const version = spec.version ?? 'HTTP/1.1';
  const headers: Array<[string, string]> = [];
  if (!spec.noHost && !spec.headers.some(([k]) => k.toLowerCase() === 'host')) headers.push(['Host', world.nodeHost]);
  headers.push(...spec.headers);
  const framing = spec.framing ?? (spec.body !== undefined ? 'length' : 'none');
  let body = spec.body ?? Buffer.alloc(0);
  let drain = spec.drain ?? false;
  switch (framing) {
    case 'none':
      break;
    case 'length':
      headers.push(['Content-Length', String(body.length)]);
      break;
    case 'cl-short': // the body is longer than announced: the rest is read as the next request
      headers.push(['Content-Length', String(Math.max(0, body.length - 1 - (body.length >> 1)))]);
      drain = true;
      break;
    case 'cl-long': // announced more than sent, then the connection half-closes
      headers.push(['Content-Length', String(body.length + 1 + body.length * 2)]);
      drain = true;
      break;
    case 'chunked':
      headers.push(['Transfer-Encoding', 'chunked']);
      body = chunk(body, [], eol);
      break;
    case 'chunked-bad': {
      headers.push(['Transfer-Encoding', 'chunked']);
      body = Buffer.concat([body.length ? Buffer.from(`${['zz', '-1', 'ffffffffffffffffff', `${(body.length + 5).toString(16)}`, ' 4', '4;ext="\x00"', '0x4', ''][body.length % 8]}\r\n`) : Buffer.from('Q\r\n'), body, Buffer.from(['\r\n0\r\n', '0\r\n', '\n\n', '', '\r\n0\r\nX-Trailer: a\r\n\r\n'][body.length % 5]!)]);
      drain = true;
      break;
    }
    case 'cl-and-te':
      headers.push(['Content-Length', String(body.length)], ['Transfer-Encoding', 'chunked']);
      body = chunk(body, [], eol);
      drain = true;
      break;
    case 'cl-dup':
      headers.push(['Content-Length', String(body.length)], ['Content-Length', String(body.length + 3)]);
      drain = true;
      break;
    case 'cl-garbage':
      headers.push(['Content-Length', ['-1', '1e3', '0x10', ' 12 ', '99999999999999999999999', '', '1,1', '+5'][body.length % 8]!]);
      drain = true;
      break;
  }
  const head = `${spec.method} ${spec.target} ${version}`.replace(/ $/, '');
  const text = [head, ...headers.map(([k, v]) => `${k}: ${v}`)].join(eol) + eol + eol;
  if (eol !== '\r\n' || /[\0\r\n]/.test(spec.target) || /[^\x20-\x7e]/.test(spec.method) || !/^HTTP\/1\.[01]$/.test(version) || spec.method === 'CONNECT') drain = true;
  // Headers that change how the rest of the connection is read (a body the request does not carry,
  // upgrades, bytes that split header lines) go on their own connection, so that a kept-alive
  // connection only ever carries requests framed as the node reads them.
  const framingHeaders = headers.filter(([k]) => /^(content-length|transfer-encoding)$/i.test(k)).length;
  if (
    framingHeaders !== (framing === 'length' || framing === 'chunked' ? 1 : 0) ||
    headers.some(([k, v]) => /^(expect|upgrade)$/i.test(k) || (/^connection$/i.test(k) && /upgrade|close/i.test(v)) || /[\0\r\n]/.test(k + v) || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k))
  ) {
    drain = true;
  }
  const bytes = Buffer.concat([Buffer.from(text, 'latin1'), body]);
  return { bytes, line: printable(head, 300), head: spec.method === 'HEAD', drain, ...(spec.valid && !drain ? { valid: true } : {}) };
}

function chunk(body: Buffer, sizes: number[], eol: string): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  let i = 0;
  while (off < body.length) {
    const n = Math.min(body.length - off, sizes[i++] ?? 4096);
    parts.push(Buffer.from(`${n.toString(16)}${eol}`), body.subarray(off, off + n), Buffer.from(eol));
    off += n;
  }
  parts.push(Buffer.from(`0${eol}${eol}`));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------- pieces

const TRAVERSAL_PREFIXES = ['../', '%2e%2e/', '%2e%2e%2f', '..%2f', '..%2F', '%252e%252e%252f', '..\\', '..;/', '.%2e/', '%c0%ae%c0%ae/', '....//', '..%00/', '..%5c'];

/** Ways of reaching a canary file from a path segment. */
export function traversal(rng: Rng, world: World): string {
  const kind = rng.int(0, 5);
  if (kind === 0) return rng.pick(world.canaryAbsolute);
  if (kind === 1) return rng.pick(world.canaryAbsolute).replace(/\//g, rng.pick(['%2f', '%2F', '/', '//']));
  const prefix = rng.pick(TRAVERSAL_PREFIXES);
  if (kind === 2) return rng.pick(world.canaryRelative).replace(/\.\.\//g, prefix);
  const depth = rng.int(2, 24);
  const abs = rng.pick(world.canaryAbsolute).replace(/^\//, '');
  return prefix.repeat(depth) + (rng.chance(0.5) ? abs : encodeURIComponent(abs));
}

function validName(rng: Rng): string {
  const comps = rng.int(1, 4);
  const parts: string[] = [];
  for (let i = 0; i < comps; i++) parts.push(rng.string(rng.int(1, 12)) + (rng.chance(0.2) ? rng.pick(['.', '_', '__', '-', '--']) + rng.string(rng.int(1, 5)) : ''));
  return parts.join('/');
}

export function repoName(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [30, () => rng.pick(world.repos)],
    [8, () => rng.pick(world.pushRepos)],
    [10, () => validName(rng)],
    [4, () => 'a'.repeat(rng.pick([255, 256, 300, 1000, 5000]))],
    [3, () => Array.from({ length: rng.int(20, 200) }, () => 'ab').join('/')],
    [8, () => traversal(rng, world)],
    [3, () => rng.pick(['..', '.', '../..', '%2e%2e', 'a/../..', 'a/./b', 'a//b', '/a', 'a/', '_catalog', 'v2', 'A/B', 'a%2fb', 'a%00b', 'a b', 'ä/ö', '-a', 'a-', 'a..b', '%', '%zz', '~', '$'])],
    [2, () => `${rng.pick(world.repos)}/${rng.pick(['blobs', 'manifests', 'tags', 'uploads', 'referrers'])}/${rng.pick(world.repos)}`],
    [2, () => (world.nsHosts.length ? `${rng.pick([...world.nsHosts, ...world.canaryHosts])}/${rng.pick(world.repos)}` : rng.pick(world.repos))],
    [2, () => `${rng.pick(world.canaryHosts)}/${validName(rng)}`],
  ])();
}

export function digestString(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [30, () => rng.pick(world.blobs).digest],
    [8, () => rng.pick(world.manifests).digest],
    [10, () => `sha256:${rng.hex(64)}`],
    [3, () => `sha512:${rng.hex(128)}`],
    [2, () => `sha384:${rng.hex(96)}`],
    [10, () => rng.pick(['sha256:', 'sha256:abc', `sha256:${'A'.repeat(64)}`, `sha256:${rng.hex(63)}`, `sha256:${rng.hex(65)}`, `md5:${rng.hex(32)}`, 'sha256', ':', `SHA256:${rng.hex(64)}`, `sha256+b64u:${rng.string(43)}`, `sha256:${rng.hex(64)}\u0000`, `sha256:${rng.hex(64)}%00`, `sha512:${rng.hex(64)}`, `${rng.hex(64)}`, `sha256:${'0'.repeat(64)}`, `a:${'b'.repeat(5000)}`])],
    [6, () => `sha256:${traversal(rng, world)}`],
    [3, () => traversal(rng, world)],
  ])();
}

export function referenceString(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [25, () => rng.pick(world.manifests).tag],
    [15, () => rng.pick(world.manifests).digest],
    [8, () => digestString(rng, world)],
    [6, () => rng.string(rng.int(1, 20), 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-')],
    [5, () => rng.pick(['.INVALID_NAME', '-tag', '.', '..', 'a'.repeat(128), 'a'.repeat(129), 'b'.repeat(4000), 'latest', 'LATEST', 'v1', 'a:b', 'a@b', 'a%2fb', 'a/b', '', ' ', '%00', '%', 'tag#frag', 'ä'])],
    [6, () => traversal(rng, world)],
  ])();
}

function uploadId(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [5, () => `${rng.hex(8)}-${rng.hex(4)}-4${rng.hex(3)}-a${rng.hex(3)}-${rng.hex(12)}`],
    [3, () => traversal(rng, world)],
    [3, () => rng.pick(['', '.', '..', 'x'.repeat(3000), '%00', 'a/b', 'data', 'startedat', '_uploads', 'hashstates', 'CON', '*', '%2e%2e%2f%2e%2e'])],
  ])();
}

/** A query string (with its `?`), often empty. */
function query(rng: Rng, world: World): string {
  if (rng.chance(0.55)) return '';
  const params: string[] = [];
  const n = rng.int(1, 3);
  for (let i = 0; i < n; i++) {
    params.push(
      rng.weighted<() => string>([
        [6, () => `grant=${grantJunk(rng, world)}`],
        [5, () => `ns=${rng.pick([...world.canaryHosts, ...world.nsHosts, '127.0.0.9:5000', 'localhost', '127.0.0.1', '', 'a'.repeat(300), `${rng.pick(world.canaryHosts)}/x`, `http://${rng.pick(world.canaryHosts)}`, `user:pw@${rng.pick(world.canaryHosts)}`])}`],
        [4, () => `digest=${encodeURIComponent(digestString(rng, world))}`],
        [3, () => `mount=${encodeURIComponent(digestString(rng, world))}&from=${encodeURIComponent(repoName(rng, world))}`],
        [3, () => `n=${rng.pick(['-1', '0', '1', '2', '1000', '1001', '99999999999999999999', 'abc', '1e3', '', '0x10'])}`],
        [3, () => `last=${encodeURIComponent(rng.chance(0.5) ? repoName(rng, world) : traversal(rng, world))}`],
        [2, () => `_state=${rng.chance(0.5) ? traversal(rng, world) : rng.string(rng.int(1, 400), 'abcdefABCDEF0123456789-_=.')}`],
        [2, () => `artifactType=${encodeURIComponent(rng.pick(MEDIA_TYPES))}`],
        [2, () => `realm=${encodeURIComponent(`http://${rng.pick(world.canaryHosts)}/token`)}&service=${rng.pick(world.canaryHosts)}`],
        [2, () => `scope=${encodeURIComponent(`repository:${repoName(rng, world)}:${rng.pick(['pull', 'push', '*', 'pull,push', 'delete', ''])}`)}`],
        [1, () => `${rng.string(rng.int(1, 10))}=${rng.string(rng.int(0, 20))}`],
        [1, () => rng.pick(['&&&', '=', 'a=%', 'a=%zz', '%00=1', 'a[]=1&a[]=2', 'ns=a&ns=b', 'grant=a&grant=b', 'digest=a&digest=b', '__proto__=1', 'constructor=x'])],
      ])(),
    );
  }
  return `?${params.join('&')}`;
}

function b64url(s: string | Buffer): string {
  return Buffer.from(s).toString('base64url');
}

/** Something in the shape of a grant, or not. */
export function grantJunk(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [5, () => 'a.b.c'],
    [3, () => (world.grants.length ? rng.pick(world.grants) : 'a.b.c')],
    [2, () => (world.grants.length ? tamper(rng, rng.pick(world.grants)) : `${b64url('{}')}.${b64url('{}')}.`)],
    [4, () => `${b64url(JSON.stringify({ alg: rng.pick(['none', 'HS256', 'ES256', 'RS256', 'ES384', '']), typ: rng.pick(['cascade-grant+jwt', 'JWT']), kid: rng.pick(['x', '', '../../etc/passwd', rng.hex(43)]), ...(rng.chance(0.2) ? { jku: `http://${rng.pick(world.canaryHosts)}/jwks`, x5u: `http://${rng.pick(world.canaryHosts)}/x5u` } : {}), ...(rng.chance(0.1) ? { crit: ['exp'] } : {}) }))}.${b64url(JSON.stringify({ iss: 'cascade-fuzz', aud: 'fuzz-cache', repo: rng.pick(world.repos), digest: rng.pick(world.blobs).digest, iat: rng.int(0, 2e9), exp: rng.pick([0, 2e9, -1, 1e308]), sub: 'bob', jti: rng.hex(32) }))}.${rng.chance(0.5) ? '' : b64url(rng.bytes(rng.pick([0, 1, 64, 65, 512])))}`],
    [2, () => rng.pick(['', '.', '..', '...', 'a..', '.b.', 'a.b', 'a.b.c.d', '%00.%00.%00', 'eyJ.eyJ.x', '=.=.=', 'x'.repeat(9000), `${'a'.repeat(3000)}.${'b'.repeat(3000)}.${'c'.repeat(3000)}`])],
    [1, () => `${b64url('[]')}.${b64url('null')}.${b64url('x')}`],
    [1, () => `${b64url('{"alg":"ES256","typ":"cascade-grant+jwt","kid":{"x":1}}')}.${b64url('{"exp":"soon"}')}.AAAA`],
  ])();
}

function tamper(rng: Rng, token: string): string {
  const i = rng.int(0, token.length - 1);
  return token.slice(0, i) + rng.pick(['A', '_', '-', '.', '']) + token.slice(i + 1);
}

export function authorization(rng: Rng, world: World): string | undefined {
  return rng.weighted<() => string | undefined>([
    [25, () => (world.goodAuth.length ? rng.pick(world.goodAuth) : undefined)],
    [20, () => undefined],
    [3, () => `Basic ${Buffer.from('nocolon').toString('base64')}`],
    [2, () => `Basic ${Buffer.from(':').toString('base64')}`],
    [2, () => `Basic ${Buffer.from(`${'u'.repeat(rng.pick([10, 5000]))}:${'p'.repeat(rng.pick([1, 80, 5000]))}`).toString('base64')}`],
    [2, () => `Basic ${Buffer.from(`bob:${rng.string(8)}`).toString('base64')}`],
    [2, () => `Basic ${Buffer.from('alice\u0000:x').toString('base64')}`],
    [3, () => rng.pick(['Basic', 'Basic ', 'Basic !!!', 'Basic ====', 'basic YTpi', 'BASIC YTpi', 'Basic YTpi YTpi', 'Basic\tYTpi'])],
    [3, () => `Bearer ${rng.pick(['junk', 'a.b.c', '', '.', 'x'.repeat(9000), grantJunk(rng, world)])}`],
    [1, () => rng.pick(['Digest username="a"', 'Negotiate YII=', 'AWS4-HMAC-SHA256 x', '', ' ', 'Bearer', 'Bearer  a', 'Basic Og==, Bearer x', '\u00ff\u00fe'])],
  ])();
}

function extraHeaders(rng: Rng, world: World, method: string): Array<[string, string]> {
  const h: Array<[string, string]> = [];
  const auth = authorization(rng, world);
  if (auth !== undefined) h.push(['Authorization', auth]);
  if (rng.chance(0.2)) {
    h.push([
      'Range',
      rng.pick(['bytes=0-10', 'bytes=-5', 'bytes=5-', 'bytes=10-5', 'bytes=0-0,5-6', 'bytes=999999999999999999999-', 'items=0-1', 'bytes=-0', 'bytes=abc', 'bytes=0-18446744073709551616', 'bytes=0-', 'bytes= 1 - 2', 'bytes=1-2-3', 'bytes=', '', 'bytes=4294967296-4294967297', 'bytes=0-10, 0-10', 'bytes=-99999999999', `bytes=0-${rng.int(0, 200000)}`, `bytes=${rng.int(0, 70000)}-`]),
    ]);
  }
  if (rng.chance(0.25)) h.push(['Accept', rng.chance(0.7) ? rng.pick(MEDIA_TYPES) : [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(', ')]);
  if (rng.chance(0.12)) h.push([rng.pick(['X-Cascade-Grant', 'X-Cascade-Grant', 'x-cascade-grant']), grantJunk(rng, world)]);
  if (rng.chance(0.08)) h.push(['domain', rng.pick([...world.canaryHosts, ...world.nsHosts, '127.0.0.9:5000', '', '..', 'a'.repeat(500)])]);
  if (rng.chance(0.06)) h.push(['X-Cascade-Via', rng.pick(['', 'x', 'a,b,c', 'a'.repeat(4000), Array.from({ length: 200 }, (_, i) => `n${i}`).join(', ')])]);
  if (rng.chance(0.08)) h.push([rng.pick(['X-Forwarded-For', 'X-Forwarded-Host', 'X-Forwarded-Proto', 'Forwarded', 'X-Real-IP', 'X-Original-URL', 'X-Rewrite-URL']), rng.pick([...world.canaryHosts, 'https', 'for=127.0.0.9;host=127.0.0.9', '/v2/../../', `http://${rng.pick(world.canaryHosts)}/v2/`, '::1', '127.0.0.9, 127.0.0.1'])]);
  if (rng.chance(0.05)) h.push(['X-Request-Id', rng.pick(['ok-id', '../../x', 'a'.repeat(200), '\u00e9', ''])]);
  if (rng.chance(0.05)) h.push(['If-None-Match', rng.pick(['*', '"x"', digestString(rng, world)])]);
  if (rng.chance(0.05)) h.push(['Expect', rng.pick(['100-continue', '200-ok', 'x'])]);
  if (rng.chance(0.04)) h.push(['Connection', rng.pick(['close', 'keep-alive', 'upgrade', 'Upgrade, HTTP2-Settings', 'x, close'])]);
  if (rng.chance(0.03)) h.push(['Upgrade', rng.pick(['websocket', 'h2c', 'TLS/1.2'])]);
  if (rng.chance(0.04)) h.push(['Content-Range', rng.pick(['0-10', 'bytes 0-10/11', '10-5', '-1-5', 'a-b', '0-99999999999999999999', '*/*', ''])]);
  if (rng.chance(0.04)) h.push(['Content-Encoding', rng.pick(['gzip', 'br', 'deflate', 'identity', 'x'])]);
  if (rng.chance(0.03)) h.push(['Cookie', `s=${rng.string(rng.int(1, 300))}`]);
  if (rng.chance(0.03)) h.push(['Origin', `http://${rng.pick(world.canaryHosts)}`]);
  if (rng.chance(0.02)) h.push(['Transfer-Encoding', rng.pick(['gzip', 'identity', 'chunked, gzip', 'x'])]);
  if (rng.chance(0.03) && (method === 'GET' || method === 'HEAD')) h.push(['Content-Length', rng.pick(['0', '5', '-1'])]);
  if (rng.chance(0.03)) {
    // many headers
    const n = rng.pick([50, 200, 1000, 2100]);
    for (let i = 0; i < n; i++) h.push([`X-F-${i}`, rng.string(rng.int(0, 8))]);
  }
  if (rng.chance(0.02)) h.push([rng.pick(['X-Huge', 'Authorization', 'Accept', 'Range', 'Cookie']), 'h'.repeat(rng.pick([8000, 15000, 17000, 70_000]))]);
  if (rng.chance(0.02)) h.push([rng.pick(['X Bad', 'X:Bad', '', 'X\u0000', '(x)', 'ä']), 'v']);
  if (rng.chance(0.02)) h.push(['X-Fold', 'a\r\n continued']);
  if (rng.chance(0.02)) h.push(['X-Inject', rng.pick(['a\r\nHost: 127.0.0.9', 'a\nX: b', 'a\rb', 'a\u0000b'])]);
  return h;
}

function randomMethod(rng: Rng): string {
  return rng.weighted<string>([
    [30, 'GET'],
    [10, 'HEAD'],
    [9, 'PUT'],
    [8, 'POST'],
    [8, 'PATCH'],
    [7, 'DELETE'],
    [3, 'OPTIONS'],
    [2, 'TRACE'],
    [2, 'CONNECT'],
    [1, 'get'],
    [1, 'PROPFIND'],
    [1, 'M-SEARCH'],
    [1, 'FOO'],
    [1, 'G\u0000ET'],
    [1, 'A'.repeat(300)],
    [1, 'GET /'],
    [1, ''],
    [1, 'PURGE'],
    [1, 'QUERY'],
  ]);
}

/** A path of the role's API, hostile or not. */
function apiPath(rng: Rng, world: World): string {
  const name = () => repoName(rng, world);
  return rng.weighted<() => string>([
    [6, () => '/v2/'],
    [1, () => rng.pick(['/v2', '/v2//', '/V2/', '/v2/?', '/v2/#x', '/v2/.', '/v2/./', '/v2/..', '/v2%2f', '/v2/%2e'])],
    [4, () => `/v2/_catalog${query(rng, world)}`],
    [6, () => `/v2/${name()}/tags/list${query(rng, world)}`],
    [20, () => `/v2/${name()}/manifests/${referenceString(rng, world)}${query(rng, world)}`],
    [20, () => `/v2/${name()}/blobs/${digestString(rng, world)}${query(rng, world)}`],
    [6, () => `/v2/${name()}/blobs/uploads/${query(rng, world)}`],
    [6, () => `/v2/${name()}/blobs/uploads/${uploadId(rng, world)}${query(rng, world)}`],
    [3, () => `/v2/${name()}/referrers/${digestString(rng, world)}${query(rng, world)}`],
    [10, () => `/v2/${traversal(rng, world)}`],
    [3, () => `/${traversal(rng, world)}`],
    [3, () => `/v2/${rng.pick(world.repos)}/blobs/${traversal(rng, world)}`],
    [2, () => `/v2/${rng.pick(world.repos)}/${rng.pick(['blobs', 'manifests', 'tags', 'referrers'])}${rng.pick(['', '/', '//'])}`],
    [8, () => (world.extraPaths.length ? rng.pick(world.extraPaths) : '/v2/') + query(rng, world)],
    [3, () => (world.extraPaths.length ? `${rng.pick(world.extraPaths).replace(/\/?$/, '/')}${traversal(rng, world)}` : '/')],
    [2, () => rng.pick(['/', '/metrics', '/health', '/ready', '/api/v0/keys', '/favicon.ico', '/.well-known/x', '/ui', '/ui/', '/ui/index.html', '/ui/../package.json', '/ui/%2e%2e/%2e%2e/package.json', '/api/v0/', '/auth/token'])],
  ])();
}

/** A request target: mostly origin-form, also absolute-form, asterisk-form, protocol-relative and raw bytes. */
export function target(rng: Rng, world: World): string {
  return rng.weighted<() => string>([
    [70, () => apiPath(rng, world)],
    [5, () => `http://${rng.pick(world.canaryHosts)}${apiPath(rng, world)}`],
    [2, () => `https://${rng.pick(world.canaryHosts)}${apiPath(rng, world)}`],
    [2, () => `http://${rng.pick(['user:pw@', 'a@', ':@', `x@${world.nodeHost}@`])}${rng.pick(world.canaryHosts)}${apiPath(rng, world)}`],
    [2, () => `http://${world.nodeHost}${apiPath(rng, world)}`],
    [1, () => `${rng.pick(['ftp', 'file', 'gopher', 'HTTP', 'unix'])}://${rng.pick([...world.canaryHosts, '', '/'])}${apiPath(rng, world)}`],
    [1, () => `http://localhost:${rng.pick(world.canaryHosts).replace(/.*:/, '')}/v2/`],
    [2, () => '*'],
    [4, () => `//${rng.pick(world.canaryHosts)}${apiPath(rng, world)}`],
    [1, () => `///${rng.pick(world.canaryHosts)}/v2/`],
    [1, () => `/\\${rng.pick(world.canaryHosts)}/v2/`],
    [1, () => `/v2/${rng.pick(world.repos)}/blobs/${rng.pick(world.blobs).digest}${rng.pick(['\u0000', '\r\n', '\n', '\r', ' x', '\t', '%0d%0aHost:%20127.0.0.9', '\u0000/../../'])}${rng.pick(world.canaryAbsolute)}`],
    [1, () => rng.pick(['', ' ', '?', '#', 'v2/', '%', '/%', '/%zz', `/${'a'.repeat(20_000)}`, `/v2/${'a/'.repeat(3000)}`, 'http://', 'http:///v2/', '[::1]', `@${rng.pick(world.canaryHosts)}/v2/`])],
    [1, () => rng.bytes(rng.int(1, 40)).toString('latin1')],
  ])();
}

/** A body: manifests valid and not, JSON of every shape, raw bytes. */
export function body(rng: Rng, world: World, method: string): Buffer | undefined {
  const wants = method === 'PUT' || method === 'POST' || method === 'PATCH' ? 0.8 : 0.08;
  if (!rng.chance(wants)) return undefined;
  return rng.weighted<() => Buffer>([
    [12, () => Buffer.from(JSON.stringify(manifestJson(rng, world)))],
    [6, () => Buffer.from(mutateJson(rng, JSON.stringify(manifestJson(rng, world))))],
    [4, () => rng.bytes(rng.int(0, 3000))],
    [3, () => Buffer.from(rng.pick(['', '{', '}', '[]', 'null', '"x"', '1e400', '{"a":', '\ufeff{}', '{"schemaVersion":2}', '{"__proto__":{"polluted":1},"schemaVersion":2}', '{"constructor":{"prototype":{"x":1}}}', '{"schemaVersion":2,"schemaVersion":1}', '{"mediaType":null}', '{"manifests":[null]}', '{"layers":"x"}', '{"config":[]}']))],
    [1, () => Buffer.from('['.repeat(rng.pick([1000, 100_000])) + ']'.repeat(rng.pick([0, 1000])))],
    [1, () => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, annotations: { big: 'x'.repeat(rng.pick([100_000, 4_300_000])) } }))],
    [1, () => Buffer.from(JSON.stringify({ ...manifestJson(rng, world), layers: Array.from({ length: rng.pick([1000, 20_000]) }, () => ({ mediaType: 'x', digest: rng.pick(world.blobs).digest, size: 1 })) }))],
    [1, () => Buffer.from(JSON.stringify({ grant: 'a.b.c', name: 'x', host: `http://${rng.pick(world.canaryHosts)}`, contentCacheUUID: rng.pick([null, 'x', rng.hex(32), '../../']), cidr: rng.pick(['0.0.0.0/0', '::/0', 'x/99', '1.2.3.4/33']) }))],
    [1, () => Buffer.from(`realm=${encodeURIComponent(`http://${rng.pick(world.canaryHosts)}/`)}&service=x&grant_type=password&username=bob&password=x&scope=repository:x:pull`)],
  ])();
}

/** A valid-looking manifest referring to the world's blobs (sometimes to blobs that do not exist). */
export function manifestJson(rng: Rng, world: World): Record<string, unknown> {
  const blob = () => (rng.chance(0.85) ? rng.pick(world.blobs) : { digest: `sha256:${rng.hex(64)}`, size: rng.int(1, 1000), repo: '' });
  if (rng.chance(0.2)) {
    const m = rng.pick(world.manifests);
    return {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: m.mediaType, digest: rng.chance(0.8) ? m.digest : `sha256:${rng.hex(64)}`, size: rng.int(100, 2000), platform: { os: 'linux', architecture: rng.pick(['amd64', 'arm64']) } }],
    };
  }
  const c = blob();
  const layers = Array.from({ length: rng.int(0, 3) }, blob);
  return {
    schemaVersion: 2,
    mediaType: rng.chance(0.8) ? OCI_MANIFEST : rng.pick(MEDIA_TYPES),
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: c.digest, size: c.size },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    ...(rng.chance(0.1) ? { subject: { mediaType: OCI_MANIFEST, digest: rng.pick(world.manifests).digest, size: 10 } } : {}),
    ...(rng.chance(0.1) ? { artifactType: rng.pick(MEDIA_TYPES) } : {}),
  };
}

function mutateJson(rng: Rng, s: string): string {
  return rng.weighted<() => string>([
    [3, () => s.slice(0, rng.int(0, s.length))],
    [2, () => s.replace(/"size":\d+/, `"size":${rng.pick(['-1', '1e400', '"1"', '9007199254740993', 'null', '0.5', '99999999999999999999'])}`)],
    [2, () => s.replace(/"digest":"[^"]*"/, `"digest":${JSON.stringify(rng.pick(['sha256:x', '', '../../x', `sha256:${'A'.repeat(64)}`, 5]))}`)],
    [1, () => s.replace('"schemaVersion":2', `"schemaVersion":${rng.pick(['1', '3', '"2"', 'null', '-2'])}`)],
    [1, () => s.replace(/"mediaType":"[^"]*"/, '"mediaType":{"a":1}')],
    [1, () => `${s}${rng.pick(['x', '\u0000', ' ', '{}', '\n'])}`],
    [1, () => s.replace(/,/g, rng.pick([',,', ', ', ',\u0000']))],
  ])();
}

/** One random request. */
export function randomRequest(rng: Rng, world: World): FuzzRequest {
  const method = randomMethod(rng);
  const headers = extraHeaders(rng, world, method);
  const b = body(rng, world, method);
  if (b !== undefined && rng.chance(0.7)) headers.push(['Content-Type', rng.pick(MEDIA_TYPES)]);
  let noHost = false;
  if (rng.chance(0.15)) {
    const v = rng.weighted<() => string | undefined>([
      [5, () => rng.pick(world.canaryHosts)],
      [2, () => undefined],
      [3, () => rng.pick(['', '127.0.0.9:80', 'a'.repeat(3000), `${world.nodeHost}@${rng.pick(world.canaryHosts)}`, `${rng.pick(world.canaryHosts)}/v2/`, '[::1', ':0', '127.0.0.1:99999', `user:pw@${rng.pick(world.canaryHosts)}`])],
    ])();
    if (v === undefined) noHost = true;
    else headers.unshift(['Host', v]);
    if (rng.chance(0.2)) headers.push(['Host', world.nodeHost]);
  }
  const framing = rng.weighted<Framing>([
    [84, b !== undefined ? 'length' : 'none'],
    [5, 'chunked'],
    [3, 'chunked-bad'],
    [2, 'cl-short'],
    [2, 'cl-long'],
    [2, 'cl-and-te'],
    [1, 'cl-dup'],
    [1, 'cl-garbage'],
  ]);
  const version = rng.weighted<string>([
    [95, 'HTTP/1.1'],
    [2, 'HTTP/1.0'],
    [1, rng.pick(['HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.1 x', 'HTTP/1.12', 'HTTP/9.9', 'HTTPS/1.1'])],
    [1, ''],
  ]);
  const eol = rng.chance(0.02) ? rng.pick(['\n', '\r', '\n\r']) : '\r\n';
  return build({ method, target: target(rng, world), version, headers, ...(b !== undefined || framing !== 'none' ? { body: b ?? Buffer.alloc(0) } : {}), framing: b === undefined && framing === 'length' ? 'none' : framing, eol, noHost }, world);
}

// ---------------------------------------------------------------------------------------------- scenarios

/** The path (and query) of a Location header, made origin-form. */
export function locationPath(res: RawResponse): string | undefined {
  const loc = header(res, 'location');
  if (!loc) return undefined;
  try {
    const u = new URL(loc, 'http://placeholder.invalid');
    return `${u.pathname}${u.search}`;
  } catch {
    return undefined;
  }
}

function withParam(path: string, param: string): string {
  return `${path}${path.includes('?') ? '&' : '?'}${param}`;
}

function okResponse(o: RawOutcome): RawResponse | undefined {
  return o.kind === 'response' ? o.response : undefined;
}

/** A pull: manifest by tag and digest, its blobs (with ranges), the tag list. */
async function pullScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const m = rng.pick(world.manifests);
  const auth: Array<[string, string]> = world.goodAuth.length ? [['Authorization', rng.pick(world.goodAuth)]] : [];
  const accept: [string, string] = ['Accept', [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(', ')];
  await ctx.send(build({ valid: true, method: 'HEAD', target: `/v2/${m.repo}/manifests/${m.tag}`, headers: [...auth, accept] }, world));
  await ctx.send(build({ valid: true, method: 'GET', target: `/v2/${m.repo}/manifests/${rng.chance(0.5) ? m.tag : m.digest}`, headers: [...auth, accept] }, world));
  for (const b of [m.config, ...m.layers]) {
    const range: Array<[string, string]> = rng.chance(0.3) ? [['Range', rng.pick([`bytes=0-${rng.int(0, b.size)}`, `bytes=${rng.int(0, b.size)}-`, `bytes=-${rng.int(0, b.size)}`, `bytes=${b.size}-`, `bytes=${b.size + 10}-${b.size + 20}`])]] : [];
    await ctx.send(build({ valid: true, method: rng.chance(0.2) ? 'HEAD' : 'GET', target: `/v2/${m.repo}/blobs/${b.digest}`, headers: [...auth, ...range] }, world));
  }
  if (rng.chance(0.15)) {
    // A reference that is neither a tag nor a digest names no manifest: 404 MANIFEST_UNKNOWN (OCI spec).
    const ref = rng.pick(['.INVALID_NAME', '-tag', 'a'.repeat(129), '_x', 'a+b', 'sha256:zz', 'x%21']);
    const req = build({ valid: true, method: rng.pick(['GET', 'HEAD']), target: `/v2/${m.repo}/manifests/${ref}`, headers: [...auth, accept] }, world);
    // A cache in grant mode refuses every manifest request (403 DENIED: manifests come from the server) before
    // it reads the reference.
    await ctx.send({ ...req, expect: world.role === 'grant-cache' ? [403, 404] : [404] });
  }
  if (rng.chance(0.5)) await ctx.send(build({ valid: true, method: 'GET', target: `/v2/${m.repo}/tags/list${rng.chance(0.5) ? `?n=${rng.int(0, 3)}` : ''}`, headers: auth }, world));
  if (rng.chance(0.3)) await ctx.send(build({ valid: true, method: 'GET', target: `/v2/${m.repo}/referrers/${m.digest}`, headers: auth }, world));
  if (rng.chance(0.2)) await ctx.send(build({ valid: true, method: 'GET', target: '/v2/_catalog', headers: auth }, world));
}

/**
 * A push: an upload session with PATCH chunks (in order, out of order, overlapping, with gaps, with bad
 * Content-Range), its status, the closing PUT with a right or wrong digest, then a manifest and its
 * deletion.
 */
async function pushScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const repo = rng.chance(0.85) ? rng.pick(world.pushRepos) : repoName(rng, world);
  const auth: Array<[string, string]> = world.pushAuth ? [['Authorization', world.pushAuth]] : world.goodAuth.length ? [['Authorization', rng.pick(world.goodAuth)]] : [];
  const data = rng.bytes(rng.pick([0, 1, rng.int(2, 5000), rng.int(5000, 70_000)]));
  const digest = sha256(data);
  const start = okResponse(await ctx.send(build({ valid: true, method: 'POST', target: `/v2/${repo}/blobs/uploads/`, headers: auth }, world)));
  let loc = start ? locationPath(start) : undefined;
  if (!start || start.status !== 202 || !loc) return;
  const mode = rng.weighted<string>([
    [4, 'ordered'],
    [2, 'out-of-order'],
    [2, 'overlap'],
    [1, 'gap'],
    [1, 'bad-range'],
    [1, 'no-range'],
    [1, 'chunked'],
  ]);
  const cuts = [0, ...Array.from({ length: rng.int(0, 3) }, () => rng.int(0, data.length)).sort((a, b) => a - b), data.length];
  let pieces = cuts.slice(1).map((end, i) => [cuts[i]!, end] as [number, number]).filter(([a, b]) => b > a);
  if (mode === 'out-of-order') pieces = pieces.reverse();
  if (mode === 'overlap') pieces = pieces.map(([a, b]) => [Math.max(0, a - rng.int(1, 100)), b]);
  if (mode === 'gap') pieces = pieces.map(([a, b]) => [Math.min(b, a + rng.int(1, 50)), b]);
  for (const [a, b] of pieces) {
    const chunkBytes = data.subarray(a, b);
    const range: Array<[string, string]> =
      mode === 'no-range' ? [] : mode === 'bad-range' ? [['Content-Range', rng.pick([`${a}-${b}`, `${b}-${a}`, `bytes ${a}-${b - 1}/${data.length}`, `${a}`, `-${a}`, `${a}-${b + 1000}`, 'x-y', `${a}-${b - 1}, 0-1`])]] : [['Content-Range', `${a}-${b - 1}`]];
    const res = okResponse(await ctx.send(build({ valid: true, method: 'PATCH', target: loc, headers: [...auth, ...range, ['Content-Type', 'application/octet-stream']], body: chunkBytes, framing: mode === 'chunked' ? 'chunked' : 'length' }, world)));
    if (!res) return;
    const next = locationPath(res);
    if (res.status === 202 && next) loc = next;
  }
  if (rng.chance(0.4)) await ctx.send(build({ valid: true, method: 'GET', target: loc, headers: auth }, world));
  if (rng.chance(0.1)) {
    await ctx.send(build({ valid: true, method: 'DELETE', target: loc, headers: auth }, world));
    if (rng.chance(0.5)) await ctx.send(build({ valid: true, method: 'PATCH', target: loc, headers: auth, body: data.subarray(0, 10) }, world));
    return;
  }
  const finalDigest = rng.weighted<string>([
    [8, digest],
    [1, `sha256:${rng.hex(64)}`],
    [1, digestString(rng, world)],
  ]);
  const tail = pieces.length === 0 && rng.chance(0.5) ? data : undefined;
  await ctx.send(build({ valid: true, method: 'PUT', target: withParam(loc, `digest=${encodeURIComponent(finalDigest)}`), headers: [...auth, ['Content-Type', 'application/octet-stream']], ...(tail ? { body: tail } : { body: Buffer.alloc(0) }) }, world));
  await ctx.send(build({ valid: true, method: rng.chance(0.5) ? 'HEAD' : 'GET', target: `/v2/${repo}/blobs/${digest}`, headers: auth }, world));
  // A manifest naming the new blob as its config.
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: data.length },
    layers: rng.chance(0.5) ? [] : [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: rng.pick(world.blobs).digest, size: rng.pick(world.blobs).size }],
  });
  const mbytes = Buffer.from(rng.chance(0.85) ? manifest : mutateJson(rng, manifest));
  const tag = rng.chance(0.8) ? `t${rng.string(6)}` : referenceString(rng, world);
  const put = okResponse(await ctx.send(build({ valid: true, method: 'PUT', target: `/v2/${repo}/manifests/${tag}`, headers: [...auth, ['Content-Type', rng.chance(0.9) ? OCI_MANIFEST : rng.pick(MEDIA_TYPES)]], body: mbytes, framing: rng.chance(0.9) ? 'length' : 'chunked' }, world)));
  await ctx.send(build({ valid: true, method: 'GET', target: `/v2/${repo}/manifests/${rng.chance(0.5) ? tag : sha256(mbytes)}`, headers: [...auth, ['Accept', OCI_MANIFEST]] }, world));
  if (put?.status === 201 && rng.chance(0.3)) {
    await ctx.send(build({ valid: true, method: 'DELETE', target: `/v2/${repo}/manifests/${rng.chance(0.8) ? sha256(mbytes) : tag}`, headers: auth }, world));
    if (rng.chance(0.5)) await ctx.send(build({ valid: true, method: 'DELETE', target: `/v2/${repo}/blobs/${digest}`, headers: auth }, world));
    await ctx.send(build({ valid: true, method: 'GET', target: `/v2/${repo}/manifests/${tag}`, headers: auth }, world));
  }
}

/** A monolithic upload (POST with ?digest= and the body) or a cross-repository mount. */
async function monolithicScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const repo = rng.chance(0.8) ? rng.pick(world.pushRepos) : repoName(rng, world);
  const auth: Array<[string, string]> = world.pushAuth ? [['Authorization', world.pushAuth]] : [];
  if (rng.chance(0.3)) {
    const b = rng.pick(world.blobs);
    await ctx.send(build({ valid: true, method: 'POST', target: `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(rng.chance(0.8) ? b.digest : digestString(rng, world))}&from=${encodeURIComponent(rng.chance(0.8) ? b.repo : repoName(rng, world))}`, headers: auth }, world));
    return;
  }
  const data = rng.bytes(rng.int(0, 20_000));
  const digest = rng.chance(0.85) ? sha256(data) : digestString(rng, world);
  await ctx.send(build({ valid: true, method: 'POST', target: `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, headers: [...auth, ['Content-Type', 'application/octet-stream']], body: data, framing: rng.weighted<Framing>([[8, 'length'], [2, 'chunked'], [1, 'cl-long'], [1, 'cl-short']]) }, world));
}

/** A request with broken framing or bytes, on its own connection. */
async function poisonScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const req = randomRequest(rng, world);
  const second = randomRequest(rng, world);
  let heads = [req.head];
  const raw = rng.weighted<() => Buffer>([
    [6, () => req.bytes],
    [
      2,
      () => {
        heads = [req.head, second.head]; // pipelined
        return Buffer.concat([req.bytes, second.bytes]);
      },
    ],
    [1, () => req.bytes.subarray(0, rng.int(0, req.bytes.length))], // cut anywhere
    [1, () => rng.bytes(rng.int(1, 2000))],
    [1, () => Buffer.from(`GET /v2/ HTTP/1.1\r\nHost: ${world.nodeHost}\r\n${'X: y\r\n'.repeat(rng.pick([10, 3000]))}\r\n`)],
    [1, () => Buffer.from(`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`)],
    [1, () => Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03])], // a TLS ClientHello
  ])();
  if (raw !== req.bytes && heads.length === 1) heads = [raw.subarray(0, 5).toString('latin1') === 'HEAD '];
  const eol = raw.indexOf('\r\n');
  await ctx.send({ bytes: raw, line: printable(raw.subarray(0, eol >= 0 ? eol : 120), 300), head: heads[0]!, drain: true, heads });
}

/** Server: token requests, `/api/v0`, grants from redirects replayed and tampered. */
async function serverScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const canary = () => rng.pick(world.canaryHosts);
  const kind = rng.int(0, 4);
  if (kind === 4) return eventsRequest(ctx);
  if (kind === 0) {
    // The token relay: never to a realm the client names.
    const q = [`realm=${encodeURIComponent(rng.pick([`http://${canary()}/token`, `https://${canary()}/`, `//${canary()}/`, canary(), `http://${world.nodeHost}/auth/token`]))}`, `service=${encodeURIComponent(rng.pick([canary(), world.nodeHost, 'origin', '']))}`, `scope=${encodeURIComponent(`repository:${repoName(rng, world)}:pull`)}`];
    const auth = authorization(rng, world);
    const post = rng.chance(0.3);
    await ctx.send(
      build(
        {
          method: post ? 'POST' : rng.pick(['GET', 'GET', 'HEAD', 'PUT', 'DELETE']),
          target: `/auth/token${post && rng.chance(0.5) ? '' : `?${rng.pick([q.join('&'), q.slice(1).join('&'), q.reverse().join('&'), `${q[0]}&${q[0]}`])}`}`,
          headers: [...(auth ? ([['Authorization', auth]] as Array<[string, string]>) : []), ...(post ? ([['Content-Type', rng.pick(['application/x-www-form-urlencoded', 'application/json', 'text/plain'])]] as Array<[string, string]>) : [])],
          ...(post ? { body: Buffer.from(`grant_type=${rng.pick(['password', 'refresh_token', 'x'])}&service=${canary()}&realm=${encodeURIComponent(`http://${canary()}/`)}&scope=repository:x:pull&username=bob&password=bob-pw&refresh_token=${rng.string(20)}`) } : {}),
        },
        world,
      ),
    );
    return;
  }
  if (kind === 1) {
    // The API as a user, an anonymous client or with broken credentials; the admin only reads or sets
    // things that name no host.
    const admin = world.adminAuth && rng.chance(0.3);
    const method = admin ? rng.pick(['GET', 'GET', 'PUT', 'DELETE']) : rng.pick(['GET', 'POST', 'PATCH', 'PUT', 'DELETE']);
    const paths = ['/api/v0/content_caches', `/api/v0/content_caches/${rng.pick([rng.hex(32), '..', traversal(rng, world), '%00', "1' OR '1'='1", 'x'.repeat(2000)])}`, `/api/v0/content_caches/${rng.hex(8)}/health`, '/api/v0/accounts/me', `/api/v0/accounts/${rng.pick(['bob', 'alice', 'carol', '..', traversal(rng, world), '%2e%2e', 'bob%00', "x';--"])}/settings`, '/api/v0/content_caches_default', '/api/v0/content_cache_rules', `/api/v0/content_cache_rules/namespaces/${rng.pick(['team', traversal(rng, world), '', '..', 'a'.repeat(500)])}`, `/api/v0/content_cache_rules/networks/${rng.pick(['10.0.0.0/8', '::/0', '1.2.3.4/99', 'x', '%2f', '0.0.0.0%2f0', traversal(rng, world)])}`, '/api/v0/keys', '/api/v0/', '/api/v1/x'];
    let path = rng.pick(paths);
    if (admin && method !== 'GET' && !/content_caches_default|content_cache_rules/.test(path)) path = '/api/v0/content_caches_default';
    const b = method === 'GET' || method === 'DELETE' ? undefined : Buffer.from(rng.chance(0.7) ? JSON.stringify({ contentCacheUUID: rng.pick([null, rng.hex(32), '', 5, {}, '../../x']), namespace: rng.pick(['team', '', '..']), cidr: rng.pick(['10.0.0.0/8', 'x', '::/0']), ...(admin ? {} : { name: rng.string(5), host: `http://${canary()}` }) }) : rng.pick(['{', '[]', 'null', 'x'.repeat(100), '{"contentCacheUUID":"' + 'a'.repeat(100_000) + '"}']));
    const auth = admin ? world.adminAuth : authorization(rng, world);
    await ctx.send(build({ method, target: path, headers: [...(auth ? ([['Authorization', auth]] as Array<[string, string]>) : []), ...(b ? ([['Content-Type', rng.pick(['application/json', 'text/plain', 'application/json; charset=utf-16'])]] as Array<[string, string]>) : [])], ...(b ? { body: b } : {}) }, world));
    return;
  }
  // A blob GET through the server: a redirect with a grant (when a cache is registered), then that grant
  // presented to the server (the path a cache's fill takes), replayed for another blob, tampered.
  const b = rng.pick(world.blobs);
  const auth = world.goodAuth.length ? rng.pick(world.goodAuth) : undefined;
  const res = okResponse(await ctx.send(build({ method: 'GET', target: `/v2/${b.repo}/blobs/${b.digest}`, headers: auth ? [['Authorization', auth]] : [] }, world)));
  const loc = res ? header(res, 'location') : undefined;
  const grant = loc ? new URL(loc, 'http://x.invalid').searchParams.get('grant') : null;
  if (grant && world.grants.length < 50) world.grants.push(grant);
  const g = grant ?? grantJunk(rng, world);
  const other = rng.pick(world.blobs);
  const variants = [
    `/v2/${b.repo}/blobs/${b.digest}?grant=${g}`,
    `/v2/${other.repo}/blobs/${other.digest}?grant=${g}`,
    `/v2/${b.repo}/blobs/${b.digest}?grant=${tamper(rng, g)}`,
    `/v2/${b.repo}/manifests/${rng.pick(world.manifests).tag}?grant=${g}`,
    `/v2/${b.repo}/blobs/${b.digest}?grant=${g}&grant=${grantJunk(rng, world)}`,
  ];
  await ctx.send(build({ method: rng.pick(['GET', 'GET', 'HEAD']), target: rng.pick(variants), headers: rng.chance(0.3) ? [['X-Cascade-Grant', rng.chance(0.5) ? g : grantJunk(rng, world)]] : [] }, world));
}

/**
 * Server: the origin's notifications at `/api/v0/events` (with the secret or without, well-formed envelopes
 * naming real and hostile repositories, canary URLs and references, broken ones) and the warm API. Whatever an
 * event says, the server asks only its configured origin for manifests and only registered caches to warm.
 */
async function eventsRequest(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const canary = () => rng.pick(world.canaryHosts);
  if (rng.chance(0.3)) {
    // The warm API: rules, jobs, manual warms, the tree; the admin only sets rules (they name caches by id).
    const admin = world.adminAuth && rng.chance(0.4);
    const paths = ['/api/v0/warm_rules', `/api/v0/warm_rules/${rng.pick(['team', 'fuzz/', '', '..', traversal(rng, world), 'a'.repeat(300), '%00'])}`, '/api/v0/warm_jobs', `/api/v0/warm_jobs/${rng.pick([rng.hex(16), '..', traversal(rng, world)])}`, `/api/v0/content_caches/${rng.pick([rng.hex(32), '..', '%2e%2e'])}/warm`, '/api/v0/content_caches_tree'];
    const path = rng.pick(paths);
    const method = admin && /warm_rules\//.test(path) ? rng.pick(['PUT', 'DELETE', 'GET']) : rng.pick(['GET', 'GET', 'POST', 'PUT', 'DELETE']);
    const body = method === 'GET' || method === 'DELETE' ? undefined : Buffer.from(rng.chance(0.7) ? JSON.stringify({ contentCacheUUIDs: rng.pick([[rng.hex(32)], [], 'x', [null], Array.from({ length: 200 }, () => rng.hex(32))]), repository: rng.pick([...world.repos, traversal(rng, world), `${canary()}/x`]), reference: rng.pick(['v1', 'latest', `sha256:${rng.hex(64)}`, '../x', '']) }) : rng.pick(['{', 'null', '[]', 'x'.repeat(5000)]));
    const auth = admin ? world.adminAuth : authorization(rng, world);
    await ctx.send(build({ method, target: path, headers: [...(auth ? ([['Authorization', auth]] as Array<[string, string]>) : []), ...(body ? ([['Content-Type', 'application/json']] as Array<[string, string]>) : [])], ...(body ? { body } : {}) }, world));
    return;
  }
  const m = rng.pick(world.manifests);
  const event = () => ({
    id: rng.pick([rng.hex(16), 'dup', '', 5]),
    timestamp: rng.pick([new Date().toISOString(), 'yesterday', null]),
    action: rng.pick(['push', 'push', 'push', 'pull', 'delete', 'mount', 'x']),
    target: {
      mediaType: rng.pick([m.mediaType, 'application/vnd.oci.image.index.v1+json', 'application/octet-stream', 'text/html', 5]),
      digest: rng.pick([m.digest, `sha256:${rng.hex(64)}`, 'sha256:../../x', '']),
      repository: rng.pick([m.repo, m.repo, traversal(rng, world), `${canary()}/x`, '', 'a'.repeat(300)]),
      tag: rng.pick([m.tag, undefined, '../x', 'v'.repeat(200)]),
      url: rng.pick([`http://${canary()}/v2/${m.repo}/manifests/${m.digest}`, `http://${world.nodeHost}/v2/x`, 'file:///etc/passwd']),
      size: rng.pick([1000, -1, 1e300, 'x']),
    },
    request: { id: 'r', addr: canary(), host: canary(), method: 'PUT', useragent: 'fuzz' },
    actor: { name: rng.pick(['alice', '', '../x']) },
    source: { addr: canary(), instanceID: 'fuzz' },
  });
  // A push as the origin sends it, but for what it names outside the manifest (URLs, addresses): the server
  // must take the manifest from its origin, whatever `target.url` says.
  const push = () => ({
    id: rng.hex(16),
    timestamp: new Date().toISOString(),
    action: 'push',
    target: { mediaType: m.mediaType, digest: m.digest, repository: m.repo, ...(rng.chance(0.5) ? { tag: m.tag } : {}), size: 1000, length: 1000, url: `http://${canary()}/v2/${m.repo}/manifests/${m.digest}` },
    request: { id: 'r', addr: canary(), host: canary(), method: 'PUT', useragent: 'fuzz' },
    actor: { name: 'alice' },
    source: { addr: canary(), instanceID: 'fuzz' },
  });
  const body = rng.pick([
    () => JSON.stringify({ events: [push()] }),
    () => JSON.stringify({ events: [push(), push(), { ...push(), action: 'pull' }] }),
    () => JSON.stringify({ events: [event()] }),
    () => JSON.stringify({ events: Array.from({ length: rng.int(2, 40) }, event) }),
    () => JSON.stringify({ events: rng.pick([null, {}, 'x', [null, 5]]) }),
    () => JSON.stringify({ events: [{ ...event(), target: rng.pick([null, 'x', []]) }] }),
    () => `{"events":[${'['.repeat(5000)}`,
    () => 'x'.repeat(rng.pick([10, 2_000_000])),
  ])();
  const auth = world.eventsAuth && rng.chance(0.7) ? world.eventsAuth : rng.pick([undefined, 'Bearer wrong', `Bearer ${'x'.repeat(10_000)}`, authorization(rng, world) ?? 'Basic Og==']);
  const type = rng.pick(['application/vnd.docker.distribution.events.v1+json', 'application/json', 'text/plain', 'application/json; charset=utf-16']);
  await ctx.send(build({ method: rng.pick(['POST', 'POST', 'POST', 'GET', 'PUT']), target: '/api/v0/events', headers: [...(auth ? ([['Authorization', auth]] as Array<[string, string]>) : []), ['Content-Type', type]], body: Buffer.from(body) }, world));
}

/** Mirror: routing by `ns`, the `domain` header and path prefixes, to configured remotes and to canaries. */
async function mirrorScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const m = rng.pick(world.manifests);
  const bare = m.repo.replace(/^[^/]+\//, ''); // without the remote's path prefix
  const ns = rng.pick([...world.nsHosts, ...world.canaryHosts, rng.pick(world.canaryHosts).replace('127.0.0.1', 'localhost'), '127.0.0.9:5000', '[::1]:9', `${rng.pick(world.canaryHosts)}#`, `${rng.pick(world.canaryHosts)}/`, '']);
  const what = rng.pick([`manifests/${m.tag}`, `manifests/${m.digest}`, `blobs/${m.config.digest}`, 'tags/list', `blobs/${rng.pick(m.layers.length ? m.layers : [m.config]).digest}`]);
  const name = rng.pick([bare, m.repo, `${rng.pick(world.canaryHosts)}/${bare}`, `library/${bare.split('/').pop()}`]);
  const headers: Array<[string, string]> = [];
  if (rng.chance(0.3)) headers.push(['domain', rng.pick([...world.nsHosts, ...world.canaryHosts])]);
  if (rng.chance(0.2)) headers.push(['Authorization', authorization(rng, world) ?? 'Basic Og==']);
  await ctx.send(build({ method: rng.pick(['GET', 'GET', 'HEAD']), target: `/v2/${name}/${what}${rng.chance(0.7) ? `?ns=${encodeURIComponent(ns)}` : ''}`, headers }, world));
}

/** True when `tampered` decodes to other bytes than `token` in some part (a changed character may not). */
function changedToken(token: string, tampered: string): boolean {
  const a = token.split('.');
  const b = tampered.split('.');
  if (a.length !== b.length) return true;
  return a.some((part, i) => !Buffer.from(part, 'base64url').equals(Buffer.from(b[i]!, 'base64url')) || /[^A-Za-z0-9_-]/.test(b[i]!));
}

/**
 * A cache in grant mode: blob GETs, HEADs and warm requests with the server's grant for that very blob, with
 * one for another blob, tampered, junk, in the query, in a header, twice, or none. A request that holds no
 * grant valid for what it asks is marked `deny`: a 2xx answer to it is a finding (bytes without
 * authorization), as is any answer of 500 or more.
 */
async function grantCacheScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const grants = world.grantFor ?? new Map<string, string>();
  const b = rng.pick(world.blobs);
  const valid = grants.get(`${b.repo}@${b.digest}`);
  const others = [...grants.entries()].filter(([k]) => k !== `${b.repo}@${b.digest}`);
  const other = others.length ? rng.pick(others)[1] : undefined;
  // The grants this request carries (checked below against the grant for what it names).
  const carried: string[] = [];
  const pickGrant = (): string => {
    const g = rng.weighted<() => string>([
      [6, () => valid ?? grantJunk(rng, world)],
      [3, () => other ?? grantJunk(rng, world)],
      [2, () => {
        const base = valid ?? other;
        if (!base) return grantJunk(rng, world);
        const t = tamper(rng, base);
        return changedToken(base, t) ? t : `${base}.x`;
      }],
      [3, () => grantJunk(rng, world)],
    ])();
    carried.push(g);
    return g;
  };
  const kind = rng.int(0, 9);
  const repo = rng.chance(0.9) ? b.repo : rng.pick([repoName(rng, world), traversal(rng, world), `${b.repo}/../${rng.pick(world.repos)}`, b.repo.toUpperCase()]);
  const digest = rng.chance(0.9) ? b.digest : digestString(rng, world);
  // Valid is the server's grant for what the request names (another real blob, now and then), whatever was picked.
  const asked = grants.get(`${repo}@${digest}`);
  const grantOk = () => asked !== undefined && carried.includes(asked);
  if (kind <= 1) {
    // The warm route: POST with the grant in X-Cascade-Grant; repository and digest from the query.
    const q = rng.weighted<() => string>([
      [8, () => `repository=${encodeURIComponent(repo)}&digest=${encodeURIComponent(digest)}`],
      [1, () => `repository=${encodeURIComponent(repo)}&repository=${encodeURIComponent(rng.pick(world.repos))}&digest=${encodeURIComponent(digest)}`],
      [1, () => `digest=${encodeURIComponent(digest)}`],
      [1, () => `repository=${encodeURIComponent(`http://${rng.pick(world.canaryHosts)}/x`)}&digest=${encodeURIComponent(digest)}`],
    ])();
    const headers: Array<[string, string]> = rng.chance(0.9) ? [['X-Cascade-Grant', pickGrant()]] : [];
    if (rng.chance(0.1)) headers.push(['X-Cascade-Grant', pickGrant()]);
    const twice = headers.length > 1;
    const req = build({ method: rng.pick(['POST', 'POST', 'POST', 'GET', 'PUT']), target: `/api/v0/warm?${q}`, headers }, world);
    const ok = !twice && grantOk() && q.startsWith('repository=') && !q.includes('&repository=');
    await ctx.send({ ...req, deny: !ok });
    return;
  }
  // A blob GET or HEAD, the grant in the query (once or twice), sometimes in a header as well.
  const params: string[] = [];
  if (rng.chance(0.9)) params.push(`grant=${pickGrant()}`);
  if (rng.chance(0.1)) params.push(`grant=${pickGrant()}`);
  const headers: Array<[string, string]> = [];
  if (rng.chance(0.15)) headers.push(['X-Cascade-Grant', pickGrant()]);
  if (rng.chance(0.2)) headers.push(['Authorization', authorization(rng, world) ?? `Bearer ${pickGrant()}`]);
  if (rng.chance(0.2)) headers.push(['Range', rng.pick(['bytes=0-0', 'bytes=1-', `bytes=0-${rng.int(0, 5000)}`, 'bytes=-1', 'bytes=999999999-', 'bytes=5-2', 'items=0-1'])]);
  const path = kind === 9 ? `/v2/${repo}/manifests/${rng.pick(world.manifests).tag}` : `/v2/${repo}/blobs/${digest}`;
  const req = build({ method: rng.pick(['GET', 'GET', 'GET', 'HEAD']), target: `${path}${params.length ? `?${params.join('&')}` : ''}`, headers }, world);
  // Only a blob of the grant's repository and digest may be answered; a manifest never carries a grant.
  await ctx.send(kind !== 9 && grantOk() ? { ...req, deny: false, valid: !req.drain } : { ...req, deny: true });
}

/** The same request on several fresh connections at once (races between concurrent handlers). */
async function burstScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const b = rng.pick(world.blobs);
  const auth: Array<[string, string]> = world.goodAuth.length ? [['Authorization', rng.pick(world.goodAuth)]] : [];
  const target = rng.pick(['/ready', '/health', '/metrics', '/v2/', `/v2/${b.repo}/blobs/${b.digest}`, `/v2/${rng.pick(world.manifests).repo}/manifests/${rng.pick(world.manifests).tag}`, `/v2/${rng.pick(world.pushRepos)}/blobs/uploads/`]);
  const method = target.endsWith('/uploads/') ? 'POST' : rng.pick(['GET', 'GET', 'HEAD']);
  const req = build({ method, target, headers: auth }, world);
  await Promise.all(Array.from({ length: rng.int(4, 10) }, () => ctx.send({ ...req, drain: true })));
}

/** Picks and runs one scenario. */
export async function runScenario(ctx: ScenarioContext): Promise<void> {
  const { rng, world } = ctx;
  const scenario = rng.weighted<(c: ScenarioContext) => Promise<void>>([
    [60, async (c) => void (await c.send(randomRequest(c.rng, c.world)))],
    [8, pullScenario],
    [8, pushScenario],
    [4, monolithicScenario],
    [6, poisonScenario],
    [1, burstScenario],
    [world.role === 'server' ? 14 : 0, serverScenario],
    [world.role === 'mirror' ? 14 : 0, mirrorScenario],
    [world.role === 'grant-cache' ? 30 : 0, grantCacheScenario],
  ]);
  await scenario(ctx);
}
