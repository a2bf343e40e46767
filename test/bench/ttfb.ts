/**
 * Time to first byte through chains of Cascade nodes, cold, against the origin's own: this build, and
 * optionally another build in the same run (interleaved, the order alternating), so that a change to the
 * first-byte path is measured against what it replaces on the same machine at the same moment.
 *
 *   node test/dist/bench/ttfb.js [--hops 1,3] [--mib 8,512] [--runs 10] [--against /path/to/other/checkout]
 *
 * `--against`: another checkout of this repository, built (`npm install`, `npm run build`); its
 * `packages/cli/bin/cascade.js` runs the second set of chains. One origin (distribution as a plain registry)
 * serves both. Each pull is of a new blob; the origin is pulled directly right before it (the TTFB printed is
 * the chain's minus that one); the chains' blob files are deleted after each pull, so that the page cache
 * does not fill up over a run. Recycled memory, as the benchmark's scenario 2: a file half again as large as
 * the pull's copies (at most 2 GiB) is written and deleted right before each pull (see docs/performance.md).
 * TTFB is curl's `time_starttransfer`: the first byte of the response, its status line.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pushBlob, startDistributionOrigin } from '../lib/cache.js';
import { curlTimes as curl } from './client.js';
import { Fleet, startChain, type Peer } from './procs.js';
import { MiB, median, recycleMemory } from './util.js';

const { values } = parseArgs({
  options: {
    hops: { type: 'string', default: '1,3' },
    mib: { type: 'string', default: '8,512' },
    runs: { type: 'string', default: '10' },
    against: { type: 'string' },
  },
});
const hopCounts = values.hops.split(',').map(Number);
const sizes = values.mib.split(',').map(Number);
const runs = Number(values.runs);

const dir = await mkdtemp(join(tmpdir(), 'cascade-ttfb-'));
const fleet = new Fleet();
const origin = await startDistributionOrigin(dir);
try {
  const builds: Array<{ name: string; bin?: string }> = [{ name: 'this build' }];
  if (values.against) builds.push({ name: `--against`, bin: join(resolve(values.against), 'packages/cli/bin/cascade.js') });
  /** Each build's chain of each length, nearest-to-origin first. */
  const chains = new Map<string, Peer[]>();
  for (const [i, b] of builds.entries()) {
    for (const h of hopCounts) chains.set(`${b.name}/${h}`, await startChain(fleet, 'cascade', join(dir, `${i}-${h}`), origin.url, h, undefined, b.bin));
  }
  // Every node passes on one small blob first: the figures are those of running nodes.
  const warm = await pushBlob(origin.url, 'ttfb/blob', randomBytes(MiB));
  for (const c of chains.values()) curl(`${c.at(-1)!.url}/v2/ttfb/blob/blobs/${warm}`);
  const results = new Map<string, Array<{ ttfb: number; total: number }>>();
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? builds : [...builds].reverse();
    for (const hops of hopCounts) {
      for (const mib of sizes) {
        for (const b of order) {
          const c = chains.get(`${b.name}/${hops}`)!;
          const digest = await pushBlob(origin.url, 'ttfb/blob', randomBytes(mib * MiB));
          const direct = curl(`${origin.url}/v2/ttfb/blob/blobs/${digest}`);
          // Recycled memory, as the benchmark's scenario 2: the pull's copies land on pages touched before.
          recycleMemory(dir, Math.min(2048 * MiB, 1.5 * hops * mib * MiB));
          const through = curl(`${c.at(-1)!.url}/v2/ttfb/blob/blobs/${digest}`);
          const key = `${b.name} | ${hops} | ${mib}`;
          if (!results.has(key)) results.set(key, []);
          results.get(key)!.push({ ttfb: through.ttfb - direct.ttfb, total: through.total });
          // Each hop commits its copy (sync, move into place) after the last byte: wait for it, then drop it.
          for (const { rootdirectory: root } of c) {
            const data = join(root, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data');
            for (let i = 0; i < 600 && !existsSync(data); i++) await sleep(50);
            await rm(join(root, 'docker/registry/v2/blobs'), { recursive: true, force: true });
          }
        }
      }
    }
    console.error(`run ${r + 1}/${runs} done`);
  }
  console.log(`| build | hops | MiB | TTFB − origin's, ms (median) | runs | total ms (median) |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const [key, v] of [...results].sort()) {
    console.log(`| ${key} | ${median(v.map((x) => x.ttfb)).toFixed(1)} | ${v.map((x) => x.ttfb.toFixed(1)).join(', ')} | ${median(v.map((x) => x.total)).toFixed(0)} |`);
  }
} finally {
  await fleet.stopAll();
  await origin.stop();
  await rm(dir, { recursive: true, force: true });
}
