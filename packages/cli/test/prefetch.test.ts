import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { contentHeaders, sha256, startFakeRegistry, type FakeRegistry } from '@cascade/testkit';
import {
  formatBytes,
  formatDuration,
  formatRate,
  parseImageRef,
  parsePlatform,
  parsePrefetchArgs,
  platformMatches,
  Progress,
  PrefetchUsageError,
  renderBlobLine,
  renderProgressLine,
  renderSummary,
  runPrefetch,
  selectPlatforms,
  shortDigest,
  type IndexEntry,
  type PrefetchIO,
} from '../src/commands/prefetch.js';

const MiB = 1024 * 1024;
const sha = sha256;
const D1 = `sha256:${'a'.repeat(64)}`;

describe('prefetch: image references', () => {
  it('parses tags and digests; no tag means latest', () => {
    assert.deepEqual(parseImageRef('team/app:v1'), { name: 'team/app', reference: 'v1', kind: 'tag' });
    assert.deepEqual(parseImageRef('library/alpine'), { name: 'library/alpine', reference: 'latest', kind: 'tag' });
    assert.deepEqual(parseImageRef(`team/app@${D1}`), { name: 'team/app', reference: D1, kind: 'digest' });
    assert.deepEqual(parseImageRef(`team/app:v1@${D1}`), { name: 'team/app', reference: D1, kind: 'digest' });
    assert.deepEqual(parseImageRef('ghcr.io/owner/app:1.2.3'), { name: 'ghcr.io/owner/app', reference: '1.2.3', kind: 'tag' });
  });
  it('refuses bad references with the reason and the expected form', () => {
    const cases: Array<[string, RegExp]> = [
      ['Team/App:v1', /repository name must be lower-case/],
      ['team/app:', /"" is not a valid tag/],
      ['team/app:-x', /"-x" is not a valid tag/],
      ['team/app@sha256:abc', /not a sha256 or sha512 digest/],
      ['team/app@md5:' + 'a'.repeat(32), /not a sha256 or sha512 digest/],
      ['127.0.0.1:5000/team/app:v1', /starts with a registry host; give the repository alone/],
      ['https://registry.example.com/team/app', /starts with a registry host/],
      ['', /empty/],
    ];
    for (const [text, why] of cases) {
      assert.throws(() => parseImageRef(text), (err: Error) => err instanceof PrefetchUsageError && why.test(err.message) && /expected repo\/name:tag or repo\/name@sha256:/.test(err.message), text);
    }
  });
});

describe('prefetch: arguments', () => {
  it('parses every option, in both --flag value and --flag=value forms', () => {
    const o = parsePrefetchArgs(['team/app:v1', '--cache', 'https://cache.example.com:5000/', '--platform', 'linux/amd64', '--platform=linux/arm64/v8,linux/arm/v7', '--ca=/certs/ca.pem', '--user', 'alice:pa:ss', '--concurrency', '8', `team/db@${D1}`]);
    assert.ok(o);
    assert.deepEqual(o.images.map((i) => `${i.name} ${i.reference}`), ['team/app v1', `team/db ${D1}`]);
    assert.equal(o.cache.href, 'https://cache.example.com:5000/');
    assert.deepEqual(o.platforms, [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
    assert.equal(o.caFile, '/certs/ca.pem');
    assert.deepEqual(o.credentials, { kind: 'basic', user: 'alice', password: 'pa:ss' });
    assert.equal(o.concurrency, 8);
  });
  it('defaults: every platform, concurrency 4, no credentials; duplicates dropped', () => {
    const o = parsePrefetchArgs(['team/app:v1', 'team/app:v1', '--cache', 'http://127.0.0.1:5000']);
    assert.ok(o);
    assert.equal(o.images.length, 1);
    assert.deepEqual(o.platforms, []);
    assert.equal(o.concurrency, 4);
    assert.equal(o.credentials, undefined);
  });
  it('takes credentials from CASCADE_PREFETCH_AUTH, and --token as a bearer token', () => {
    assert.deepEqual(parsePrefetchArgs(['a/b:c', '--cache', 'http://x'], { CASCADE_PREFETCH_AUTH: 'bob:pw' })?.credentials, { kind: 'basic', user: 'bob', password: 'pw' });
    assert.deepEqual(parsePrefetchArgs(['a/b:c', '--cache', 'http://x', '--user', 'al:1'], { CASCADE_PREFETCH_AUTH: 'bob:pw' })?.credentials, { kind: 'basic', user: 'al', password: '1' });
    assert.deepEqual(parsePrefetchArgs(['a/b:c', '--cache', 'http://x', '--token', 'tok'], { CASCADE_PREFETCH_AUTH: 'bob:pw' })?.credentials, { kind: 'bearer', token: 'tok' });
  });
  it('--help gives undefined (the usage is printed)', () => {
    assert.equal(parsePrefetchArgs(['--help']), undefined);
    assert.equal(parsePrefetchArgs(['team/app:v1', '-h']), undefined);
  });
  it('refuses bad command lines in one line, without echoing secrets', () => {
    const cases: Array<[string[], RegExp, Record<string, string>?]> = [
      [['team/app:v1', '--cache', 'http://x', '--verbose'], /^unknown option --verbose for "cascade prefetch"; run "cascade prefetch --help"/],
      [['team/app:v1', '--cache=http://x', '--fast=1'], /^unknown option --fast /],
      [['team/app:v1'], /^--cache URL is required/],
      [['--cache', 'http://x'], /^no image given/],
      [['team/app:v1', '--cache'], /^--cache needs a value/],
      [['team/app:v1', '--cache', '--platform', 'linux/amd64'], /^--cache needs a value/],
      [['team/app:v1', '--cache', 'cache.example.com:5000'], /add the scheme: "https:\/\/cache\.example\.com:5000"/],
      [['team/app:v1', '--cache', 'ftp://x'], /^--cache: expected the base URL/],
      [['team/app:v1', '--cache', 'https://bob:hunter2@x'], /^--cache: the URL holds credentials \(not shown\)/],
      [['team/app:v1', '--cache', 'http://x', '--cache', 'http://y'], /given twice/],
      [['team/app:v1', '--cache', 'http://x', '--platform', 'linux'], /^--platform: expected os\/arch\[\/variant\]/],
      [['team/app:v1', '--cache', 'http://x', '--concurrency', '0'], /^--concurrency: expected a whole number from 1 to 64/],
      [['team/app:v1', '--cache', 'http://x', '--concurrency', '2.5'], /^--concurrency/],
      [['team/app:v1', '--cache', 'http://x', '--user', 'hunter2'], /^--user: expected USER:PASSWORD \(the value is not shown\)/],
      [['team/app:v1', '--cache', 'http://x', '--user', 'a:b', '--token', 't'], /--user and --token both given/],
      [['team/app:v1', '--cache', 'http://x'], /^CASCADE_PREFETCH_AUTH: expected USER:PASSWORD/, { CASCADE_PREFETCH_AUTH: 'hunter2' }],
    ];
    for (const [args, pattern, env] of cases) {
      assert.throws(
        () => parsePrefetchArgs(args, env ?? {}),
        (err: Error) => err instanceof PrefetchUsageError && pattern.test(err.message) && !err.message.includes('hunter2') && !err.message.includes('\n'),
        args.join(' '),
      );
    }
  });
});

describe('prefetch: platforms', () => {
  const entry = (os: string, architecture: string, variant?: string): IndexEntry => ({ digest: D1, size: 1, platform: { os, architecture, ...(variant ? { variant } : {}) } });
  const index: IndexEntry[] = [entry('linux', 'amd64'), entry('linux', 'arm64', 'v8'), entry('linux', 'arm', 'v7'), entry('linux', 'arm', 'v6'), entry('windows', 'amd64'), entry('unknown', 'unknown')];
  const names = (es: IndexEntry[]) => es.map((e) => `${e.platform?.os}/${e.platform?.architecture}${e.platform?.variant ? `/${e.platform.variant}` : ''}`);

  it('parses os/arch[/variant], with the usual aliases', () => {
    assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('linux/x86_64'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('Linux/AArch64/V8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
    for (const bad of ['linux', 'linux/', '/amd64', 'a/b/c/d', 'linux/amd 64']) assert.throws(() => parsePlatform(bad), PrefetchUsageError, bad);
  });
  it('selects every entry by default', () => {
    assert.equal(selectPlatforms(index, []).selected.length, index.length);
  });
  it('selects by os and architecture; a variant narrows it, with the default variants', () => {
    assert.deepEqual(names(selectPlatforms(index, [parsePlatform('linux/arm64')]).selected), ['linux/arm64/v8']);
    assert.deepEqual(names(selectPlatforms(index, [parsePlatform('linux/arm')]).selected), ['linux/arm/v7', 'linux/arm/v6']);
    assert.deepEqual(names(selectPlatforms(index, [parsePlatform('linux/arm/v6')]).selected), ['linux/arm/v6']);
    assert.deepEqual(names(selectPlatforms(index, [parsePlatform('linux/amd64'), parsePlatform('windows/amd64')]).selected), ['linux/amd64', 'windows/amd64']);
    assert.ok(platformMatches({ os: 'linux', architecture: 'arm64' }, parsePlatform('linux/arm64/v8')), 'arm64 without a variant is v8');
    assert.ok(!platformMatches({ os: 'linux', architecture: 'arm64', variant: 'v9' }, parsePlatform('linux/arm64/v8')));
    assert.ok(!platformMatches(undefined, parsePlatform('linux/amd64')));
  });
  it('reports the platforms asked for that the index lacks', () => {
    const r = selectPlatforms(index, [parsePlatform('linux/amd64'), parsePlatform('linux/s390x')]);
    assert.deepEqual(names(r.selected), ['linux/amd64']);
    assert.deepEqual(r.missing, [{ os: 'linux', architecture: 's390x' }]);
  });
});

describe('prefetch: formatting', () => {
  it('formats sizes, rates, durations and digests', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(12 * MiB), '12.0 MiB');
    assert.equal(formatBytes(3 * 1024 * MiB), '3.0 GiB');
    assert.equal(formatRate(85.1 * MiB), '85.1 MiB/s');
    assert.equal(formatRate(Number.NaN), '0 B/s');
    assert.equal(formatDuration(400), '0.4 s');
    assert.equal(formatDuration(3449), '3.4 s');
    assert.equal(formatDuration(125_000), '2 min 5 s');
    assert.equal(shortDigest(`sha256:${'abcdef012345'.repeat(5)}abcd`), 'sha256:abcdef012345…');
  });
  it('renders the progress line', () => {
    assert.equal(
      renderProgressLine({ doneBytes: 120.3 * MiB, totalBytes: 285 * MiB, rate: 85.1 * MiB, blobsDone: 3, blobsTotal: 7 }),
      '[########............] 42% 120.3/285.0 MiB 85.1 MiB/s layers 3/7',
    );
    assert.equal(renderProgressLine({ doneBytes: 0, totalBytes: 0, rate: 0, blobsDone: 0, blobsTotal: 0 }), '[####################] 100% 0.0/0.0 KiB 0 B/s layers 0/0');
    assert.equal(renderProgressLine({ doneBytes: 285 * MiB, totalBytes: 285 * MiB, rate: MiB, blobsDone: 7, blobsTotal: 7 }, 10), '[##########] 100% 285.0/285.0 MiB 1.0 MiB/s layers 7/7');
  });
  it('renders the per-blob and summary lines', () => {
    assert.equal(renderBlobLine(`sha256:${'abcd'.repeat(16)}`, 12 * MiB, 400), 'fetched sha256:abcdabcdabcd… 12.0 MiB in 0.4 s (30.0 MiB/s)');
    assert.equal(renderSummary({ blobsDone: 7, blobsTotal: 7, bytesDone: 285 * MiB, images: 2, failed: 0, ms: 3400 }), 'prefetched 7 blobs (285.0 MiB) of 2 images in 3.4 s');
    assert.equal(renderSummary({ blobsDone: 1, blobsTotal: 1, bytesDone: 100, images: 1, failed: 0, ms: 50 }), 'prefetched 1 blob (100 B) of 1 image in 0.1 s');
    assert.equal(renderSummary({ blobsDone: 5, blobsTotal: 7, bytesDone: 200 * MiB, images: 2, failed: 2, ms: 3400 }), 'prefetched 5 of 7 blobs (200.0 MiB) of 2 images in 3.4 s; 2 failed (see the errors above)');
    assert.match(renderSummary({ blobsDone: 3, blobsTotal: 7, bytesDone: MiB, images: 2, failed: 0, ms: 1200, interrupted: true }), /^interrupted: prefetched 3 of 7 blobs \(1\.0 MiB\) of 2 images in 1\.2 s; run the same command again/);
  });
});

/** A stream that records what is written. */
function fakeStream(isTTY: boolean, columns?: number): { writes: string[]; text(): string; isTTY: boolean; columns?: number; write(s: string): boolean } {
  const writes: string[] = [];
  return { writes, text: () => writes.join(''), isTTY, ...(columns ? { columns } : {}), write: (s: string) => (writes.push(s), true) };
}

describe('prefetch: progress display', () => {
  it('on a TTY: one line redrawn in place, at most every 100 ms, with the rate over the last seconds', () => {
    let now = 1_000_000;
    const out = fakeStream(true);
    const p = new Progress(out, { now: () => now });
    p.start(10 * MiB, 4);
    assert.equal(out.writes.length, 1);
    assert.equal(out.writes[0], '\r[....................] 0% 0.0/10.0 MiB 0 B/s layers 0/4\x1b[K');
    for (let i = 0; i < 10; i++) p.add(0.1 * MiB);
    assert.equal(out.writes.length, 1, 'no redraw within 100 ms');
    now += 1000;
    p.add(1.5 * MiB);
    assert.equal(out.writes.length, 2);
    assert.equal(out.writes[1], '\r[#####...............] 25% 2.5/10.0 MiB 2.5 MiB/s layers 0/4\x1b[K');
    now += 50;
    p.blobDone(D1, 2.5 * MiB, 1000);
    assert.equal(out.writes.length, 2, 'a blob done within 100 ms of the last draw waits for the next one');
    now += 100;
    p.note('cascade: something failed');
    assert.deepEqual(out.writes.slice(2), ['\r\x1b[K', 'cascade: something failed\n', out.writes[4]!]);
    assert.match(out.writes[4]!, /^\r\[#####\.+\] 25% 2\.5\/10\.0 MiB .* layers 1\/4\x1b\[K$/);
    p.stop();
    assert.equal(out.text().at(-1), '\n', 'the final bar stays on its line');
    assert.ok(!out.writes.some((w) => w.startsWith('fetched ')), 'no per-blob lines on a TTY');
  });
  it('on a TTY: the rate is over the last 3 s, and the line fits the terminal', () => {
    let now = 0;
    const out = fakeStream(true, 40);
    const p = new Progress(out, { now: () => now });
    p.start(100 * MiB, 1);
    now = 10_000;
    p.add(50 * MiB);
    now = 13_000;
    p.add(0);
    now = 16_000;
    p.add(3 * MiB);
    assert.match(p.line(), /^.{0,39}$/);
    const wide = new Progress(fakeStream(true), { now: () => now });
    wide.start(100 * MiB, 1);
    now = 16_000 + 3000;
    wide.add(6 * MiB);
    assert.match(wide.line(), / 2\.0 MiB\/s /);
    p.stop();
    wide.stop();
  });
  it('not on a TTY: a plain line per blob, nothing else', () => {
    const out = fakeStream(false);
    const p = new Progress(out);
    p.start(MiB, 1);
    p.add(MiB);
    p.blobDone(`sha256:${'ab'.repeat(32)}`, MiB, 500);
    p.note('a note');
    p.stop();
    assert.deepEqual(out.writes, ['fetched sha256:abababababab… 1.0 MiB in 0.5 s (2.0 MiB/s)\n', 'a note\n']);
  });
});

// ---------------------------------------------------------------------------------------------------
// runPrefetch against a stub registry

interface Stub {
  /** The testkit's fake registry. */
  fake: FakeRegistry;
  url: string;
  /** Every request since the last `clear()`: `METHOD target authorization` (`-` without one). */
  requests(): string[];
  clear(): void;
  /** Per blob digest: what to do (default: serve it). */
  blobMode: Map<string, 'corrupt-once' | 'corrupt' | 'stall'>;
  /** Require `Authorization: Bearer good-token` (given by /token for alice:pw). */
  tokenAuth(on: boolean): void;
  onStall?: () => void;
}

/** A registry with one two-platform index `team/app:v1`. */
async function startStub(): Promise<{ stub: Stub; blobs: Map<string, Buffer>; amd: string[]; arm: string[] }> {
  const fake = await startFakeRegistry();
  const blobs = new Map<string, Buffer>();
  const put = (b: Buffer) => (blobs.set(fake.addBlob(b), b), { digest: sha(b), size: b.length });
  const shared = put(randomBytes(3000));
  const images: Array<{ platform: Record<string, string>; blobs: string[]; manifest: { digest: string; size: number } }> = [];
  for (const [os, architecture, variant] of [['linux', 'amd64'], ['linux', 'arm64', 'v8']] as const) {
    const config = put(Buffer.from(JSON.stringify({ os, architecture, ...(variant ? { variant } : {}) })));
    const own = put(randomBytes(5000));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { ...config, mediaType: 'application/vnd.oci.image.config.v1+json' }, layers: [shared, own].map((l) => ({ ...l, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' })) }));
    fake.addManifest(manifest);
    images.push({ platform: { os, architecture, ...(variant ? { variant } : {}) }, blobs: [config.digest, shared.digest, own.digest], manifest: { digest: sha(manifest), size: manifest.length } });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: images.map((i) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...i.manifest, platform: i.platform })) }));
  fake.addManifest(index, { name: 'team/app', tag: 'v1' });
  let mark = 0;
  const stub: Stub = {
    fake,
    url: fake.url,
    requests: () => fake.requests.slice(mark).map((r) => `${r.method} ${r.url} ${r.headers.authorization ?? '-'}`),
    clear: () => void (mark = fake.requests.length),
    blobMode: new Map(),
    tokenAuth(on) {
      fake.challenge = on ? { scheme: 'bearer', username: 'alice', password: 'pw', service: 'stub', scope: 'repository:team/app:pull', token: 'good-token' } : undefined;
    },
  };
  fake.hook = ({ record, res, content, serve }) => {
    if (record.kind !== 'blob' || content === undefined) return false;
    const mode = stub.blobMode.get(content.digest);
    if (mode === 'stall') {
      res.writeHead(200, { ...contentHeaders(content), 'content-length': content.bytes.length });
      res.write(content.bytes.subarray(0, 100));
      stub.onStall?.();
      return true;
    }
    const served = fake.requests.slice(mark).filter((r) => r.digest === content.digest && !r.challenged).length;
    if (mode === 'corrupt' || (mode === 'corrupt-once' && served === 1)) {
      const bad = Buffer.from(content.bytes);
      bad[0] = (bad[0]! + 1) % 256;
      return serve({ bytes: bad }).then(() => true);
    }
    return false;
  };
  return { stub, blobs, amd: images[0]!.blobs, arm: images[1]!.blobs };
}

function io(env: Record<string, string> = {}, onInterrupt?: PrefetchIO['onInterrupt']): PrefetchIO & { out: ReturnType<typeof fakeStream>; err: ReturnType<typeof fakeStream> } {
  return { out: fakeStream(false), err: fakeStream(false), env, ...(onInterrupt ? { onInterrupt } : {}) };
}

describe('prefetch: runPrefetch against a stub registry', () => {
  let s: Awaited<ReturnType<typeof startStub>>;
  before(async () => {
    s = await startStub();
  });
  after(() => s.stub.fake.stop());
  const blobGets = (digest: string) => s.stub.requests().filter((r) => r.startsWith(`GET /v2/team/app/blobs/${digest} `)).length;
  const reset = () => {
    s.stub.clear();
    s.stub.blobMode.clear();
    s.stub.tokenAuth(false);
  };

  it('fetches every blob once, verified, and prints plain lines', async () => {
    reset();
    const x = io();
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url], x), 0, x.err.text());
    assert.equal(x.err.text(), '');
    const unique = new Set([...s.amd, ...s.arm]);
    for (const d of unique) assert.equal(blobGets(d), 1, d);
    const lines = x.out.text().trim().split('\n');
    assert.match(lines[0]!, /^team\/app:v1: index sha256:[0-9a-f]{12}…, 2 of 2 manifests \(linux\/amd64, linux\/arm64\/v8\), 5 blobs, /);
    assert.equal(lines.filter((l) => l.startsWith('fetched ')).length, 5);
    assert.match(lines.at(-1)!, /^prefetched 5 blobs \(.*\) of 2 images in \d+\.\d s$/);
    assert.ok(s.stub.requests().every((r) => r.startsWith('GET ')), 'GETs only: a HEAD on a miss does not fill a cache');
  });

  it('retries a corrupt blob once; one that stays corrupt is reported, the others are still fetched, exit 1', async () => {
    reset();
    const [configArm, , ownArm] = s.arm as [string, string, string];
    s.stub.blobMode.set(configArm, 'corrupt-once');
    s.stub.blobMode.set(ownArm, 'corrupt');
    const x = io();
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url, '--platform', 'linux/arm64'], x), 1);
    assert.equal(blobGets(configArm), 2, 'retried once');
    assert.equal(blobGets(ownArm), 2, 'retried once, then given up');
    for (const d of s.amd.filter((d) => !s.arm.includes(d))) assert.equal(blobGets(d), 0, 'not the other platform');
    assert.match(x.err.text(), new RegExp(`^cascade: team/app@${ownArm}: the \\d+ bytes the cache sent hash to sha256:[0-9a-f]{64}: digest mismatch\\n$`));
    assert.match(x.out.text(), /^prefetched 2 of 3 blobs \(.*\) of 1 image in .*; 1 failed \(see the errors above\)$/m);
  });

  it('exchanges --user for a token when the registry asks for one', async () => {
    reset();
    s.stub.tokenAuth(true);
    const x = io();
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url, '--user', 'alice:pw', '--platform', 'linux/amd64'], x), 0, x.err.text());
    assert.equal(s.stub.requests().filter((r) => r.startsWith('GET /token')).length, 1, 'one token for the repository');
    assert.ok(s.stub.requests().some((r) => r.includes('scope=repository%3Ateam%2Fapp%3Apull') && r.includes('service=stub')));
    assert.ok(s.stub.requests().filter((r) => r.includes('/blobs/')).every((r) => r.endsWith('Bearer good-token')));
  });

  it('without credentials, a 401 is one line saying how to give them; wrong ones are refused', async () => {
    reset();
    s.stub.tokenAuth(true);
    const x = io();
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url], x), 1);
    assert.match(x.err.text(), /^cascade: the token service http:\/\/127\.0\.0\.1:\d+ refused an anonymous token \(401\); give credentials with --user USER:PASS or CASCADE_PREFETCH_AUTH=USER:PASS\n$/);
    reset();
    s.stub.tokenAuth(true);
    const y = io({ CASCADE_PREFETCH_AUTH: 'alice:wrong' });
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url], y), 1);
    assert.match(y.err.text(), /^cascade: the token service http:\/\/127\.0\.0\.1:\d+ refused the credentials \(401\); check --user or CASCADE_PREFETCH_AUTH\n$/);
    assert.ok(!y.err.text().includes('wrong'));
  });

  it('an interruption stops at once, prints what was done, and exits 130', async () => {
    reset();
    const [, , ownAmd] = s.amd as [string, string, string];
    s.stub.blobMode.set(ownAmd, 'stall');
    let interrupt: ((signal: NodeJS.Signals) => void) | undefined;
    let removed = false;
    s.stub.onStall = () => setTimeout(() => interrupt?.('SIGINT'), 50);
    const x = io({}, (fn) => {
      interrupt = fn;
      return () => void (removed = true);
    });
    const started = Date.now();
    assert.equal(await runPrefetch(['team/app:v1', '--cache', s.stub.url, '--concurrency', '1'], x), 130);
    assert.ok(Date.now() - started < 5000);
    assert.ok(removed, 'the signal handlers are removed');
    assert.match(x.out.text(), /^interrupted: prefetched \d of 5 blobs .* run the same command again to finish/m);
    s.stub.onStall = undefined;
  });
});
