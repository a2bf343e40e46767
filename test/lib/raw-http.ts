/**
 * HTTP/1.1 over a raw TCP socket (node:net), for tests that must send what node:http and fetch refuse to
 * send: any method, any request target (absolute-form, asterisk-form, bytes that are not a URL), broken
 * framing (a Content-Length that lies, bad chunked encoding), huge or repeated headers.
 *
 * {@link RawConnection} keeps one socket alive across requests, reconnecting when the peer closed it, and
 * parses the answers with a small response parser: status line, headers, then a body delimited by
 * Content-Length, chunked encoding or the end of the connection (none for HEAD, 1xx, 204 and 304).
 * Interim 1xx answers are skipped. It never throws on what the peer sends: every request ends in a
 * {@link RawOutcome}.
 */
import { connect, type Socket } from 'node:net';

/** One parsed response. */
export interface RawResponse {
  readonly status: number;
  readonly reason: string;
  /** Header lines in order, names lower-cased. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** True when the body ended as framed (not cut by the connection's end). */
  readonly complete: boolean;
}

/** What became of one request. */
export type RawOutcome =
  | { readonly kind: 'response'; readonly response: RawResponse; /** Further responses read in drain mode. */ readonly extra: readonly RawResponse[]; readonly ms: number }
  | { readonly kind: 'closed'; /** The connection ended before a complete response. */ readonly detail: string; readonly ms: number }
  | { readonly kind: 'timeout'; readonly detail: string; readonly ms: number }
  | { readonly kind: 'garbage'; /** The bytes received are not an HTTP response. */ readonly detail: string; readonly ms: number };

/** The first value of a header (name in any case). */
export function header(res: RawResponse, name: string): string | undefined {
  const n = name.toLowerCase();
  return res.headers.find(([k]) => k === n)?.[1];
}

/** Options of one {@link RawConnection.request}. */
export interface RawRequestOptions {
  /** The request is a HEAD: its response has no body. */
  readonly head?: boolean;
  /** Milliseconds to wait for the response (default 5000). */
  readonly timeoutMs?: number;
  /**
   * Half-close the connection once the answer came (or the peer went silent), then read every response
   * until the peer closes (at most `timeoutMs`): for requests whose framing is broken, where the bytes
   * after the first request may be read as further requests.
   */
  readonly drain?: boolean;
  /** In drain mode, which of the answers are to HEAD requests (pipelined requests), by position. */
  readonly heads?: readonly boolean[];
  /** In drain mode, half-close after this long without bytes from the peer (default 150 ms). */
  readonly idleHalfCloseMs?: number;
}

class ParseError extends Error {}

/** Incremental response parser over a growing buffer. */
class ResponseParser {
  buf: Buffer = Buffer.alloc(0);
  ended = false;
  /** When the last bytes arrived. */
  lastData = 0;

  push(chunk: Buffer): void {
    this.lastData = Date.now();
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /**
   * Takes one complete final response off the buffer, or returns undefined when more bytes are needed.
   * At the end of the stream, a response whose body runs to the end (or is cut short) is returned with
   * `complete` telling which. Throws ParseError on bytes that are not HTTP.
   */
  take(head: boolean): RawResponse | undefined {
    for (;;) {
      if (this.buf.length === 0) return undefined;
      if (!'HTTP/'.startsWith(this.buf.subarray(0, Math.min(5, this.buf.length)).toString('latin1'))) {
        throw new ParseError(`not an HTTP response: ${printable(this.buf.subarray(0, 80))}`);
      }
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.buf.length > 256 * 1024) throw new ParseError('response head larger than 256 KiB');
        if (this.ended) throw new ParseError(`connection ended inside the response head: ${printable(this.buf.subarray(0, 120))}`);
        return undefined;
      }
      const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
      if (!m) throw new ParseError(`bad status line: ${printable(Buffer.from(lines[0] ?? '', 'latin1'))}`);
      const status = Number(m[1]);
      const headers: Array<[string, string]> = [];
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i <= 0) throw new ParseError(`bad header line: ${printable(Buffer.from(line, 'latin1'))}`);
        headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
      }
      const bodyStart = end + 4;
      if (status >= 100 && status < 200 && status !== 101) {
        this.buf = this.buf.subarray(bodyStart);
        continue;
      }
      const base = { status, reason: m[2] ?? '', headers };
      const te = headers.find(([k]) => k === 'transfer-encoding')?.[1];
      const cl = headers.find(([k]) => k === 'content-length')?.[1];
      if (head || status === 204 || status === 304 || status === 101) {
        this.buf = this.buf.subarray(bodyStart);
        return { ...base, body: Buffer.alloc(0), complete: true };
      }
      if (te !== undefined && /chunked/i.test(te)) {
        const chunks: Buffer[] = [];
        let pos = bodyStart;
        for (;;) {
          const lineEnd = this.buf.indexOf('\r\n', pos);
          if (lineEnd < 0) return this.cut(base, chunks);
          const size = parseInt(this.buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!.trim(), 16);
          if (!Number.isFinite(size) || size < 0) throw new ParseError('bad chunk size in response');
          pos = lineEnd + 2;
          if (size === 0) {
            // trailers, then an empty line
            for (;;) {
              const tEnd = this.buf.indexOf('\r\n', pos);
              if (tEnd < 0) return this.cut(base, chunks);
              const empty = tEnd === pos;
              pos = tEnd + 2;
              if (empty) break;
            }
            this.buf = this.buf.subarray(pos);
            return { ...base, body: Buffer.concat(chunks), complete: true };
          }
          if (this.buf.length < pos + size + 2) return this.cut(base, chunks, this.buf.subarray(pos));
          chunks.push(this.buf.subarray(pos, pos + size));
          pos += size + 2;
        }
      }
      if (cl !== undefined) {
        const n = Number(cl);
        if (!Number.isSafeInteger(n) || n < 0) throw new ParseError(`bad Content-Length ${cl}`);
        if (this.buf.length >= bodyStart + n) {
          const body = this.buf.subarray(bodyStart, bodyStart + n);
          this.buf = this.buf.subarray(bodyStart + n);
          return { ...base, body, complete: true };
        }
        if (!this.ended) return undefined;
        const body = this.buf.subarray(bodyStart);
        this.buf = Buffer.alloc(0);
        return { ...base, body, complete: false };
      }
      // Delimited by the end of the connection.
      if (!this.ended) return undefined;
      const body = this.buf.subarray(bodyStart);
      this.buf = Buffer.alloc(0);
      return { ...base, body, complete: true };
    }
  }

  private cut(base: Omit<RawResponse, 'body' | 'complete'>, chunks: Buffer[], rest?: Buffer): RawResponse | undefined {
    if (!this.ended) return undefined;
    this.buf = Buffer.alloc(0);
    return { ...base, body: Buffer.concat(rest ? [...chunks, rest] : chunks), complete: false };
  }
}

/** One kept-alive client connection to `host:port`. */
export class RawConnection {
  private socket: Socket | undefined;
  private parser = new ResponseParser();
  private wake: (() => void) | undefined;
  private closed = true;
  private closeDetail = '';
  /** Connections opened so far. */
  connects = 0;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  /** True when the next request reuses an open socket. */
  get open(): boolean {
    return !this.closed;
  }

  private async ensure(): Promise<void> {
    if (!this.closed && this.socket) return;
    this.parser = new ResponseParser();
    const socket = connect({ host: this.host, port: this.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    this.socket = socket;
    this.closed = false;
    this.closeDetail = '';
    this.connects++;
    const parser = this.parser;
    socket.on('data', (chunk: Buffer) => {
      parser.push(chunk);
      this.wake?.();
    });
    const onEnd = (detail: string) => {
      if (this.socket === socket) {
        this.closed = true;
        this.closeDetail ||= detail;
      }
      parser.ended = true;
      this.wake?.();
    };
    socket.on('end', () => {
      onEnd('peer closed the connection');
      socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => onEnd(`socket error ${err.code ?? err.message}`));
    socket.on('close', () => onEnd('connection closed'));
    await new Promise<void>((resolve) => {
      socket.once('connect', resolve);
      socket.once('close', resolve);
    });
  }

  /** Sends `bytes` (one request, or anything) and reads the answer. */
  async request(bytes: Buffer | string, options: RawRequestOptions = {}): Promise<RawOutcome> {
    const started = Date.now();
    const timeoutMs = options.timeoutMs ?? 5000;
    await this.ensure();
    if (this.closed) return { kind: 'closed', detail: `could not connect: ${this.closeDetail}`, ms: Date.now() - started };
    const socket = this.socket!;
    const parser = this.parser;
    // Bytes left over from an earlier exchange mean the previous response was misframed.
    if (parser.buf.length > 0) {
      const detail = `unexpected bytes before the request: ${printable(parser.buf.subarray(0, 80))}`;
      this.destroy();
      return { kind: 'garbage', detail, ms: Date.now() - started };
    }
    socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
    // Drain mode half-closes once the expected answers are in, or once the peer has been silent for a
    // moment (it may be waiting for body bytes that will never come). Not at once: Node's server drops
    // the requests of a connection whose client half-closed before it answered.
    const expected = options.heads?.length ?? 1;
    let halfClosed = false;
    const halfClose = () => {
      if (!halfClosed) {
        halfClosed = true;
        socket.end();
      }
    };
    const deadline = started + timeoutMs;
    const responses: RawResponse[] = [];
    try {
      for (;;) {
        let res: RawResponse | undefined;
        while ((res = parser.take(options.heads?.[responses.length] ?? (responses.length === 0 ? Boolean(options.head) : false))) !== undefined) {
          responses.push(res);
          if (!options.drain) break;
        }
        if (responses.length > 0 && !options.drain) break;
        if (options.drain && responses.length >= expected) halfClose();
        if (parser.ended) break;
        const now = Date.now();
        const left = deadline - now;
        if (left <= 0) {
          this.destroy();
          if (responses.length > 0) break;
          return { kind: 'timeout', detail: `no complete response after ${timeoutMs} ms (received ${parser.buf.length} bytes: ${printable(parser.buf.subarray(0, 80))})`, ms: Date.now() - started };
        }
        let wait = left;
        if (options.drain && !halfClosed) {
          const idle = Math.max(parser.lastData, started) + (options.idleHalfCloseMs ?? 150) - now;
          if (idle <= 0) {
            halfClose();
            continue;
          }
          wait = Math.min(wait, idle);
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
      }
    } catch (err) {
      this.destroy();
      if (err instanceof ParseError) return { kind: 'garbage', detail: err.message, ms: Date.now() - started };
      throw err;
    }
    if (responses.length === 0) {
      const detail = this.closeDetail || 'connection ended';
      this.destroy();
      return { kind: 'closed', detail, ms: Date.now() - started };
    }
    const first = responses[0]!;
    const connHeader = header(first, 'connection');
    if (options.drain || (connHeader !== undefined && /close/i.test(connHeader)) || !first.complete) this.destroy();
    return { kind: 'response', response: first, extra: responses.slice(1), ms: Date.now() - started };
  }

  /** Closes the socket (the next request opens a new one). */
  destroy(): void {
    this.socket?.destroy();
    this.socket = undefined;
    this.closed = true;
  }
}

/** Sends one request on a fresh connection and closes it. */
export async function rawRequest(host: string, port: number, bytes: Buffer | string, options: RawRequestOptions = {}): Promise<RawOutcome> {
  const conn = new RawConnection(host, port);
  try {
    return await conn.request(bytes, options);
  } finally {
    conn.destroy();
  }
}

/** Bytes as a readable one-line string: printable ASCII kept, the rest escaped (`\r`, `\n`, `\xNN`). */
export function printable(bytes: Buffer | string, max = 400): string {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes;
  let out = '';
  for (const c of b.subarray(0, max)) {
    if (c === 0x0d) out += '\\r';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20 && c < 0x7f) out += String.fromCharCode(c);
    else out += `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return b.length > max ? `${out}...(${b.length} bytes)` : out;
}
