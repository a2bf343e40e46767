/**
 * CPU seconds per process for one cold pull of a big blob: directly from the origin (distribution), and
 * through a fresh Cascade cache node. Shows what a cold pull costs the machine, not only how long it takes:
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
  console.log(`| run | direct: origin | curl | total | wall s | cold 1 hop: origin | cache node | curl | total | wall s |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (let run = 1; run <= Number(values.runs); run++) {
    let o0 = cpuSeconds(originPid);
    const direct = curl(`${origin.url}/v2/bench/cpu/blobs/${digest}`);
    const originDirect = cpuSeconds(originPid) - o0;
    const cache = await startCacheNode(dir, `cache${run}`, { origin: origin.url });
    try {
      const cachePid = cache.proc!.child.pid!;
      o0 = cpuSeconds(originPid);
      const c0 = cpuSeconds(cachePid);
      const cold = curl(`${cache.url}/v2/bench/cpu/blobs/${digest}`);
      // The fill syncs and moves its file after the client's last byte: that work is the cold pull's too.
      await new Promise((r) => setTimeout(r, 2000));
      const originCold = cpuSeconds(originPid) - o0;
      const cacheCold = cpuSeconds(cachePid) - c0;
      console.log(
        `| ${run} | ${f(originDirect)} | ${f(direct.cpu)} | ${f(originDirect + direct.cpu)} | ${f(direct.wall)} | ${f(originCold)} | ${f(cacheCold)} | ${f(cold.cpu)} | ${f(originCold + cacheCold + cold.cpu)} | ${f(cold.wall)} |`,
      );
    } finally {
      await cache.stop();
    }
  }
} finally {
  await origin.stop();
  await rm(dir, { recursive: true, force: true });
}
