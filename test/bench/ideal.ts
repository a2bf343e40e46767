/**
 * Could any cache that checks and keeps every byte serve a cold blob over loopback here as fast as
 * distribution's proxy, which sends its client an unchecked second stream? The yardstick of the "1 hop no
 * slower than distribution" target (docs/performance.md).
 *
 *   node test/dist/bench/ideal.js [--mib 512] [--runs 5] [--relays store,nostore,sendfile:4]
 *   (needs cc and OpenSSL's headers: libssl-dev)
 *
 * Contenders, each pulled cold once per run, in an order that rotates from run to run, against one origin
 * (distribution as a plain registry) and one new blob per run, each pull on recycled memory (as the
 * benchmark's scenario 2):
 * - relays (test/bench/ideal/relay.c): the least a verifying cache does, in C, a thread per step over a
 *   ring of memory (64 MiB unless `mode:MiB` says otherwise); headers at once, the last byte after the digest.
 *   `store` writes the file and sends the client from memory, `nostore` does not write, `sendfile` writes and
 *   sends the client what is written from the file, as Cascade does;
 * - a Cascade cache node;
 * - distribution's proxy (`proxy.remoteurl`).
 * Printed: each pull's time (curl), the origin directly, each cache's CPU seconds per GiB, and its time to
 * the first byte over the origin's (the direct pull's, taken before the memory is recycled, as in the benchmark).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pushBlob, startCacheNode, startDistributionOrigin } from '../lib/cache.js';
import { daemon, freePort, startDistribution } from '../lib/peers.js';
import { curlTimes } from './client.js';
import { cpuSeconds } from './procs.js';
import { GiB, MiB, median, recycleMemory } from './util.js';

const { values } = parseArgs({
  options: { mib: { type: 'string', default: '512' }, runs: { type: 'string', default: '5' }, relays: { type: 'string', default: 'store,nostore,sendfile:4' } },
});
const bytes = Number(values.mib) * MiB;
const runs = Number(values.runs);
// The C source stays beside the TypeScript (test/bench/ideal/), not in test/dist.
const source = join(dirname(fileURLToPath(import.meta.url)), '../../bench/ideal/relay.c');

const dir = await mkdtemp(join(tmpdir(), 'cascade-ideal-'));
const stops: Array<() => Promise<void>> = [];
try {
  const relayBin = join(dir, 'relay');
  execFileSync('cc', ['-O2', '-pthread', '-o', relayBin, source, '-lcrypto'], { stdio: 'inherit' });
  const origin = await startDistributionOrigin(dir);
  stops.push(() => origin.stop());
  const [originHost, originPort] = origin.url.replace('http://', '').split(':') as [string, string];
  const contenders: Array<{ name: string; url: string; pid: number }> = [];
  for (const relay of values.relays.split(',')) {
    const [mode, ring] = relay.split(':') as [string, string | undefined];
    const port = await freePort();
    const work = join(dir, `relay-${relay.replace(':', '-')}`);
    await mkdir(work);
    const d = daemon(relayBin, [String(port), originHost, originPort, work, mode, ...(ring ? [ring] : [])]);
    stops.push(() => d.kill());
    for (let i = 0; i < 100 && !d.output.includes('ready'); i++) await new Promise((r) => setTimeout(r, 20));
    if (!d.output.includes('ready')) throw new Error(`relay ${relay} did not start: ${d.output.join('\n')}`);
    contenders.push({ name: `relay ${mode}, ${ring ?? 64} MiB ring`, url: `http://127.0.0.1:${port}`, pid: d.child.pid! });
  }
  const cascade = await startCacheNode(dir, 'cascade', { origin: origin.url });
  stops.push(() => cascade.stop());
  contenders.push({ name: 'Cascade', url: cascade.url, pid: cascade.proc!.child.pid! });
  const proxyRoot = join(dir, 'proxy');
  await mkdir(proxyRoot);
  const proxy = await startDistribution({ rootdirectory: proxyRoot, remoteurl: origin.url });
  stops.push(() => proxy.stop());
  contenders.push({ name: 'distribution proxy', url: proxy.url, pid: proxy.pid });

  const times = new Map<string, number[]>([['origin directly', []], ...contenders.map((c) => [c.name, []] as [string, number[]])]);
  const ttfbs = new Map<string, number[]>([['origin directly', []], ...contenders.map((c) => [c.name, []] as [string, number[]])]);
  const cpu = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  const ratios = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  // A warm-up pull of a small blob through each: running processes, open connections.
  const small = await pushBlob(origin.url, 'ideal/blob', randomBytes(MiB));
  for (const c of contenders) curlTimes(`${c.url}/v2/ideal/blob/blobs/${small}`);
  console.log(`cold ${values.mib} MiB pulls over loopback, recycled memory, ${runs} runs (ms; CPU-s per GiB of the cache)`);
  for (let run = 0; run < runs; run++) {
    const digest = await pushBlob(origin.url, 'ideal/blob', randomBytes(bytes));
    const path = `/v2/ideal/blob/blobs/${digest}`;
    const direct = curlTimes(`${origin.url}${path}`);
    times.get('origin directly')!.push(direct.total);
    ttfbs.get('origin directly')!.push(direct.ttfb);
    const order = contenders.map((_, i) => contenders[(i + run) % contenders.length]!);
    const line: string[] = [];
    const inRun = new Map<string, number>();
    for (const c of order) {
      recycleMemory(dir, 2 * bytes);
      const before = cpuSeconds(c.pid);
      const { ttfb, total: ms } = curlTimes(`${c.url}${path}`);
      // What a cache does after the last byte (sync, rename, distribution's second fetch) is not counted.
      const used = cpuSeconds(c.pid) - before;
      times.get(c.name)!.push(ms);
      ttfbs.get(c.name)!.push(ttfb - direct.ttfb);
      cpu.get(c.name)!.push((used * GiB) / bytes);
      inRun.set(c.name, ms);
      line.push(`${c.name} ${ms.toFixed(0)} (${((used * GiB) / bytes).toFixed(2)})`);
      await new Promise((r) => setTimeout(r, 1500));
    }
    for (const c of contenders) ratios.get(c.name)!.push(inRun.get(c.name)! / inRun.get('distribution proxy')!);
    console.log(`run ${run + 1}: ${line.join(', ')}; origin directly ${times.get('origin directly')!.at(-1)!.toFixed(0)}`);
  }
  console.log('\n| | median ms | runs | ÷ distribution in the run (median) | CPU-s per GiB until the last byte (median) | TTFB − the origin\'s, ms (median; runs) |');
  console.log('|---|---|---|---|---|---|');
  for (const [name, t] of times) {
    const r = ratios.get(name);
    const c = cpu.get(name);
    const f = ttfbs.get(name)!;
    const ttfb = name === 'origin directly' ? `${median(f).toFixed(1)} (its own)` : `${median(f).toFixed(1)}; ${f.map((x) => x.toFixed(1)).join(', ')}`;
    console.log(`| ${name} | ${median(t).toFixed(0)} | ${t.map((x) => x.toFixed(0)).join(', ')} | ${r ? median(r).toFixed(2) : '–'} | ${c ? median(c).toFixed(2) : '–'} | ${ttfb} |`);
  }
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
