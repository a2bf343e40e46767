/**
 * A programmable fake upstream registry for the cache node's fault tests: the testkit's fake registry
 * (`@cascade/testkit`: a real node:http server on 127.0.0.1:0 that answers `/v2/`, blob and manifest GET/HEAD and
 * `tags/list`, and records every request: method, path, headers, Range) with a hook that answers blob GET/HEAD
 * (`/v2/<name>/blobs/<digest>`) and manifest GET/HEAD (`/v2/<name>/manifests/<tag or digest>`) the way the
 * scenario set for that digest says. It can stand in for a cache node's
 * origin, a mirror's remote and the server role's origin (it needs no credentials: `/v2/` answers 200).
 *
 * Scenarios (for a blob, or for a manifest: by tag and by digest alike):
 * - `ok`: 200 with Content-Length and Docker-Content-Digest, the right bytes (honours a single `Range`);
 * - `die`: headers with the full Content-Length (whatever Range was asked for), `afterBytes` bytes, then the
 *   socket is destroyed (0, 1, 100, the middle, all but the last byte...), `closeDelayMs` (default 50) after
 *   the bytes left (0: at once, before the client has had a chance to start reading the body);
 * - `close-before-headers`: the socket is destroyed as soon as the request arrived, nothing sent;
 * - `wrong-bytes`: the right length, wrong content (the last byte flipped, so the prefix looks right);
 * - `flip`: the right length, one byte flipped at `at` (default: the middle);
 * - `extra-bytes`: the right bytes followed by `extra` more, with a Content-Length that counts them;
 * - `wrong-length`: the real body with a Content-Length off by `delta` (< 0: shorter than the body, the rest of
 *   the body follows on the connection, which stays open; > 0: longer, the connection is closed 100 ms after
 *   the body);
 * - `slow`: the right bytes, `chunkBytes` every `intervalMs` (a trickle);
 * - `status`: any status with an OCI error body and extra headers (404, 401 + WWW-Authenticate, 500,
 *   429 + Retry-After...);
 * - `hang`: reads the request and never answers (a stall before the headers);
 * - `stall`: headers (the full Content-Length) and `afterBytes` (default 0) body bytes, then nothing, forever;
 * - `redirect`: 307 to the same URL (`self`, an endless loop), to a path that does not exist (`missing`), or
 *   back and forth between two redirecting paths (`loop`);
 * - `huge-header`: a 200 whose headers hold one value of `bytes` (default 100 KiB);
 * - `malformed-header`: a 200 with a header line that is not a header (no colon), then the body.
 *
 * Every scenario may say `times` (only the first `times` requests of its digest get the fault, later ones are
 * `ok`) and `only` (the fault applies to that method; the other one is answered `ok`). Without `only`, HEAD
 * requests get the header-level faults (status, hang, close-before-headers, redirects, headers, a wrong
 * Content-Length) and the right headers for the body-level ones.
 *
 * Connections held by `hang` and `stall` are destroyed when the digest's scenario changes (so clearing a
 * fault also ends the stalls it caused, as a real upstream's timeout would) and by `stop()`.
 * Every other path answers 404 with an OCI error.
 */
import type { ServerResponse } from 'node:http';
import { contentHeaders, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, startFakeRegistry, type Content, type Exchange, type FakeRequest } from '@cascade/testkit';

/** What a fault scenario may add: how many requests get it, and for which method. */
interface Limits {
  /** Only the first `times` requests (of the affected method) get the fault; later ones are `ok`. */
  readonly times?: number;
  /** The fault applies to this method only; the other method is answered `ok`. */
  readonly only?: 'GET' | 'HEAD';
}

export type Scenario = Limits &
  (
    | { readonly kind: 'ok' }
    | { readonly kind: 'die'; readonly afterBytes: number; readonly closeDelayMs?: number }
    | { readonly kind: 'close-before-headers' }
    | { readonly kind: 'wrong-bytes' }
    | { readonly kind: 'flip'; readonly at?: number }
    | { readonly kind: 'extra-bytes'; readonly extra?: number }
    | { readonly kind: 'wrong-length'; readonly delta: number }
    | { readonly kind: 'slow'; readonly chunkBytes: number; readonly intervalMs: number }
    | { readonly kind: 'status'; readonly status: number; readonly headers?: Record<string, string>; readonly code?: string }
    | { readonly kind: 'hang' }
    | { readonly kind: 'stall'; readonly afterBytes?: number }
    | { readonly kind: 'redirect'; readonly to: 'self' | 'missing' | 'loop' }
    | { readonly kind: 'huge-header'; readonly bytes?: number }
    | { readonly kind: 'malformed-header' }
  );

/**
 * One request the fake upstream received (the testkit's record). `kind` is `ping`, `blob`, `manifest`, `tags`,
 * `redirect` (a redirect scenario's target) or `other`; `digest` is set for blob and manifest requests (a tag
 * resolved to its manifest's digest) and their redirects.
 */
export type UpstreamRequest = FakeRequest;

/** An image the fake upstream serves: a manifest (tagged) pointing at a config and layer blobs it serves too. */
export interface FakeImage {
  readonly name: string;
  readonly tag: string;
  /** The manifest's digest. */
  readonly digest: string;
  readonly manifest: Buffer;
  readonly mediaType: string;
  readonly config: string;
  readonly layers: string[];
}

export interface FaultUpstream {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly host: string;
  readonly requests: UpstreamRequest[];
  /** Serves `bytes` (under any repository name) with `scenario` (default ok); returns the digest. */
  addBlob(bytes: Buffer, scenario?: Scenario): string;
  /**
   * Serves an OCI image manifest for `name:tag` (and by digest, under any name) whose config and layers
   * (`layers`) are served as blobs (`ok`); the manifest gets `scenario` (default ok).
   */
  addImage(name: string, tag: string, layers: Buffer[], scenario?: Scenario): FakeImage;
  /** Changes what a digest's next requests get; ends the stalls of its earlier scenario. */
  setScenario(digest: string, scenario: Scenario): void;
  /** Requests for one digest (optionally one method). */
  count(digest: string, method?: string): number;
  /** Answers for `/v2/` (default 200 `{}`). */
  setPing(status: number, headers?: Record<string, string>): void;
  /** Closes the server and destroys every open connection. */
  stop(): Promise<void>;
}

/** The targets of `redirect` scenarios: `/_redirect/<digest>/<step>`. */
const REDIRECT_PATH = /^\/_redirect\/(sha256:[0-9a-f]{64})\/(\w+)$/;

/** Faults that a HEAD gets as well (without `only`): they happen before or in the headers. */
const HEADER_FAULTS = new Set<Scenario['kind']>(['status', 'hang', 'close-before-headers', 'redirect', 'huge-header', 'malformed-header', 'wrong-length']);

interface Fault {
  scenario: Scenario;
  /** Requests that got the fault so far (for `times`). */
  faulted: number;
  /** Responses held open by `hang` and `stall`. */
  held: Set<ServerResponse>;
}

/** Writes a raw HTTP/1.1 response head (and optionally a body) on the socket, bypassing node:http. */
function rawHead(status: string, headers: Array<[string, string | number]>, extraLines: string[] = []): string {
  return [`HTTP/1.1 ${status}`, ...headers.map(([k, v]) => `${k}: ${v}`), ...extraLines, '', ''].join('\r\n');
}

/** Starts a fake upstream on a free port of 127.0.0.1. */
export async function startFaultUpstream(): Promise<FaultUpstream> {
  const faults = new Map<string, Fault>();

  /** The scenario this request gets, counting it against `times`. */
  function effective(entry: Fault, method: string): Scenario {
    const s = entry.scenario;
    if (s.kind === 'ok') return s;
    if (s.only !== undefined && s.only !== method) return { kind: 'ok' };
    if (s.only === undefined && method === 'HEAD' && !HEADER_FAULTS.has(s.kind)) {
      // the body-level faults answer a HEAD with the right headers (they count against `times` on GETs only)
      return s.kind === 'extra-bytes' ? s : { kind: 'ok' };
    }
    if (s.times !== undefined) {
      if (entry.faulted >= s.times) return { kind: 'ok' };
      entry.faulted += 1;
    }
    return s;
  }

  function answer(x: Exchange, content: Content, entry: Fault, scenario: Scenario): void {
    const { req, res, head } = x;
    const { bytes, digest } = content;
    const socket = req.socket;
    const rawBase = (): Array<[string, string | number]> => Object.entries(contentHeaders(content)).map(([k, v]) => [k, String(v)]);
    const hold = () => {
      entry.held.add(res);
      res.once('close', () => entry.held.delete(res));
    };
    switch (scenario.kind) {
      case 'hang':
        hold();
        return;
      case 'close-before-headers':
        socket.destroy();
        return;
      case 'status': {
        const code = scenario.code ?? (scenario.status === 404 ? (content.mediaType ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN') : scenario.status === 401 ? 'UNAUTHORIZED' : scenario.status === 429 ? 'TOOMANYREQUESTS' : 'UNKNOWN');
        x.fail(scenario.status, code, `fault upstream: ${scenario.status}`, scenario.headers ?? {});
        return;
      }
      case 'redirect': {
        const path = x.record.path;
        let location: string;
        if (scenario.to === 'self') location = `${fake.url}${path}`;
        else if (scenario.to === 'missing') location = `${fake.url}/_missing/${digest}`;
        else location = `${fake.url}/_redirect/${digest}/${path.endsWith('/a') ? 'b' : 'a'}`;
        res.writeHead(307, { location, 'content-length': 0, 'docker-distribution-api-version': 'registry/2.0' });
        res.end();
        return;
      }
      case 'huge-header':
        socket.write(rawHead('200 OK', [...rawBase(), ['content-length', bytes.length], ['x-huge', 'h'.repeat(scenario.bytes ?? 100 * 1024)]]));
        if (head) socket.end();
        else socket.end(bytes);
        return;
      case 'malformed-header':
        socket.write(rawHead('200 OK', [...rawBase(), ['content-length', bytes.length]], ['this line is not a header']));
        if (head) socket.end();
        else socket.end(bytes);
        return;
      case 'wrong-length': {
        socket.write(rawHead('200 OK', [...rawBase(), ['content-length', Math.max(0, bytes.length + scenario.delta)]]));
        if (head) {
          socket.end();
          return;
        }
        socket.write(bytes);
        // longer than the body: the client waits for the rest, then the connection closes; shorter: the
        // rest of the body is left on the (kept-alive) connection for the next response to trip on
        if (scenario.delta > 0) void fake.sleep(100).then(() => socket.destroy());
        return;
      }
      case 'ok':
        void x.serve();
        return;
      case 'extra-bytes':
        void x.serve({ bytes: Buffer.concat([bytes, Buffer.alloc(scenario.extra ?? 16, 0x41)]), ignoreRange: true });
        return;
      case 'wrong-bytes':
      case 'flip': {
        const wrong = Buffer.from(bytes);
        const at = scenario.kind === 'flip' ? (scenario.at ?? Math.floor(bytes.length / 2)) : bytes.length - 1;
        wrong[at] = (wrong[at] ?? 0) ^ 0xff;
        void x.serve({ bytes: wrong, ignoreRange: true });
        return;
      }
      case 'die':
      case 'stall': {
        res.writeHead(200, { ...contentHeaders(content), 'content-length': bytes.length });
        if (head) {
          res.end();
          return;
        }
        res.flushHeaders();
        const n = scenario.afterBytes ?? 0;
        const after = () => {
          if (scenario.kind === 'stall') {
            hold();
            return;
          }
          // cut the connection without finishing the body, once the bytes have left (after a moment by default)
          const delay = scenario.closeDelayMs ?? 50;
          if (delay === 0) socket.destroy();
          else void fake.sleep(delay).then(() => socket.destroy());
        };
        // the callback runs once the headers (and bytes) were handed to the socket
        if (n > 0) res.write(bytes.subarray(0, n), after);
        else socket.write('', after);
        return;
      }
      case 'slow':
        void x.serve({ ignoreRange: true, chunkBytes: scenario.chunkBytes, chunkDelayMs: scenario.intervalMs });
        return;
    }
  }

  const fake = await startFakeRegistry({
    maxHeaderSize: 64 * 1024,
    classify(path) {
      const redirect = REDIRECT_PATH.exec(path);
      if (redirect) return { kind: 'redirect', digest: redirect[1]! };
      if (path.startsWith('/_missing/')) return { kind: 'other', digest: path.slice('/_missing/'.length) };
      return undefined;
    },
    hook(x) {
      const { record, req } = x;
      req.resume();
      const entry = record.digest !== undefined ? faults.get(record.digest) : undefined;
      const content = record.digest !== undefined ? fake.content(record.digest) : undefined;
      if (!['blob', 'manifest', 'redirect'].includes(record.kind) || !(req.method === 'GET' || x.head) || !entry || !content) return false;
      // a redirect target keeps redirecting while the fault is set; once cleared it serves the content
      answer(x, content, entry, effective(entry, req.method ?? 'GET'));
      return true;
    },
  });

  const endHeld = (entry: Fault) => {
    for (const r of entry.held) r.socket?.destroy();
    entry.held.clear();
  };
  const track = (digest: string, scenario: Scenario): string => {
    const existing = faults.get(digest);
    if (existing) endHeld(existing);
    faults.set(digest, { scenario, faulted: 0, held: new Set() });
    return digest;
  };

  return {
    url: fake.url,
    host: fake.host,
    requests: fake.requests,
    addBlob(bytes, scenario = { kind: 'ok' }) {
      return track(fake.addBlob(bytes), scenario);
    },
    addImage(name, tag, layers, scenario = { kind: 'ok' }) {
      const layerDigests = layers.map((l) => track(fake.addBlob(l), { kind: 'ok' }));
      const config = Buffer.from(
        JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layerDigests }, history: [{ created_by: `fault upstream ${name}:${tag}` }] }),
      );
      const configDigest = track(fake.addBlob(config), { kind: 'ok' });
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
          layers: layers.map((l, i) => ({ mediaType: OCI_LAYER, digest: layerDigests[i], size: l.length })),
        }),
      );
      const digest = track(fake.addManifest(manifest, { name, tag, mediaType: OCI_MANIFEST }), scenario);
      return { name, tag, digest, manifest, mediaType: OCI_MANIFEST, config: configDigest, layers: layerDigests };
    },
    setScenario(digest, scenario) {
      const entry = faults.get(digest);
      if (!entry) throw new Error(`fault upstream: unknown digest ${digest}`);
      endHeld(entry);
      entry.scenario = scenario;
      entry.faulted = 0;
    },
    count: (digest, method) => fake.count(digest, method),
    setPing(status, headers = {}) {
      fake.ping = { status, headers };
    },
    stop: () => fake.stop(),
  };
}

/** A TCP listener that resets every connection at once and counts them (a dead upstream you can observe). */
export interface ResettingPeer {
  readonly port: number;
  /** Times at which connections arrived. */
  readonly connections: number[];
  stop(): Promise<void>;
}

/** Listens on 127.0.0.1:`port` (0 for any) and destroys every connection as soon as it is accepted. */
export async function startResettingPeer(port = 0): Promise<ResettingPeer> {
  const { createServer: createNetServer } = await import('node:net');
  const connections: number[] = [];
  const server = createNetServer((socket) => {
    connections.push(Date.now());
    socket.on('error', () => undefined);
    socket.resetAndDestroy();
  });
  await new Promise<void>((res, rej) => server.once('error', rej).listen(port, '127.0.0.1', () => res()));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('resetting peer: no address');
  return {
    port: address.port,
    connections,
    stop: () => new Promise<void>((res) => server.close(() => res())),
  };
}
