/**
 * `cascade certs`: the CA and server certificates it makes work for real TLS (Node's https, with only the
 * generated CA trusted), pass the downstream middleware's CA checks, and the command refuses bad input in
 * one line. Every `cascade certs` command in docs/certificates.md and deploy/README.md is run as written.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CaError, loadCAs } from '@cascade/downstream';
import { createCa, createServerCert, parseSans, runCerts, writeCa, writeServerCert } from '../src/commands/certs.js';

const ROOT = new URL('../../../../', import.meta.url);
const CASCADE = new URL('packages/cli/bin/cascade.js', ROOT).pathname;

/** Runs `node bin/cascade.js ...args` in `cwd`; resolves with the exit code and the output. */
async function cascade(args: readonly string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CASCADE, ...args], { cwd });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Splits a shell command line as sh would for the simple commands in the docs (quotes, no expansions). */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '"' || c === "'") {
      const end = line.indexOf(c, i + 1);
      assert.ok(end > i, `unbalanced quote in ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      assert.ok(!'$`\\|&;<>*?'.includes(c), `the docs' cascade certs commands are plain (no ${c}): ${line}`);
      word = (word ?? '') + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** The `cascade certs` command lines in the ```sh blocks of a Markdown file, in order. */
function documentedCertsCommands(markdown: string): string[][] {
  const commands: string[][] = [];
  for (const block of markdown.matchAll(/```(?:sh|bash|console)\n([\s\S]*?)```/g)) {
    for (const line of (block[1] ?? '').split('\n')) {
      const m = /^(?:\$ )?(?:npx )?cascade (certs .*)$/.exec(line.replace(/\s+#.*$/, '').trim());
      if (m?.[1]) commands.push(shellWords(m[1]));
    }
  }
  return commands;
}

/** GETs `/` over TLS, trusting only `ca`; resolves with the body or rejects with the TLS error. */
function tlsGet(port: number, host: string, ca: string, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path: '/', ca, ...(servername !== undefined ? { servername } : {}), agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
  });
}

async function serve(certFile: string, keyFile: string, host: string): Promise<{ server: Server; port: number }> {
  const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (_req, res) => res.end('hello over TLS'));
  server.listen(0, host);
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** The one line a failed command prints: `cascade: ...`, no stack trace. */
function assertOneLineError(r: { stderr: string }, pattern: RegExp): void {
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0] as string, /^cascade: /);
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:/);
  assert.match(lines[0] as string, pattern);
}

describe('cascade certs', () => {
  let dir: string;
  let caPem: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cascade-certs-'));
    const ca = await cascade(['certs', 'ca', '--out', join(dir, 'ca'), '--name', 'Test CA', '--days', '30'], dir);
    assert.equal(ca.code, 0, ca.stderr);
    assert.match(ca.stdout, /cas: \[.*ca\.pem\]/);
    assert.match(ca.stdout, /origin: \{cas: \[.*ca\.pem\]\}/);
    for (const [name, san] of [
      ['local', 'localhost,127.0.0.1,::1'],
      ['other', 'other.example,10.1.2.3'],
    ] as const) {
      const r = await cascade(['certs', 'server', '--ca', join(dir, 'ca'), '--out', join(dir, 'out'), '--name', name, '--san', san], dir);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`certificate: .*${name}\\.pem`));
      assert.match(r.stdout, new RegExp(`key: .*${name}-key\\.pem`));
    }
    caPem = readFileSync(join(dir, 'ca', 'ca.pem'), 'utf8');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the CA and the keys with mode 0600', () => {
    for (const f of ['ca/ca.pem', 'ca/ca-key.pem', 'out/local.pem', 'out/local-key.pem']) assert.ok(existsSync(join(dir, f)), f);
    assert.equal(statSync(join(dir, 'ca', 'ca-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'out', 'local-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'ca', 'ca.pem')).mode & 0o777, 0o644);
  });

  it("makes a CA that the downstream middleware's CA checks accept", () => {
    const { pem, certificates } = loadCAs([join(dir, 'ca', 'ca.pem')]);
    assert.equal(pem.length, 1);
    assert.equal(certificates[0]?.subject, 'CN=Test CA');
    assert.equal(certificates[0]?.issuer, 'CN=Test CA');
    const x = new X509Certificate(caPem);
    assert.equal(x.ca, true);
    assert.ok(x.verify(x.publicKey), 'self-signed');
    // A server certificate file starts with the leaf, which is not a CA: `cas` must name ca.pem.
    assert.throws(() => loadCAs([join(dir, 'out', 'local.pem')]), (e: unknown) => e instanceof CaError && /is not a CA/.test(e.reason));
  });

  it('makes server certificates: the SANs, serverAuth, not a CA, signed by the CA, followed by the CA', () => {
    const text = readFileSync(join(dir, 'out', 'local.pem'), 'utf8');
    const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    assert.equal(blocks.length, 2, 'leaf + CA');
    const leaf = new X509Certificate(blocks[0] as string);
    const ca = new X509Certificate(caPem);
    assert.equal(blocks[1]?.trim(), caPem.trim());
    assert.equal(leaf.ca, false);
    assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
    assert.equal(leaf.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    assert.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1']);
    assert.equal(leaf.checkHost('localhost'), 'localhost');
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(leaf.checkIP('::1'), '::1');
    assert.equal(leaf.checkHost('other.example'), undefined);
    assert.notEqual(leaf.serialNumber, new X509Certificate(readFileSync(join(dir, 'out', 'other.pem'))).serialNumber);
    assert.ok(new Date(leaf.validTo) <= new Date(ca.validTo), 'ends no later than the CA (30 days here)');
    assert.equal(leaf.publicKey.asymmetricKeyType, 'rsa');
    assert.equal(leaf.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
  });

  it('serves TLS that a client trusting only the CA accepts, by DNS name and by IP address', async () => {
    const { server, port } = await serve(join(dir, 'out', 'local.pem'), join(dir, 'out', 'local-key.pem'), '127.0.0.1');
    try {
      assert.equal(await tlsGet(port, '127.0.0.1', caPem, 'localhost'), 'hello over TLS', 'DNS SAN localhost');
      assert.equal(await tlsGet(port, '127.0.0.1', caPem), 'hello over TLS', 'IP SAN 127.0.0.1');
      assert.equal(await tlsGet(port, 'localhost', caPem), 'hello over TLS', 'connecting to localhost');
      // A client trusting another CA refuses it.
      await assert.rejects(tlsGet(port, '127.0.0.1', createCa({ name: 'Other CA' }).certPem, 'localhost'), (e: NodeJS.ErrnoException) => /UNABLE_TO_VERIFY|SELF_SIGNED|UNABLE_TO_GET_ISSUER/.test(e.code ?? ''));
    } finally {
      await close(server);
    }
  });

  it('serves TLS over IPv6 for an IPv6 SAN', async (t) => {
    let served: { server: Server; port: number };
    try {
      served = await serve(join(dir, 'out', 'local.pem'), join(dir, 'out', 'local-key.pem'), '::1');
    } catch {
      t.skip('no IPv6 loopback here');
      return;
    }
    try {
      assert.equal(await tlsGet(served.port, '::1', caPem), 'hello over TLS');
    } finally {
      await close(served.server);
    }
  });

  it('fails with ERR_TLS_CERT_ALTNAME_INVALID when the SANs do not name the host', async () => {
    const { server, port } = await serve(join(dir, 'out', 'other.pem'), join(dir, 'out', 'other-key.pem'), '127.0.0.1');
    try {
      await assert.rejects(tlsGet(port, '127.0.0.1', caPem, 'localhost'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      await assert.rejects(tlsGet(port, '127.0.0.1', caPem), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    } finally {
      await close(server);
    }
  });

  it('refuses bad input in one line, without a stack trace', async () => {
    const ca = join(dir, 'ca');
    const unknown = await cascade(['certs', 'server', '--ca', ca, '--out', join(dir, 'x'), '--name', 'x', '--san', 'a.example', '--colour', 'blue'], dir);
    assert.equal(unknown.code, 64);
    assertOneLineError(unknown, /unknown option --colour/);

    const noSan = await cascade(['certs', 'server', '--ca', ca, '--out', join(dir, 'x'), '--name', 'x'], dir);
    assert.equal(noSan.code, 64);
    assertOneLineError(noSan, /missing --san/);

    const noOut = await cascade(['certs', 'ca'], dir);
    assert.equal(noOut.code, 64);
    assertOneLineError(noOut, /missing --out/);

    const badSan = await cascade(['certs', 'server', '--ca', ca, '--out', join(dir, 'x'), '--name', 'x', '--san', 'https://a.example:5000'], dir);
    assert.equal(badSan.code, 64);
    assertOneLineError(badSan, /--san: "https:\/\/a\.example:5000" is not a host name or an IP address: give the host alone, without the scheme \("a\.example"\)/);

    const noCa = await cascade(['certs', 'server', '--ca', join(dir, 'nowhere'), '--out', join(dir, 'x'), '--name', 'x', '--san', 'a.example'], dir);
    assert.equal(noCa.code, 1);
    assertOneLineError(noCa, /--ca .*nowhere: cannot read the CA certificate .*ca\.pem \(not found\)/);

    // A server certificate directory is not a CA directory.
    await writeFile(join(dir, 'out', 'ca.pem'), readFileSync(join(dir, 'out', 'local.pem')));
    await writeFile(join(dir, 'out', 'ca-key.pem'), readFileSync(join(dir, 'out', 'local-key.pem')));
    const notCa = await cascade(['certs', 'server', '--ca', join(dir, 'out'), '--out', join(dir, 'x'), '--name', 'x', '--san', 'a.example'], dir);
    assert.equal(notCa.code, 1);
    assertOneLineError(notCa, /is not a CA certificate/);
    await rm(join(dir, 'out', 'ca.pem'));
    await rm(join(dir, 'out', 'ca-key.pem'));

    const unknownCommand = await cascade(['certs', 'client'], dir);
    assert.equal(unknownCommand.code, 64);
    assertOneLineError(unknownCommand, /unknown command "client"/);
    assert.equal(existsSync(join(dir, 'x')), false, 'nothing written by a refused command');
  });

  it('refuses to overwrite without --force, and replaces with it', async () => {
    const before = readFileSync(join(dir, 'out', 'local.pem'), 'utf8');
    const args = ['certs', 'server', '--ca', join(dir, 'ca'), '--out', join(dir, 'out'), '--name', 'local', '--san', 'localhost'];
    const refused = await cascade(args, dir);
    assert.equal(refused.code, 1);
    assertOneLineError(refused, /local\.pem and .*local-key\.pem already exist; nothing written \(use --force to replace them\)/);
    assert.equal(readFileSync(join(dir, 'out', 'local.pem'), 'utf8'), before);

    const caAgain = await cascade(['certs', 'ca', '--out', join(dir, 'ca')], dir);
    assert.equal(caAgain.code, 1);
    assertOneLineError(caAgain, /ca\.pem and .*ca-key\.pem already exist/);
    assert.equal(readFileSync(join(dir, 'ca', 'ca.pem'), 'utf8'), caPem);

    const forced = await cascade([...args, '--force'], dir);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(readFileSync(join(dir, 'out', 'local.pem'), 'utf8'), before);
    assert.equal(statSync(join(dir, 'out', 'local-key.pem')).mode & 0o777, 0o600);
  });

  it('prints help, and is wired into the cascade command', async () => {
    const help = await cascade(['certs', '--help'], dir);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /cascade certs ca --out DIR/);
    assert.match(help.stdout, /cascade certs server --ca DIR --out DIR2 --name NAME --san/);
    const top = await cascade(['help'], dir);
    assert.match(top.stdout, /certs ca\|server/);
    // runCerts resolves with the exit code.
    const write = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      assert.equal(await runCerts(['--help']), 0);
      assert.equal(await runCerts([]), 64);
    } finally {
      process.stdout.write = write;
    }
  });
});

describe('cascade certs: SANs', () => {
  it('detects DNS names and IPv4 and IPv6 addresses', () => {
    assert.deepEqual(parseSans('Registry.Example.com, localhost,127.0.0.1,::1,[fe80::1],*.caches.example,registry.example.com'), [
      { type: 'dns', value: 'registry.example.com' },
      { type: 'dns', value: 'localhost' },
      { type: 'ip', value: '127.0.0.1' },
      { type: 'ip', value: '::1' },
      { type: 'ip', value: 'fe80::1' },
      { type: 'dns', value: '*.caches.example' },
    ]);
    assert.deepEqual(parseSans('bücher.example'), [{ type: 'dns', value: 'xn--bcher-kva.example' }]);
  });
  it('refuses what is not a host', () => {
    for (const [bad, why] of [
      ['', /got nothing/],
      ['a,,b', /empty entry/],
      ['a.example:443', /without the port/],
      ['http://a.example', /without the scheme/],
      ['300.1.1.1', /not a valid one/],
      ['::g', /IPv6/],
      ['-a.example', /label "-a"/],
      ['a.*.example', /wildcard/],
      ['*.example', /two labels/],
      ['under_score', /label "under_score"/],
    ] as const) {
      assert.throws(() => parseSans(bad), why, bad);
    }
  });
  it('puts IPv6 and IPv4-mapped addresses in the certificate as 16 bytes', () => {
    const ca = createCa();
    const leaf = new X509Certificate(createServerCert(ca, { name: 'v6', sans: parseSans('2001:db8::42,::ffff:10.0.0.1,1::') }).certPem);
    assert.equal(leaf.subjectAltName, 'IP Address:2001:DB8:0:0:0:0:0:42, IP Address:0:0:0:0:0:FFFF:A00:1, IP Address:1:0:0:0:0:0:0:0');
    assert.equal(leaf.checkIP('2001:db8::42'), '2001:db8::42');
  });
  it('writes through the library functions too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cascade-certs-lib-'));
    try {
      const ca = writeCa(join(dir, 'ca'));
      const leaf = writeServerCert(join(dir, 'ca'), join(dir, 'tls'), { name: 'registry', sans: parseSans('registry') });
      assert.ok(new X509Certificate(leaf.certPem).checkIssued(new X509Certificate(ca.certPem)));
      assert.throws(() => writeServerCert(join(dir, 'ca'), join(dir, 'tls'), { name: 'registry', sans: parseSans('registry') }), /already exist/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cascade certs: the documented commands', () => {
  for (const doc of ['docs/certificates.md', 'deploy/README.md']) {
    it(`runs every cascade certs command of ${doc} as written`, async () => {
      const commands = documentedCertsCommands(readFileSync(new URL(doc, ROOT), 'utf8'));
      assert.ok(commands.length >= 2, `${doc} shows cascade certs commands`);
      const cwd = await mkdtemp(join(tmpdir(), 'cascade-certs-doc-'));
      try {
        for (const words of commands) {
          const r = await cascade(words, cwd);
          assert.equal(r.code, 0, `${words.join(' ')}: ${r.stderr}`);
          const out = words[words.indexOf('--out') + 1] as string;
          const name = words[1] === 'ca' ? 'ca' : (words[words.indexOf('--name') + 1] as string);
          assert.ok(existsSync(join(cwd, out, `${name}.pem`)) && existsSync(join(cwd, out, `${name}-key.pem`)), `${words.join(' ')} wrote its files`);
        }
      } finally {
        await rm(cwd, { recursive: true, force: true });
      }
    });
  }
  it('finds commands in sh blocks, quotes included', () => {
    assert.deepEqual(documentedCertsCommands('```sh\nnpx cascade certs ca --out certs --name "My CA"   # the CA\n```\n'), [['certs', 'ca', '--out', 'certs', '--name', 'My CA']]);
  });
});
