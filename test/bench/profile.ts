/**
 * CPU profiles of a Cascade cache node (`node --cpu-prof packages/cli/bin/cascade.js registry ...`):
 * one cold fill of the big blob, then, on a second process over the same storage, warm single-stream
 * transfers only. The `.cpuprofile` files are summarised as the functions with the
 * most self time and the most inclusive time.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ROOT } from '../lib/cascade.js';
import { getMany } from './client.js';
import { Fleet, startCascadeCache } from './procs.js';
import { REPO, type Context } from './scenarios.js';
import { mbps, median } from './util.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileRow {
  readonly fn: string;
  readonly where: string;
  readonly selfPct: number;
  readonly totalPct: number;
}

export interface ProfileSummary {
  readonly phase: string;
  readonly file: string;
  /** Sampled time after start-up, in milliseconds. */
  readonly durationMs: number;
  /** Share of that time the main thread was idle (waiting for I/O), in percent. */
  readonly idlePct: number;
  /** Throughput measured while profiling (the profiler slows the process down a little). */
  readonly MBps: number;
  /** Percentages below are of the busy (non-idle) time. */
  readonly topSelf: ProfileRow[];
  readonly topTotal: ProfileRow[];
  /** Busy time charged to the nearest Cascade or library frame on the stack (native callees included). */
  readonly byFrame: ProfileRow[];
}

function location(url: string, line: number): string {
  if (!url) return '';
  let path = url.replace(/^file:\/\//, '');
  if (path.startsWith('/')) path = relative(ROOT, path);
  return `${path}:${line + 1}`;
}

/**
 * Self, inclusive and nearest-application-frame time per function, as shares of the busy time, leaving
 * out the first `skipMs` (the process start-up: module loading).
 */
export function summarise(profile: CpuProfile, top = 15, skipMs = 0): Omit<ProfileSummary, 'phase' | 'file' | 'MBps'> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const self = new Map<number, number>();
  let t = 0;
  let idle = 0;
  let sampled = 0;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (t / 1000 < skipMs) continue;
    const dt = Math.max(0, deltas[i + 1] ?? 0);
    sampled += dt;
    if (byId.get(samples[i]!)?.callFrame.functionName === '(idle)') idle += dt;
    else self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + dt);
  }
  const busy = sampled - idle || 1;
  const key = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'}\t${location(n.callFrame.url, n.callFrame.lineNumber)}`;
  const selfBy = new Map<string, number>();
  const totalBy = new Map<string, number>();
  const frameBy = new Map<string, number>();
  const isApp = (url: string) => url.includes('/packages/') || url.includes('/node_modules/');
  for (const [id, v] of self) {
    const k = key(byId.get(id)!);
    selfBy.set(k, (selfBy.get(k) ?? 0) + v);
    // Each function once per stack (recursion is not counted twice).
    const seen = new Set<string>();
    let owner: string | undefined;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const kk = key(n);
      if (!seen.has(kk)) {
        seen.add(kk);
        totalBy.set(kk, (totalBy.get(kk) ?? 0) + v);
      }
      if (owner === undefined && isApp(n.callFrame.url)) owner = kk;
    }
    const o = owner ?? `${byId.get(id)!.callFrame.functionName} (no Cascade or library frame)\t`;
    frameBy.set(o, (frameBy.get(o) ?? 0) + v);
  }
  const rows = (m: Map<string, number>, skip: (fn: string) => boolean = () => false) =>
    [...m.entries()]
      .filter(([k]) => !skip(k.split('\t')[0]!))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => {
        const [fn, where] = k.split('\t') as [string, string];
        return { fn, where, selfPct: ((selfBy.get(k) ?? 0) / busy) * 100, totalPct: (v / busy) * 100 };
      });
  return {
    topSelf: rows(selfBy),
    topTotal: rows(totalBy, (fn) => fn === '(root)' || fn === '(program)'),
    byFrame: rows(frameBy),
    durationMs: sampled / 1000,
    idlePct: (idle / (sampled || 1)) * 100,
  };
}

async function newestProfile(dir: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort();
  if (files.length === 0) throw new Error(`no .cpuprofile written in ${dir}`);
  return join(dir, files[files.length - 1]!);
}

/** Profiles the cold fill and the warm single stream of the big blob. */
export async function profileCascade(ctx: Context, outDir: string, repeats = 8): Promise<ProfileSummary[]> {
  const dir = join(ctx.work, 'profile');
  const out: ProfileSummary[] = [];
  const url = (base: string) => `${base}/v2/${REPO}/blobs/${ctx.big.digest}`;
  for (const phase of ['cold', 'warm'] as const) {
    const profDir = join(outDir, `profile-${phase}`);
    const fleet = new Fleet();
    const nodeArgs = ['--cpu-prof', `--cpu-prof-dir=${profDir}`];
    let speeds: number[] = [];
    let startupMs = 0;
    try {
      // The warm process reuses the cold one's storage folder, so its profile holds hits only.
      const t0 = performance.now();
      const node = await startCascadeCache(fleet, { dir: join(dir, 'cache'), name: `profile-${phase}`, origin: ctx.origin.url, nodeArgs });
      startupMs = performance.now() - t0;
      for (let i = 0; i < (phase === 'cold' ? 1 : repeats); i++) {
        const b = await getMany(ctx.cfg.client, url(node.url), { count: 1 });
        const t = b.transfers[0]!;
        if (t.status !== 200 || t.bytes !== ctx.big.size) ctx.problems.push(`profile ${phase}: GET -> ${t.status}, ${t.bytes} bytes ${t.error ?? ''}`);
        speeds.push(mbps(ctx.big.size, t.totalMs));
      }
    } finally {
      await fleet.stopAll(); // SIGTERM: the process exits normally and writes its profile
      ctx.problems.push(...fleet.crashes);
    }
    const file = await newestProfile(profDir);
    const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
    const s = summarise(profile, 15, startupMs);
    out.push({ phase, file: relative(ROOT, file), MBps: median(speeds), ...s });
    speeds = [];
  }
  return out;
}
