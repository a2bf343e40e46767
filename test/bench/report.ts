/**
 * The benchmark report: docs/benchmarks.md (machine, versions, exact commands, one table per scenario,
 * the targets with PASS/FAIL) and docs/benchmarks.svg (a hand-written bar chart of the ratios against
 * their targets). Every figure is the median over the runs; ratios are computed within each run first.
 */
import { CURL_ARGS } from './client.js';
import type { ProfileSummary } from './profile.js';
import type { BenchConfig, Metrics } from './scenarios.js';
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

const CHECKS: readonly Check[] = [
  { id: 'warm1-dist', scenario: '1', label: 'Warm, 1 stream: Cascade / distribution', key: 's1.single.ratio.distribution', op: '>=', target: 1.2, unit: 'x', chartKey: 's1.single.ratio.distribution', chartTarget: 1.2 },
  { id: 'warm1-nginx', scenario: '1', label: 'Warm, 1 stream: Cascade / nginx', key: 's1.single.ratio.nginx', op: '>=', target: 0.9, unit: 'x', distKey: 's1.single.ratio.distribution-vs-nginx', chartKey: 's1.single.ratio.nginx', chartTarget: 0.9, chartDistKey: 's1.single.ratio.distribution-vs-nginx' },
  { id: 'warmN-dist', scenario: '1', label: 'Warm, N streams: Cascade / distribution', key: 's1.conc.ratio.distribution', op: '>=', target: 1.2, unit: 'x', chartKey: 's1.conc.ratio.distribution', chartTarget: 1.2 },
  { id: 'warmN-nginx', scenario: '1', label: 'Warm, N streams: Cascade / nginx', key: 's1.conc.ratio.nginx', op: '>=', target: 0.9, unit: 'x', distKey: 's1.conc.ratio.distribution-vs-nginx', chartKey: 's1.conc.ratio.nginx', chartTarget: 0.9, chartDistKey: 's1.conc.ratio.distribution-vs-nginx' },
  { id: 'cold1', scenario: '2', label: 'Cold, 1 hop: time / direct', key: 's2.cascade1.ratio', op: '<=', target: 1.15, unit: 'x', distKey: 's2.distribution1.ratio', chartKey: 's2.cascade1.ratio', chartTarget: 1.15, chartDistKey: 's2.distribution1.ratio' },
  { id: 'cold3', scenario: '2', label: 'Cold, 3 hops: time / direct', key: 's2.cascade3.ratio', op: '<=', target: 1.3, unit: 'x', distKey: 's2.distribution3.ratio', chartKey: 's2.cascade3.ratio', chartTarget: 1.3, chartDistKey: 's2.distribution3.ratio' },
  { id: 'ttfb1', scenario: '2', label: 'Cold, 1 hop: TTFB − origin TTFB', key: 's2.cascade1.ttfbExtraMs', op: '<=', target: 10, unit: 'ms', distKey: 's2.distribution1.ttfbExtraMs', chartKey: 's2.cascade1.ttfbNorm', chartTarget: 1, chartDistKey: 's2.distribution1.ttfbNorm', chartLabel: 'Cold, 1 hop: TTFB ÷ (origin TTFB + 10 ms)' },
  { id: 'ttfb3', scenario: '2', label: 'Cold, 3 hops: TTFB − origin TTFB', key: 's2.cascade3.ttfbExtraMs', op: '<=', target: 30, unit: 'ms', distKey: 's2.distribution3.ttfbExtraMs', chartKey: 's2.cascade3.ttfbNorm', chartTarget: 1, chartDistKey: 's2.distribution3.ttfbNorm', chartLabel: 'Cold, 3 hops: TTFB ÷ (origin TTFB + 30 ms)' },
  { id: 'gets1', scenario: '3', label: 'Burst, 1 hop: upstream GETs per hop (max)', key: 's3.cascade1.maxGetsPerHop', op: '==', target: 1, unit: '', distKey: 's3.distribution1.maxGetsPerHop', chartKey: 's3.cascade1.maxGetsPerHop', chartTarget: 1, chartDistKey: 's3.distribution1.maxGetsPerHop' },
  { id: 'gets3', scenario: '3', label: 'Burst, 3 hops: upstream GETs per hop (max)', key: 's3.cascade3.maxGetsPerHop', op: '==', target: 1, unit: '', distKey: 's3.distribution3.maxGetsPerHop', chartKey: 's3.cascade3.maxGetsPerHop', chartTarget: 1, chartDistKey: 's3.distribution3.maxGetsPerHop' },
  { id: 'rss', scenario: '5', label: 'Peak RSS, scenario 1, N streams', key: 's5.conc.cascade.MiB', op: '<=', target: RSS_LIMIT_MIB, unit: 'MiB', distKey: 's5.conc.distribution.MiB', chartKey: 's5.conc.cascade.norm', chartTarget: 1, chartDistKey: 's5.conc.distribution.norm', chartLabel: `Peak RSS, N warm streams ÷ ${RSS_LIMIT_MIB} MiB` },
  { id: 'rss-growth', scenario: '5', label: 'Peak RSS growth, big blob vs small blob', key: 's5.growth.cascade.MiB', op: '<=', target: RSS_GROWTH_LIMIT_MIB, unit: 'MiB', distKey: 's5.growth.distribution.MiB', chartKey: 's5.growth.cascade.norm', chartTarget: 1, chartDistKey: 's5.growth.distribution.norm', chartLabel: `Peak RSS, big blob ÷ (small blob + ${RSS_GROWTH_LIMIT_MIB} MiB)` },
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

export function renderMarkdown(results: Results, svgName: string | undefined): string {
  const { config: cfg, env } = results;
  const agg = new Agg(results.runs);
  const s = (k: string, d = 0) => agg.show(k, d);

  const L: string[] = [];
  const N = cfg.streams;
  L.push('# Benchmarks');
  L.push('');
  L.push(`Cascade's cache node against distribution ${'2.8.2'}'s pull-through proxy (\`proxy.remoteurl\`) and nginx (sendfile), all`);
  L.push('on loopback on one machine, against the same origin (distribution as a plain registry). Generated by');
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
    const digits = c.unit === 'x' ? 2 : c.unit === 'ms' ? 1 : 0;
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
  L.push('');
  L.push(`Targets: ≥ 1.2× distribution and ≥ 0.9× nginx, for 1 and ${N} streams.`);
  L.push('');

  L.push(`## 2. Cold blob, ${cfg.bigMiB} MiB`);
  L.push('');
  L.push('Every chain starts with empty storage. The origin is measured directly right before each cold pull (the');
  L.push('ratio pairs the two). TTFB: time to the first byte of the response (curl `time_starttransfer`). Before its');
  L.push('cold pull, each chain passes on one unrelated 1 MiB blob, so that the figures are those of running nodes;');
  L.push("the last column is that first request's TTFB over the origin's (start-up work: connections, code compiled on");
  L.push('first use), for information.');
  L.push('');
  L.push('| path | total ms | MB/s | ÷ direct | TTFB ms | TTFB − direct, ms | upstream GETs per hop (max) | first request after start: TTFB − direct, ms |');
  L.push('|---|---|---|---|---|---|---|---|');
  L.push(`| origin directly | ${s('s2.directMs')} | ${fmt((cfg.bigMiB * MiB) / 1e3 / (agg.med('s2.directMs') ?? NaN))} | 1 | ${s('s2.directTtfbMs', 1)} | 0 | – | – |`);
  for (const [key, label] of [['cascade1', 'Cascade, 1 hop'], ['cascade3', 'Cascade, 3 hops'], ['distribution1', 'distribution, 1 hop'], ['distribution3', 'distribution, 3 hops']]) {
    L.push(`| ${label} | ${s(`s2.${key}.totalMs`)} | ${s(`s2.${key}.MBps`)} | ${s(`s2.${key}.ratio`, 2)} | ${s(`s2.${key}.ttfbMs`, 1)} | ${s(`s2.${key}.ttfbExtraMs`, 1)} | ${s(`s2.${key}.maxGetsPerHop`)} | ${s(`s2.${key}.firstTtfbExtraMs`, 1)} |`);
  }
  L.push('');
  L.push('Targets: one hop ≤ 1.15× direct, three hops ≤ 1.3×; TTFB ≤ origin + 10 ms per hop.');
  L.push('');
  const fl = results.floors;
  const direct = agg.med('s2.directMs');
  if (fl && direct !== undefined) {
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
  L.push("From Cascade's own logs (`upstream request` duration: until the upstream's headers; `fill complete` duration: from");
  L.push('those headers to the blob committed, fsync included), per hop, the hop nearest the origin first:');
  L.push('');
  L.push('| path | upstream headers, ms | fill, ms |');
  L.push('|---|---|---|');
  for (const [key, label, hops] of [['cascade1', 'Cascade, 1 hop', 1], ['cascade3', 'Cascade, 3 hops', 3]] as const) {
    const per = (what: string) => Array.from({ length: hops }, (_, i) => fmt(agg.med(`s2.${key}.hop${i + 1}.${what}`))).join(', ');
    L.push(`| ${label} | ${per('upstreamHeadersMs')} | ${per('fillMs')} |`);
  }
  L.push('');

  L.push(`## 3. ${cfg.concCount} simultaneous cold requests for one ${cfg.concMiB} MiB blob`);
  L.push('');
  L.push(`No cache of the chain has this blob. One curl process opens ${cfg.concCount} connections at once (\`--parallel`);
  L.push("--parallel-immediate`). Upstream GETs are counted in each upstream's access log (the origin's for the first hop,");
  L.push("the previous cache's for the next ones). Completion times are per request, from the burst's start.");
  L.push('');
  L.push('| path | p50 ms | p99 ms | all done, ms | upstream GETs per hop (origin first) | upstream HEADs |');
  L.push('|---|---|---|---|---|---|');
  L.push(`| origin directly | ${s('s3.direct.p50Ms')} | ${s('s3.direct.p99Ms')} | ${s('s3.direct.wallMs')} | – | – |`);
  for (const [key, label, hops] of [['cascade1', 'Cascade, 1 hop', 1], ['cascade3', 'Cascade, 3 hops', 3], ['distribution1', 'distribution, 1 hop', 1], ['distribution3', 'distribution, 3 hops', 3]] as const) {
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
  L.push('npm run bench:smoke    # small sizes, 1 run, results in a temp folder; fails on correctness problems only');
  L.push('node test/dist/bench/cpu.js --runs 3   # CPU seconds per process of one cold pull, direct and through a cache');
  L.push('```');
  L.push('');
  L.push('What the runner starts, each on 127.0.0.1 and a free port, each with its own temporary folder:');
  L.push('');
  L.push('```sh');
  L.push('docker-registry serve origin/config.yml     # the origin: filesystem storage, JSON logs, access log on');
  L.push('docker-registry serve proxy/config.yml      # + proxy: {remoteurl: http://127.0.0.1:<origin or previous proxy>}');
  L.push("nginx -c nginx.conf -p <dir> -g 'daemon off;'   # sendfile on; location = /blob { alias <origin blob data file>; }");
  L.push('node packages/cli/bin/cascade.js registry config.yml   # cache node: middleware.registry: [{name: downstream,');
  L.push('    # options: {blobttl: 24h, upstreams: [{originhost: <origin>, upstreamhosts: [<previous cache>]}]}}], storage.filesystem');
  L.push('node packages/cli/bin/cascade.js server server.yml     # scenario 6, with a cache node (auth: grant) as default cache');
  L.push(`curl ${CURL_ARGS.map((a) => (a.includes(' ') ? `'${a}'` : a)).join(' ')} --max-time 600 -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{exitcode}' -o /dev/null <url>`);
  L.push(`curl <same> --parallel --parallel-immediate --parallel-max ${cfg.concCount} -o /dev/null <url> ... (${cfg.concCount}×)   # scenario 3`);
  L.push('skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false docker://<host>/bench/image:v1 oci:<dir>:v1');
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
  L.push('`test/e2e/bench-smoke.test.ts` in `npm test`) uses small sizes and fails only on correctness problems.');
  L.push('');
  return L.join('\n');
}
