/**
 * The benchmark runner: Cascade's cache node against distribution's proxy mode and nginx, on loopback and
 * (scenario 7) over shaped links between network namespaces.
 *
 *   node test/dist/bench/run.js [--smoke] [--runs N] [--only 1,2,3,4,6,7,8,profile] [--no-profile]
 *                               [--memory fresh|recycled|both] [--big-mib N] [--shaped-mib N] [--shaped-gbit 1,10]
 *                               [--out DIR] [--work DIR] [--client curl|node] [--keep] [--merge] [--render]
 *
 * `--memory`: the memory of scenario 2's cold pulls. `recycled` writes and deletes a file (up to 2 GiB, on
 * tmpfs) right before each one, so the page cache gets pages the machine touched before, as on a
 * long-running host; `fresh` does not (on a virtual machine that backs guest pages on first use, new files
 * are then slow to write); `both` (the full run's default) measures both, on separate chains. Scenario 7 (shaped links: every node
 * in its own network namespace, links limited with tc tbf; needs root) uses recycled memory, or fresh with
 * `--memory fresh`. `--big-mib` and `--shaped-mib` change the blob of scenarios 1-2 and 7 (512 and 256 MiB).
 *
 * `--merge` adds what this invocation measured (`--only 8`: scenario 8's runs; `--only profile`: the profile)
 * to the results already in the output folder (benchmarks.json), replacing those scenarios' figures and keeping
 * the others, and re-renders the report; when it measured more scenarios than it keeps, its own machine,
 * commit, command and wall time head the report and the kept ones are noted. `--render` only re-renders it.
 *
 * Full mode (default, `npm run bench`): 512 MiB blobs, 32 streams, 100 simultaneous requests, a 300-layer
 * image, shaped links at 1 and 10 Gbit/s, a region herd (60 clients, a 256 MiB blob, 3 nodes with Redis
 * behind nginx; needs the region core of issue 16 and redis-server), 3 runs, a CPU profile of the cache
 * node; writes docs/benchmarks.md, .svg and .json.
 * Smoke mode (`npm run bench:smoke`, and test/e2e/bench-smoke.test.ts): small sizes, 1 run, every body
 * hashed, results in a temporary folder. Exit code 1 when a correctness problem was found (wrong bytes, a
 * cut transfer, more than one upstream GET per hop for Cascade, a crash), never for speed.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from '../lib/cascade.js';
import { closeClient, haveCurl, type ClientKind } from './client.js';
import { closeTopologies } from './netns.js';
import { profileCascade, type ProfileSummary } from './profile.js';
import { Fleet } from './procs.js';
import { renderMarkdown, renderSvg, verdicts, type Results } from './report.js';
import { endRun, FULL, SCENARIOS, setup, SMOKE, startServerEarly, stopServer, type BenchConfig, type Context, type MemoryMode, type Metrics } from './scenarios.js';
import { SHAPED } from './shaped.js';
import { REGION } from './region.js';
import { environment, machineFloors, MiB, type MachineFloors } from './util.js';

/** The settings (BenchConfig keys) each scenario's figures depend on, taken from a merged invocation. */
const SCENARIO_SETTINGS: Record<string, readonly string[]> = { s8: ['regionNodes', 'regionClients', 'regionMiB', 'regionHashed'] };

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    runs: { type: 'string' },
    only: { type: 'string' },
    'no-profile': { type: 'boolean', default: false },
    out: { type: 'string' },
    client: { type: 'string' },
    keep: { type: 'boolean', default: false },
    merge: { type: 'boolean', default: false },
    render: { type: 'boolean', default: false },
    work: { type: 'string' },
    memory: { type: 'string' },
    'big-mib': { type: 'string' },
    'shaped-mib': { type: 'string' },
    'shaped-gbit': { type: 'string' },
  },
  strict: true,
});

// --render: rewrite benchmarks.md and .svg from the benchmarks.json already in the output folder (no measuring).
if (values.render) {
  const dir = resolve(values.out ?? join(ROOT, 'docs'));
  const prior = JSON.parse(await readFile(join(dir, 'benchmarks.json'), 'utf8')) as Results;
  await writeFile(join(dir, 'benchmarks.svg'), renderSvg(prior));
  await writeFile(join(dir, 'benchmarks.md'), renderMarkdown(prior, 'benchmarks.svg'));
  console.log(`rendered ${join(dir, 'benchmarks.md')} and .svg from benchmarks.json`);
  process.exit(0);
}

const started = performance.now();
const log = (s: string) => console.log(`[bench ${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${s}`);

function ensureCurl(smoke: boolean): ClientKind {
  if (haveCurl()) return 'curl';
  if (!smoke && process.getuid?.() === 0) {
    log('curl is missing: installing it with apt-get');
    try {
      execFileSync('sh', ['-c', 'DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl)'], { stdio: 'inherit' });
    } catch {
      // fall back below
    }
    if (haveCurl()) return 'curl';
  }
  log("curl is not installed: measuring with Node's http client (slower than nginx on loopback: see the report)");
  return 'node';
}

for (const cmd of ['docker-registry', 'nginx', 'skopeo', 'redis-server']) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  } catch {
    console.error(`bench: ${cmd} is not installed (run: bash scripts/install-peers.sh)`);
    process.exit(2);
  }
}

const smoke = values.smoke ?? false;
const only = values.only ? values.only.split(',').map((s) => s.trim()) : undefined;
const scenarios = new Set(only ? only.filter((s) => /^\d$/.test(s)).map(Number) : [1, 2, 3, 4, 5, 6, 7, 8]);
const wantProfile = !smoke && !values['no-profile'] && (!only || only.includes('profile'));
const client: ClientKind = values.client === 'node' ? 'node' : values.client === 'curl' ? 'curl' : ensureCurl(smoke);

/** Exits with a usage error unless `ok`. */
function usage(ok: boolean, message: string): void {
  if (ok) return;
  console.error(`bench: ${message}`);
  process.exit(2);
}

/** A positive integer given as `--<name>`, or `fallback`. */
function positive(name: 'runs' | 'big-mib' | 'shaped-mib', fallback: number): number {
  const n = Number(values[name] ?? fallback);
  usage(Number.isInteger(n) && n > 0, `--${name} must be a positive integer`);
  return n;
}

const sizes = smoke ? SMOKE : FULL;
usage(values.memory === undefined || ['fresh', 'recycled', 'both'].includes(values.memory), '--memory must be fresh, recycled or both');
const gbits = values['shaped-gbit']?.split(',').map(Number) ?? sizes.shapedGbits;
usage(gbits.length > 0 && gbits.every((g) => g > 0), '--shaped-gbit must list positive link speeds in Gbit/s, e.g. 1,10');
const cfg: BenchConfig = {
  ...sizes,
  runs: positive('runs', smoke ? 1 : 3),
  bigMiB: positive('big-mib', sizes.bigMiB),
  shapedMiB: positive('shaped-mib', sizes.shapedMiB),
  shapedGbits: gbits,
  memory: (values.memory as MemoryMode | undefined) ?? sizes.memory,
  client,
  scenarios,
};

const outDir = resolve(values.out ?? (smoke ? await mkdtemp(join(tmpdir(), 'cascade-bench-smoke-')) : join(ROOT, 'docs')));
if (values.work) await mkdir(values.work, { recursive: true });
const work = await mkdtemp(join(values.work ?? tmpdir(), 'cascade-bench-'));
const fleet = new Fleet();
let ctx: Context | undefined;

async function cleanup(): Promise<void> {
  // Keep-alive connections first: a server draining on SIGTERM would wait for them.
  closeClient();
  if (ctx) await endRun(ctx).catch(() => undefined);
  if (ctx) await stopServer(ctx).catch(() => undefined);
  await fleet.stopAll().catch(() => undefined);
  // Scenario 7's namespaces, veths and bridge, with whatever still runs in them (after a failure or SIGINT).
  await closeTopologies().catch(() => undefined);
  if (!values.keep) await rm(work, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });
}

const env = environment();
log(`${cfg.mode} benchmark, ${cfg.runs} run(s), scenarios ${[...scenarios].join(',')}${wantProfile ? ', profile' : ''}, client ${client}; work folder ${work}`);
const runs: Metrics[] = [];
let profile: ProfileSummary[] | undefined;
let floors: MachineFloors | undefined;
let fatal: unknown;
try {
  ctx = await setup(cfg, work, fleet, log, values.keep);
  startServerEarly(ctx);
  for (let r = 1; r <= (scenarios.size ? cfg.runs : 0); r++) {
    const m: Metrics = {};
    for (const s of [...SCENARIOS, SHAPED, REGION]) {
      if (!scenarios.has(s.id)) continue;
      log(`run ${r}/${cfg.runs}: scenario ${s.id}, ${s.name}`);
      try {
        await s.run(ctx, m);
      } catch (err) {
        ctx.problems.push(`run ${r}, scenario ${s.id} failed: ${(err as Error).stack ?? String(err)}`);
        console.error(err);
      }
    }
    await endRun(ctx);
    runs.push(m);
    log(`run ${r} done: ${Object.keys(m).length} figures`);
  }
  if (wantProfile) {
    log('profiling the cache node (cold fill, then warm single stream)');
    const profDir = join(ROOT, 'tmp', 'bench-profiles', new Date().toISOString().replace(/[:.]/g, '-'));
    await mkdir(profDir, { recursive: true });
    // A failed profile is not a correctness problem of the cache: it is noted in the report.
    profile = await profileCascade(ctx, profDir).catch((err: unknown) => {
      ctx!.notes.push(`The profile failed: ${(err as Error).message.split('\n')[0]}`);
      return undefined;
    });
  }
  if (scenarios.has(2)) {
    // Last: the probe's freed pages would make the page cache cheaper for whatever runs after it.
    floors = machineFloors(work, cfg.bigMiB * MiB);
    log(`machine floors: SHA-256 ${floors.sha256MBps.toFixed(0)} MB/s on one core; a new ${cfg.bigMiB} MiB file written at ${floors.freshWriteMBps.toFixed(0)} MB/s (fresh memory), ${floors.recycledWriteMBps.toFixed(0)} MB/s (recycled)`);
  }
} catch (err) {
  fatal = err;
  console.error(err);
} finally {
  // Stopping the long-lived processes (origin, nginx, the server stack) records those that had crashed.
  await cleanup();
}

ctx?.notes.push(`Load average (1, 5, 15 min) at the start: ${env.loadAtStart}; at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')} (${env.cores} cores).`);
const measured: Results = {
  config: cfg,
  env,
  argv: process.argv.slice(2),
  runs,
  problems: [...(ctx?.problems ?? []), ...fleet.crashes, ...(fatal ? [`fatal: ${(fatal as Error).stack ?? String(fatal)}`] : [])],
  notes: ctx?.notes ?? [],
  ...(profile ? { profile } : {}),
  ...(floors ? { floors } : {}),
  wallSeconds: (performance.now() - started) / 1000,
};
// --merge (with --only): add what was measured now to the results already in the output folder.
const results: Results = values.merge ? await mergeInto(join(outDir, 'benchmarks.json'), measured) : measured;
await mkdir(outDir, { recursive: true });
const svgName = 'benchmarks.svg';
await writeFile(join(outDir, 'benchmarks.json'), JSON.stringify({ ...results, verdicts: verdicts(results).map((v) => ({ id: v.check.id, label: v.check.label, value: v.value, pass: v.pass })) }, null, 2) + '\n');
await writeFile(join(outDir, svgName), renderSvg(results));
await writeFile(join(outDir, 'benchmarks.md'), renderMarkdown(results, svgName));
log(`wrote ${relative(process.cwd(), join(outDir, 'benchmarks.md')) || outDir} (+ .svg, .json) in ${results.wallSeconds.toFixed(1)} s`);
for (const v of verdicts(results)) log(`  ${v.pass ? 'PASS' : 'FAIL'}  ${v.check.label}: ${v.value?.toFixed(2)} (${v.check.op} ${v.check.target})`);
if (results.problems.length) {
  log(`${results.problems.length} correctness problem(s):`);
  for (const p of results.problems) console.log(`  - ${p}`);
  process.exitCode = 1;
} else {
  log('no correctness problem');
}

async function mergeInto(file: string, fresh: Results): Promise<Results> {
  const prior = JSON.parse(await readFile(file, 'utf8')) as Results;
  // Scenarios measured now replace theirs in the prior runs (run i into run i), the others stay.
  const measuredNow = new Set(fresh.runs.flatMap((r) => Object.keys(r).map((k) => k.split('.')[0] as string)));
  const runs = prior.runs.map((r, i) => ({ ...Object.fromEntries(Object.entries(r).filter(([k]) => !measuredNow.has(k.split('.')[0] as string))), ...(fresh.runs[i] ?? {}) }) as Metrics);
  const what = [...(measuredNow.size ? [`scenario${measuredNow.size > 1 ? 's' : ''} ${[...measuredNow].map((k) => k.replace(/^s/, '')).join(', ')}`] : []), ...(fresh.profile ? ['the profile'] : [])].join(' and ');
  // The settings of the scenarios measured now are this invocation's (the prior run may predate them).
  const settings = Object.fromEntries(Object.entries(fresh.config).filter(([k]) => !(k in prior.config) || [...measuredNow].some((s) => SCENARIO_SETTINGS[s]?.includes(k))));
  const kept = new Set(prior.runs.flatMap((r) => Object.keys(r).map((k) => k.split('.')[0] as string)).filter((k) => !measuredNow.has(k)));
  if (measuredNow.size > kept.size) {
    // This invocation measured most of the results: its machine, commit, command and wall time head the report,
    // and the few scenarios kept from before say where they come from. Prior notes stay only when they are
    // about a kept scenario alone ("Scenario 8 ..."); the rest described figures replaced now.
    const keptNames = [...kept].map((k) => k.replace(/^s/, ''));
    // A note that a scenario was kept by an earlier merge is replaced by this merge's own.
    const keptNote = (n: string) => / (is|are) kept from /.test(n);
    const aboutKept = (n: string) => !keptNote(n) && keptNames.some((k) => n.startsWith(`Scenario ${k}'`) || n.startsWith(`Scenario ${k} `));
    return {
      ...fresh,
      config: { ...fresh.config, ...Object.fromEntries(Object.entries(prior.config).filter(([k]) => [...kept].some((s) => SCENARIO_SETTINGS[s]?.includes(k)))) } as BenchConfig,
      runs,
      ...(fresh.profile || !prior.profile ? {} : { profile: prior.profile }),
      ...(fresh.floors || !prior.floors ? {} : { floors: prior.floors }),
      problems: [...fresh.problems, ...prior.problems.filter(aboutKept)],
      notes: [
        ...fresh.notes,
        ...prior.notes.filter(aboutKept),
        // The prior header names the invocation that headed the file, not necessarily the one that measured a
        // kept scenario (that one has its own note, kept above, when a merge took it).
        `Scenario${kept.size > 1 ? 's' : ''} ${keptNames.join(', ')} ${kept.size > 1 ? 'are' : 'is'} kept from the results this file held before (headed by commit ${prior.env.commit.slice(0, 7)}, ${prior.env.date.slice(0, 16).replace('T', ' ')} UTC; a note above says when ${kept.size > 1 ? 'they were' : 'it was'} measured, if a merge took ${kept.size > 1 ? 'them' : 'it'}); this invocation measured the rest and replaced their figures.`,
      ],
    };
  }
  return {
    ...prior,
    config: { ...prior.config, ...settings } as BenchConfig,
    runs,
    ...(fresh.profile ? { profile: fresh.profile } : {}),
    ...(fresh.floors ? { floors: fresh.floors } : {}),
    problems: [...prior.problems.filter((p) => !p.startsWith('profile failed')), ...fresh.problems],
    notes: [
      // (a profile taken again replaces the note of the one before; what earlier merges measured stays noted)
      ...prior.notes.filter((n) => !(fresh.profile && n.startsWith('The profile'))),
      ...fresh.notes.map((n) => (n.startsWith('Load average') && measuredNow.size ? `${[...measuredNow].map((k) => `Scenario ${k.slice(1)}`).join(', ')}: ${n.charAt(0).toLowerCase()}${n.slice(1)}` : n)),
      `${what.charAt(0).toUpperCase()}${what.slice(1)} ${measuredNow.size + (fresh.profile ? 1 : 0) > 1 ? 'were' : 'was'} taken separately (${fresh.env.date.slice(0, 16).replace('T', ' ')} UTC, \`node test/dist/bench/run.js ${fresh.argv.join(' ')}\`) and merged into these results.`,
    ],
  };
}
