/**
 * `cascade up` in-process: its arguments, its banner, a stack started with a mirror (`--mirror URL`) that
 * pulls an image of a fake remote through the mirror node, next to the unchanged four-node stack, and the
 * balancer of `--region N` (round-robin over real HTTP servers, a dead node skipped, a large body intact).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { parseNodeConfig } from '@cascade/downstream';
import { freePort, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256, startFakeRegistry } from '@cascade/testkit';
import { banner, parseUpArgs, startStack, UpUsageError, type RunningStack } from '../src/commands/up.js';
import { startBalancer } from '../src/commands/balancer.js';

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

  it('takes --region N (2 to 9 nodes), which uses PORT to PORT+5+N', () => {
    assert.equal((parseUpArgs(['--region', '3']) as { region?: number }).region, 3);
    assert.equal((parseUpArgs([]) as { region?: number }).region, undefined);
    for (const value of ['1', '10', 'three', '2.5', '']) {
      assert.throws(() => parseUpArgs(['--region', value]), (e: unknown) => e instanceof UpUsageError && /--region expects a number of nodes from 2 to 9/.test(e.message));
    }
    assert.equal((parseUpArgs(['--port', '65527', '--region', '3']) as { port: number }).port, 65527);
    assert.throws(() => parseUpArgs(['--port', '65528', '--region', '3']), /from 1 to 65527 \(9 consecutive ports are used\)/);
  });
});

describe('cascade up banner', () => {
  it("lists a region's nodes, its Redis and the nodes' configs", () => {
    const nodes = [1, 2, 3].map((i) => ({ name: `region-b-${i}`, url: `http://127.0.0.1:${5004 + i}`, pid: 100 + i }));
    const text = banner({ ...stack(), region: { nodes, redis: 'redis://127.0.0.1:5008' } });
    assert.match(text, /region-b {2}http:\/\/127\.0\.0\.1:5003 {3}balancer \(round-robin, local use only\) of a region of 3 cache nodes/);
    for (const n of nodes) assert.ok(text.includes(`${n.name.padEnd(12)}${n.url}   pid ${n.pid}, storage /tmp/up/region-b/data (shared)`), text);
    assert.match(text, /redis {7}redis:\/\/127\.0\.0\.1:5008/);
    assert.match(text, /region-b-1\/config\.yml, region-b-2\/config\.yml, region-b-3\/config\.yml/);
    assert.match(text, /curl http:\/\/127\.0\.0\.1:5005\/metrics/);
    assert.ok(!banner(stack()).includes('redis'));
  });

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

/** An HTTP server on a free port that answers `id`, or a body of `size` deterministic bytes at /big. */
async function node(id: string, big: Buffer): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.url === '/big') {
      res.setHeader('content-length', big.length);
      res.end(big);
    } else res.end(id);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

describe('cascade up --region: the balancer', () => {
  it('spreads connections round-robin, skips a node that is down, and passes large bodies intact', { timeout: 60_000 }, async (t) => {
    const big = Buffer.alloc(48 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const nodes = await Promise.all(['n1', 'n2', 'n3'].map((id) => node(id, big)));
    t.after(() => Promise.all(nodes.map((n) => new Promise((r) => n.server.close(r)))));
    const events: string[] = [];
    const port = await freePort();
    const balancer = await startBalancer({ host: '127.0.0.1', port, backends: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), deadMs: 60_000, onEvent: (m) => events.push(m) });
    t.after(() => balancer.close());
    // A new connection per request (Connection: close), so each is balanced.
    const ask = async () => (await (await fetch(`${balancer.url}/`, { headers: { connection: 'close' } })).text());
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) answers.push(await ask());
    assert.deepEqual(answers, ['n1', 'n2', 'n3', 'n1', 'n2', 'n3']);
    assert.deepEqual(balancer.connections(), [2, 2, 2]);

    // A large body, read slowly at first, arrives intact (the pipes pause the node while the client lags).
    const res = await fetch(`${balancer.url}/big`, { headers: { connection: 'close' } });
    const reader = res.body!.getReader();
    const hash = createHash('sha256');
    let bytes = 0;
    for (let chunks = 0; ; chunks++) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      bytes += value.length;
      if (chunks < 20) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(bytes, big.length);
    assert.equal(hash.digest('hex'), createHash('sha256').update(big).digest('hex'));

    // n2 goes down: every request is still answered, by n1 and n3, and n2 is left out after one refusal.
    await new Promise((r) => nodes[1]!.server.close(r));
    nodes[1]!.server.closeAllConnections();
    const after: string[] = [];
    for (let i = 0; i < 6; i++) after.push(await ask());
    assert.ok(!after.includes('n2'), after.join(','));
    assert.deepEqual([...new Set(after)].sort(), ['n1', 'n3']);
    assert.equal(events.filter((e) => e.includes(`127.0.0.1:${nodes[1]!.port} skipped: ECONNREFUSED`)).length, 1, events.join('\n'));

    // Every node down: the client's connection is closed, and the balancer keeps running.
    await Promise.all([0, 2].map((i) => new Promise((r) => { nodes[i]!.server.close(r); nodes[i]!.server.closeAllConnections(); })));
    await assert.rejects(ask());
    assert.ok(events.some((e) => /no node of 3 accepted a connection/.test(e)), events.join('\n'));
  });
});
