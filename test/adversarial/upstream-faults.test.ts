/**
 * Adversarial upstream faults, black box: the programmable fake upstream (test/lib/fault-upstream.ts) under
 * four topologies, each started once and reused for every fault with a distinct blob (or image) per case:
 *
 *   cache   client -> cache node -> fake upstream
 *   chain   client -> cache-b -> cache-a -> fake upstream
 *   mirror  client -> mirror (proxy.remotes: the fake upstream, default) -> fake upstream
 *   server  client -> `cascade server` (no cache registered: it streams blobs from its origin) -> fake upstream
 *
 * Each case uses its own blob (or image) in its own repository; a node that dies in a case fails that case and
 * is restarted on its storage for the next ones. For the server, the faults that also hit its authorizing HEAD
 * run once more on the GET only, so that they reach its streaming path.
 *
 * For every fault x topology (a data-driven table), the pass criteria:
 * - every node stays up (no exit, no guard trip) and answers `GET /v2/` afterwards;
 * - no wrong byte is stored: every blob data file in every storage folder hashes to its name;
 * - the client gets an error status or a cut transfer, never a clean 200 whose bytes do not hash to the
 *   digest (a clean 200 with the right bytes is fine: a resumed fill, a trickle), never a 500 of the node's
 *   own, and no response that hangs past its timeout (except where the fault is a stall, which the client
 *   gives up on);
 * - upstream GETs stay bounded: each hop sends at most (1 + 3 resumes) GETs of the content per GET it
 *   received (times 1 + 10 for the redirect faults, got's redirect limit);
 * - after a stall, the server closes its upstream requests within 5 s once its client has gone (a cache node
 *   may go on filling for `filltimeout`; clearing the fault ends the stall);
 * - once the fault is cleared, the same content is served correctly (and stored by every caching hop).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it, type TestContext } from 'node:test';
import { assertStoreIntegrity, cascadeHop, fetchBlob, hasBlobData, randomBlob, settle, startCacheNode, waitFor, type BlobResponse, type Hop } from '../lib/cache.js';
import { guardTrips, startCascade, testScope } from '../lib/cascade.js';
import { startFaultUpstream, type FaultUpstream, type Scenario } from '../lib/fault-upstream.js';
import { startServer } from '../lib/stack.js';

const KiB = 1024;
const NAME = 'team/app';
const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json';
/** A fill's GETs per GET received: the first one and the documented 3 resumes (docs/cache.md). */
const GETS_PER_REQUEST = 1 + 3;
/** got follows at most 10 redirects: a redirect fault costs up to 11 requests per attempt. */
const REDIRECT_FACTOR = 1 + 10;
/** How long the client waits on a stalled transfer before it gives up. */
const STALL_CLIENT_MS = 2000;
/** How long the client waits on any other fault: a response still going after this is a hang. */
const CLIENT_MS = 20_000;

type Target = 'blob' | 'manifest';

interface Fault {
  readonly id: string;
  readonly title: string;
  readonly scenario: (size: number) => Scenario;
  /** Blob size (manifests are what they are). */
  readonly size: number;
  readonly targets: readonly Target[];
  /** The fault is a stall: the client gives up after STALL_CLIENT_MS. */
  readonly stall?: boolean;
  readonly redirect?: boolean;
}

const BOTH: readonly Target[] = ['blob', 'manifest'];
const BLOB: readonly Target[] = ['blob'];

const FAULTS: readonly Fault[] = [
  { id: 'die-0', title: 'headers (full Content-Length), then closes at once after 0 body bytes', scenario: () => ({ kind: 'die', afterBytes: 0, closeDelayMs: 0 }), size: 256 * KiB, targets: BOTH },
  { id: 'die-1', title: 'closes after 1 body byte', scenario: () => ({ kind: 'die', afterBytes: 1, closeDelayMs: 0 }), size: 256 * KiB, targets: BLOB },
  { id: 'die-100', title: 'closes after 100 body bytes', scenario: () => ({ kind: 'die', afterBytes: 100, closeDelayMs: 0 }), size: 256 * KiB, targets: BOTH },
  { id: 'die-mid', title: 'closes mid-body', scenario: (n) => ({ kind: 'die', afterBytes: Math.floor(n / 2), closeDelayMs: 0 }), size: 1024 * KiB, targets: BOTH },
  { id: 'die-last', title: 'closes before the last byte', scenario: (n) => ({ kind: 'die', afterBytes: n - 1, closeDelayMs: 0 }), size: 512 * KiB, targets: BOTH },
  { id: 'die-once', title: 'closes mid-body once, then answers (a resume succeeds)', scenario: (n) => ({ kind: 'die', afterBytes: Math.floor(n / 3), times: 1 }), size: 512 * KiB, targets: BLOB },
  // Bodies bigger than a fill's receive ring (4 MiB): a file-backed fill hands them to the native pump, whose
  // threads meet the fault (the smaller ones are often read whole before the hand-over).
  { id: 'die-mid-big', title: 'closes mid-body of an 8 MiB blob', scenario: (n) => ({ kind: 'die', afterBytes: Math.floor(n / 2), closeDelayMs: 0 }), size: 8192 * KiB, targets: BLOB },
  { id: 'flip-middle-big', title: 'one byte flipped in the middle of an 8 MiB blob', scenario: () => ({ kind: 'flip' }), size: 8192 * KiB, targets: BLOB },
  { id: 'long-length-big', title: 'Content-Length 1000 bytes longer than an 8 MiB body', scenario: () => ({ kind: 'wrong-length', delta: 1000 }), size: 8192 * KiB, targets: BLOB },
  { id: 'stall-mid-body-big', title: 'stalls forever in the middle of an 8 MiB body', scenario: (n) => ({ kind: 'stall', afterBytes: Math.floor(n / 2) }), size: 8192 * KiB, targets: BLOB, stall: true },
  { id: 'close-before-headers', title: 'closes the connection before any header', scenario: () => ({ kind: 'close-before-headers' }), size: 256 * KiB, targets: BOTH },
  { id: 'short-length', title: 'Content-Length shorter than the body (by 1000 bytes, or a quarter of a manifest)', scenario: (n) => ({ kind: 'wrong-length', delta: -Math.min(1000, Math.floor(n / 4)) }), size: 256 * KiB, targets: BOTH },
  { id: 'long-length', title: 'Content-Length 1000 bytes longer than the body', scenario: () => ({ kind: 'wrong-length', delta: 1000 }), size: 256 * KiB, targets: BOTH },
  { id: 'extra-bytes', title: '16 extra bytes counted in Content-Length', scenario: () => ({ kind: 'extra-bytes', extra: 16 }), size: 256 * KiB, targets: BLOB },
  { id: 'flip-middle', title: 'one byte flipped in the middle', scenario: () => ({ kind: 'flip' }), size: 512 * KiB, targets: BOTH },
  { id: 'flip-last', title: 'the last byte flipped', scenario: () => ({ kind: 'wrong-bytes' }), size: 256 * KiB, targets: BLOB },
  { id: 'trickle', title: 'trickles (16 KiB every 40 ms)', scenario: () => ({ kind: 'slow', chunkBytes: 16 * KiB, intervalMs: 40 }), size: 256 * KiB, targets: BOTH },
  { id: 'stall-after-headers', title: 'stalls forever after the headers', scenario: () => ({ kind: 'stall' }), size: 256 * KiB, targets: BOTH, stall: true },
  { id: 'stall-mid-body', title: 'stalls forever mid-body', scenario: (n) => ({ kind: 'stall', afterBytes: Math.floor(n / 2) }), size: 256 * KiB, targets: BLOB, stall: true },
  { id: 'stall-before-headers', title: 'stalls forever before the headers', scenario: () => ({ kind: 'hang' }), size: 256 * KiB, targets: BOTH, stall: true },
  { id: '500', title: 'answers 500', scenario: () => ({ kind: 'status', status: 500 }), size: 256 * KiB, targets: BOTH },
  { id: '429', title: 'answers 429 with Retry-After', scenario: () => ({ kind: 'status', status: 429, headers: { 'retry-after': '1' } }), size: 256 * KiB, targets: BOTH },
  { id: 'redirect-self', title: 'redirects (307) to itself', scenario: () => ({ kind: 'redirect', to: 'self' }), size: 256 * KiB, targets: BOTH, redirect: true },
  { id: 'redirect-missing', title: 'redirects (307) to a missing path', scenario: () => ({ kind: 'redirect', to: 'missing' }), size: 256 * KiB, targets: BOTH, redirect: true },
  { id: 'redirect-loop', title: 'redirects in a loop (a -> b -> a)', scenario: () => ({ kind: 'redirect', to: 'loop' }), size: 256 * KiB, targets: BOTH, redirect: true },
  { id: 'huge-header', title: 'sends a 100 KiB response header', scenario: () => ({ kind: 'huge-header', bytes: 100 * KiB }), size: 256 * KiB, targets: BOTH },
  { id: 'malformed-header', title: 'sends a malformed header line', scenario: () => ({ kind: 'malformed-header' }), size: 256 * KiB, targets: BOTH },
];

/** Faults whose HEAD requests fail too (without `only`); the server authorizes a blob GET with a HEAD. */
const HEAD_FAULTS = new Set(['close-before-headers', 'short-length', 'long-length', 'stall-before-headers', '500', '429', 'redirect-self', 'redirect-missing', 'redirect-loop', 'huge-header', 'malformed-header']);

/**
 * The cases of a topology: every fault, and for the server the header-level faults once more on the GET
 * only (its authorizing HEAD answered), so that they reach its streaming path too.
 */
function casesFor(topology: Topology): Fault[] {
  if (topology.id !== 'server') return [...FAULTS];
  const getOnly = FAULTS.filter((f) => HEAD_FAULTS.has(f.id)).map(
    (f): Fault => ({ ...f, id: `${f.id}-get-only`, title: `${f.title}, on the GET only`, targets: BLOB, scenario: (n) => ({ ...f.scenario(n), only: 'GET' }) }),
  );
  return [...FAULTS, ...getOnly];
}

/** One process of a topology, client-facing first. */
interface Node {
  readonly hop: Hop;
  readonly role: 'cache' | 'mirror' | 'server';
  /** Has a storage folder to check (caches and mirrors). */
  readonly stores: boolean;
}

interface Topology {
  readonly id: 'cache' | 'chain' | 'mirror' | 'server';
  readonly title: string;
  /** Starts every process of the topology (again, on the same storage, after a crash). */
  start(dir: string, up: FaultUpstream): Promise<Node[]>;
}

const TOPOLOGIES: readonly Topology[] = [
  {
    id: 'cache',
    title: 'client -> cache node -> fault upstream',
    async start(dir, up) {
      return [{ hop: await startCacheNode(dir, 'cache', { origin: up.url }), role: 'cache', stores: true }];
    },
  },
  {
    id: 'chain',
    title: 'client -> cache-b -> cache-a -> fault upstream',
    async start(dir, up) {
      const a = await startCacheNode(dir, 'cache-a', { origin: up.url });
      const b = await startCacheNode(dir, 'cache-b', { origin: a.url }).catch(async (err: unknown) => {
        await a.stop();
        throw err;
      });
      return [
        { hop: b, role: 'cache', stores: true },
        { hop: a, role: 'cache', stores: true },
      ];
    },
  },
  {
    id: 'mirror',
    title: 'client -> mirror (proxy remote) -> fault upstream',
    async start(dir, up) {
      const rootdirectory = join(dir, 'mirror', 'data');
      const proc = await startCascade(join(dir, 'mirror'), {
        storage: { filesystem: { rootdirectory }, delete: { enabled: true } },
        proxy: { remotes: [{ url: up.url, default: true }] },
      });
      return [{ hop: cascadeHop('mirror', proc, rootdirectory), role: 'mirror', stores: true }];
    },
  },
  {
    id: 'server',
    title: 'client -> cascade server (no cache: streams from its origin) -> fault upstream',
    async start(dir, up) {
      const proc = await startServer(join(dir, 'server'), { origin: up.url, password: 'unused', issuer: 'adversarial', healthInterval: '60s' });
      return [{ hop: cascadeHop('server', proc, join(dir, 'server')), role: 'server', stores: false }];
    },
  },
];

const alive = (n: Node): boolean => n.hop.proc !== undefined && n.hop.proc.child.exitCode === null && n.hop.proc.child.signalCode === null;

function describeResponse(res: BlobResponse): string {
  const body = res.size < 2048 ? ` ${res.body?.toString().slice(0, 400) ?? ''}` : '';
  return `${res.status} ${res.complete ? 'complete' : `cut (${res.error})`} ${res.size} bytes ${res.digest}${body}`;
}

/** The value of a Prometheus sample (summed over its series), or undefined. */
async function metric(url: string, name: string): Promise<number | undefined> {
  const res = await fetchBlob(`${url}/metrics`, { timeoutMs: 5000 });
  if (res.status !== 200 || !res.body) return undefined;
  let sum: number | undefined;
  for (const line of res.body.toString().split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** What one case asks for, and how to recognise it in access logs. */
interface Subject {
  readonly target: Target;
  /** The digest the client must receive (the blob's, or the manifest's). */
  readonly digest: string;
  /** The path the client GETs. */
  readonly path: string;
  /** Access-log paths that ask for this content (by digest, or a manifest by tag). */
  matches(path: string): boolean;
  readonly size: number;
}

function fetchSubject(base: string, s: Subject, timeoutMs: number): Promise<BlobResponse> {
  return fetchBlob(`${base}${s.path}`, { timeoutMs, keepBody: 4096, ...(s.target === 'manifest' ? { headers: { accept: MANIFEST_ACCEPT } } : {}) });
}

/** Problems with what the client got for a faulty request (empty: acceptable). */
function judge(res: BlobResponse, s: Subject, fault: Fault, node: Node): string[] {
  const problems: string[] = [];
  if (res.status === 200 && res.complete && res.digest !== s.digest) problems.push(`a clean 200 with wrong bytes (they hash to ${res.digest}, not ${s.digest})`);
  if (res.status === 500 && !(node.role === 'server' && fault.id.startsWith('500'))) problems.push('a 500 of the node itself (an internal error, not an upstream failure)');
  if (res.status >= 300 && res.status < 400 && !res.headers.location) problems.push(`a ${res.status} without Location`);
  if (!fault.stall && /timeout/.test(res.error ?? '')) problems.push(`the response hung for ${CLIENT_MS} ms`);
  return problems;
}

/** Every node is up and answers GET /v2/; no guard trip since `tripsBefore`. */
async function checkAlive(nodes: Node[], tripsBefore: number): Promise<string[]> {
  const problems: string[] = [];
  for (const n of nodes) {
    if (!alive(n)) {
      problems.push(`${n.hop.name} exited (code ${n.hop.proc?.child.exitCode}, signal ${n.hop.proc?.child.signalCode}):\n${n.hop.proc?.text.slice(-15).join('\n')}`);
      continue;
    }
    const ping = await fetchBlob(`${n.hop.url}/v2/`, { timeoutMs: 5000 });
    if (ping.status !== 200) problems.push(`${n.hop.name}: GET /v2/ -> ${describeResponse(ping)}`);
  }
  const trips = guardTrips.slice(tripsBefore);
  if (trips.length > 0) problems.push(`guard trips:\n${trips.join('\n')}`);
  return problems;
}

/** Waits until no fill is running on any caching node (background fills of a cleared fault end). */
async function quiesce(nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    if (!n.stores || !alive(n)) continue;
    await waitFor(`${n.hop.name}: no fill in flight`, async () => (await metric(n.hop.url, 'cascade_cache_fills_in_flight')) === 0, 15_000, 100);
  }
}

/** The GETs for the subject each node received (from its access log). */
function getsReceived(n: Node, s: Subject): number {
  return n.hop.requests().filter((r) => r.method === 'GET' && s.matches(r.path)).length;
}

describe('adversarial: upstream faults x topologies', () => {
  for (const topology of TOPOLOGIES) {
    it(`${topology.id}: ${topology.title}`, { timeout: 240_000 }, async (t: TestContext) => {
      const { dir, defer } = await testScope(t, `adv-faults-${topology.id}-`);
      const up = await startFaultUpstream();
      defer(() => up.stop());
      let nodes = await topology.start(dir, up);
      const stopAll = async () => {
        for (const n of nodes) await n.hop.stop().catch(() => undefined);
      };
      defer(() => stopAll());

      for (const fault of casesFor(topology)) {
        for (const target of fault.targets) {
          await t.test(`${target} ${fault.id}: upstream ${fault.title}`, { timeout: 60_000 }, async () => {
            // a node that died in an earlier case is restarted on its storage, so that one crash fails one case
            if (!nodes.every(alive)) {
              await stopAll();
              nodes = await topology.start(dir, up);
            }
            const tripsBefore = guardTrips.length;
            const entry = nodes[0]!;
            const seed = `${topology.id}-${target}-${fault.id}`;
            // one repository per case: no node may answer from what it learnt for another case (the server
            // remembers the origin's authorization of a repository for 5 s)
            const name = `${NAME}-${target}-${fault.id.replace(/[^a-z0-9]+/g, '-')}`;
            let subject: Subject;
            if (target === 'blob') {
              const bytes = randomBlob(seed, fault.size);
              const digest = up.addBlob(bytes, fault.scenario(bytes.length));
              subject = { target, digest, path: `/v2/${name}/blobs/${digest}`, matches: (p) => p.endsWith(`/blobs/${digest}`), size: bytes.length };
            } else {
              const tag = 'v1';
              const image = up.addImage(name, tag, [randomBlob(`${seed}-layer`, 2 * KiB)]);
              up.setScenario(image.digest, fault.scenario(image.manifest.length));
              subject = {
                target,
                digest: image.digest,
                path: `/v2/${name}/manifests/${tag}`,
                matches: (p) => p.endsWith(`/manifests/${tag}`) || p.endsWith(`/manifests/${image.digest}`),
                size: image.manifest.length,
              };
            }
            const problems: string[] = [];
            const diagnostics = () => nodes.map((n) => (alive(n) ? n.hop.diagnostics(15) : `${n.hop.name}: exited\n${n.hop.proc?.text.slice(-20).join('\n')}`)).join('\n');

            // 1. the faulty request
            const res = await fetchSubject(entry.hop.url, subject, fault.stall ? STALL_CLIENT_MS : CLIENT_MS);
            const gaveUpAt = Date.now();
            problems.push(...judge(res, subject, fault, entry).map((p) => `faulty request: ${p}: ${describeResponse(res)}`));
            await sleep(150);
            problems.push(...(await checkAlive(nodes, tripsBefore)).map((p) => `after the fault: ${p}`));
            for (const n of nodes) if (n.stores) await assertStoreIntegrity(n.hop.rootdirectory).catch((err: Error) => problems.push(`after the fault: ${err.message}`));

            // the server holds no fill of its own: its upstream requests end when its client has gone
            if (entry.role === 'server' && fault.stall) {
              const open = () => up.requests.filter((r) => r.digest === subject.digest && r.closedAt === undefined && r.at < gaveUpAt);
              await waitFor('the server to close its upstream requests once the client has gone', () => open().length === 0, 5000).catch(() =>
                problems.push(`the server still holds ${open().length} upstream request(s) (${open().map((r) => `${r.method} ${r.path}`).join(', ')}) 5 s after its client went away`),
              );
            }

            // 2. the fault is cleared: the same content is served correctly
            up.setScenario(subject.digest, { kind: 'ok' });
            if (nodes.every(alive)) {
              await quiesce(nodes).catch((err: Error) => problems.push(`after clearing the fault: ${err.message}`));
              const again = await fetchSubject(entry.hop.url, subject, CLIENT_MS);
              if (!(again.status === 200 && again.complete && again.digest === subject.digest)) problems.push(`after clearing the fault, not served correctly: ${describeResponse(again)}`);
              if (target === 'blob') {
                for (const n of nodes) {
                  if (!n.stores) continue;
                  await waitFor(`${n.hop.name} stored the blob`, () => hasBlobData(n.hop.rootdirectory, subject.digest), 5000).catch((err: Error) => problems.push(`after clearing the fault: ${err.message}`));
                }
              }
              for (const n of nodes) if (n.stores) await assertStoreIntegrity(n.hop.rootdirectory).catch((err: Error) => problems.push(`after clearing the fault: ${err.message}`));
              problems.push(...(await checkAlive(nodes, tripsBefore)).map((p) => `at the end: ${p}`));

              // 3. bounded upstream GETs, hop by hop (2 client GETs: the faulty one and the one after clearing)
              if (nodes.every(alive)) {
                // (the server's access log has no query field for settle's marker: a pause instead)
                for (const n of nodes) await (n.role === 'server' ? sleep(300) : settle(n.hop).catch(() => undefined));
                const factor = GETS_PER_REQUEST * (fault.redirect ? REDIRECT_FACTOR : 1);
                for (let i = 0; i < nodes.length; i++) {
                  const received = i === 0 ? 2 : getsReceived(nodes[i]!, subject);
                  const sent = i + 1 < nodes.length ? getsReceived(nodes[i + 1]!, subject) : up.count(subject.digest, 'GET');
                  if (sent > received * factor) problems.push(`${nodes[i]!.hop.name} sent ${sent} GETs upstream for ${received} it received (more than ${factor} each)`);
                }
                // End to end, the fake upstream sees what one hop would cost: a hop that failed a fill refuses
                // the resumes of the hop below, so retries do not multiply down a chain (4^n for n hops).
                const total = up.count(subject.digest, 'GET');
                if (total > 2 * factor) problems.push(`the upstream got ${total} GETs for 2 client GETs through ${nodes.length} hop(s) (more than ${2 * factor}: retries multiplied down the chain)`);
              }
            }
            if (problems.length > 0) assert.fail(`${topology.id} / ${target} / ${fault.id}:\n- ${problems.join('\n- ')}\n${diagnostics()}`);
          });
        }
      }
    });
  }
});

