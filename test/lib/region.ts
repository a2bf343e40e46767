/**
 * Helpers of the region tests (cache nodes and mirrors on one shared folder, test/e2e/region.test.ts and
 * test/e2e/mirror-region.test.ts): nginx round-robin in front of the nodes, their metrics, and a client that
 * resumes a cut download with Range requests.
 */
import { createHash, type Hash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Hop } from './cache.js';
import { startNginx, type Nginx } from './nginx.js';

/** nginx round-robin over the nodes: bodies streamed as they come (no buffering), a dead node skipped. */
export async function startBalancer(dir: string, nodes: readonly Hop[]): Promise<Nginx> {
  return startNginx(dir, {
    // Every node stays in rotation: a dead one is skipped per request (proxy_next_upstream), not for 10 s.
    http: [`upstream region { ${nodes.map((n) => `server ${n.host} max_fails=0;`).join(' ')} }`],
    server: [
      'location / {',
      '  proxy_pass http://region;',
      '  proxy_http_version 1.1;',
      '  proxy_set_header Host $http_host;',
      '  proxy_buffering off;',
      '  proxy_next_upstream error timeout;',
      '  proxy_read_timeout 60s;',
      '}',
    ],
  });
}

/** A node's metric value (the sum over series matching `labels`), from its /metrics. */
export async function metric(hop: Hop, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${hop.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export async function regionMetric(nodes: readonly Hop[], name: string, labels = ''): Promise<number[]> {
  return Promise.all(nodes.map((n) => metric(n, name, labels)));
}

export const total = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/**
 * GETs the blob at `url` as a client that resumes: a response cut short is retried with a Range from the
 * bytes received so far (up to `retries` times). Returns the sha256 of all the bytes and how many tries it took.
 */
export async function resilientGet(url: string, size: number, retries = 5): Promise<{ digest: string; size: number; tries: number; errors: string[] }> {
  const hash = createHash('sha256');
  let received = 0;
  const errors: string[] = [];
  for (let tries = 1; tries <= retries + 1; tries++) {
    const headers: Record<string, string> = received > 0 ? { range: `bytes=${received}-${size - 1}` } : {};
    const expectedStatus = received > 0 ? 206 : 200;
    const res = await streamInto(url, headers, hash, expectedStatus);
    const got = res.size;
    if (res.status !== expectedStatus) {
      errors.push(`try ${tries}: status ${res.status}`);
      await sleep(200);
      continue;
    }
    received += got;
    if (res.complete && received === size) return { digest: `sha256:${hash.digest('hex')}`, size: received, tries, errors };
    errors.push(`try ${tries}: ${res.error ?? 'incomplete'} after ${got} bytes`);
  }
  return { digest: `sha256:${hash.digest('hex')}`, size: received, tries: retries + 1, errors };
}

/** GETs `url`, feeding every body byte of an `expectedStatus` answer to `hash`; never throws (a cut response is `complete: false`). */
function streamInto(url: string, headers: Record<string, string>, hash: Hash, expectedStatus: number): Promise<{ status: number; size: number; complete: boolean; error?: string }> {
  return new Promise((resolve) => {
    let status = 0;
    let size = 0;
    let declared = -1;
    let done = false;
    const finish = (complete: boolean, error?: string) => {
      if (done) return;
      done = true;
      const whole = complete && (declared < 0 || size === declared);
      resolve({ status, size, complete: whole, ...(error ? { error } : whole ? {} : { error: `${size} of ${declared} bytes` }) });
    };
    const req = httpRequest(url, { headers, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      declared = Number(res.headers['content-length'] ?? -1);
      res.on('data', (chunk: Buffer) => {
        // Only the bytes of the answer asked for count (an error body is not blob bytes).
        if (status === expectedStatus) hash.update(chunk);
        size += chunk.length;
      });
      res.on('end', () => finish(!res.readableAborted));
      res.on('error', (err) => finish(false, err.message));
      res.on('close', () => finish(res.complete, res.complete ? undefined : 'closed before the end'));
    });
    req.on('error', (err) => finish(false, err.message));
    req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}
