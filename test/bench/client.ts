/**
 * The measuring clients.
 *
 * Bulk transfers are made with `curl -o /dev/null -w <timings>`, driven from here: on this kind of
 * machine Node's http client tops out well below what nginx serves on loopback (it reads 64 KiB per
 * callback; about 0.8 GB/s against nginx's 1.8+ GB/s for one stream and 3.3 GB/s for 32 curl processes),
 * so Node would measure itself, not the server. `curl` is used:
 * - one process per stream for the throughput scenario (N streams use up to N cores, like N clients);
 * - one process with `--parallel --parallel-immediate` for the 100-request burst (every connection is
 *   opened at once, without the skew of spawning 100 processes; per-transfer timings from `-w`).
 * When `curl` is missing the same calls fall back to Node's http client (documented in the report).
 *
 * Every transfer checks the status and the byte count. In hashing mode (the smoke run) every body is
 * written to a file and its sha256 checked; full runs check one hashed download per scenario and
 * system with {@link fetchHashed} instead, so hashing does not compete with the servers for CPU.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';

/** One HTTP transfer. */
export interface Transfer {
  readonly status: number;
  readonly bytes: number;
  /** Milliseconds from the start to the first byte of the response. */
  readonly ttfbMs: number;
  readonly totalMs: number;
  /** Transport failure (curl exit code, reset, cut body). */
  readonly error?: string;
  /** `sha256:<hex>` of the body, in hashing mode. */
  readonly digest?: string;
}

/** A batch of simultaneous transfers. */
export interface Batch {
  readonly transfers: Transfer[];
  /** From the first start to the last end, in milliseconds. */
  readonly wallMs: number;
}

export type ClientKind = 'curl' | 'node';

export interface ManyOptions {
  /** How many simultaneous GETs of the URL. */
  count: number;
  /** Write every body to a file in this folder and hash it (removed afterwards). */
  hashDir?: string;
  /** curl only: one process per transfer (default), or one process with `--parallel`. */
  spread?: 'processes' | 'parallel';
  timeoutMs?: number;
  /** curl only: a command prefix curl runs under (`ip netns exec <client namespace>` in scenario 7). */
  via?: readonly string[];
}

/** True when `curl` is on the PATH. */
export function haveCurl(): boolean {
  try {
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const FORMAT = '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{exitcode} %{filename_effective}\\n';

/** The curl arguments shared by every transfer (also printed in the report). */
export const CURL_ARGS = ['-sS', '--no-progress-meter', '--http1.1', '-H', 'Accept-Encoding: identity'];

/** One GET of `url` with curl (failing on an error status): its time to the first byte and to the last, in ms. */
export function curlTimes(url: string): { ttfb: number; total: number } {
  const [ttfb, total] = execFileSync('curl', ['-sf', '-o', '/dev/null', '-w', '%{time_starttransfer} %{time_total}', url]).toString().split(' ').map((x) => Number(x) * 1000);
  return { ttfb: ttfb!, total: total! };
}

/** `count` simultaneous GETs of `url` with the chosen client. */
export async function getMany(client: ClientKind, url: string, o: ManyOptions): Promise<Batch> {
  if (client === 'node' && o.via) throw new Error(`Node's client cannot run under ${o.via.join(' ')}: curl is needed`);
  return client === 'curl' ? curlMany(url, o) : nodeMany(url, o);
}

async function curlMany(url: string, o: ManyOptions): Promise<Batch> {
  const sinks = Array.from({ length: o.count }, (_, i) => (o.hashDir ? join(o.hashDir, `body-${process.pid}-${Date.now()}-${i}`) : '/dev/null'));
  const maxTime = ['--max-time', String(Math.ceil((o.timeoutMs ?? 600_000) / 1000))];
  const started = performance.now();
  let lines: string[];
  if ((o.spread ?? 'processes') === 'parallel' && o.count > 1) {
    const args = [...CURL_ARGS, ...maxTime, '--parallel', '--parallel-immediate', '--parallel-max', String(Math.min(o.count, 300)), '-w', FORMAT];
    for (const sink of sinks) args.push('-o', sink, url);
    lines = (await runCurl(args, o.via)).split('\n').filter(Boolean);
  } else {
    const outs = await Promise.all(sinks.map((sink) => runCurl([...CURL_ARGS, ...maxTime, '-w', FORMAT, '-o', sink, url], o.via)));
    lines = outs.flatMap((s) => s.split('\n').filter(Boolean));
  }
  const wallMs = performance.now() - started;
  const transfers: Transfer[] = [];
  for (const line of lines) {
    const [code, size, ttfb, total, exit, ...file] = line.split(' ');
    const sink = file.join(' ');
    const digest = o.hashDir && sink !== '/dev/null' ? await hashFile(sink).catch(() => 'unreadable') : undefined;
    transfers.push({
      status: Number(code),
      bytes: Number(size),
      ttfbMs: Number(ttfb) * 1000,
      totalMs: Number(total) * 1000,
      ...(exit !== '0' ? { error: `curl exit code ${exit}` } : {}),
      ...(digest !== undefined ? { digest } : {}),
    });
  }
  while (transfers.length < o.count) transfers.push({ status: 0, bytes: 0, ttfbMs: 0, totalMs: 0, error: 'curl printed no result for this transfer' });
  if (o.hashDir) await Promise.all(sinks.map((s) => rm(s, { force: true })));
  return { transfers, wallMs };
}

/** Runs curl (under the command prefix `via`, when given) and returns what it printed. */
function runCurl(args: string[], via: readonly string[] = []): Promise<string> {
  const [cmd, ...rest] = [...via, 'curl', ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.resume();
    child.on('error', reject);
    // A failed transfer is reported by its own -w line (exit code), not by the process's exit status.
    child.on('close', () => resolve(out));
  });
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

const agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256 });

/** Closes the keep-alive connections of the Node client. */
export function closeClient(): void {
  agent.destroy();
}

async function nodeMany(url: string, o: ManyOptions): Promise<Batch> {
  const started = performance.now();
  const transfers = await Promise.all(
    Array.from({ length: o.count }, async () => {
      const r = await fetchHashed(url, { hash: o.hashDir !== undefined, ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) });
      return { status: r.status, bytes: r.bytes, ttfbMs: r.ttfbMs, totalMs: r.totalMs, ...(r.error ? { error: r.error } : {}), ...(r.digest ? { digest: r.digest } : {}) };
    }),
  );
  return { transfers, wallMs: performance.now() - started };
}

/** The result of one request with the Node client. */
export interface NodeResponse extends Transfer {
  readonly headers: IncomingHttpHeaders;
  /** The body when it is at most 64 KiB. */
  readonly body: Buffer;
}

/**
 * One request with Node's http client (keep-alive), never throwing for HTTP or transport errors
 * (`status: 0` then). With `hash` (default true for GET) the body's sha256 is computed as it streams.
 */
export function fetchHashed(
  url: string,
  o: { method?: string; headers?: Record<string, string>; hash?: boolean; timeoutMs?: number; body?: string } = {},
): Promise<NodeResponse> {
  const started = performance.now();
  return new Promise((resolve) => {
    const hash = o.hash === false ? undefined : createHash('sha256');
    const small: Buffer[] = [];
    let bytes = 0;
    let ttfbMs = 0;
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      const declared = Number(headers['content-length']);
      const short = !error && o.method !== 'HEAD' && Number.isFinite(declared) && status !== 0 && bytes !== declared;
      resolve({
        status,
        headers,
        bytes,
        ttfbMs,
        totalMs: performance.now() - started,
        body: Buffer.concat(small),
        ...(hash ? { digest: `sha256:${hash.digest('hex')}` } : {}),
        ...(error ? { error } : short ? { error: `body of ${bytes} bytes, Content-Length ${declared}` } : {}),
      });
    };
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers ?? {}, agent }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      ttfbMs = performance.now() - started;
      res.on('data', (chunk: Buffer) => {
        hash?.update(chunk);
        bytes += chunk.length;
        if (bytes <= 65536) small.push(chunk);
      });
      res.on('end', () => finish());
      res.on('error', (err) => finish(err.message));
      res.on('close', () => finish(res.complete ? undefined : 'connection closed before the end of the body'));
    });
    req.on('error', (err) => finish(err.message));
    if (o.timeoutMs) req.setTimeout(o.timeoutMs, () => req.destroy(new Error(`timeout after ${o.timeoutMs} ms`)));
    req.end(o.body);
  });
}
