/**
 * Notifications: the durable queue (order, bound, torn records, restart) on both drivers, and an endpoint's
 * sender against real HTTP servers (retries with `threshold` and `backoff`, 2xx/3xx acceptance, hostile
 * answers, headers, ignore rules).
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import {
  Endpoint,
  EventQueue,
  EVENTS_MEDIA_TYPE,
  FilesystemDriver,
  InMemoryDriver,
  NodeObservability,
  Notifier,
  parseConfig,
  postEnvelope,
  queueDirectory,
  type NotificationEvent,
  type StorageDriver,
} from '../src/index.js';

const silent = pino({ level: 'silent' });
const DIR = queueDirectory('test');

async function withFsDriver(fn: (driver: StorageDriver, root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'cascade-notify-'));
  try {
    await fn(new FilesystemDriver({ rootDirectory: root }), root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

const ev = (n: number) => JSON.stringify({ id: `e${n}`, n });
const ids = (lines: readonly string[]) => lines.map((l) => (JSON.parse(l) as { id: string }).id);

/** Reads and acknowledges everything pending, in batches of `max`. */
async function drain(q: EventQueue, max = 7): Promise<string[]> {
  const out: string[] = [];
  while (q.pending > 0) {
    const batch = await q.next(max);
    assert.ok(batch);
    out.push(...ids(batch.lines));
    await q.ack(batch);
  }
  return out;
}

describe('event queue', () => {
  for (const [name, make] of [['filesystem', withFsDriver], ['inmemory', (fn: (d: StorageDriver) => Promise<void>) => fn(new InMemoryDriver())]] as const) {
    test(`${name}: in order across segments, durable on append, kept across a restart`, async () => {
      await make(async (driver) => {
        const q = await EventQueue.open({ driver, dir: DIR, limit: 160 }); // segments of 10
        await Promise.all(Array.from({ length: 25 }, (_, i) => q.append(ev(i))));
        assert.equal(q.pending, 25);
        const first = await q.next(4);
        assert.deepEqual(ids(first?.lines ?? []), ['e0', 'e1', 'e2', 'e3']);
        await q.ack(first!);
        await q.close();
        const again = await EventQueue.open({ driver, dir: DIR, limit: 160 });
        assert.equal(again.pending, 21);
        await Promise.all([again.append(ev(25)), again.append(ev(26))]);
        assert.deepEqual(await drain(again), Array.from({ length: 23 }, (_, i) => `e${i + 4}`));
        await again.close();
        const third = await EventQueue.open({ driver, dir: DIR, limit: 160 });
        assert.equal(third.pending, 0);
        await third.close();
      });
    });
  }

  test('a wait for events ends when the sender is stopped or the queue closed while it was reading', async () => {
    await withFsDriver(async (driver) => {
      const q = await EventQueue.open({ driver, dir: DIR, limit: 100 });
      // Aborted while next() reads the (empty) queue, before it waits: it must not wait for ever.
      const stop = new AbortController();
      const aborted = q.next(1, stop.signal);
      stop.abort();
      const never = new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 2000).unref());
      assert.equal(await Promise.race([aborted, never]), undefined);
      // Closed while it reads.
      const closing = q.next(1);
      await q.close();
      assert.equal(await Promise.race([closing, never]), undefined);
    });
  });

  test('the bound drops the oldest segments, counted, and keeps the newest in order', async () => {
    await withFsDriver(async (driver) => {
      let dropped = 0;
      const q = await EventQueue.open({ driver, dir: DIR, limit: 32, listener: { dropped: (n) => (dropped += n) } }); // segments of 2
      for (let i = 0; i < 100; i++) await q.append(ev(i));
      assert.ok(q.pending <= 32 && q.pending >= 30, `pending ${q.pending}`);
      assert.equal(dropped + q.pending, 100);
      const kept = await drain(q);
      assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => `e${100 - kept.length + i}`));
      await q.close();
    });
  });

  test('a torn last record (a crash mid-write) is skipped and counted; start-up does not fail', async () => {
    await withFsDriver(async (driver, root) => {
      const q = await EventQueue.open({ driver, dir: DIR, limit: 1000 });
      for (let i = 0; i < 3; i++) await q.append(ev(i));
      await q.close();
      // The segment this run wrote: the first one.
      const segment = join(root, `${DIR}/000000000000001.log`);
      await appendFile(segment, '{"id":"e3","n":3}\n{"id":"torn", "n":');
      await appendFile(segment, '\n\u0000\u0000garbage\n');
      let unreadable = 0;
      const again = await EventQueue.open({ driver, dir: DIR, limit: 1000, listener: { dropped: (n, why) => { if (why === 'unreadable') unreadable += n; } } });
      assert.equal(unreadable, 2);
      assert.equal(again.pending, 4);
      await again.append(ev(4));
      assert.deepEqual(await drain(again, 2), ['e0', 'e1', 'e2', 'e3', 'e4']);
      await again.close();
    });
  });

  test('a lost head file sends everything still on disk again (at-least-once), never less', async () => {
    await withFsDriver(async (driver, root) => {
      const q = await EventQueue.open({ driver, dir: DIR, limit: 1000 });
      for (let i = 0; i < 5; i++) await q.append(ev(i));
      const b = await q.next(2);
      await q.ack(b!);
      await q.close();
      await unlink(join(root, `${DIR}/head`));
      const again = await EventQueue.open({ driver, dir: DIR, limit: 1000 });
      assert.deepEqual(await drain(again), ['e0', 'e1', 'e2', 'e3', 'e4']);
      await again.close();
    });
  });
});

/** A real HTTP listener whose answers the test decides. */
async function listener(answer: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<{ url: string; server: Server; received: Array<{ at: number; body: string; headers: IncomingMessage['headers'] }> }> {
  const received: Array<{ at: number; body: string; headers: IncomingMessage['headers'] }> = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      received.push({ at: Date.now(), body, headers: req.headers });
      answer(req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?token=x`, server, received };
}

function endpointConfig(url: string, extra: string): ReturnType<typeof parseConfig>['config'] {
  return parseConfig(`version: 0.1\nstorage:\n  inmemory:\nnotifications:\n  endpoints:\n    - name: test\n      url: ${url}\n${extra}`, 'config.yml', {}).config;
}

const sampleEvent = (action: NotificationEvent['action'], mediaType?: string): NotificationEvent => ({
  id: `id-${Math.random()}`,
  timestamp: new Date().toISOString(),
  action,
  target: { ...(mediaType ? { mediaType } : {}), digest: 'sha256:00', repository: 'r' },
  request: { id: 'r1', method: 'GET', useragent: 'ua' },
  actor: {},
  source: { addr: 'h:1', instanceID: 'i' },
});

describe('endpoint sender', () => {
  test('retries at once until threshold failures, then once per backoff; keeps order; sends the headers', async (t) => {
    let fail = 4;
    const l = await listener((_req, res) => {
      res.statusCode = fail-- > 0 ? 503 : 200;
      res.end();
    });
    t.after(() => l.server.close());
    const config = endpointConfig(l.url, '      threshold: 2\n      backoff: 300ms\n      headers:\n        Authorization: [Bearer s3cret]\n        X-Multi: [a, b]\n      batchsize: 3\n');
    const observability = new NodeObservability('test');
    const notifier = await Notifier.start({ config, driver: new InMemoryDriver(), logger: silent, observability });
    assert.ok(notifier);
    const events = Array.from({ length: 5 }, () => sampleEvent('push'));
    await Promise.all(events.map((e) => notifier.write(e)));
    // The listener records an envelope before it answers, and the sender counts it as sent once the answer is
    // in: both are awaited before the notifier closes (closing aborts a send still waiting for its answer).
    const deadline = Date.now() + 5000;
    const settled = async () => l.received.length >= 6 && /cascade_notifications_pending\{endpoint="test",role="test"\} 0\b/.test(await observability.registry.metrics());
    while (!(await settled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await notifier.close();
    assert.equal(l.received.length, 6, 'four failed attempts, then two envelopes');
    const gaps = l.received.slice(1).map((r, i) => r.at - (l.received[i]?.at ?? 0));
    assert.ok((gaps[0] ?? 1e9) < 150, `second attempt at once: ${gaps.join(',')}`);
    assert.ok((gaps[1] ?? 0) >= 280 && (gaps[2] ?? 0) >= 280 && (gaps[3] ?? 0) >= 280, `then once per backoff: ${gaps.join(',')}`);
    for (const r of l.received) {
      assert.equal(r.headers['content-type'], EVENTS_MEDIA_TYPE);
      assert.equal(r.headers.authorization, 'Bearer s3cret');
      assert.equal(r.headers['x-multi'], 'a, b');
    }
    const delivered = l.received.slice(4).flatMap((r) => (JSON.parse(r.body) as { events: NotificationEvent[] }).events.map((e) => e.id));
    assert.deepEqual(delivered, events.map((e) => e.id));
    const metrics = await observability.registry.metrics();
    assert.match(metrics, /cascade_notifications_events_total\{endpoint="test",result="sent",role="test"\} 5/);
    assert.match(metrics, /cascade_notifications_events_total\{endpoint="test",result="failed",role="test"\} 12/);
    assert.match(metrics, /cascade_notifications_pending\{endpoint="test",role="test"\} 0/);
  });

  test('ignore rules: media types (both keys) and actions', async () => {
    const config = endpointConfig('http://127.0.0.1:9/', '      ignoredmediatypes: [a/one]\n      ignore:\n        mediatypes: [a/two]\n        actions: [pull, mount]\n');
    const endpoint = new Endpoint({ config: config.notifications.endpoints[0]!, queue: await EventQueue.open({ driver: new InMemoryDriver(), dir: DIR, limit: 10 }), logger: silent, metrics: { queued() {}, sent() {}, failed() {} } });
    assert.equal(endpoint.ignores(sampleEvent('push', 'a/one')), true);
    assert.equal(endpoint.ignores(sampleEvent('push', 'a/two')), true);
    assert.equal(endpoint.ignores(sampleEvent('pull', 'a/three')), true);
    assert.equal(endpoint.ignores(sampleEvent('mount')), true);
    assert.equal(endpoint.ignores(sampleEvent('push', 'a/three')), false);
    assert.equal(endpoint.ignores(sampleEvent('delete')), false);
  });

  test('2xx and 3xx accept (redirects not followed); 4xx, 5xx, resets, silence and endless bodies fail within the timeout', async (t) => {
    const l = await listener((req, res) => {
      const mode = new URL(req.url ?? '/', 'http://x').searchParams.get('mode');
      if (mode === 'redirect') {
        res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere' });
        res.end();
      } else if (mode === 'reset') req.socket.destroy();
      else if (mode === 'silent') { /* never answers */ }
      else if (mode === 'endless') {
        res.writeHead(500);
        const chunk = Buffer.alloc(64 * 1024, 120);
        const pump = () => { while (res.write(chunk)) { /* fill */ } };
        res.on('drain', pump);
        pump();
      } else {
        res.statusCode = Number(mode);
        res.end('x'.repeat(1 << 20));
      }
    });
    t.after(() => { l.server.closeAllConnections(); l.server.close(); });
    const post = (mode: string) => postEnvelope(new URL(`${l.url}&mode=${mode}`), Buffer.from('{"events":[]}'), {}, 400);
    assert.deepEqual(await post('202'), { ok: true, status: 202 });
    assert.deepEqual(await post('redirect'), { ok: true, status: 302 });
    assert.deepEqual(await post('404'), { ok: false, status: 404 });
    assert.equal((await post('reset')).ok, false);
    const start = Date.now();
    const silent = await post('silent');
    assert.equal(silent.ok, false);
    assert.ok(Date.now() - start < 1500);
    assert.deepEqual(await post('endless'), { ok: false, status: 500 });
    assert.equal(l.received.length, 6, 'the redirect was not followed');
  });
});
