/**
 * The benchmark suite's smoke run (`node test/dist/bench/run.js --smoke`), so the suite cannot rot: small
 * sizes, one run, every downloaded body hashed. It fails on correctness only (wrong bytes, cut transfers,
 * more than one upstream GET per hop for Cascade, more than one origin GET for a region's herd (scenario 8),
 * a crashed process, a scenario that could not run),
 * never on speed. The full benchmark (`npm run bench`) is documented in docs/benchmarks.md, not run here.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { it } from 'node:test';
import { ROOT, testScope } from '../lib/cascade.js';

interface SmokeResults {
  runs: Array<Record<string, number>>;
  problems: string[];
  config: { mode: string; concCount: number };
}

it('the benchmark suite runs end to end at smoke sizes with correct results', { timeout: 120_000 }, async (t) => {
  const { dir, defer } = await testScope(t, 'e2e-bench-smoke-');
  const out = join(dir, 'out');
  // Its own process group, so that a timeout stops the runner and every server it started at once.
  const child = spawn(process.execPath, [join(ROOT, 'test/dist/bench/run.js'), '--smoke', '--out', out, '--work', join(dir, 'work')], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
  };
  defer(() => killGroup('SIGKILL'));
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  const timer = setTimeout(() => {
    output += '\n(smoke run stopped after 100 s)';
    killGroup('SIGTERM');
    setTimeout(() => killGroup('SIGKILL'), 2000).unref();
  }, 100_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  const result = { code, output };
  const tail = result.output.split('\n').slice(-60).join('\n');
  const results = JSON.parse(await readFile(join(out, 'benchmarks.json'), 'utf8').catch(() => 'null')) as SmokeResults | null;
  assert.ok(results, `the smoke run wrote no benchmarks.json (exit ${result.code}):\n${tail}`);
  assert.deepEqual(results.problems, [], `correctness problems:\n${tail}`);
  assert.equal(result.code, 0, `exit code:\n${tail}`);
  assert.equal(results.config.mode, 'smoke');
  assert.equal(results.runs.length, 1);
  const m = results.runs[0]!;
  // Every scenario produced its figures.
  for (const key of [
    's1.single.nginx.MBps', 's1.single.cascade.MBps', 's1.single.distribution.MBps', 's1.conc.cascade.MBps', 's1.conc.distribution.MBps',
    's2.cascade1.totalMs', 's2.cascade3.ttfbMs', 's2.distribution1.totalMs', 's2.distribution3.totalMs',
    's3.cascade1.p99Ms', 's3.cascade3.p50Ms', 's3.distribution1.p99Ms',
    's4.direct.ms', 's4.cascade.coldMs', 's4.cascade.warmMs', 's4.distribution.coldMs',
    's5.conc.cascade.MiB', 's5.burst.cascade.MiB',
    's6.manifest.server.p50Ms', 's6.manifest.origin.p50Ms', 's6.blob.origin.p50Ms',
    's8.single.p50Ms', 's8.single.p99Ms', 's8.region.p50Ms', 's8.region.p99Ms', 's8.region.wallMs', 's8.region.cpuS', 's8.region.nginx.cpuS',
  ]) {
    assert.ok(Number.isFinite(m[key]) && m[key]! > 0, `${key} = ${m[key]}\n${tail}`);
  }
  // Exactly one upstream GET per hop for Cascade, one hop and three.
  assert.equal(m['s3.cascade1.maxGetsPerHop'], 1);
  assert.equal(m['s3.cascade1.minGetsPerHop'], 1);
  assert.equal(m['s3.cascade3.maxGetsPerHop'], 1);
  assert.equal(m['s3.cascade3.minGetsPerHop'], 1);
  // A region of nodes on one folder with Redis: one origin GET for the herd, one led fill, every node up.
  assert.equal(m['s8.region.originGets'], 1);
  assert.equal(m['s8.single.originGets'], 1);
  assert.equal(m['s8.region.fills.led'], 1);
  assert.equal(m['s8.region.redisUp'], 1);
  // The report and the chart were written.
  const md = await readFile(join(out, 'benchmarks.md'), 'utf8');
  assert.match(md, /^# Benchmarks/);
  assert.match(md, /## 6\. The server/);
  assert.match(md, /## 8\. A region: \d+ clients/);
  const svg = await readFile(join(out, 'benchmarks.svg'), 'utf8');
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
});
