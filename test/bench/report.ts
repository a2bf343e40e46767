/**
 * The benchmark report: docs/benchmarks.md (machine, versions, exact commands, one table per scenario,
 * the targets with PASS/FAIL) and docs/benchmarks.svg (a hand-written bar chart of the ratios against
 * their targets). Every figure is the median over the runs; ratios are computed within each run first.
 */
import { CURL_ARGS } from './client.js';
import { tbfArgs } from './netns.js';
import type { ProfileSummary } from './profile.js';
import { coldPrefix, memoryPasses, primaryMemory, recycleBytes, type BenchConfig, type Metrics } from './scenarios.js';
import { shapedPrefix } from './shaped.js';
import { median, MiB } from './util.js';
import type { Environment, MachineFloors } from './util.js';

export interface Results {
  readonly config: BenchConfig;
  readonly env: Environment;
  readonly argv: string[];
  readonly runs: Metrics[];
  readonly problems: string[];
  readonly notes: string[];
  readonly profile?: ProfileSummary[];
  /** Measured at the end of the invocation (scenario 2 runs): what the machine allows a cold pull. */
  readonly floors?: MachineFloors;
  /** Wall time of the whole invocation (setup, runs, profile), in seconds. */
  readonly wallSeconds: number;
}

/** The targets of the issue, and the per-run ratio each is checked on. */
interface Check {
  readonly id: string;
  readonly scenario: string;
  readonly label: string;
  /** Per-run metric key of the checked value. */
  readonly key: string;
  readonly op: '>=' | '<=' | '==';
  readonly target: number;
  /** `x` (a ratio), `ms`, `MiB`, `CPU-s` or none. */
  readonly unit: string;
  /** Per-run key of the same figure for distribution's proxy (for comparison). */
  readonly distKey?: string;
  /** The chart's ratio (value / limit, or the ratio itself) and its target line. */
  readonly chartKey: string;
  readonly chartTarget: number;
  readonly chartDistKey?: string;
  /** The chart's row label, when it plots a normalised figure rather than the checked value. */
  readonly chartLabel?: string;
}

const RSS_LIMIT_MIB = 150;
const RSS_GROWTH_LIMIT_MIB = 16;
/** CPU seconds the cache processes of a chain may use per GiB of a cold pull, per hop. */
const CPU_PER_GIB_LIMIT = 1.0;

/** Scenario 7's targets: Cascade's cold pull over `hops` ÷ the direct pull over the same links, per link speed. */
const SHAPED_TARGETS: ReadonlyArray<{ readonly gbit: number; readonly hops: 1 | 3; readonly target: number }> = [
  { gbit: 1, hops: 1, target: 1.02 },
  { gbit: 1, hops: 3, target: 1.05 },
  { gbit: 10, hops: 1, target: 1.25 },
  { gbit: 10, hops: 3, target: 2 },
];

/** A check of a figure of Cascade's chain against the same figure of distribution's chain, charted as is. */
function chainCheck(id: string, scenario: string, label: string, key: (kind: string) => string, op: Check['op'], target: number, unit: string): Check {
  return { id, scenario, label, key: key('cascade'), op, target, unit, distKey: key('distribution'), chartKey: key('cascade'), chartTarget: target, chartDistKey: key('distribution') };
}

const hopsLabel = (hops: number): string => `${hops} hop${hops === 1 ? '' : 's'}`;

const CHECKS: readonly Check[] = [
  { id: 'warm1-dist', scenario: '1', label: 'Warm, 1 stream: Cascade / distribution', key: 's1.single.ratio.distribution', op: '>=', target: 1.2, unit: 'x', chartKey: 's1.single.ratio.distribution', chartTarget: 1.2 },
  { id: 'warm1-nginx', scenario: '1', label: 'Warm, 1 stream: Cascade / nginx', key: 's1.single.ratio.nginx', op: '>=', target: 0.9, unit: 'x', distKey: 's1.single.ratio.distribution-vs-nginx', chartKey: 's1.single.ratio.nginx', chartTarget: 0.9, chartDistKey: 's1.single.ratio.distribution-vs-nginx' },
  { id: 'warmN-dist', scenario: '1', label: 'Warm, N streams: Cascade / distribution', key: 's1.conc.ratio.distribution', op: '>=', target: 1.2, unit: 'x', chartKey: 's1.conc.ratio.distribution', chartTarget: 1.2 },
  { id: 'warmN-nginx', scenario: '1', label: 'Warm, N streams: Cascade / nginx', key: 's1.conc.ratio.nginx', op: '>=', target: 0.9, unit: 'x', distKey: 's1.conc.ratio.distribution-vs-nginx', chartKey: 's1.conc.ratio.nginx', chartTarget: 0.9, chartDistKey: 's1.conc.ratio.distribution-vs-nginx' },
  { id: 'cold1', scenario: '2', label: 'Cold, 1 hop: time / direct', key: 's2.cascade1.ratio', op: '<=', target: 1.15, unit: 'x', distKey: 's2.distribution1.ratio', chartKey: 's2.cascade1.ratio', chartTarget: 1.15, chartDistKey: 's2.distribution1.ratio' },
  { id: 'cold3', scenario: '2', label: 'Cold, 3 hops: time / direct', key: 's2.cascade3.ratio', op: '<=', target: 1.3, unit: 'x', distKey: 's2.distribution3.ratio', chartKey: 's2.cascade3.ratio', chartTarget: 1.3, chartDistKey: 's2.distribution3.ratio' },
  { id: 'ttfb1', scenario: '2', label: 'Cold, 1 hop: TTFB − origin TTFB', key: 's2.cascade1.ttfbExtraMs', op: '<=', target: 10, unit: 'ms', distKey: 's2.distribution1.ttfbExtraMs', chartKey: 's2.cascade1.ttfbNorm', chartTarget: 1, chartDistKey: 's2.distribution1.ttfbNorm', chartLabel: 'Cold, 1 hop: TTFB ÷ (origin TTFB + 10 ms)' },
  { id: 'ttfb3', scenario: '2', label: 'Cold, 3 hops: TTFB − origin TTFB', key: 's2.cascade3.ttfbExtraMs', op: '<=', target: 30, unit: 'ms', distKey: 's2.distribution3.ttfbExtraMs', chartKey: 's2.cascade3.ttfbNorm', chartTarget: 1, chartDistKey: 's2.distribution3.ttfbNorm', chartLabel: 'Cold, 3 hops: TTFB ÷ (origin TTFB + 30 ms)' },
  ...([1, 3] as const).map((hops) =>
    chainCheck(`cpu${hops}`, '2', `Cold, ${hopsLabel(hops)}: cache CPU per cold GiB per hop`, (kind) => `s2.${kind}${hops}.cpuPerGiBPerHop`, '<=', CPU_PER_GIB_LIMIT, 'CPU-s'),
  ),
  { id: 'gets1', scenario: '3', label: 'Burst, 1 hop: upstream GETs per hop (max)', key: 's3.cascade1.maxGetsPerHop', op: '==', target: 1, unit: '', distKey: 's3.distribution1.maxGetsPerHop', chartKey: 's3.cascade1.maxGetsPerHop', chartTarget: 1, chartDistKey: 's3.distribution1.maxGetsPerHop' },
  { id: 'gets3', scenario: '3', label: 'Burst, 3 hops: upstream GETs per hop (max)', key: 's3.cascade3.maxGetsPerHop', op: '==', target: 1, unit: '', distKey: 's3.distribution3.maxGetsPerHop', chartKey: 's3.cascade3.maxGetsPerHop', chartTarget: 1, chartDistKey: 's3.distribution3.maxGetsPerHop' },
  { id: 'rss', scenario: '5', label: 'Peak RSS, scenario 1, N streams', key: 's5.conc.cascade.MiB', op: '<=', target: RSS_LIMIT_MIB, unit: 'MiB', distKey: 's5.conc.distribution.MiB', chartKey: 's5.conc.cascade.norm', chartTarget: 1, chartDistKey: 's5.conc.distribution.norm', chartLabel: `Peak RSS, N warm streams ÷ ${RSS_LIMIT_MIB} MiB` },
  { id: 'rss-growth', scenario: '5', label: 'Peak RSS growth, big blob vs small blob', key: 's5.growth.cascade.MiB', op: '<=', target: RSS_GROWTH_LIMIT_MIB, unit: 'MiB', distKey: 's5.growth.distribution.MiB', chartKey: 's5.growth.cascade.norm', chartTarget: 1, chartDistKey: 's5.growth.distribution.norm', chartLabel: `Peak RSS, big blob ÷ (small blob + ${RSS_GROWTH_LIMIT_MIB} MiB)` },
  ...SHAPED_TARGETS.map((t) =>
    chainCheck(`shaped${t.hops}-${t.gbit}g`, '7', `Shaped ${t.gbit} Gbit/s, cold, ${hopsLabel(t.hops)}: time / direct`, (kind) => `${shapedPrefix(t.gbit)}${kind}${t.hops}.ratio`, '<=', t.target, 'x'),
  ),
  { id: 'region-gets', scenario: '8', label: 'Region herd over several nodes: origin GETs', key: 's8.region.originGets', op: '==', target: 1, unit: '', chartKey: 's8.region.originGets', chartTarget: 1 },
];

/** Adds the chart's normalised figures to each run. */
function derive(m: Metrics): Metrics {
  const out = { ...m };
  for (const [key, hops] of [['cascade1', 1], ['cascade3', 3], ['distribution1', 1], ['distribution3', 3]] as const) {
    const t = m[`s2.${key}.ttfbMs`];
    const d = m[`s2.${key}.direct.ttfbMs`];
    if (t !== undefined && d !== undefined) out[`s2.${key}.ttfbNorm`] = t / (d + 10 * hops);
  }
  for (const sys of ['cascade', 'distribution']) {
    const c = m[`s5.conc.${sys}.MiB`];
    const s = m[`s5.concSmall.${sys}.MiB`];
    if (c !== undefined) out[`s5.conc.${sys}.norm`] = c / RSS_LIMIT_MIB;
    if (c !== undefined && s !== undefined) out[`s5.growth.${sys}.norm`] = c / (s + RSS_GROWTH_LIMIT_MIB);
  }
  return out;
}

function pass(op: Check['op'], value: number, target: number): boolean {
  if (!Number.isFinite(value)) return false;
  return op === '>=' ? value >= target : op === '<=' ? value <= target : value === target;
}

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

class Agg {
  readonly runs: Metrics[];
  constructor(runs: Metrics[]) {
    this.runs = runs.map(derive);
  }
  values(key: string): number[] {
    return this.runs.map((r) => r[key]).filter((v): v is number => v !== undefined && Number.isFinite(v));
  }
  med(key: string): number | undefined {
    const v = this.values(key);
    return v.length ? median(v) : undefined;
  }
  /** `median` and, with several runs, `(run1, run2, ...)`. */
  show(key: string, digits = 0, unit = ''): string {
    const v = this.values(key);
    if (v.length === 0) return '–';
    const m = `${fmt(median(v), digits)}${unit}`;
    return v.length > 1 ? `${m} <sub>(${v.map((x) => fmt(x, digits)).join(', ')})</sub>` : m;
  }
}

export interface Verdict {
  readonly check: Check;
  readonly value: number | undefined;
  readonly pass: boolean;
}

export function verdicts(results: Results): Verdict[] {
  const agg = new Agg(results.runs);
  return CHECKS.filter((c) => agg.values(c.key).length > 0).map((check) => {
    const value = agg.med(check.key);
    return { check, value, pass: value !== undefined && pass(check.op, value, check.target) };
  });
}

// -------------------------------------------------------------------------------------------------------
// SVG chart

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar chart: for every target, Cascade's ratio (green/red) and distribution's (grey), with the target line. */
export function renderSvg(results: Results): string {
  const agg = new Agg(results.runs);
  const rows = verdicts(results).map((v) => ({
    label: v.check.chartLabel ?? v.check.label,
    op: v.check.op,
    target: v.check.chartTarget,
    cascade: agg.med(v.check.chartKey),
    dist: v.check.chartDistKey ? agg.med(v.check.chartDistKey) : undefined,
    pass: v.pass,
  }));
  const max = 3;
  const left = 390;
  const width = 1000;
  const plotW = width - left - 120;
  const rowH = 40;
  const top = 64;
  const height = top + rows.length * rowH + 70;
  const x = (v: number) => left + (Math.min(v, max) / max) * plotW;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="13">`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<text x="${width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">Cascade against the targets (median of ${results.runs.length} run${results.runs.length === 1 ? '' : 's'}, ${results.config.mode} sizes)</text>`);
  parts.push(`<text x="${width / 2}" y="44" text-anchor="middle" fill="#555">ratio or value ÷ limit; | = target; ≥ targets: longer is better, ≤ targets: shorter is better; grey = distribution proxy</text>`);
  for (let t = 0; t <= max; t += 0.5) {
    parts.push(`<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${top + rows.length * rowH}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${x(t)}" y="${top + rows.length * rowH + 18}" text-anchor="middle" fill="#555">${t.toFixed(1)}</text>`);
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${left - 10}" y="${y + 19}" text-anchor="end">${esc(r.label)} (${r.op === '==' ? '=' : esc(r.op === '>=' ? '≥' : '≤')} ${r.target})</text>`);
    if (r.cascade !== undefined && Number.isFinite(r.cascade)) {
      const color = r.pass ? '#2e9d4f' : '#d0433a';
      parts.push(`<rect x="${left}" y="${y + 5}" width="${Math.max(1, x(r.cascade) - left)}" height="16" fill="${color}"/>`);
      parts.push(`<text x="${Math.max(x(r.cascade), x(r.target)) + 6}" y="${y + 18}" fill="${color}" font-weight="bold">${r.cascade.toFixed(2)}${r.cascade > max ? ' ▶' : ''} ${r.pass ? 'PASS' : 'FAIL'}</text>`);
    }
    if (r.dist !== undefined && Number.isFinite(r.dist)) {
      parts.push(`<rect x="${left}" y="${y + 23}" width="${Math.max(1, x(r.dist) - left)}" height="8" fill="#a0a0a0"/>`);
      parts.push(`<text x="${Math.max(x(r.dist), x(r.target)) + 6}" y="${y + 32}" fill="#777" font-size="11">${r.dist.toFixed(2)}${r.dist > max ? ' ▶' : ''}</text>`);
    }
    parts.push(`<line x1="${x(r.target)}" y1="${y + 1}" x2="${x(r.target)}" y2="${y + 35}" stroke="#222" stroke-width="2"/>`);
  });
  const ly = top + rows.length * rowH + 40;
  parts.push(`<rect x="${left}" y="${ly}" width="14" height="12" fill="#2e9d4f"/><text x="${left + 20}" y="${ly + 11}">Cascade, target met</text>`);
  parts.push(`<rect x="${left + 170}" y="${ly}" width="14" height="12" fill="#d0433a"/><text x="${left + 190}" y="${ly + 11}">Cascade, target missed</text>`);
  parts.push(`<rect x="${left + 360}" y="${ly + 2}" width="14" height="8" fill="#a0a0a0"/><text x="${left + 380}" y="${ly + 11}">distribution 2.8.2 proxy</text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// -------------------------------------------------------------------------------------------------------
// Markdown

/** The chains of scenarios 2, 3 and 7, in table order. */
const PATHS = [
  { key: 'cascade1', label: 'Cascade, 1 hop', hops: 1 },
  { key: 'cascade3', label: 'Cascade, 3 hops', hops: 3 },
  { key: 'distribution1', label: 'distribution, 1 hop', hops: 1 },
  { key: 'distribution3', label: 'distribution, 3 hops', hops: 3 },
] as const;

/** A column of a table with a row for the origin directly and one per chain. */
interface Column {
  readonly head: string;
  /** A chain's cell, from its key prefix (`s2.cascade1`). */
  readonly cell: (k: string) => string;
  /** The direct pull's cell, from the table's key prefix (`s2.`). */
  readonly direct: (p: string) => string;
}

/** The columns scenarios 2 and 7 share: times against the direct pull, what the pull cost, upstream GETs. */
function pullColumns(agg: Agg, bytes: number, cold: boolean): Record<'total' | 'speed' | 'ratio' | 'ttfbExtra' | 'cpu' | 'originCpu' | 'gets', Column> {
  const none = () => '–';
  return {
    total: { head: cold ? 'cold, ms' : 'total ms', cell: (k) => agg.show(`${k}.totalMs`), direct: (p) => agg.show(`${p}directMs`) },
    speed: { head: cold ? 'cold, MB/s' : 'MB/s', cell: (k) => agg.show(`${k}.MBps`), direct: (p) => fmt(bytes / 1e3 / (agg.med(`${p}directMs`) ?? NaN)) },
    ratio: { head: cold ? 'cold ÷ direct' : '÷ direct', cell: (k) => agg.show(`${k}.ratio`, 2), direct: () => '1' },
    ttfbExtra: { head: 'TTFB − direct, ms', cell: (k) => agg.show(`${k}.ttfbExtraMs`, 1), direct: () => '0' },
    cpu: { head: 'cache CPU-s per GiB per hop', cell: (k) => agg.show(`${k}.cpuPerGiBPerHop`, 2), direct: none },
    originCpu: { head: 'origin CPU-s per GiB', cell: (k) => agg.show(`${k}.originCpuPerGiB`, 2), direct: (p) => agg.show(`${p}direct.originCpuPerGiB`, 2) },
    gets: { head: 'upstream GETs per hop (max)', cell: (k) => agg.show(`${k}.maxGetsPerHop`), direct: none },
  };
}

/** A table with the origin directly and each chain of {@link PATHS}, figures under `p`. */
function pathTable(L: string[], p: string, columns: readonly Column[]): void {
  L.push(`| path | ${columns.map((c) => c.head).join(' | ')} |`);
  L.push(`|---|${columns.map(() => '---|').join('')}`);
  L.push(`| origin directly | ${columns.map((c) => c.direct(p)).join(' | ')} |`);
  for (const path of PATHS) L.push(`| ${path.label} | ${columns.map((c) => c.cell(`${p}${path.key}`)).join(' | ')} |`);
  L.push('');
}

/** How the cold pulls of these results got their memory, for the header. */
function memoryWords(cfg: BenchConfig): string {
  switch (cfg.memory) {
    case undefined:
      return 'whatever memory the kernel handed out (fresh memory:\nthese results predate `--memory`)';
    case 'fresh':
      return 'fresh memory (`--memory fresh`:\nno file is written and deleted before them; section 2)';
    default:
      return `**recycled memory** (a file is written and deleted right before each one;\n${cfg.memory === 'both' ? 'scenario 2 is measured on fresh memory too; ' : ''}section 2)`;
  }
}

/** Scenario 2: a table per memory pass (the targets' first), the machine's floors, Cascade's fills from its logs. */
function coldSection(L: string[], agg: Agg, results: Results): void {
  const cfg = results.config;
  const bytes = cfg.bigMiB * MiB;
  const primary = primaryMemory(cfg.memory);
  const passes = [primary, ...(cfg.memory ? memoryPasses(cfg.memory) : []).filter((pass) => pass !== primary)];
  const c = pullColumns(agg, bytes, false);
  const first: Column = { head: 'first request after start: TTFB − direct, ms', cell: (k) => agg.show(`${k}.firstTtfbExtraMs`, 1), direct: () => '–' };
  const ttfb: Column = { head: 'TTFB ms', cell: (k) => agg.show(`${k}.ttfbMs`, 1), direct: (p) => agg.show(`${p}directTtfbMs`, 1) };
  L.push(`## 2. Cold blob, ${cfg.bigMiB} MiB`);
  L.push('');
  L.push('Every chain starts with empty storage. The origin is measured directly right before each cold pull (the');
  L.push('ratio pairs the two). TTFB: time to the first byte of the response (curl `time_starttransfer`). Before its');
  L.push('cold pull, each chain passes on one unrelated 1 MiB blob, so that the figures are those of running nodes;');
  L.push("the last column is that first request's TTFB over the origin's (start-up work: connections, code compiled on");
  L.push('first use), for information. CPU: user + system time of each process from `/proc/<pid>/stat` (clock ticks),');
  L.push("from right before the cold pull until every hop has stored the blob (a cache's sync, or distribution's");
  L.push('second fetch, comes after the last byte); the caches\' sum ÷ hops ÷ GiB pulled, and the origin\'s ÷ GiB.');
  L.push('');
  L.push('**Memory.** On this virtual machine (Firecracker) a page the guest has not touched lately costs the host a');
  L.push('first touch: a new file goes into the page cache at ~0.45 GB/s there, and at ~6.5 GB/s on pages just freed.');
  L.push('*Recycled memory* writes and deletes a file (on tmpfs) right before each cold pull, half again as large as what the pull');
  const sizes = cfg.recycleMiB ? `: here ${fmt(recycleBytes(cfg, 1, bytes) / MiB)} MiB before 1 hop, ${fmt(recycleBytes(cfg, 3, bytes) / MiB)} MiB before 3` : '';
  L.push(`writes (a copy per hop) and at most ${fmt((cfg.recycleMiB ?? 2048) / 1024)} GiB${sizes}, so that the pull's files get pages`);
  L.push('touched before, as on a long-running host whose page cache is full. *Fresh memory* writes nothing first (the');
  L.push('benchmark before `--memory`). The targets are checked on the first table.');
  L.push('');
  for (const pass of passes) {
    const p = coldPrefix(cfg.memory, pass);
    L.push(`### ${pass === 'recycled' ? 'Recycled' : 'Fresh'} memory${p === 's2.' ? '' : ' (beside: no target)'}`);
    L.push('');
    pathTable(L, p, [c.total, c.speed, c.ratio, ttfb, c.ttfbExtra, c.cpu, c.originCpu, c.gets, first]);
    const recycled = PATHS.flatMap((path) => agg.values(`${p}${path.key}.recycleMBps`));
    if (recycled.length) {
      L.push(`The file written before each pull went at ${fmt(median(recycled))} MB/s (median; ${fmt(Math.min(...recycled))}–${fmt(Math.max(...recycled))}): low means it took fresh memory`);
      L.push('itself, which the pull then found freed.');
      L.push('');
    }
  }
  L.push(`Targets: one hop ≤ 1.15× direct, three hops ≤ 1.3×; TTFB ≤ origin + 10 ms per hop; cache CPU ≤ ${CPU_PER_GIB_LIMIT.toFixed(1)} CPU-s per`);
  L.push('GiB per hop.');
  L.push('');
  floors(L, results, agg.med('s2.directMs'));
  L.push("From Cascade's own logs (`upstream request` duration: until the upstream's headers; `fill complete` duration: from");
  L.push('those headers to the blob committed, fsync included), per hop, the hop nearest the origin first:');
  L.push('');
  L.push('| path | upstream headers, ms | fill, ms |');
  L.push('|---|---|---|');
  for (const pass of passes) {
    const p = coldPrefix(cfg.memory, pass);
    for (const path of PATHS.filter((x) => x.key.startsWith('cascade'))) {
      const per = (what: string) => Array.from({ length: path.hops }, (_, i) => fmt(agg.med(`${p}${path.key}.hop${i + 1}.${what}`))).join(', ');
      L.push(`| ${path.label}${passes.length > 1 ? `, ${pass} memory` : ''} | ${per('upstreamHeadersMs')} | ${per('fillMs')} |`);
    }
  }
  L.push('');
}

/** What this machine allows a verifying, storing cache (measured at the end of the invocation). */
function floors(L: string[], results: Results, direct: number | undefined): void {
  const { floors: fl, config: cfg } = results;
  if (!fl || direct === undefined) return;
  const bytes = cfg.bigMiB * MiB;
  const hashMs = bytes / 1e3 / fl.sha256MBps;
  const freshMs = bytes / 1e3 / fl.freshWriteMBps;
  L.push('What this machine allows a cache that checks every byte against its digest before the last one leaves, and');
  L.push('keeps a copy (measured at the end of this invocation, `machineFloors` in test/bench/util.ts):');
  L.push('');
  L.push(`- SHA-256 runs at ${fmt(fl.sha256MBps)} MB/s on one core. A digest is sequential, so checking the ${cfg.bigMiB} MiB blob`);
  L.push(`  takes at least ${fmt(hashMs)} ms at each hop: ${fmt(hashMs / direct, 2)}× the direct pull (${fmt(direct)} ms) for one hop, before any other`);
  L.push('  work. distribution\'s proxy streams its client a second, unchecked upstream GET, which is how it can come close to');
  L.push('  the direct time.');
  L.push(`- A new ${cfg.bigMiB} MiB file goes into the page cache at ${fmt(fl.freshWriteMBps)} MB/s on memory the kernel had not used`);
  L.push(`  lately (${fmt(freshMs)} ms), and at ${fmt(fl.recycledWriteMBps)} MB/s right after a file of that size was deleted. Cascade`);
  L.push('  sends a cold blob from the file it is filling, so where the first figure is low (a virtual machine whose host');
  L.push('  backs guest pages on first use) it bounds the cold pull too. See performance.md.');
  L.push('');
}

/** Scenario 7: a table per link speed. */
function shapedSection(L: string[], agg: Agg, cfg: BenchConfig): void {
  const gbits = (cfg.shapedGbits ?? []).filter((g) => agg.values(`${shapedPrefix(g)}directMs`).length > 0);
  L.push(`## 7. Shaped links${gbits.length ? `: ${cfg.shapedMiB} MiB over ${gbits.join(' and ')} Gbit/s` : ''}`);
  L.push('');
  L.push('The client, each cache hop and the origin run in network namespaces of their own, each joined to one bridge by a');
  L.push('veth pair whose two ends are limited with `tc tbf` (both directions of every link, like a switch port; this kernel');
  L.push('has no netem): chains client → c1 → origin and client → c3 → c2 → c1 → origin, started empty at each speed, and');
  L.push('the direct pull (client → origin) over the same links right before each cold pull. Then the same blob again');
  L.push(`through the chain (warm). Cold pulls on ${primaryMemory(cfg.memory)} memory. tbf's bucket holds 1 ms at the rate and at least 128 KiB (a veth`);
  L.push('hands it GSO packets of up to 64 KiB), its queue 4 buckets. A link carries at most ~95.6 % of its rate as TCP');
  L.push('payload (1448 bytes per 1514-byte frame).');
  L.push('');
  if (!gbits.length) {
    L.push('Not measured in this invocation (see the notes).');
    L.push('');
    return;
  }
  const c = pullColumns(agg, cfg.shapedMiB * MiB, true);
  const warm: Column[] = [
    { head: 'warm, ms', cell: (k) => agg.show(`${k}.warm.totalMs`), direct: () => '–' },
    { head: 'warm ÷ direct', cell: (k) => agg.show(`${k}.warm.ratio`, 2), direct: () => '–' },
  ];
  for (const gbit of gbits) {
    const p = shapedPrefix(gbit);
    L.push(`### ${gbit} Gbit/s (${fmt(gbit * 125)} MB/s): the direct pull's body came at ${agg.show(`${p}direct.bodyMBps`)} MB/s`);
    L.push('');
    pathTable(L, p, [c.total, c.speed, c.ratio, ...warm, c.ttfbExtra, c.cpu, c.originCpu, c.gets]);
  }
  const targets = SHAPED_TARGETS.map((t) => `${hopsLabel(t.hops)} at ${t.gbit} Gbit/s ≤ ${t.target}×`).join(', ');
  L.push(`Targets (Cascade's cold pull ÷ the direct pull): ${targets}.`);
  L.push('');
}

/** Scenario 8: the herd through a region and through one node, side by side. */
function regionSection(L: string[], agg: Agg, cfg: BenchConfig): void {
  if (agg.values('s8.region.p50Ms').length === 0 && agg.values('s8.single.p50Ms').length === 0) return;
  const nodes = cfg.regionNodes;
  const s = (k: string, d = 0) => agg.show(k, d);
  L.push(`## 8. A region: ${cfg.regionClients} clients, one cold ${cfg.regionMiB} MiB blob, ${nodes} nodes`);
  L.push('');
  L.push(`${cfg.regionClients} clients GET one blob no node has, at once (one curl \`--parallel\` process), through nginx (round-robin,`);
  L.push(`bodies streamed, as \`deploy/compose/config/region-nginx.conf\`) in front of ${nodes} cache nodes on one storage folder,`);
  L.push('coordinated through a redis-server (`region: {redis: ...}`); then the same herd through the same nginx in front of');
  L.push(`one node alone, on an empty folder. Every body's size is checked, ${cfg.regionHashed === 'all' ? 'and every one' : `${cfg.regionHashed} of them`} hashed. CPU: user + system`);
  L.push('seconds of each process from the herd\'s start until the blob is stored. Completion times are per client, from the');
  L.push("herd's start.");
  L.push('');
  L.push('| | origin GETs | p50 ms | p99 ms | all done, ms | CPU-s, nodes (each) | CPU-s, nginx | CPU-s, Redis | blob GETs per node |');
  L.push('|---|---|---|---|---|---|---|---|---|');
  for (const [variant, label, count] of [['single', 'one node', 1], ['region', `region of ${nodes}`, nodes]] as const) {
    const p = `s8.${variant}.`;
    const each = Array.from({ length: count }, (_, i) => fmt(agg.med(`${p}node${i + 1}.cpuS`), 2)).join(', ');
    const gets = Array.from({ length: count }, (_, i) => fmt(agg.med(`${p}node${i + 1}.gets`))).join(', ');
    L.push(`| ${label} | ${s(`${p}originGets`)} | ${s(`${p}p50Ms`)} | ${s(`${p}p99Ms`)} | ${s(`${p}wallMs`)} | ${s(`${p}cpuS`, 2)} (${each}) | ${s(`${p}nginx.cpuS`, 2)} | ${variant === 'region' ? s(`${p}redis.cpuS`, 2) : '–'} | ${gets} |`);
  }
  L.push('');
  L.push(`The region's fills (\`cascade_region_fills_total\`, summed over the nodes): led ${s('s8.region.fills.led')}, joined ${s('s8.region.fills.joined')}, taken over ${s('s8.region.fills.takeover')}; region p99 ÷ one node's p99: ${s('s8.p99.ratio.single', 2)}.`);
  L.push('Target: exactly one origin GET for the region (one fill per blob per region; more is a correctness problem).');
  L.push('');
}

export function renderMarkdown(results: Results, svgName: string | undefined): string {
  const { config: cfg, env } = results;
  const agg = new Agg(results.runs);
  const s = (k: string, d = 0) => agg.show(k, d);

  const L: string[] = [];
  const N = cfg.streams;
  L.push('# Benchmarks');
  L.push('');
  L.push(`Cascade's cache node against distribution ${'2.8.2'}'s pull-through proxy (\`proxy.remoteurl\`) and nginx (sendfile), on`);
  L.push('one machine, against the same origin (distribution as a plain registry): scenarios 1–6 on loopback, scenario 7 over');
  L.push('links shaped with `tc` between network namespaces, scenario 8 (a region of nodes behind nginx) on loopback.');
  L.push(`Cold pulls use ${memoryWords(cfg)}. Generated by`);
  L.push(`\`${['node', 'test/dist/bench/run.js', ...results.argv].join(' ')}\` on ${env.date.slice(0, 10)} (${results.runs.length} run${results.runs.length === 1 ? '' : 's'},`);
  L.push(`${cfg.mode} sizes); each figure is the **median of the runs**, with the runs in small print, and every ratio is taken`);
  L.push(`within a run before the median. Wall time of the whole invocation: ${fmt(results.wallSeconds)} s.`);
  L.push('');
  L.push(`Load average at the start: ${env.loadAtStart} on ${env.cores} cores. On a shared or busy machine single figures are`);
  L.push('noisy (see the spread of the runs); compare the ratios, which pair measurements taken moments apart.');
  L.push('');
  L.push('## Targets');
  L.push('');
  L.push('| scenario | target | Cascade (median) | limit | result | distribution proxy |');
  L.push('|---|---|---|---|---|---|');
  for (const v of verdicts(results)) {
    const c = v.check;
    const unit = c.unit === 'x' ? '×' : c.unit ? ` ${c.unit}` : '';
    const digits = c.unit === 'x' || c.unit === 'CPU-s' ? 2 : c.unit === 'ms' ? 1 : 0;
    L.push(`| ${c.scenario} | ${c.label} | ${agg.show(c.key, digits, unit)} | ${c.op === '==' ? '=' : c.op === '>=' ? '≥' : '≤'} ${c.target}${unit} | **${v.pass ? 'PASS' : 'FAIL'}** | ${c.distKey ? `${fmt(agg.med(c.distKey), digits)}${unit}` : '–'} |`);
  }
  L.push('');
  if (svgName) {
    L.push(`![Cascade's ratios against the targets](${svgName})`);
    L.push('');
  }
  if (results.problems.length) {
    L.push('**Correctness problems in this run** (wrong bytes, cut transfers, extra upstream GETs, crashes):');
    L.push('');
    for (const p of results.problems) L.push(`- ${p.split('\n')[0]}`);
    L.push('');
  } else {
    L.push('No correctness problem: every transfer had status 200 and the full size, the checked downloads hashed to');
    L.push('the blob digest, no process crashed.');
    L.push('');
  }

  L.push(`## 1. Warm blob, ${cfg.bigMiB} MiB`);
  L.push('');
  L.push('The blob is requested once through each cache (that GET is hashed), then measured as hits. nginx serves the');
  L.push("origin's data file itself with sendfile: the ceiling. MB/s are 10⁶ bytes per second; N streams: aggregate.");
  L.push('');
  L.push('| | nginx (sendfile) | Cascade | distribution proxy | Cascade / distribution | Cascade / nginx |');
  L.push('|---|---|---|---|---|---|');
  L.push(`| 1 stream, MB/s | ${s('s1.single.nginx.MBps')} | ${s('s1.single.cascade.MBps')} | ${s('s1.single.distribution.MBps')} | ${s('s1.single.ratio.distribution', 2)} | ${s('s1.single.ratio.nginx', 2)} |`);
  L.push(`| ${N} streams, MB/s | ${s('s1.conc.nginx.MBps')} | ${s('s1.conc.cascade.MBps')} | ${s('s1.conc.distribution.MBps')} | ${s('s1.conc.ratio.distribution', 2)} | ${s('s1.conc.ratio.nginx', 2)} |`);
  L.push(`| ${N} streams of the ${cfg.concMiB} MiB blob, MB/s | – | ${s('s1.concSmall.cascade.MBps')} | ${s('s1.concSmall.distribution.MBps')} | | |`);
  L.push(`| 1 stream, server CPU-s per GiB | ${s('s1.single.nginx.cpuPerGiB', 2)} | ${s('s1.single.cascade.cpuPerGiB', 2)} | ${s('s1.single.distribution.cpuPerGiB', 2)} | | |`);
  L.push('');
  L.push(`Targets: ≥ 1.2× distribution and ≥ 0.9× nginx, for 1 and ${N} streams. CPU: user + system time of the server`);
  L.push("process (nginx's workers included) from `/proc/<pid>/stat` around its single-stream transfers, per GiB sent.");
  L.push('');

  coldSection(L, agg, results);
  L.push(`## 3. ${cfg.concCount} simultaneous cold requests for one ${cfg.concMiB} MiB blob`);
  L.push('');
  L.push(`No cache of the chain has this blob. One curl process opens ${cfg.concCount} connections at once (\`--parallel`);
  L.push("--parallel-immediate`). Upstream GETs are counted in each upstream's access log (the origin's for the first hop,");
  L.push("the previous cache's for the next ones). Completion times are per request, from the burst's start.");
  L.push('');
  L.push('| path | p50 ms | p99 ms | all done, ms | upstream GETs per hop (origin first) | upstream HEADs |');
  L.push('|---|---|---|---|---|---|');
  L.push(`| origin directly | ${s('s3.direct.p50Ms')} | ${s('s3.direct.p99Ms')} | ${s('s3.direct.wallMs')} | – | – |`);
  for (const { key, label, hops } of PATHS) {
    const gets = Array.from({ length: hops }, (_, i) => fmt(agg.med(`s3.${key}.hop${i + 1}.gets`))).join(', ');
    L.push(`| ${label} | ${s(`s3.${key}.p50Ms`)} | ${s(`s3.${key}.p99Ms`)} | ${s(`s3.${key}.wallMs`)} | ${gets} | ${fmt(agg.med(`s3.${key}.upstreamHeads`))} |`);
  }
  L.push('');
  L.push('Target: exactly one upstream GET per hop.');
  L.push('');

  const layers = cfg.imageLayers.length;
  const total = cfg.imageLayers.reduce((a, b) => a + b, 0);
  L.push(`## 4. Image pull with skopeo: ${layers} layers`);
  L.push('');
  L.push(`Layers are gzip'd tars of random bytes of mixed sizes (${fmt(total / MiB)} MiB in total: mostly 4–256 KiB, every fifth`);
  L.push('0.5–4 MiB, every thirtieth 8–24 MiB, scaled down in the smoke run), pulled with `skopeo copy docker://… oci:…`');
  L.push('(its default parallelism); cold = empty cache, warm = the same cache again. Every pulled layout is checked.');
  L.push('');
  L.push('| path | cold, ms | warm, ms | Cascade / distribution | Cascade / direct |');
  L.push('|---|---|---|---|---|');
  L.push(`| origin directly | ${s('s4.direct.ms')} | – | | |`);
  L.push(`| Cascade, 1 hop | ${s('s4.cascade.coldMs')} | ${s('s4.cascade.warmMs')} | cold ${s('s4.cold.ratio.distribution', 2)}, warm ${s('s4.warm.ratio.distribution', 2)} | cold ${s('s4.cold.ratio.direct', 2)}, warm ${s('s4.warm.ratio.direct', 2)} |`);
  L.push(`| distribution, 1 hop | ${s('s4.distribution.coldMs')} | ${s('s4.distribution.warmMs')} | | |`);
  L.push('');

  L.push('## 5. Peak RSS of the cache process');
  L.push('');
  L.push('`/proc/<pid>/clear_refs` is written `5` at the start of a phase (resets VmHWM), VmRSS is polled every 20 ms, and');
  L.push('the peak is the larger of the two at the end.');
  L.push('');
  L.push('| phase | Cascade, MiB | distribution proxy, MiB |');
  L.push('|---|---|---|');
  L.push(`| scenario 1, 1 stream of ${cfg.bigMiB} MiB | ${s('s5.single.cascade.MiB')} | – |`);
  L.push(`| scenario 1, ${N} streams of the ${cfg.concMiB} MiB blob | ${s('s5.concSmall.cascade.MiB')} | ${s('s5.concSmall.distribution.MiB')} |`);
  L.push(`| scenario 1, ${N} streams of ${cfg.bigMiB} MiB | ${s('s5.conc.cascade.MiB')} | ${s('s5.conc.distribution.MiB')} |`);
  L.push(`| growth from the ${cfg.concMiB} MiB to the ${cfg.bigMiB} MiB blob | ${s('s5.growth.cascade.MiB')} | ${s('s5.growth.distribution.MiB')} |`);
  L.push(`| scenario 3, ${cfg.concCount} cold requests (1 hop) | ${s('s5.burst.cascade.MiB')} | ${s('s5.burst.distribution.MiB')} |`);
  L.push('');
  L.push(`Targets: ≤ ${RSS_LIMIT_MIB} MiB in scenario 1; not growing with blob size (here: at most ${RSS_GROWTH_LIMIT_MIB} MiB more for a ${cfg.bigMiB / cfg.concMiB}× bigger blob).`);
  L.push('');

  L.push('## 6. The server (`cascade server`)');
  L.push('');
  L.push('The origin is distribution with htpasswd (bcrypt cost 5); the server authorizes through it and redirects blob');
  L.push(`GETs to a registered cache node (the default cache). ${cfg.latencyRequests} sequential requests of each kind per run, keep-alive,`);
  L.push('after 10 warm-up requests; the user sends Basic credentials. The redirect is a `307` answered by the server; the');
  L.push("origin's figure for blobs is a complete GET of the same small blob (the image config).");
  L.push('');
  L.push('| request | origin directly p50 / p99, ms | through the server p50 / p99, ms | server − origin (p50), ms |');
  L.push('|---|---|---|---|');
  L.push(`| manifest GET | ${s('s6.manifest.origin.p50Ms', 2)} / ${s('s6.manifest.origin.p99Ms', 2)} | ${s('s6.manifest.server.p50Ms', 2)} / ${s('s6.manifest.server.p99Ms', 2)} | ${s('s6.manifest.extraP50Ms', 2)} |`);
  L.push(`| blob GET (server: 307 redirect) | ${s('s6.blob.origin.p50Ms', 2)} / ${s('s6.blob.origin.p99Ms', 2)} | ${s('s6.blob.server.p50Ms', 2)} / ${s('s6.blob.server.p99Ms', 2)} | ${s('s6.blob.extraP50Ms', 2)} |`);
  L.push('');

  shapedSection(L, agg, cfg);
  regionSection(L, agg, cfg);

  if (results.profile?.length) {
    L.push('## Profile of the cache node');
    L.push('');
    L.push(`\`node --cpu-prof packages/cli/bin/cascade.js registry config.yml\`, ${cfg.bigMiB} MiB blob: one cold fill, then a new`);
    L.push('process on the same storage serving warm single-stream GETs only. Start-up (until the `listening` line) is left');
    L.push('out; percentages are of the busy time (the main thread not idle). "Nearest frame" charges every sample to the');
    L.push('closest Cascade or library function on its stack, native callees (syscalls, hashing, GC) included.');
    L.push('');
    for (const p of results.profile) {
      L.push(`### ${p.phase}: ${fmt(p.MBps)} MB/s while profiled, ${fmt(p.durationMs)} ms sampled, idle ${fmt(p.idlePct)} %`);
      L.push('');
      L.push(`Profile: \`${p.file}\` (open it in Chrome DevTools or speedscope).`);
      L.push('');
      L.push('| busy % | nearest Cascade or library frame | where |');
      L.push('|---|---|---|');
      for (const r of (p.byFrame ?? []).slice(0, 12)) L.push(`| ${r.totalPct.toFixed(1)} | \`${r.fn}\` | ${r.where} |`);
      L.push('');
      L.push('| self % | function | where |');
      L.push('|---|---|---|');
      for (const r of p.topSelf.slice(0, 10)) L.push(`| ${r.selfPct.toFixed(1)} | \`${r.fn}\` | ${r.where} |`);
      L.push('');
    }
  }

  L.push('## Machine and versions');
  L.push('');
  L.push(`| | |`);
  L.push(`|---|---|`);
  L.push(`| CPU | ${env.cpu}, ${env.cores} cores |`);
  L.push(`| memory | ${env.memoryGiB} GiB |`);
  L.push(`| kernel / OS | Linux ${env.kernel} / ${env.os} |`);
  L.push(`| load average at start | ${env.loadAtStart} |`);
  L.push(`| Node.js | ${env.node} |`);
  L.push(`| distribution | ${env.distribution} |`);
  L.push(`| nginx | ${env.nginx} |`);
  L.push(`| skopeo | ${env.skopeo} |`);
  L.push(`| curl | ${env.curl} |`);
  L.push(`| Cascade | commit \`${env.commit}\`${env.dirty.length ? `, with uncommitted changes in ${env.dirty.length} file(s) under packages/ (the working tree was measured)` : ''} |`);
  L.push(`| client | ${cfg.client === 'curl' ? 'curl (one process per stream; one `--parallel` process for the burst)' : "Node's http client (curl was not installed)"} |`);
  L.push('');

  L.push('## Commands');
  L.push('');
  L.push('```sh');
  L.push('npm run bench          # = bash scripts/install-peers.sh && tsc -b && node test/dist/bench/run.js');
  L.push('npm run bench -- --runs 5 --only 1,2   # more runs, some scenarios; --no-profile skips the profile');
  L.push('node test/dist/bench/run.js --only profile --merge   # re-profile only, merged into docs/benchmarks.json');
  L.push('node test/dist/bench/run.js --render                 # re-render this file and the chart from benchmarks.json');
  L.push('npm run bench -- --memory recycled   # cold pulls on recycled memory only (fresh: only on fresh; both: the default)');
  L.push('node test/dist/bench/run.js --only 2 --runs 1 --no-profile --big-mib 128 --out /tmp/b   # cold pulls (times, CPU), quick');
  L.push('node test/dist/bench/run.js --only 7 --runs 1 --no-profile --shaped-mib 64 --out /tmp/b  # shaped links only (root)');
  L.push('node test/dist/bench/run.js --only 7 --shaped-gbit 1,2.5,10   # other link speeds (targets exist for 1 and 10)');
  L.push('npm run bench:smoke    # small sizes, 1 run, results in a temp folder; fails on correctness problems only');
  L.push('```');
  L.push('');
  L.push('What the runner starts, each on 127.0.0.1 and a free port (scenario 7: in its namespace, on its address), each with');
  L.push('its own temporary folder:');
  L.push('');
  L.push('```sh');
  L.push('docker-registry serve origin/config.yml     # the origin: filesystem storage, JSON logs, access log on');
  L.push('docker-registry serve proxy/config.yml      # + proxy: {remoteurl: http://127.0.0.1:<origin or previous proxy>}');
  L.push("nginx -c nginx.conf -p <dir> -g 'daemon off;'   # sendfile on; location = /blob { alias <origin blob data file>; }");
  L.push('node packages/cli/bin/cascade.js registry config.yml   # cache node: middleware.registry: [{name: downstream,');
  L.push('    # options: {blobttl: 24h, upstreams: [{originhost: <origin>, upstreamhosts: [<previous cache>]}]}}], storage.filesystem');
  L.push('node packages/cli/bin/cascade.js server server.yml     # scenario 6, with a cache node (auth: grant) as default cache');
  L.push("redis-server --bind 127.0.0.1 --port <port> --save '' --appendonly no   # scenario 8: the region's Redis");
  L.push("node packages/cli/bin/cascade.js registry config.yml   # scenario 8: each node, one storage folder, region: {redis: redis://127.0.0.1:<port>}");
  L.push("nginx -c balancer.conf ...   # scenario 8: upstream of the nodes (round-robin), proxy_buffering off, proxy_http_version 1.1");
  L.push(`curl ${CURL_ARGS.map((a) => (a.includes(' ') ? `'${a}'` : a)).join(' ')} --max-time 600 -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{exitcode}' -o /dev/null <url>`);
  L.push(`curl <same> --parallel --parallel-immediate --parallel-max ${cfg.concCount} -o /dev/null <url> ... (${cfg.concCount}×)   # scenario 3`);
  L.push('skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false docker://<host>/bench/image:v1 oci:<dir>:v1');
  L.push('# scenario 7: a namespace per node (client, hop1, hop2, hop3, origin), a veth pair from each to one bridge');
  L.push('ip link add cbn<pid>br type bridge; ip addr add 10.213.<k>.254/24 dev cbn<pid>br   # the runner reaches the nodes');
  L.push('ip netns add cbn<pid>-hop1; ip link add cbn<pid>v2 type veth peer name cbn<pid>p2 netns cbn<pid>-hop1');
  L.push('ip link set cbn<pid>v2 master cbn<pid>br up; ip -n cbn<pid>-hop1 addr add 10.213.<k>.2/24 dev cbn<pid>p2');
  for (const mbit of [1000, 10_000]) L.push(`tc qdisc replace dev <veth, each end> root ${tbfArgs(mbit).join(' ')}`);
  L.push('ip netns exec cbn<pid>-hop1 docker-registry serve proxy.yml   # http.addr: 10.213.<k>.2:<port>; Cascade likewise');
  L.push('ip netns exec cbn<pid>-client curl <same as above> http://10.213.<k>.4:<port>/v2/bench/blob/blobs/<digest>   # c3');
  L.push('```');
  L.push('');
  L.push('## Notes');
  L.push('');
  L.push('- Blobs are pseudo-random (AES-CTR keystream), uploaded to the origin once per invocation; every cache starts');
  L.push('  empty for each cold measurement. Files are in the page cache (the machine has enough memory), so the disk');
  L.push("  matters only for writes (Cascade sends the last byte of a fill once its digest is verified, then fsyncs the");
  L.push('  blob and moves it into place).');
  L.push('- What changed Cascade\'s figures between runs, and what stands in the way of the targets it misses:');
  L.push('  [performance.md](performance.md).');
  L.push('- Correctness: every transfer must be a 200 with the full size and no transport error. The smoke run writes every');
  L.push('  body to a file and checks its sha256; full runs check one hashed download per scenario and system (the first');
  L.push('  fill, the warm blob, the blob after each cold pull and burst) so that hashing does not take CPU from the servers.');
  L.push("- distribution's proxy fetches a missed blob twice (one GET streamed to the client, one stored in the background)");
  L.push('  and does not share a fetch between simultaneous misses; its figures are measured, not targets.');
  for (const n of results.notes) L.push(`- ${n}`);
  L.push('');
  L.push('## Reproduce');
  L.push('');
  L.push('On a Debian machine with Node 20 (as root, for the Debian packages): `npm install --no-audit --no-fund`, then');
  L.push('`npm run bench`. It installs distribution, nginx and skopeo (`scripts/install-peers.sh`) and curl if missing, builds,');
  L.push('runs every scenario 3 times, profiles the cache node, and rewrites this file, `docs/benchmarks.svg` and');
  L.push('`docs/benchmarks.json` (every run\'s raw figures). The smoke run (`npm run bench:smoke`, also run by');
  L.push('`test/e2e/bench-smoke.test.ts` in `npm test`) uses small sizes and fails only on correctness problems. Scenario 7');
  L.push('needs root, `ip` and `tc` (iproute2) and a kernel that lets it create network namespaces; where it cannot, it is');
  L.push('skipped with a note (smoke runs included), not failed.');
  L.push('');
  return L.join('\n');
}
