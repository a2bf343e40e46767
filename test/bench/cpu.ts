/**
 * CPU seconds per process for one cold pull of a big blob: directly from the origin (distribution), through
 * a fresh Cascade cache node, and through a fresh distribution proxy (`proxy.remoteurl`). Shows what a cold pull costs the machine, not only how long it takes:
 *   node test/dist/bench/cpu.js [--mib 512] [--runs 3]
 * Each process's user + system time is read from /proc/<pid>/stat before and after; curl's from `time`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pushBlob, startCacheNode, startDistributionOrigin } from '../lib/cache.js';
import { Fleet, startDistribution } from './procs.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '512' }, runs: { type: 'string', default: '3' } } });
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

/** curl's own CPU seconds and the wall time of one download. */
function curl(url: string): { cpu: number; wall: number } {
  const out = execFileSync('bash', ['-c', `TIMEFORMAT='%U %S %R'; { time curl -sf -o /dev/null '${url}' ; } 2>&1`]).toString().trim().split(' ').map(Number);
  return { cpu: out[0]! + out[1]!, wall: out[2]! };
}

function listenerPid(url: string): number {
  const port = new URL(url).port;
  const out = execFileSync('ss', ['-ltnpH', `sport = :${port}`]).toString();
  const pid = /pid=(\d+)/.exec(out)?.[1];
  if (!pid) throw new Error(`no process listens on ${url}`);
  return Number(pid);
}

const dir = await mkdtemp(join(tmpdir(), 'cascade-cpu-'));
const origin = await startDistributionOrigin(dir);
try {
  const digest = await pushBlob(origin.url, 'bench/cpu', randomBytes(Number(values.mib) << 20));
  const originPid = listenerPid(origin.url);
  const f = (n: number) => n.toFixed(2);
  console.log(`| run | path | origin | cache node | curl | total | wall s |`);
  console.log('|---|---|---|---|---|---|---|');
  const fleet = new Fleet();
  const row = (run: number, path: string, origin: number, cache: number | undefined, client: { cpu: number; wall: number }) =>
    console.log(`| ${run} | ${path} | ${f(origin)} | ${cache === undefined ? '–' : f(cache)} | ${f(client.cpu)} | ${f(origin + (cache ?? 0) + client.cpu)} | ${f(client.wall)} |`);
  /** One cold pull through a node started by `start`, with the CPU of origin, node and curl. */
  const through = async (run: number, path: string, start: () => Promise<{ url: string; pid: number; stop: () => Promise<void> }>) => {
    const node = await start();
    try {
      const o0 = cpuSeconds(originPid);
      const c0 = cpuSeconds(node.pid);
      const client = curl(`${node.url}/v2/bench/cpu/blobs/${digest}`);
      // A cache syncs and moves its file after the client's last byte: that work is the cold pull's too.
      await new Promise((r) => setTimeout(r, 2000));
      row(run, path, cpuSeconds(originPid) - o0, cpuSeconds(node.pid) - c0, client);
    } finally {
      await node.stop();
    }
  };
  for (let run = 1; run <= Number(values.runs); run++) {
    const o0 = cpuSeconds(originPid);
    const direct = curl(`${origin.url}/v2/bench/cpu/blobs/${digest}`);
    row(run, 'directly', cpuSeconds(originPid) - o0, undefined, direct);
    await through(run, 'Cascade, 1 hop', async () => {
      const cache = await startCacheNode(dir, `cache${run}`, { origin: origin.url });
      return { url: cache.url, pid: cache.proc!.child.pid!, stop: () => cache.stop() };
    });
    await through(run, 'distribution proxy, 1 hop', async () => {
      const proxy = await startDistribution(fleet, { dir: join(dir, `proxy${run}`), name: `proxy${run}`, remoteurl: origin.url });
      return { url: proxy.url, pid: proxy.pid, stop: () => proxy.stop() };
    });
  }
} finally {
  await origin.stop();
  await rm(dir, { recursive: true, force: true });
}
