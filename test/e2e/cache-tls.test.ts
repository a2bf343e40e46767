/**
 * Trusting an upstream's TLS with `cas` (DTR's most common failure): a cache that trusts the origin's CA
 * fetches; one with the wrong CA answers an OCI error and logs why; one whose `cas` file is missing or not
 * a CA certificate refuses to start, naming the file.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { assertBlob, blobRequests, blobUrl, errorCodes, fetchBlob, hasBlobData, randomBlob, runCacheExpectingExit, settle, sha256, startCacheNode, startCascadeOrigin, testScope } from '../lib/cache.js';
import { makeCa, writePair, type TestCa } from '@cascade/testkit';

const NAME = 'team/app';

describe('cache node: upstream TLS (cas)', () => {
  let ca: TestCa;
  let otherCa: TestCa;
  before(() => {
    ca = makeCa('Cascade Test Origin CA');
    otherCa = makeCa('Some Other CA');
  });

  it('fetches from an https origin whose CA is in cas; a cache trusting another CA fails with an OCI error and a TLS log line', { timeout: 60_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-tls-');
    const server = await writePair(dir, 'origin', ca.issue());
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, ca.certPem);
    const wrongCaFile = join(dir, 'wrong-ca.pem');
    await writeFile(wrongCaFile, otherCa.certPem);

    const origin = await startCascadeOrigin(dir, 'origin', { http: { addr: '127.0.0.1:0', tls: { certificate: server.cert, key: server.key } } });
    defer(() => origin.stop());
    assert.match(origin.url, /^https:\/\/127\.0\.0\.1:/);
    const blob = randomBlob('tls', 500_000);
    // upload over TLS with node's https (fetch would need a global dispatcher for the CA)
    const digest = await pushOverTls(origin.url, blob, ca.certPem);

    const good = await startCacheNode(dir, 'cache-good', { origin: origin.url, cas: [caFile] });
    defer(() => good.stop());
    await assertBlob(good, NAME, digest, blob.length, 'cache trusting the origin CA');

    const bad = await startCacheNode(dir, 'cache-bad', { origin: origin.url, cas: [wrongCaFile] });
    defer(() => bad.stop());
    const res = await fetchBlob(blobUrl(bad.url, NAME, digest));
    assert.ok(res.status === 502 || res.status === 503, `a cache that does not trust the origin answers 502/503, got ${res.status} ${res.body?.toString()}\n${bad.diagnostics()}`);
    assert.ok(errorCodes(res).length > 0, `with an OCI error body: ${res.body?.toString()}`);
    assert.notEqual(res.digest, digest);
    assert.equal(await hasBlobData(bad.rootdirectory, digest), false, 'nothing stored');
    await settle(bad);
    const tlsLines = bad.proc!.logs.filter((l) => l.msg !== 'request' && /certificate|tls|x509|self.signed|unable to verify|UNABLE_TO_|CERT_/i.test(JSON.stringify(l)));
    assert.ok(tlsLines.length > 0, `a log line names the TLS / certificate problem\n${bad.diagnostics()}`);
    assert.ok(tlsLines.some((l) => JSON.stringify(l).includes(new URL(origin.url).host)), `and the upstream it happened with: ${JSON.stringify(tlsLines)}`);
    // the origin saw no blob GET from the bad cache (the handshake failed)
    await settle(origin);
    assert.equal(blobRequests(origin, digest, 'GET').length, 1, 'only the good cache got the blob from the origin');
  });

  it('refuses to start when a cas file is missing, naming the file', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-tls-');
    const missing = join(dir, 'no-such-ca.pem');
    const res = await runCacheExpectingExit(dir, 'missing-ca', { origin: 'https://127.0.0.1:9', cas: [missing] });
    assert.notEqual(res.code, 0, 'exits non-zero');
    assert.ok(res.stderr.includes(missing), `names the missing file: ${res.stderr}`);
    assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
  });

  it('refuses to start when a cas file is not a PEM CA certificate, naming the file', async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-tls-');
    const garbage = join(dir, 'garbage.pem');
    await writeFile(garbage, 'this is not a certificate\n');
    const keyOnly = join(dir, 'key-only.pem');
    await writeFile(keyOnly, ca.keyPem);
    for (const file of [garbage, keyOnly]) {
      const res = await runCacheExpectingExit(dir, 'bad-ca', { origin: 'https://127.0.0.1:9', cas: [file] });
      assert.notEqual(res.code, 0, `${file}: exits non-zero`);
      assert.ok(res.stderr.includes(file), `names the file ${file}: ${res.stderr}`);
      assert.match(res.stderr, /certificate|PEM/i, `says what is wrong with it: ${res.stderr}`);
      assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});

/** Uploads a blob to an https registry whose certificate `caPem` signs (POST + PUT). */
async function pushOverTls(base: string, bytes: Buffer, caPem: string): Promise<string> {
  const call = (method: string, url: string, body?: Buffer) =>
    new Promise<{ status: number; location?: string; text: string }>((resolve, reject) => {
      const req = httpsRequest(url, { method, ca: caPem, headers: body ? { 'content-length': body.length, 'content-type': 'application/octet-stream' } : { 'content-length': 0 } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ...(res.headers.location ? { location: res.headers.location } : {}), text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const digest = sha256(bytes);
  const start = await call('POST', `${base}/v2/${NAME}/blobs/uploads/`);
  assert.equal(start.status, 202, start.text);
  const loc = new URL(start.location ?? '', base);
  loc.searchParams.set('digest', digest);
  const put = await call('PUT', loc.toString(), bytes);
  assert.equal(put.status, 201, put.text);
  return digest;
}
