/**
 * `cascade prefetch`: warming a cache node ahead of time. A multi-platform image is pushed to a Cascade
 * origin with skopeo; `cascade prefetch` (a child process, so not a TTY: plain lines) fetches its blobs
 * through a cache node; then a pull from the cache, and a second prefetch, cost the origin no blob
 * request at all. `--platform` warms one platform only; an https cache with `--ca` and credentials
 * forwarded to an htpasswd origin; bad input gives one line and a non-zero exit.
 *
 * Every `cascade prefetch` command of docs/prefetch.md is run here, in the form written there (`$CACHE`
 * and the other variables substituted); the last test checks that.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { hasBlobData, runCascadeCommand, settle, startCacheNode, startCascadeOrigin, testScope, waitFor, type AccessLine, type Hop } from '../lib/cache.js';
import { ROOT } from '../lib/cascade.js';
import { makeOciIndex, type ImageInfo } from '../lib/image.js';
import { assertLayoutHolds } from '../lib/oci-assert.js';
import { freePort, skopeo } from '../lib/peers.js';
import { makeCa, writePair } from '@cascade/testkit';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The command lines run, as written (before substitution), to compare with the docs. */
const ran = new Set<string>();

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command line written as in the docs: `[NAME=value ...] cascade prefetch ARGS...`, with `$NAME`
 * replaced from `vars`. The child's stdout is a pipe, so prefetch prints plain lines.
 */
async function cascade(line: string, vars: Record<string, string> = {}): Promise<Result> {
  ran.add(line);
  const words = line
    .split(/\s+/)
    .filter(Boolean)
    .map((w) =>
      w.replace(/\$([A-Z_]+)/g, (_, name: string) => {
        const v = vars[name];
        if (v === undefined) throw new Error(`${line}: no value for $${name}`);
        return v;
      }),
    );
  // a CASCADE_PREFETCH_AUTH in the developer's shell must not change the results
  const env: Record<string, string> = { CASCADE_PREFETCH_AUTH: '' };
  while (words[0] !== undefined && /^[A-Z_]+=/.test(words[0])) {
    const w = words.shift() as string;
    env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
  }
  assert.equal(words.shift(), 'cascade', line);
  return runCascadeCommand(words, env, 90_000);
}

function show(r: Result): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`;
}

/** Asserts a failure reported in exactly one line on stderr, without a stack trace. */
function assertOneLineError(r: Result, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, show(r));
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr\n${show(r)}`);
  assert.match(lines[0] as string, /^cascade: /, show(r));
  assert.match(lines[0] as string, pattern, show(r));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}

/** The blob requests (any method) a hop answered after the first `from` of them. */
function blobRequestsSince(hop: Hop, from: number): AccessLine[] {
  return hop.requests().filter((r) => r.path.includes('/blobs/')).slice(from);
}

const blobCount = (hop: Hop) => hop.requests().filter((r) => r.path.includes('/blobs/')).length;

/** The digests of the config and layers of some images, without duplicates, sorted. */
function blobsOf(images: readonly ImageInfo[]): Array<{ digest: string; size: number }> {
  const seen = new Map<string, number>();
  for (const img of images) for (const b of [img.config, ...img.layers]) seen.set(b.digest, b.size);
  return [...seen].map(([digest, size]) => ({ digest, size })).sort((a, b) => a.digest.localeCompare(b.digest));
}

const short = (digest: string) => `${digest.slice(0, 'sha256:'.length + 12)}…`;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Checks the plain output of a successful run: one `fetched` line per blob, then the summary line. */
function assertPlainOutput(r: Result, blobs: ReadonlyArray<{ digest: string; size: number }>, images: number): void {
  assert.equal(r.code, 0, show(r));
  assert.equal(r.stderr, '', show(r));
  assert.doesNotMatch(r.stdout, /\r|\x1b\[/, 'no terminal control characters when stdout is not a TTY');
  const lines = r.stdout.split('\n').filter(Boolean);
  const fetched = lines.filter((l) => l.startsWith('fetched '));
  assert.equal(fetched.length, blobs.length, `one "fetched" line per blob\n${show(r)}`);
  for (const b of blobs) {
    assert.ok(
      fetched.some((l) => new RegExp(`^fetched ${escape(short(b.digest))} (\\d+ B|\\d+\\.\\d (KiB|MiB)) in \\d+\\.\\d s \\((\\d+ B|\\d+\\.\\d (KiB|MiB|GiB))/s\\)$`).test(l)),
      `a line for ${b.digest}\n${show(r)}`,
    );
  }
  const total = blobs.reduce((n, b) => n + b.size, 0);
  const size = total >= MiB ? `${(total / MiB).toFixed(1)} MiB` : `${(total / KiB).toFixed(1)} KiB`;
  assert.match(lines.at(-1) as string, new RegExp(`^prefetched ${blobs.length} blobs \\(${escape(size)}\\) of ${images} images? in \\d+\\.\\d s$`), show(r));
}

describe('cascade prefetch', () => {
  it('warms every platform of an index; a pull and a second prefetch then cost the origin no blob request', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-prefetch-');
    const origin = await startCascadeOrigin(dir, 'origin');
    defer(() => origin.stop());
    const index = await makeOciIndex(join(dir, 'src'), { layers: [1 * MiB, 512 * KiB, 200_000], tag: 'v1', seed: 'prefetch' });
    await skopeo(['copy', '--all', index.ref, `docker://${origin.host}/team/app:v1`]);
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url });
    defer(() => cache.stop());
    const blobs = blobsOf(index.images);
    assert.equal(blobs.length, 7, '2 configs, the shared bottom layer, 2 x 2 layers of their own');
    const vars = { CACHE: cache.url, DIGEST: index.digest };

    await settle(origin);
    const before = blobCount(origin);
    const first = await cascade('cascade prefetch team/app:v1 --cache $CACHE', vars);
    assertPlainOutput(first, blobs, 2);
    assert.match(first.stdout.split('\n')[0] as string, new RegExp(`^team/app:v1: index ${escape(short(index.digest))}, 2 of 2 manifests \\(linux/amd64, linux/arm64/v8\\), 7 blobs, \\d+\\.\\d MiB$`), show(first));
    await settle(origin);
    assert.deepEqual(
      blobRequestsSince(origin, before).map((r) => `${r.method} ${r.path.split('/blobs/')[1]} ${r.status}`).sort(),
      blobs.map((b) => `GET ${b.digest} 200`),
      `the cache filled each blob from the origin once\n${origin.diagnostics()}`,
    );
    for (const b of blobs) await waitFor(`the cache stored ${b.digest}`, () => hasBlobData(cache.rootdirectory, b.digest), 5000); // synced and moved after the last byte

    // a pull of every platform from the cache: blobs come from the cache's disk
    const pulled = blobCount(origin);
    await skopeo(['copy', '--all', `docker://${cache.host}/team/app:v1`, `oci:${join(dir, 'out')}:v1`]);
    await assertLayoutHolds(join(dir, 'out'), 'v1', index);
    await settle(origin);
    assert.deepEqual(blobRequestsSince(origin, pulled), [], `the pull made no blob request to the origin\n${origin.diagnostics()}`);

    // idempotent: a second run reads everything from the cache
    const again = blobCount(origin);
    assertPlainOutput(await cascade('cascade prefetch team/app:v1 --cache $CACHE', vars), blobs, 2);
    await settle(origin);
    assert.deepEqual(blobRequestsSince(origin, again), [], `the second prefetch made no blob request to the origin\n${origin.diagnostics()}`);

    // by digest, and several images at once (the same blobs are fetched once)
    const both = await cascade('cascade prefetch team/app@$DIGEST team/app:v1 --cache $CACHE --concurrency 2', vars);
    assert.equal(both.code, 0, show(both));
    assert.equal(both.stdout.split('\n').filter((l) => l.startsWith('fetched ')).length, 7, show(both));
    assert.match(both.stdout, /^prefetched 7 blobs \(.*\) of 4 images in /m, show(both));
    await settle(origin);
    assert.deepEqual(blobRequestsSince(origin, again), [], 'still no blob request to the origin');

    // a tag the origin does not have
    assertOneLineError(await cascade('cascade prefetch team/app:nope --cache $CACHE', vars), 1, /team\/app:nope: not found \(404\).*check the repository path/);
  });

  it('--platform linux/arm64 warms that platform only', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-prefetch-');
    const origin = await startCascadeOrigin(dir, 'origin');
    defer(() => origin.stop());
    const layout = await makeOciIndex(join(dir, 'src'), { layers: [700 * KiB, 300 * KiB], tag: 'v1', seed: 'prefetch-platform' });
    await skopeo(['copy', '--all', layout.ref, `docker://${origin.host}/team/app:v1`]);
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url });
    defer(() => cache.stop());
    const arm = layout.images.find((i) => i.platform.architecture === 'arm64');
    const amd = layout.images.find((i) => i.platform.architecture === 'amd64');
    assert.ok(arm && amd);
    const armBlobs = blobsOf([arm]);

    await settle(origin);
    const before = blobCount(origin);
    const r = await cascade('cascade prefetch team/app:v1 --platform linux/arm64 --cache $CACHE', { CACHE: cache.url });
    assertPlainOutput(r, armBlobs, 1);
    assert.match(r.stdout, /^team\/app:v1: index sha256:[0-9a-f]{12}…, 1 of 2 manifests \(linux\/arm64\/v8\), 3 blobs, /m, show(r));
    await settle(origin);
    assert.deepEqual(
      blobRequestsSince(origin, before).map((x) => `${x.method} ${x.path.split('/blobs/')[1]}`).sort(),
      armBlobs.map((b) => `GET ${b.digest}`),
      `the origin served the arm64 config and layers (the shared one included), nothing of amd64\n${origin.diagnostics()}`,
    );
    const amdOnly = blobsOf([amd]).filter((b) => !armBlobs.some((a) => a.digest === b.digest));
    assert.equal(amdOnly.length, 2);
    for (const b of amdOnly) assert.equal(await hasBlobData(cache.rootdirectory, b.digest), false, `amd64's ${b.digest} is not in the cache`);

    // a platform the index does not have: an error naming the ones it has, nothing fetched
    const none = await cascade('cascade prefetch team/app:v1 --platform linux/s390x --cache $CACHE', { CACHE: cache.url });
    assert.equal(none.code, 1, show(none));
    assert.match(none.stderr, /^cascade: team\/app:v1: no manifest for linux\/s390x in the index \(it has linux\/amd64, linux\/arm64\/v8\)$/m, show(none));
  });

  it('an https cache: --ca for its certificate, credentials forwarded to an htpasswd origin', { timeout: 120_000 }, async (t) => {
    const { dir, defer } = await testScope(t, 'e2e-prefetch-');
    const password = 'pr3fetch-S3cret';
    await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync(password, 10)}\n`);
    const origin = await startCascadeOrigin(dir, 'origin', { auth: { htpasswd: { realm: 'origin', path: join(dir, 'htpasswd') } } });
    defer(() => origin.stop());
    const layout = await makeOciIndex(join(dir, 'src'), { layers: [400 * KiB], tag: 'v1', seed: 'prefetch-tls' });
    await skopeo(['copy', '--all', '--dest-creds', `alice:${password}`, layout.ref, `docker://${origin.host}/team/app:v1`]);
    const ca = makeCa('Prefetch Test CA');
    const pair = await writePair(dir, 'cache', ca.issue());
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, ca.certPem);
    const cache = await startCacheNode(dir, 'cache', { origin: origin.url, config: { http: { tls: { certificate: pair.cert, key: pair.key } } } });
    defer(() => cache.stop());
    assert.match(cache.url, /^https:/);
    const vars = { CACHE: cache.url, CA: caFile, PASSWORD: password };

    assertOneLineError(await cascade('cascade prefetch team/app:v1 --cache $CACHE', vars), 1, /certificate is not trusted .*--ca FILE/);
    assertOneLineError(await cascade('cascade prefetch team/app:v1 --cache $CACHE --ca $CA', vars), 1, /asks for credentials \(401\b.*\); give them with --user USER:PASS/);
    const wrong = await cascade('cascade prefetch team/app:v1 --cache $CACHE --ca $CA --user alice:wrong', vars);
    assertOneLineError(wrong, 1, /refused the credentials \(401\b.*\); check --user/);

    const ok = await cascade('CASCADE_PREFETCH_AUTH=alice:$PASSWORD cascade prefetch team/app:v1 --cache $CACHE --ca $CA', vars);
    assertPlainOutput(ok, blobsOf(layout.images), 2);
    for (const b of blobsOf(layout.images)) await waitFor(`the cache stored ${b.digest}`, () => hasBlobData(cache.rootdirectory, b.digest), 5000); // synced and moved after the last byte
    for (const r of [wrong, ok]) assert.ok(!`${r.stdout}${r.stderr}`.includes(password), 'the password is never printed');
  });

  it('bad input: one line saying what to do, a non-zero exit, no stack trace', { timeout: 60_000 }, async () => {
    const vars = { CACHE: `http://127.0.0.1:${await freePort()}` };
    assertOneLineError(await cascade('cascade prefetch team/app:v1 --cache $CACHE --verbose', vars), 64, /unknown option --verbose for "cascade prefetch"; run "cascade prefetch --help"/);
    assertOneLineError(await cascade('cascade prefetch team/app:v1'), 64, /--cache URL is required/);
    assertOneLineError(await cascade('cascade prefetch Team/App:v1 --cache $CACHE', vars), 64, /bad image reference "Team\/App:v1": .*expected repo\/name:tag or repo\/name@sha256:/);
    assertOneLineError(await cascade('cascade prefetch team/app:v1 --cache $CACHE', vars), 1, /cannot reach http:\/\/127\.0\.0\.1:\d+: connection refused; check the URL given with --cache/);
    const help = await cascade('cascade prefetch --help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: cascade prefetch IMAGE\.\.\. --cache URL/);
  });

  it('every cascade prefetch command in docs/prefetch.md is one these tests ran', async () => {
    const doc = await readFile(join(ROOT, 'docs/prefetch.md'), 'utf8');
    const commands: string[] = [];
    for (const block of doc.matchAll(/```(?:sh|console)\n([\s\S]*?)```/g)) {
      for (const raw of (block[1] as string).split('\n')) {
        const line = raw.replace(/\s+#.*$/, '').trim();
        if (/^([A-Z_]+=\S+\s+)*cascade prefetch\b/.test(line)) commands.push(line.replace(/\s+/g, ' '));
      }
    }
    assert.ok(commands.length >= 5, `docs/prefetch.md shows the commands (found ${commands.length})`);
    assert.deepEqual(commands.filter((c) => !ran.has(c)), [], `commands in docs/prefetch.md that no test ran (ran: ${[...ran].join(' | ')})`);
  });
});
