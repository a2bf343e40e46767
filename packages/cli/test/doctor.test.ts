/**
 * `cascade doctor`: each seeded fault of a cache node's path to the origin is found over real connections
 * (https servers on 127.0.0.1 with certificates made by `cascade certs`' functions) and named with its fix:
 * a wrong CA, an expired certificate, a name mismatch, a dead upstream, a wrong key set; a good setup exits 0.
 * The real command is spawned for the exit codes, and every `cascade doctor` command of docs/doctor.md is run.
 * A node of a region is checked against a real redis-server (with a password, never printed): up, then down.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { GrantKeyStore, publicJwk } from '@cascade/downstream';
import { freePort, startFakeRegistry, startRedis, type FakeRegistry } from '@cascade/testkit';
import { createCa, createServerCert, parseSans, type CertAndKey } from '../src/commands/certs.js';
import { checkDirectory, formatResult, inspectJwks, runChecks, runDoctor, shownRedisUrl, type CheckResult } from '../src/commands/doctor.js';
import { MIGRATIONS, SqliteStateRepository } from '@cascade/server';

const ROOT = new URL('../../../../', import.meta.url);
const CASCADE = new URL('packages/cli/bin/cascade.js', ROOT).pathname;
const DOCS = new URL('docs/doctor.md', ROOT).pathname;

/** Runs `node bin/cascade.js ...args` in `cwd`; resolves with the exit code and the output. */
async function cascade(args: readonly string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CASCADE, ...args], { cwd, env: { ...process.env, NO_COLOR: '1' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Every check of a config, through the functions (no process). */
async function diagnose(file: string): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for await (const r of runChecks(file, { timeoutMs: 10_000, env: {} })) results.push(r);
  return results;
}

/** The one result of `status` whose line matches `pattern`, as a line (for assertion messages). */
function find(results: readonly CheckResult[], status: CheckResult['status'], pattern: RegExp): string {
  const lines = results.map((r) => formatResult(r));
  const hit = results.find((r) => r.status === status && pattern.test(formatResult(r)));
  assert.ok(hit, `expected a "${status}" line matching ${pattern}, got:\n${lines.join('\n')}`);
  return formatResult(hit);
}

type KeysAnswer = { status: number; body: unknown } | undefined;

/** An upstream registry over TLS: `/v2/` answers `v2Status`, `/api/v0/keys` answers `keys` (404 when undefined). */
async function upstream(cert: CertAndKey, ca: CertAndKey, keys: KeysAnswer, v2Status = 200): Promise<FakeRegistry> {
  const fake = await startFakeRegistry({
    tls: { cert: cert.certPem + ca.certPem, key: cert.keyPem },
    hook: ({ req, res }) => {
      if (req.url !== '/api/v0/keys' || !keys) return false;
      res.writeHead(keys.status, { 'content-type': 'application/json' });
      res.end(typeof keys.body === 'string' ? keys.body : JSON.stringify(keys.body));
      return true;
    },
  });
  fake.ping = { status: v2Status, headers: {} };
  return fake;
}

/** A cache node config: one origin, `cas`, storage in `root`. */
function cacheYml(options: { origin: string; upstreamhosts?: string[]; cas?: string[]; root: string; auth?: 'grant' | 'passthrough'; maxsize?: string }): string {
  return `version: 0.1
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: ${options.root}
http:
  addr: 127.0.0.1:5000
middleware:
  registry:
    - name: downstream
      options:
${options.auth === 'grant' ? '        auth: grant\n        name: cache-a\n' : ''}${options.maxsize ? `        maxsize: ${options.maxsize}\n` : ''}        upstreams:
          - originhost: ${options.origin}
${options.upstreamhosts ? `            upstreamhosts: [${options.upstreamhosts.join(', ')}]\n` : ''}${options.cas ? `            cas: [${options.cas.join(', ')}]\n` : ''}`;
}

describe('cascade doctor', () => {
  let dir: string;
  let cacheCa: CertAndKey;
  let originCa: CertAndKey;
  let cacheCaFile: string;
  let originCaFile: string;
  const servers: FakeRegistry[] = [];
  const url: Record<string, string> = {};
  const jwks = { keys: [publicJwk(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)] };
  const sans = parseSans('127.0.0.1,localhost');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascade-doctor-'));
    cacheCa = createCa({ name: 'Cache CA' });
    originCa = createCa({ name: 'Origin CA' });
    cacheCaFile = join(dir, 'cache-ca.pem');
    originCaFile = join(dir, 'origin-ca.pem');
    await writeFile(cacheCaFile, cacheCa.certPem);
    await writeFile(originCaFile, originCa.certPem);
    const good = createServerCert(cacheCa, { name: 'origin', sans });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'jwk' });
    const start = async (name: string, cert: CertAndKey, ca: CertAndKey, keys: KeysAnswer, v2 = 200) => {
      const u = await upstream(cert, ca, keys, v2);
      servers.push(u);
      url[name] = u.url;
    };
    await start('good', good, cacheCa, { status: 200, body: jwks });
    await start('good401', good, cacheCa, { status: 200, body: jwks }, 401);
    // (1) signed by another CA than the one the cache trusts
    await start('wrongCa', createServerCert(originCa, { name: 'origin', sans }), originCa, { status: 200, body: jwks });
    // (1b) signed by a CA made again with the same name as the trusted one (another key)
    const twin = createCa({ name: 'Cache CA' });
    await start('twinCa', createServerCert(twin, { name: 'origin', sans }), twin, undefined);
    // (2) expired a year ago
    await start('expired', createServerCert(cacheCa, { name: 'old-origin', sans, now: new Date(Date.now() - 400 * 86_400_000), days: 30 }), cacheCa, undefined);
    // (3) a certificate for another name than the one in the config
    await start('mismatch', createServerCert(cacheCa, { name: 'other', sans: parseSans('other.example') }), cacheCa, undefined);
    // (5) key sets a grant cache cannot use
    await start('emptyKeys', good, cacheCa, { status: 200, body: { keys: [] } }, 401);
    await start('foreignKeys', good, cacheCa, { status: 200, body: { keys: [{ ...rsa, kid: 'rsa-1', alg: 'RS256', use: 'sig' }, { ...p384, kid: 'p384-1' }] } }, 401);
    await start('notJwks', good, cacheCa, { status: 200, body: '<html>hello</html>' }, 401);
    await start('noKeys', good, cacheCa, undefined, 401);
    // (4) nothing listens there
    url['dead'] = `https://127.0.0.1:${await freePort()}`;
    // a web server, not a registry
    const web = await startFakeRegistry({
      hook: ({ res }) => {
        res.writeHead(404).end('not found');
        return true;
      },
    });
    servers.push(web);
    url['web'] = web.url;
    await mkdir(join(dir, 'data'));
    // An origin with Basic auth: svc / svc-pw
    const basicOrigin = await startFakeRegistry({ challenge: { scheme: 'basic', username: 'svc', password: 'svc-pw', realm: 'origin' } });
    servers.push(basicOrigin);
    url['basicOrigin'] = basicOrigin.url;
  });

  /**
   * A server.yml in its own folder, with keys (made as the server makes them) and a SQLite state holding
   * `caches`; `password` goes in the file (tests only).
   */
  async function serverSetup(name: string, o: { caches: { name: string; host: string }[]; password?: string; username?: string | null; database?: string }): Promise<string> {
    const home = join(dir, name);
    await mkdir(home, { recursive: true });
    await GrantKeyStore.open({ dir: join(home, 'keys'), maxGrantTtlMs: 60_000 });
    const state = new SqliteStateRepository(join(home, 'state.db'));
    for (const c of o.caches) await state.create(c);
    await state.close();
    const account = o.username === null ? '' : `  username: ${o.username ?? 'svc'}\n  password: ${o.password ?? 'svc-pw'}\n`;
    return config(join(name, 'server.yml'), `origin:\n  url: ${url['basicOrigin']}\n${account}  cas: [${cacheCaFile}]\ngrants:\n  keysdir: keys\ndatabase:\n  ${o.database ?? 'sqlite: state.db'}\n`);
  }

  it('a server.yml: the origin, the service account, the keys, the state database and every registered cache', async () => {
    const good = await serverSetup('server-good', { caches: [{ name: 'region-a', host: url['good'] as string }] });
    const results = await diagnose(good);
    assert.deepEqual(results.filter((r) => r.status !== 'ok').map((r) => formatResult(r)), [], 'all good');
    find(results, 'ok', /^ok {4}config .*server\.yml: a server in front of http:\/\/127\.0\.0\.1:\d+, state in SQLite$/);
    find(results, 'ok', /^ok {4}service account: the origin accepts svc/);
    find(results, 'ok', /^ok {4}grant keys .*keys: 1 key, the newest from \d{4}-\d\d-\d\d$/);
    find(results, 'ok', new RegExp(`^ok {4}database .*state\\.db: schema version ${MIGRATIONS.length}, 1 cache registered$`));
    find(results, 'ok', new RegExp(`^ok {4}cache region-a ${url['good']}: TLS trusted`));
    const r = await cascade(['doctor', good], dir);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout.trimEnd(), /: all good$/);
  });

  it('a server.yml with faults: a refused service account, a bad key, a newer schema, a dead cache, an unreachable PostgreSQL', async () => {
    const wrong = await serverSetup('server-wrong', { caches: [{ name: 'gone', host: url['dead'] as string }], password: 'not-it' });
    await writeFile(join(dir, 'server-wrong', 'keys', 'junk.pem'), 'not a key');
    const db = new Database(join(dir, 'server-wrong', 'state.db'));
    db.prepare("INSERT INTO schema_migrations (version, name) VALUES (99, 'from the future')").run();
    db.close();
    const results = await diagnose(wrong);
    assert.match(find(results, 'FAIL', /^FAIL {2}service account: the origin refuses svc/), /→ fix: check origin\.username and the password \(CASCADE_ORIGIN_PASSWORD/);
    assert.match(find(results, 'FAIL', /^FAIL {2}grant keys .*: junk\.pem is not an EC P-256 private key/), /→ fix: remove .*junk\.pem, or replace it/);
    assert.match(find(results, 'FAIL', new RegExp(`^FAIL {2}database .*state\\.db: schema version 99, newer than this Cascade knows \\(${MIGRATIONS.length}\\)`)), /→ fix: run the Cascade version that migrated it/);
    assert.ok(!results.some((r) => r.subject.startsWith('cache ')), 'caches of a database this Cascade cannot read are not listed');

    const deadCache = await serverSetup('server-dead-cache', { caches: [{ name: 'gone', host: url['dead'] as string }] });
    assert.match(find(await diagnose(deadCache), 'FAIL', /^FAIL {2}cache gone https:\/\/127\.0\.0\.1:\d+: dead upstream/), /the server's health check skips this cache and serves its users' blobs itself/);

    const pgDown = await serverSetup('server-pg', { caches: [], database: `postgres: "postgres://cascade:s3cret@127.0.0.1:${await freePort()}/cascade"` });
    const pgResults = await diagnose(pgDown);
    const line = find(pgResults, 'FAIL', /^FAIL {2}database postgres:\/\/cascade:\*\*\*@127\.0\.0\.1:\d+\/cascade: cannot use it: connect ECONNREFUSED/);
    assert.doesNotMatch(pgResults.map((r) => formatResult(r)).join('\n'), /s3cret/, 'the password is never printed');
    assert.match(line, /→ fix: check the host, port, database, user, password/);

    const noAccount = await serverSetup('server-no-account', { caches: [], username: null });
    const noAccountResults = await diagnose(noAccount);
    find(noAccountResults, 'warn', /^warn {2}service account: none configured/);
    find(noAccountResults, 'warn', /^warn {2}caches: no cache is registered/);
    const r = await cascade(['doctor', noAccount], dir);
    assert.equal(r.code, 0, 'warnings do not fail');
  });

  after(async () => {
    for (const s of servers) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function config(name: string, text: string): Promise<string> {
    const file = join(dir, name);
    await writeFile(file, text);
    return file;
  }

  it('(1) wrong CA: names the issuer of the presented certificate and the cas key to add its CA to', async () => {
    const file = await config('wrong-ca.yml', cacheYml({ origin: url['wrongCa'] as string, cas: [cacheCaFile], root: join(dir, 'data') }));
    const results = await diagnose(file);
    find(results, 'ok', /^ok {4}ca .*cache-ca\.pem: "CN=Cache CA", a CA valid until/);
    const line = find(results, 'FAIL', /^FAIL {2}origin https:\/\/127\.0\.0\.1:\d+: untrusted certificate \(SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO/);
    assert.match(line, /presents CN=origin, issuer CN=Origin CA/);
    assert.match(line, /cas trusts "CN=Cache CA"/);
    assert.match(line, /→ fix: add the CA certificate that signed "CN=Origin CA" to middleware\.registry\[0\]\.options\.upstreams\[0\]\.cas/);
    find(results, 'skip', /GET \/v2\/ not checked \(the TLS handshake failed/);
  });

  it('(1b) a CA made again with the same name: says it is not the same CA', async () => {
    const file = await config('twin-ca.yml', cacheYml({ origin: url['twinCa'] as string, cas: [cacheCaFile], root: join(dir, 'data') }));
    const line = find(await diagnose(file), 'FAIL', /untrusted certificate/);
    assert.match(line, /→ fix: add the CA certificate that signed "CN=Cache CA" to .*; note: a CA named "CN=Cache CA" is in cas, but not the one that signed this certificate/);
  });

  it('(2) expired certificate: gives the date and how to renew it', async () => {
    const file = await config('expired.yml', cacheYml({ origin: url['expired'] as string, cas: [cacheCaFile], root: join(dir, 'data') }));
    const line = find(await diagnose(file), 'FAIL', /the certificate expired on \d{4}-\d\d-\d\dT/);
    assert.match(line, /CERT_HAS_EXPIRED/);
    assert.match(line, /→ fix: renew the upstream's certificate \(cascade certs server --ca DIR --out DIR --name old-origin --san 127\.0\.0\.1,localhost --force\)/);
  });

  it("(3) name mismatch: lists the certificate's names and the host of the config", async () => {
    const file = await config('mismatch.yml', cacheYml({ origin: url['mismatch'] as string, cas: [cacheCaFile], root: join(dir, 'data') }));
    const line = find(await diagnose(file), 'FAIL', /name mismatch \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    assert.match(line, /the certificate's names are DNS:other\.example; the config says 127\.0\.0\.1/);
    assert.match(line, /→ fix: reissue the certificate with 127\.0\.0\.1 among its names \(cascade certs server .*--san other\.example,127\.0\.0\.1 --force\), or write a name it lists in the config \(https:\/\/other\.example:\d+\)/);
  });

  it('(4) dead upstream: connection refused, the later checks skipped; a web server is not a registry', async () => {
    const file = await config('dead.yml', cacheYml({ origin: url['good'] as string, upstreamhosts: [url['dead'] as string, url['web'] as string], cas: [cacheCaFile], root: join(dir, 'data') }));
    const results = await diagnose(file);
    const line = find(results, 'FAIL', /^FAIL {2}upstream https:\/\/127\.0\.0\.1:\d+: dead upstream: connection refused by 127\.0\.0\.1:\d+/);
    assert.match(line, /→ fix: check that the upstream runs and listens on 127\.0\.0\.1:\d+ .*firewall/);
    find(results, 'skip', /TLS, GET \/v2\/ not checked \(no connection\)/);
    find(results, 'FAIL', /^FAIL {2}upstream http:\/\/.*dead upstream: GET \/v2\/ → 404: not a registry.*→ fix: check the host and port/);
    find(results, 'ok', /^ok {4}origin https:\/\/.*TLS trusted \(CN=origin, issuer CN=Cache CA, valid until/);
    // in config order: the upstreams, then the origin
    const hosts = results.filter((r) => /^(upstream|origin) /.test(r.subject)).map((r) => r.subject);
    assert.deepEqual([...new Set(hosts)], [`upstream ${url['dead']}`, `upstream ${url['web']}`, `origin ${url['good']}`]);
  });

  it('(5) wrong key: an empty set, keys that are not EC P-256, no JWKS, no key endpoint', async () => {
    const cases: Array<[string, RegExp]> = [
      ['emptyKeys', /wrong key: the set holds no usable ES256 key \(an empty set\)/],
      ['foreignKeys', /wrong key: the set holds no usable ES256 key \(key rsa-1 is not an EC P-256 key; key p384-1 is not an EC P-256 key\)/],
      ['notJwks', /wrong key: the answer is not JSON/],
      ['noKeys', /no keys: GET \/api\/v0\/keys → 404/],
    ];
    for (const [name, pattern] of cases) {
      const file = await config(`${name}.yml`, cacheYml({ origin: url[name] as string, cas: [cacheCaFile], root: join(dir, 'data'), auth: 'grant' }));
      const results = await diagnose(file);
      find(results, 'ok', /GET \/v2\/ → 401 \(a registry that asks for credentials\)/);
      const line = find(results, 'FAIL', pattern);
      assert.match(line, /→ fix: .*not a Cascade server or a cache with auth: grant/);
    }
    assert.deepEqual(inspectJwks(JSON.stringify(jwks)).keys, [jwks.keys[0]?.kid]);
  });

  it('(6) all good: the real command exits 0 and prints every check; a fault makes it exit 1', async () => {
    const good = await config('good.yml', cacheYml({ origin: url['good'] as string, upstreamhosts: [url['good401'] as string], cas: [cacheCaFile], root: join(dir, 'data'), auth: 'grant' }));
    const r = await cascade(['doctor', '--timeout', '30', good], dir);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] as string, /^ok {4}config .*good\.yml: loads: a cache node \(auth: grant\)$/);
    assert.match(r.stdout, /^ok {4}ca .*cache-ca\.pem: "CN=Cache CA", a CA valid until .* \(middleware\.registry\[0\]\.options\.upstreams\[0\]\.cas\[0\]\)$/m);
    for (const host of [`upstream ${url['good401']}`, `origin ${url['good']}`]) {
      assert.match(r.stdout, new RegExp(`^ok {4}${host}: TCP connect to 127\\.0\\.0\\.1:\\d+, \\d+ ms$`, 'm'));
      assert.match(r.stdout, new RegExp(`^ok {4}${host}: TLS trusted \\(CN=origin, issuer CN=Cache CA, valid until [^)]+\\), \\d+ ms$`, 'm'));
      assert.match(r.stdout, new RegExp(`^ok {4}${host}: GET /v2/ → (200|401) .*registry/2\\.0, \\d+ ms$`, 'm'));
      assert.match(r.stdout, new RegExp(`^ok {4}${host}: GET /api/v0/keys → 1 ES256 key \\(kid ${jwks.keys[0]?.kid}\\), \\d+ ms$`, 'm'));
    }
    assert.match(r.stdout, /^ok {4}storage .*data: writable by /m);
    assert.match(r.stdout, /^ok {4}storage .*data: [\d.]+ \w+ free of /m);
    assert.match(r.stdout, /^ok {4}sendfile: blob bodies from files go out with sendfile on 2 threads$/m);
    assert.doesNotMatch(r.stdout, /FAIL|→ fix/);
    assert.match(lines.at(-1) as string, /^doctor .*good\.yml: 13 checks: 13 ok, 0 warnings, 0 failed: all good$/);

    const bad = await config('bad.yml', cacheYml({ origin: url['wrongCa'] as string, cas: [cacheCaFile], root: join(dir, 'data') }));
    const b = await cascade(['doctor', bad], dir);
    assert.equal(b.code, 1, b.stdout + b.stderr);
    assert.match(b.stdout, /^FAIL {2}origin .*untrusted certificate .*→ fix: add the CA certificate that signed "CN=Origin CA"/m);
    assert.match(b.stdout.trimEnd().split('\n').at(-1) as string, /1 failed.*: 1 problem to fix \(exit code 1\)$/);
  });

  it('warnings do not fail: maxsize over the free space exits 0 with a warning', async () => {
    const file = await config('big.yml', cacheYml({ origin: url['good'] as string, cas: [cacheCaFile], root: join(dir, 'data'), maxsize: '900TiB' }));
    const r = await cascade(['doctor', file], dir);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /^warn {2}storage .*: .* free of .*, maxsize 900\.0 TiB: less free space than maxsize.*→ fix: lower maxsize/m);
    assert.match(r.stdout.trimEnd(), /1 warning, 0 failed: no failure, see the warnings$/);
  });

  it('a bad CA file: the config is refused, the file is named with its fix, and the upstreams are still checked', async () => {
    const serverCert = join(dir, 'server-cert.pem');
    await writeFile(serverCert, createServerCert(cacheCa, { name: 'origin', sans }).certPem);
    const missing = join(dir, 'nowhere', 'ca.pem');
    const file = await config('bad-ca.yml', cacheYml({ origin: url['good'] as string, cas: [missing, serverCert], root: join(dir, 'data') }));
    const results = await diagnose(file);
    find(results, 'FAIL', /^FAIL {2}config .*: refused at start-up because of its CA files \(see the ca lines below\)/);
    find(results, 'FAIL', /^FAIL {2}ca .*nowhere\/ca\.pem: middleware\.registry\[0\]\.options\.upstreams\[0\]\.cas\[0\]: file not found → fix: check the path, or get the CA certificate/);
    find(results, 'FAIL', /^FAIL {2}ca .*server-cert\.pem: .*cas\[1\]: certificate "CN=origin" is not a CA \(its basicConstraints say cA: false\) → fix: it is probably the upstream's own server certificate: use the CA that issued it \("CN=Cache CA"\)/);
    const tls = find(results, 'FAIL', /^FAIL {2}origin .*untrusted certificate/);
    assert.match(tls, /cas is empty|could not be loaded/);
  });

  it('a mirror config: each remote is checked with its own cas', async () => {
    const file = await config(
      'mirror.yml',
      `version: 0.1
storage:
  filesystem:
    rootdirectory: ${join(dir, 'mirror-data')}
http:
  addr: 127.0.0.1:5000
proxy:
  remotes:
    - url: ${url['good']}
      name: trusted
      default: true
      cas: [${cacheCaFile}]
    - url: ${url['good401']}
      name: untrusted
`,
    );
    const results = await diagnose(file);
    find(results, 'ok', /^ok {4}config .*: loads: a mirror of 2 remotes$/);
    find(results, 'ok', new RegExp(`^ok {4}remote ${url['good']}: TLS trusted`));
    find(results, 'ok', new RegExp(`^ok {4}remote ${url['good']}: GET /v2/ → 200`));
    const line = find(results, 'FAIL', new RegExp(`^FAIL {2}remote ${url['good401']}: untrusted certificate .*cas is empty`));
    assert.match(line, /→ fix: add the CA certificate that signed "CN=Cache CA" to proxy\.remotes\[1\]\.cas/);
    find(results, 'ok', /^ok {4}storage .*mirror-data: does not exist yet; the node creates it at start/);
    assert.ok(!results.some((r) => /keys/.test(r.message)), 'no key check for a mirror');
  });

  it('a plain registry config: storage and sendfile checks only', async () => {
    const file = await config('registry.yml', `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:5000\n`);
    const results = await diagnose(file);
    assert.deepEqual(
      results.map((r) => `${r.status} ${r.subject.replace(dir, 'DIR')}`),
      ['ok config DIR/registry.yml', 'ok storage DIR/data', 'ok storage DIR/data', 'ok sendfile'],
    );
    // a file in the way of the directory
    await writeFile(join(dir, 'a-file'), 'x');
    const inTheWay = await checkDirectory(join(dir, 'a-file'));
    assert.equal(inTheWay[0]?.status, 'FAIL');
    assert.match(formatResult(inTheWay[0] as CheckResult), /is not a directory → fix: set storage\.filesystem\.rootdirectory to a directory/);
  });

  it('reports a config that does not load as failed checks, not a crash', async () => {
    const file = await config('typo.yml', cacheYml({ origin: 'origin.example', root: join(dir, 'data') }).replace('upstreams:', 'blobtll: 24h\n        upstreams:'));
    const r = await cascade(['doctor', file], dir);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^FAIL {2}config .*typo\.yml: middleware\.registry\[0\]\.options\.blobtll: .*did you mean "blobttl"\?.*→ fix: edit the key named/m);
    assert.match(r.stdout, /^FAIL {2}config .*originhost: expected an absolute http:\/\/ or https:\/\/ URL.*add the scheme/m);
    assert.doesNotMatch(r.stdout, /\n\s+at /);
  });

  it('refuses a bad command line in one line: exit 64 for usage, 1 for a missing file', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['doctor'], 64, /^cascade: doctor: missing the config file: cascade doctor CONFIG\.yml$/],
      [['doctor', '--fast', 'x.yml'], 64, /^cascade: doctor: unknown option --fast \(options: --timeout SECONDS\); run "cascade doctor --help"$/],
      [['doctor', '--timeout', 'soon', 'x.yml'], 64, /^cascade: doctor: --timeout: expected a number of seconds/],
      [['doctor', 'a.yml', 'b.yml'], 64, /^cascade: doctor: takes one config file, got 2/],
      [['doctor', 'missing.yml'], 1, /^cascade: doctor: cannot read the config file missing\.yml \(no such file\)$/],
    ];
    for (const [args, code, pattern] of cases) {
      const r = await cascade(args, dir);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0] as string, pattern);
    }
    const help = await cascade(['doctor', '--help'], dir);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: cascade doctor \[--timeout SECONDS\] CONFIG\.yml/);
    assert.match((await cascade(['help'], dir)).stdout, /doctor CONFIG\.yml/);
    assert.equal(typeof runDoctor, 'function');
  });

  it('runs every cascade doctor command of docs/doctor.md as written', async () => {
    const markdown = readFileSync(DOCS, 'utf8');
    const commands: string[][] = [];
    for (const block of markdown.matchAll(/```(?:sh|bash|console)\n([\s\S]*?)```/g)) {
      for (const line of (block[1] ?? '').split('\n')) {
        const m = /^(?:\$ )?(?:npx )?cascade (doctor .*)$/.exec(line.replace(/\s+#.*$/, '').trim());
        if (m?.[1]) commands.push(m[1].split(/\s+/));
      }
    }
    assert.deepEqual(commands.map((c) => c.join(' ')), ['doctor cache.yml', 'doctor mirror.yml', 'doctor --timeout 2 registry.yml', 'doctor server.yml']);
    // The files those commands name, in a directory of their own: a grant cache, a mirror, a registry.
    const cwd = join(dir, 'docs');
    await mkdir(cwd);
    await writeFile(join(cwd, 'cache.yml'), cacheYml({ origin: url['good'] as string, cas: [cacheCaFile], root: join(cwd, 'cache-data'), auth: 'grant' }));
    await writeFile(join(cwd, 'mirror.yml'), `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(cwd, 'mirror-data')}\nproxy:\n  remotes:\n    - url: ${url['good']}\n      cas: [${cacheCaFile}]\n`);
    await writeFile(join(cwd, 'registry.yml'), `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ./data\n`);
    const serverYml = await serverSetup('docs-server', { caches: [{ name: 'region-a', host: url['good'] as string }] });
    await writeFile(join(cwd, 'server.yml'), (await readFile(serverYml, 'utf8')).replace('keysdir: keys', `keysdir: ${join(dir, 'docs-server', 'keys')}`).replace('sqlite: state.db', `sqlite: ${join(dir, 'docs-server', 'state.db')}`));
    for (const args of commands) {
      const r = await cascade(args, cwd);
      assert.equal(r.code, 0, `cascade ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout.trimEnd(), /: all good$/);
    }
  });
});

describe('cascade doctor: a node of a region', () => {
  it('shows Redis URLs with their credentials masked', () => {
    assert.equal(shownRedisUrl('redis://:s3cret-pw@redis.example.com:6379/0'), 'redis://:***@redis.example.com:6379/0');
    assert.equal(shownRedisUrl('rediss://cascade:s3cret-pw@redis.example.com:6380'), 'rediss://cascade:***@redis.example.com:6380');
    assert.equal(shownRedisUrl('redis://s3cret-pw@redis.example.com'), 'redis://***@redis.example.com');
    assert.equal(shownRedisUrl('redis://redis:6379'), 'redis://redis:6379');
  });

  it('Redis answering: ok with the live nodes; Redis down: a failed, degraded check with the fix; the password never shown', { timeout: 60_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'cascade-doctor-region-'));
    const cleanup: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
    t.after(async () => {
      for (const step of cleanup.reverse()) await step();
    });
    const password = `pw-${Date.now().toString(36)}-secret`;
    const redis = await startRedis({ password });
    cleanup.push(() => redis.close());
    const origin = await startFakeRegistry();
    cleanup.push(() => origin.stop());
    const redisUrl = `redis://:${password}@127.0.0.1:${redis.port}`;
    // The region's shared folder, mounted on every node.
    await mkdir(join(dir, 'shared'), { recursive: true });
    const config = (redisInFile: string) => `version: 0.1
storage:
  filesystem:
    rootdirectory: ${join(dir, 'shared')}
http:
  addr: 127.0.0.1:0
middleware:
  registry:
    - name: downstream
      options:
        originhost: ${origin.url}
        region:
          redis: ${redisInFile}
`;
    const file = join(dir, 'cache.yml');
    await writeFile(file, config(redisUrl));
    const all = (results: readonly CheckResult[]) => results.map((r) => formatResult(r)).join('\n');

    let results = await diagnose(file);
    assert.ok(!all(results).includes(password), all(results));
    find(results, 'ok', new RegExp(`^ok {4}region redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}: answers PING`));
    // No node runs here: none is registered in Redis.
    find(results, 'warn', /region .*: no live node of the region is registered in Redis/);
    find(results, 'ok', /storage .*shared: writable/);
    assert.ok(!results.some((r) => r.status === 'FAIL'), all(results));

    // A mirror of the region (proxy.region) is checked the same way.
    const mirrorFile = join(dir, 'mirror.yml');
    await writeFile(mirrorFile, `version: 0.1
storage:
  filesystem:
    rootdirectory: ${join(dir, 'shared')}
http:
  addr: 127.0.0.1:0
proxy:
  remoteurl: ${origin.url}
  region:
    redis: ${redisUrl}
`);
    const mirrorResults = await diagnose(mirrorFile);
    find(mirrorResults, 'ok', new RegExp(`^ok {4}region redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}: answers PING`));
    assert.ok(!all(mirrorResults).includes(password), all(mirrorResults));

    // CASCADE_REGION_REDIS overrides the file's URL (here a dead one).
    await writeFile(file, config(`redis://127.0.0.1:${await freePort()}`));
    results = [];
    for await (const r of runChecks(file, { timeoutMs: 10_000, env: { CASCADE_REGION_REDIS: redisUrl } })) results.push(r);
    find(results, 'ok', /region redis:.*: answers PING/);

    // Redis down: the node is degraded, and the real command says so and exits 1.
    await writeFile(file, config(redisUrl));
    await redis.stop();
    results = await diagnose(file);
    const line = find(results, 'FAIL', /region redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: degraded: Redis does not answer/);
    assert.match(line, /each node fills on its own/);
    assert.match(line, /fix: start Redis/);
    assert.ok(!all(results).includes(password), all(results));
    const run = await cascade(['doctor', '--timeout', '2', file], dir);
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stdout, /degraded: Redis does not answer/);
    assert.ok(!(run.stdout + run.stderr).includes(password), 'the password is never printed');
  });
});
