/**
 * Blob GETs read straight from the socket into reused buffers: the fill's fast path. Node's HTTP client
 * (and got on top of it) hands a body over in fresh 64 KiB buffers, each pushed through a stream; for a
 * 512 MiB blob that is ~8,000 allocations and stream hops, and on this project's measurements ~0.2–0.45
 * CPU-s more than reading the same bytes with `onread` into a buffer that is used again (docs/performance.md).
 * Here a connection reads into a small ring of 1 MiB blocks; the fill hashes each stretch where it landed,
 * writes it to disk from there (pwritev), and gives the bytes back once written, so a blob of any size
 * uses the same few MiB and the socket pauses whenever the disk is behind.
 *
 * Only the simple, common answer takes this path: a 200 or 206 with a Content-Length. Anything else —
 * a redirect (a registry on S3), a chunked body, an HTTP/1.0 peer without a length — is reported as
 * {@link DirectAnswer} `fallback`, and the pool sends the request again through its general client. Every
 * byte of the upstream's answer is checked here as Node's parser would: a header block of at most 64 KiB, a
 * status line and header lines of the HTTP/1.1 grammar, one Content-Length, no bytes past it.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { type ConnectionOptions, TLSSocket, connect as tlsConnect } from 'node:tls';
import { Readable } from 'node:stream';

/** A block of the receive ring. */
const BLOCK = 1 << 20;
/** A read gets at least this much room; a block with less left is closed and the next one started. */
const MIN_READ = 64 << 10;
/** Blocks a body may hold before the socket pauses (the bytes received and not yet written to disk). */
const MAX_BLOCKS = 4;
/** Largest header block accepted (status line and headers). */
const MAX_HEADER = 64 << 10;
/** Idle connections kept per host for the next fill. */
const MAX_IDLE = 8;
/** How long an idle connection is kept. */
const IDLE_KEEP_MS = 4000;

/**
 * Bytes of a body handed out in the receiver's own buffers: a chunk stays valid until the consumer has
 * released it (the bytes are counted in order), then its memory is used for later bytes.
 */
export interface ChunkSource {
  /** The next bytes received, or undefined at the end of the body. Rejects when the transfer failed. */
  next(): Promise<Buffer | undefined>;
  /** The consumer is done with the next `bytes` bytes (in the order received). */
  release(bytes: number): void;
  /** Stops the transfer (the connection is closed). */
  destroy(err?: Error): void;
  /**
   * Optional (a plain-TCP connection of the direct path): the connection itself for the rest of the body. Its
   * reading stops here at once; the bytes already received and not yet taken come in `queued` (they stay valid
   * until released, as chunks do). Until `done`, the connection is neither read nor closed here, and a
   * `destroy` (or the request's abort) calls `stop` instead. Undefined when the body cannot be handed over.
   */
  handOver?(stop: () => void): HandedBody | undefined;
}

/** The rest of a body, to be read from the connection's descriptor by someone else (the native pump). */
export interface HandedBody {
  /** The connection's descriptor (non-blocking). */
  readonly fd: number;
  /** Body bytes received and not yet taken, in order. */
  readonly queued: readonly Buffer[];
  /** Body bytes still to read from `fd`, after `queued`. */
  readonly remaining: number;
  /** The transfer fails after this long without a byte (the client's setting). */
  readonly idleTimeoutMs: number;
  /** The reader took `received` more bytes of the body and stopped, at its end or with `error`. */
  done(received: number, error?: Error): void;
}

/** What an upstream answered to a direct GET. */
export type DirectAnswer =
  | { readonly kind: 'body'; readonly status: number; readonly headers: Record<string, string | string[]>; readonly length: number; readonly chunks: ChunkSource }
  | { readonly kind: 'status'; readonly status: number; readonly headers: Record<string, string | string[]> }
  | { readonly kind: 'fallback'; readonly reason: string };

/** Options of {@link DirectClient}. */
export interface DirectClientOptions {
  /** PEM CA certificates for https upstreams (undefined: Node's defaults). */
  readonly ca?: readonly string[];
  readonly connectTimeoutMs: number;
  readonly responseTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/** What a connection's reads go to: the response being read, or nothing while it is idle. */
interface Reader {
  /** A buffer for the next read. */
  buffer(): Buffer;
  /** `n` bytes landed at the start of `buf`; false pauses the socket. */
  received(n: number, buf: Buffer): boolean;
}

interface Connection {
  readonly socket: Socket;
  reader: Reader | undefined;
}

/** Direct GETs to the upstream hosts of one pool, with keep-alive connections. */
export class DirectClient {
  private readonly idle = new Map<string, Connection[]>();

  constructor(private readonly options: DirectClientOptions) {}

  /**
   * Sends `GET path` with `headers` to `base` (`http://host:port` or `https://...`) and reads the answer's
   * head. A 200/206 with a Content-Length gives its body as a {@link ChunkSource}.
   * @throws Error when the connection fails, times out, is aborted, or the answer is malformed.
   */
  async get(base: string, path: string, headers: Readonly<Record<string, string>>, signal?: AbortSignal): Promise<DirectAnswer> {
    const url = new URL(base);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return { kind: 'fallback', reason: `scheme ${url.protocol}` };
    const request = requestHead(url, path, headers);
    const key = url.origin;
    const idle = this.takeIdle(key);
    if (idle) {
      try {
        return await new Response(idle, key, this, this.options, signal).start(request);
      } catch (err) {
        // A kept connection the peer closed as it was reused (its idle timeout raced this request): the
        // request never reached it, so it goes once more on a new connection. Any other failure stands.
        const { code, beforeAnswer } = err as { code?: string; beforeAnswer?: boolean };
        if ((code !== 'ECONNRESET' && code !== 'EPIPE') || !beforeAnswer || signal?.aborted) throw err;
      }
    }
    return new Response(await this.connect(url, signal), key, this, this.options, signal).start(request);
  }

  /** Closes every idle connection. */
  close(): void {
    for (const list of this.idle.values()) for (const c of list) c.socket.destroy();
    this.idle.clear();
  }

  /** @internal A connection whose answer was read to its end, for the next GET to the same host. */
  keep(key: string, conn: Connection): void {
    const list = this.idle.get(key) ?? [];
    if (list.length >= MAX_IDLE || conn.socket.destroyed) {
      conn.socket.destroy();
      return;
    }
    conn.reader = undefined;
    // Closed before the peer would close it: Node servers (a Cascade hop) drop idle connections after 5 s.
    conn.socket.setTimeout(Math.min(this.options.idleTimeoutMs, IDLE_KEEP_MS));
    list.push(conn);
    this.idle.set(key, list);
  }

  private takeIdle(key: string): Connection | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const conn = list.pop() as Connection;
      if (!conn.socket.destroyed) return conn;
    }
    return undefined;
  }

  private connect(url: URL, signal?: AbortSignal): Promise<Connection> {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const idleScratch = Buffer.allocUnsafe(MIN_READ);
    const conn: Connection = { socket: undefined as unknown as Socket, reader: undefined };
    const onread = {
      buffer: () => conn.reader?.buffer() ?? idleScratch,
      callback: (n: number, buf: Buffer) => {
        if (conn.reader) return conn.reader.received(n, buf);
        // An idle connection that receives anything is out of step with its peer: closed.
        conn.socket.destroy();
        return false;
      },
    };
    const socket =
      url.protocol === 'https:'
        ? tlsConnect({ host, port, servername: /^[\d.]+$|:/.test(host) ? undefined : host, onread, ...(this.options.ca ? { ca: [...this.options.ca] } : {}) } as unknown as ConnectionOptions)
        : netConnect({ host, port, onread });
    (conn as { socket: Socket }).socket = socket;
    socket.setNoDelay(true);
    // An idle connection's end or error only removes it; a reading response listens for itself.
    socket.on('error', () => undefined);
    socket.on('timeout', () => socket.destroy(Object.assign(new Error(`no data for ${this.options.idleTimeoutMs} ms`), { code: 'ETIMEDOUT' })));
    return new Promise((resolve, reject) => {
      const ready = url.protocol === 'https:' ? 'secureConnect' : 'connect';
      const timer = setTimeout(() => fail(Object.assign(new Error(`connect timeout after ${this.options.connectTimeoutMs} ms`), { code: 'ETIMEDOUT' })), this.options.connectTimeoutMs);
      const onAbort = () => fail(abortError(signal));
      const fail = (err: Error) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('error', fail);
        socket.off(ready, onReady);
      };
      const onReady = () => {
        cleanup();
        resolve(conn);
      };
      if (signal?.aborted) return fail(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('error', fail);
      socket.once(ready, onReady);
    });
  }
}

/** One GET on one connection: the head, then the body into the ring. */
class Response implements Reader, ChunkSource {
  /** Blocks holding bytes not yet released, oldest first; `start` is the body offset of `buf[0]`. */
  private blocks: { buf: Buffer; start: number }[] = [];
  private spare: Buffer[] = [];
  /** Bytes read into the ring (header bytes included until the head is parsed). */
  private read = 0;
  private released = 0;
  private head: { status: number; headers: Record<string, string | string[]>; length: number } | undefined;
  private bodyStart = 0;
  private readonly queue: Buffer[] = [];
  private waiter: { resolve: (b: Buffer | undefined) => void; reject: (e: Error) => void } | undefined;
  private error: Error | undefined;
  private ended = false;
  private paused = false;
  /** Set while the body is read by someone else (see {@link ChunkSource.handOver}). */
  private handed: { stop: () => void } | undefined;
  private settleHead!: (answer: DirectAnswer) => void;
  private failHead!: (err: Error) => void;
  private headTimer: NodeJS.Timeout | undefined;
  private readonly onAbort = () => this.fail(abortError(this.signal));
  private readonly onClose = () =>
    this.fail(
      Object.assign(new Error(this.head ? `upstream closed the connection after ${this.bodyRead} of ${this.head.length} body bytes` : 'upstream closed the connection before its answer'), {
        code: 'ECONNRESET',
        beforeAnswer: this.read === 0,
      }),
    );
  private readonly onError = (err: Error) => this.fail(Object.assign(err, { beforeAnswer: this.read === 0 }));

  constructor(
    private readonly conn: Connection,
    private readonly key: string,
    private readonly client: DirectClient,
    private readonly options: DirectClientOptions,
    private readonly signal: AbortSignal | undefined,
  ) {}

  private get bodyRead(): number {
    return this.read - this.bodyStart;
  }

  start(request: string): Promise<DirectAnswer> {
    const { socket } = this.conn;
    return new Promise<DirectAnswer>((resolve, reject) => {
      this.settleHead = resolve;
      this.failHead = reject;
      if (this.signal?.aborted) return this.fail(abortError(this.signal));
      this.signal?.addEventListener('abort', this.onAbort, { once: true });
      socket.on('close', this.onClose);
      socket.on('error', this.onError);
      this.headTimer = setTimeout(() => this.fail(Object.assign(new Error(`no answer within ${this.options.responseTimeoutMs} ms`), { code: 'ETIMEDOUT' })), this.options.responseTimeoutMs);
      socket.setTimeout(this.options.idleTimeoutMs);
      this.conn.reader = this;
      socket.write(request);
      socket.resume();
    });
  }

  buffer(): Buffer {
    const last = this.blocks.at(-1);
    if (last && last.start + last.buf.length - this.read >= MIN_READ) return (this.lent = last.buf.subarray(this.read - last.start));
    const buf = this.spare.pop() ?? Buffer.allocUnsafe(BLOCK);
    this.blocks.push({ buf, start: this.read });
    return (this.lent = buf);
  }

  /** The buffer the socket reads into next, when this response gave it. */
  private lent: Buffer | undefined;

  received(n: number, landed: Buffer): boolean {
    if (this.error || this.ended) return false;
    let buf = landed;
    if (buf !== this.lent) {
      // The socket chose its buffer before this response took the connection (its first read): the few
      // bytes are copied into the ring.
      buf = this.buffer();
      landed.copy(buf, 0, 0, n);
    }
    this.lent = undefined;
    this.read += n;
    if (!this.head) {
      this.parseHead();
      if (!this.head) return true;
      if (this.bodyStart >= this.read) return this.more();
      // The first body bytes arrived with the head.
      return this.deliver(this.blocks[0]!.buf.subarray(this.bodyStart - this.blocks[0]!.start, this.read - this.blocks[0]!.start));
    }
    return this.deliver(buf.subarray(0, n));
  }

  /** Queues body bytes for the consumer; false pauses the socket (the ring is full). */
  private deliver(chunk: Buffer): boolean {
    const head = this.head as NonNullable<Response['head']>;
    let bytes = chunk;
    if (this.bodyRead > head.length) {
      // Bytes past the announced length: kept up to the length, and the connection is not used again.
      const extra = this.bodyRead - head.length;
      bytes = chunk.subarray(0, chunk.length - extra);
      this.read -= extra;
      this.conn.socket.destroy();
    }
    if (bytes.length > 0) this.push(bytes);
    if (this.bodyRead === head.length) this.finish();
    return this.more();
  }

  /** True while the ring has room for more reads. */
  private more(): boolean {
    if (this.blocks.length < MAX_BLOCKS) return true;
    this.paused = true;
    return false;
  }

  private push(chunk: Buffer): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(chunk);
    } else this.queue.push(chunk);
  }

  /** Parses the head once it is all in the first block. */
  private parseHead(): void {
    const first = this.blocks[0]!;
    const seen = first.buf.subarray(0, this.read - first.start);
    const end = seen.indexOf('\r\n\r\n');
    if (end < 0) {
      if (seen.length > MAX_HEADER || this.read - first.start > MAX_HEADER) this.fail(new Error(`upstream's answer has a head over ${MAX_HEADER} bytes`));
      return;
    }
    if (end > MAX_HEADER) return this.fail(new Error(`upstream's answer has a head over ${MAX_HEADER} bytes`));
    let parsed: { status: number; headers: Record<string, string | string[]> };
    try {
      parsed = parseHead(seen.subarray(0, end).toString('latin1'));
    } catch (err) {
      return this.fail(err as Error);
    }
    if (parsed.status >= 100 && parsed.status < 200) {
      // An interim answer (100 Continue, 103 Early Hints): the real one follows.
      const rest = seen.subarray(end + 4);
      rest.copy(first.buf, 0);
      this.read = first.start + rest.length;
      if (rest.length > 0) this.parseHead();
      return;
    }
    clearTimeout(this.headTimer);
    const { status, headers } = parsed;
    const length = contentLength(headers);
    this.bodyStart = end + 4;
    this.released = this.bodyStart;
    const withBody = (status === 200 || status === 206) && headers['transfer-encoding'] === undefined;
    if (!withBody || length === undefined || length instanceof Error) {
      this.detach();
      this.conn.socket.destroy();
      if (length instanceof Error) return this.failHead(length);
      if (status === 200 || status === 206) return this.settleHead({ kind: 'fallback', reason: headers['transfer-encoding'] !== undefined ? 'a chunked body' : 'no Content-Length' });
      if (status >= 300 && status < 400) return this.settleHead({ kind: 'fallback', reason: `a redirect (${status})` });
      return this.settleHead({ kind: 'status', status, headers });
    }
    this.head = { status, headers, length };
    if (length === 0) this.finish();
    this.settleHead({ kind: 'body', status, headers, length, chunks: this });
  }

  next(): Promise<Buffer | undefined> {
    const chunk = this.queue.shift();
    if (chunk) return Promise.resolve(chunk);
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  release(bytes: number): void {
    this.released += bytes;
    // A block is free once every byte in it was released: its successor starts at or before `released`.
    while (this.blocks.length > 1 && this.blocks[1]!.start <= this.released) this.spare.push(this.blocks.shift()!.buf);
    if (this.paused && this.blocks.length < MAX_BLOCKS && !this.error && !this.ended && !this.handed) {
      this.paused = false;
      this.conn.socket.resume();
    }
  }

  destroy(err?: Error): void {
    this.fail(err ?? new Error('the transfer was stopped'));
  }

  handOver(stop: () => void): HandedBody | undefined {
    const { socket } = this.conn;
    const head = this.head;
    const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    if (!head || this.error || this.ended || this.handed || socket instanceof TLSSocket || socket.destroyed || typeof fd !== 'number' || fd < 0) return undefined;
    // From here on libuv reads nothing from the connection, and no timer of ours ends it.
    socket.pause();
    socket.setTimeout(0);
    this.handed = { stop };
    const queued = this.queue.splice(0);
    return {
      fd,
      queued,
      remaining: head.length - this.bodyRead,
      idleTimeoutMs: this.options.idleTimeoutMs,
      done: (received, error) => {
        if (!this.handed) return;
        this.handed = undefined;
        this.read += received;
        if (this.error) {
          // Destroyed meanwhile: the connection is closed now that nobody reads it.
          socket.destroy();
          return;
        }
        if (error) return this.fail(error);
        if (this.bodyRead !== head.length) return this.fail(new Error(`the body's reader stopped after ${this.bodyRead} of ${head.length} bytes`));
        this.finish();
        // A kept connection is read again: an idle one that receives anything, or closes, is dropped.
        if (!socket.destroyed) socket.resume();
      },
    };
  }

  /** The whole body arrived: the connection goes back to the client for the next GET. */
  private finish(): void {
    this.ended = true;
    this.detach();
    if (!this.conn.socket.destroyed && connectionReusable(this.head?.headers)) this.client.keep(this.key, this.conn);
    else this.conn.socket.destroy();
    if (this.waiter && this.queue.length === 0) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(undefined);
    }
  }

  private fail(err: Error): void {
    if (this.error || this.ended) return;
    this.error = err;
    clearTimeout(this.headTimer);
    this.detach();
    // A connection read by someone else is closed once they stopped (in their `done`).
    if (this.handed) this.handed.stop();
    else this.conn.socket.destroy();
    this.failHead?.(err);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }

  private detach(): void {
    const { socket } = this.conn;
    this.signal?.removeEventListener('abort', this.onAbort);
    socket.off('close', this.onClose);
    socket.off('error', this.onError);
    if (this.conn.reader === this) this.conn.reader = undefined;
  }
}

/** The request's head; header values with CR, LF or NUL are refused (they would split the request). */
function requestHead(url: URL, path: string, headers: Readonly<Record<string, string>>): string {
  const lines = [`GET ${path} HTTP/1.1`, `Host: ${url.host}`];
  const all: Record<string, string> = { 'user-agent': 'cascade-downstream', ...headers };
  for (const [name, value] of Object.entries(all)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) throw new Error(`invalid header ${JSON.stringify(name)} for an upstream request`);
    if (name.toLowerCase() === 'host') continue;
    lines.push(`${name}: ${value}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/;

/** Parses a status line and header lines (names lower-cased; repeated headers become arrays). */
export function parseHead(text: string): { status: number; headers: Record<string, string | string[]> } {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.[01] ([1-9]\d\d)(?: .*)?$/.exec(lines[0] ?? '');
  if (!status) throw new Error(`upstream sent a malformed status line: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers: Record<string, string | string[]> = {};
  for (const line of lines.slice(1)) {
    const m = HEADER_LINE.exec(line);
    if (!m || /[\0\r\n]/.test(m[2]!)) throw new Error(`upstream sent a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    const name = m[1]!.toLowerCase();
    const prev = headers[name];
    headers[name] = prev === undefined ? m[2]! : [...(Array.isArray(prev) ? prev : [prev]), m[2]!];
  }
  return { status: Number(status[1]), headers };
}

/** The one Content-Length of an answer; an Error for a malformed or conflicting one. */
function contentLength(headers: Record<string, string | string[]>): number | Error | undefined {
  const raw = headers['content-length'];
  if (raw === undefined) return undefined;
  const values = new Set((Array.isArray(raw) ? raw : [raw]).flatMap((v) => v.split(',')).map((v) => v.trim()));
  const [value] = values;
  if (values.size !== 1 || !/^\d{1,15}$/.test(value ?? '')) return new Error(`upstream sent an invalid Content-Length: ${JSON.stringify(String(raw).slice(0, 40))}`);
  return Number(value);
}

function connectionReusable(headers: Record<string, string | string[]> | undefined): boolean {
  const value = headers?.connection;
  return !(Array.isArray(value) ? value : [value ?? '']).some((v) => /(^|,)\s*close\s*(,|$)/i.test(v));
}

function abortError(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : Object.assign(new Error('request aborted'), { code: 'ABORT_ERR' });
}

/** A {@link ChunkSource} over a stream of fresh buffers (release has nothing to do). */
export function streamChunks(body: Readable): ChunkSource {
  const it = body[Symbol.asyncIterator]();
  return {
    next: async () => {
      const r = await it.next();
      return r.done ? undefined : (r.value as Buffer);
    },
    release: () => undefined,
    destroy: (err) => body.destroy(err),
  };
}

/** A stream of a {@link ChunkSource}'s bytes, copied out of the source's buffers (for readers of `body`). */
export function chunksStream(chunks: ChunkSource): Readable {
  return new Readable({
    read() {
      chunks.next().then(
        (chunk) => {
          if (!chunk) return this.push(null);
          const copy = Buffer.from(chunk);
          chunks.release(chunk.length);
          this.push(copy);
        },
        (err: Error) => this.destroy(err),
      );
    },
    destroy(err, callback) {
      chunks.destroy(err ?? undefined);
      callback(err);
    },
  });
}
