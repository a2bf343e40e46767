/**
 * `cascade up` in-process: its arguments, its banner, and a stack started with a mirror (`--mirror URL`) that
 * pulls an image of a fake remote through the mirror node, next to the unchanged four-node stack.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { parseNodeConfig } from '@cascade/downstream';
import { freePort, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256, startFakeRegistry } from '@cascade/testkit';
import { banner, parseUpArgs, startStack, UpUsageError, type RunningStack } from '../src/commands/up.js';

describe('cascade up arguments', () => {
  it('keeps its defaults: ./cascade-up, port 5000, no mirror', () => {
    assert.deepEqual(parseUpArgs([]), { dir: resolve('cascade-up'), port: 5000, mirror: [] });
    assert.equal(parseUpArgs(['--help']), 'help');
  });

  it('takes --mirror URL, repeated, in order', () => {
    const parsed = parseUpArgs(['--mirror', 'https://registry-1.docker.io', '--port', '6000', '--mirror', 'http://127.0.0.1:5001']);
    assert.notEqual(parsed, 'help');
    assert.deepEqual(parsed !== 'help' && parsed.mirror, ['https://registry-1.docker.io', 'http://127.0.0.1:5001']);
    assert.equal(parsed !== 'help' && parsed.port, 6000);
  });

  it('refuses a --mirror that is not an http(s) URL, and a port without room for every node', () => {
    for (const value of ['registry-1.docker.io', 'ftp://example.com', '']) {
      assert.throws(() => parseUpArgs(['--mirror', value]), (e: unknown) => e instanceof UpUsageError && /--mirror expects the http:\/\/ or https:\/\/ URL of a registry/.test(e.message));
    }
    assert.throws(() => parseUpArgs(['--mirror']), /--mirror needs a value/);
    assert.equal((parseUpArgs(['--port', '65532']) as { port: number }).port, 65532);
    assert.throws(() => parseUpArgs(['--port', '65533']), /from 1 to 65532 \(four consecutive ports are used\)/);
    assert.throws(() => parseUpArgs(['--port', '65532', '--mirror', 'https://r.example']), /from 1 to 65531 \(five consecutive ports are used\)/);
  });
});

describe('cascade up banner', () => {
  const stack = (mirror?: string): RunningStack => ({
    dir: '/tmp/up',
    urls: { server: 'http://127.0.0.1:5000', origin: 'http://127.0.0.1:5001', regionA: 'http://127.0.0.1:5002', regionB: 'http://127.0.0.1:5003', ...(mirror ? { mirror } : {}) },
    mirrored: mirror ? ['https://registry-1.docker.io'] : [],
    passwords: { admin: 'a', user: 'u', service: 's', events: 'e' },
    close: async () => undefined,
  });

  it('names the mirror, and how to pull through it, only when there is one', () => {
    assert.ok(!banner(stack()).includes('mirror'));
    const text = banner(stack('http://127.0.0.1:5004'));
    assert.match(text, /\n {2}mirror {4}http:\/\/127\.0\.0\.1:5004 {3}pull-through mirror of https:\/\/registry-1\.docker\.io\n/);
    assert.match(text, /docker:\/\/127\.0\.0\.1:5004\/REPOSITORY:TAG/);
    assert.match(text, /mirror\/config\.yml/);
  });
});

/** Starts the stack with a mirror of `remote` on five free consecutive ports, retrying when one is taken. */
async function startWithMirror(dir: string, remote: string): Promise<RunningStack> {
  for (let attempt = 1; ; attempt++) {
    const port = 20_000 + ((await freePort()) % 40_000);
    try {
      return await startStack({ dir, port, mirror: [remote], logger: () => pino({ level: 'silent' }) });
    } catch (err) {
      if (attempt < 3 && err instanceof UpUsageError && /in use/.test(err.message)) continue;
      throw err;
    }
  }
}

describe('cascade up --mirror', () => {
  it('starts a mirror node in the stack, which pulls an image from its remote', { timeout: 120_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'cascade-up-mirror-'));
    const cleanup: Array<() => Promise<unknown>> = [() => rm(dir, { recursive: true, force: true })];
    // Last started, first stopped; the folder goes once nothing writes to it.
    t.after(async () => {
      for (const step of cleanup.reverse()) await step();
    });
    const remote = await startFakeRegistry();
    cleanup.push(() => remote.stop());
    const layer = Buffer.from('a layer of the mirrored image '.repeat(1000));
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
    remote.addBlob(layer);
    remote.addBlob(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: OCI_CONFIG, digest: sha256(config), size: config.length },
        layers: [{ mediaType: OCI_LAYER, digest: sha256(layer), size: layer.length }],
      }),
    );
    const digest = remote.addManifest(manifest, { name: 'team/app', tag: 'v1' });

    const stack = await startWithMirror(join(dir, 'stack'), remote.url);
    cleanup.push(() => stack.close());
    const mirror = stack.urls.mirror;
    assert.ok(mirror, 'the stack has a mirror');
    assert.deepEqual(stack.mirrored, [remote.url]);

    // The remote is the default: its repositories are pulled by their own names.
    const tagged = await fetch(`${mirror}/v2/team/app/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(tagged.status, 200);
    assert.equal(tagged.headers.get('docker-content-digest'), digest);
    assert.deepEqual(Buffer.from(await tagged.arrayBuffer()), manifest);
    for (const blob of [layer, config]) {
      const res = await fetch(`${mirror}/v2/team/app/blobs/${sha256(blob)}`);
      assert.equal(res.status, 200);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), blob);
    }
    // Pulled again, the blobs come from the mirror's store: the remote was asked once for each.
    await (await fetch(`${mirror}/v2/team/app/blobs/${sha256(layer)}`)).arrayBuffer();
    assert.equal(remote.count(sha256(layer), 'GET'), 1);

    // Its config is written beside the others, and loads as a mirror (for `cascade doctor`).
    const file = join(stack.dir, 'mirror', 'config.yml');
    assert.equal(parseNodeConfig(await readFile(file, 'utf8'), file, {}).mirror?.defaultRemote?.url, remote.url);
    // The rest of the stack is as without a mirror: the server asks for credentials.
    assert.equal((await fetch(`${stack.urls.server}/v2/`)).status, 401);
  });
});
