/**
 * What a verifying, storing cache must spend per GiB of a cold blob on this machine, and where a Cascade node
 * spends it: the CPU floor behind the "≤ 1.0 CPU-s per GiB per hop" target (docs/performance.md).
 *
 *   node test/dist/bench/floor.js [--mib 512] [--runs 3]
 *
 * A distribution origin serves one blob (with sendfile, from another process). Then, in this process, after
 * recycling memory (the benchmark's default): the body received with the fill's own reader (DirectClient) and
 * thrown away; received and hashed (SHA-256); received, hashed and written to a new file in 1 MiB pwritev
 * batches from the receive buffers, as a fill does. Each row is this process's CPU (all threads, and the main
 * thread alone) per GiB. Last, one cold pull through a fresh Cascade node with curl, the node's CPU split by
 * thread: the main thread (receive, HTTP), libuv's pool (the hash and the page-cache writes) and the sendfile threads
 * (the copy into the client's socket) are told apart by what they did, not by name: every thread but the
 * main one is listed; the threads of the fill's native pump (reading, hashing, writing) end with the fill and
 * count as "ended threads" (the process's total less the live threads). `CASCADE_FILL_PUMP=0` in the
 * environment runs the node without the pump.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DirectClient } from '@cascade/downstream';
import { pushBlob, startCacheNode, startDistributionOrigin } from '../lib/cache.js';
import { GiB, MiB, recycleMemory } from './util.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '512' }, runs: { type: 'string', default: '3' } } });
const bytes = Number(values.mib) * MiB;
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU seconds of each thread of `pid`, by thread id. */
function threads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      out.set(tid, (Number(f[11]) + Number(f[12])) / TICKS);
    } catch {
      // the thread ended
    }
  }
  return out;
}

/** CPU seconds of the whole process `pid`: its threads, the ended ones included (a fill's native pump). */
function processCpu(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
const perGiB = (cpu: number) => ((cpu * GiB) / bytes).toFixed(2);

/** One direct GET of the blob: received, maybe hashed, maybe written as a fill writes. */
async function pull(client: DirectClient, url: string, path: string, mode: 'receive' | 'hash' | 'write', dir: string): Promise<void> {
  const answer = await client.get(url, path, {});
  if (answer.kind !== 'body') throw new Error(`origin answered ${JSON.stringify(answer)}`);
  const hash = createHash('sha256');
  const file = mode === 'write' ? await open(join(dir, 'floor-out'), 'w') : undefined;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let position = 0;
  const writes: Promise<void>[] = [];
  const flush = () => {
    const [chunks, n, at] = [pending, pendingBytes, position];
    pending = [];
    pendingBytes = 0;
    position += n;
    writes.push((file as NonNullable<typeof file>).writev(chunks, at).then(() => answer.chunks.release(n)));
  };
  for (;;) {
    const chunk = await answer.chunks.next();
    if (!chunk) break;
    if (mode !== 'receive') hash.update(chunk);
    if (!file) {
      answer.chunks.release(chunk.length);
      continue;
    }
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes >= MiB) flush();
  }
  if (file && pendingBytes > 0) flush();
  await Promise.all(writes);
  await file?.close();
  if (file) await rm(join(dir, 'floor-out'));
}

const dir = await mkdtemp(join(tmpdir(), 'cascade-floor-'));
const origin = await startDistributionOrigin(dir);
try {
  const digest = await pushBlob(origin.url, 'bench/floor', randomBytes(bytes));
  const path = `/v2/bench/floor/blobs/${digest}`;
  const client = new DirectClient({ connectTimeoutMs: 5000, responseTimeoutMs: 30_000, idleTimeoutMs: 30_000 });
  console.log(`CPU-s per GiB, ${values.mib} MiB blob, recycled memory (openssl speed -evp sha256 for the hash alone)`);
  console.log('| run | step | this process | main thread |');
  console.log('|---|---|---|---|');
  for (let run = 1; run <= Number(values.runs); run++) {
    for (const mode of ['receive', 'hash', 'write'] as const) {
      recycleMemory(dir, 2 * bytes);
      const before = threads(process.pid);
      await pull(client, origin.url, path, mode, dir);
      const after = threads(process.pid);
      const main = (after.get(String(process.pid)) ?? 0) - (before.get(String(process.pid)) ?? 0);
      console.log(`| ${run} | ${mode === 'receive' ? 'receive' : mode === 'hash' ? 'receive + SHA-256' : 'receive + SHA-256 + write (1 MiB pwritev)'} | ${perGiB(sum(after) - sum(before))} | ${perGiB(main)} |`);
    }
  }
  client.close();
  console.log('\nOne cold pull through a fresh Cascade node (curl), CPU-s per GiB by thread of the node:');
  for (let run = 1; run <= Number(values.runs); run++) {
    const node = await startCacheNode(dir, `node${run}`, { origin: origin.url });
    const pid = node.proc!.child.pid!;
    recycleMemory(dir, 2 * bytes);
    const before = threads(pid);
    const cpuBefore = processCpu(pid);
    const started = Date.now();
    execFileSync('curl', ['-sf', '-o', '/dev/null', `${node.url}${path}`]);
    const wall = Date.now() - started;
    // The fsync and the move into place come after the client's last byte: they are the pull's work too.
    await new Promise((r) => setTimeout(r, 2000));
    const after = threads(pid);
    const total = processCpu(pid) - cpuBefore;
    const used = [...after].map(([tid, s]) => [tid, s - (before.get(tid) ?? 0)] as const).filter(([, s]) => s >= 0.01);
    const main = used.find(([tid]) => tid === String(pid))?.[1] ?? 0;
    const others = used.filter(([tid]) => tid !== String(pid)).map(([, s]) => perGiB(s));
    // Threads that ended before the second look (the fill's pump) count in the process's total only.
    const ended = Math.max(0, total - used.reduce((a, [, s]) => a + s, 0));
    console.log(`run ${run}: ${wall} ms; total ${perGiB(total)}, main thread ${perGiB(main)}, other threads ${others.join(' ')}, ended threads ${perGiB(ended)}`);
    await node.stop();
  }
} finally {
  await origin.stop();
  await rm(dir, { recursive: true, force: true });
}
