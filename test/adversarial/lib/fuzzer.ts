/**
 * The fuzz loop: workers take scenario indices in order, each scenario runs with its own generator
 * (`seed/label/index`) on the worker's kept-alive connection (or a fresh half-closed one for broken
 * framing), and every answer is checked: a status >= 500, a canary secret in the headers or body, a
 * request left unanswered by a node that then stops answering, bytes that are not HTTP. Findings keep the
 * scenario index and the request, so `FUZZ_SCENARIO=<index>` replays one scenario alone.
 */
import { appendFileSync } from 'node:fs';
import { printable, rawRequest, RawConnection, type RawOutcome, type RawResponse } from '../../lib/raw-http.js';
import { runScenario, type FuzzRequest, type World } from './gen.js';
import { Rng } from './prng.js';

export type FindingKind = '5xx' | 'leak' | 'hang' | 'crash' | 'protocol' | 'spec' | 'unauthorized';

export interface Finding {
  readonly kind: FindingKind;
  readonly scenario: number;
  /** The request line, printable. */
  readonly line: string;
  readonly detail: string;
  /** The whole request, printable and cut at 1500 characters. */
  readonly request: string;
}

export interface FuzzOptions {
  readonly seed: string;
  /** The role, part of each scenario's seed. */
  readonly label: string;
  readonly world: World;
  readonly host: string;
  readonly port: number;
  /** Stop starting scenarios once this many requests were sent. */
  readonly requests: number;
  readonly concurrency: number;
  /** Strings that must never appear in an answer. */
  readonly secrets: readonly string[];
  /** Replays only these scenario indices. */
  readonly only?: readonly number[];
  /** Per-request timeout (default 5 s). */
  readonly timeoutMs?: number;
  /** Stops the run after this long (default 90 s). */
  readonly deadlineMs?: number;
  /** A liveness probe: true when the node answers (used after timeouts and closed connections). */
  readonly alive: () => Promise<boolean>;
  /** Index of the first scenario (for runs in phases). */
  readonly firstScenario?: number;
}

export interface FuzzResult {
  requests: number;
  scenarios: number;
  nextScenario: number;
  statuses: Map<number, number>;
  closed: number;
  timeouts: number;
  findings: Finding[];
  ms: number;
  stoppedEarly?: string;
}

/**
 * The request line of a request for content (or a change to it): what a cache in grant mode answers with a
 * 2xx only with a grant. OPTIONS is answered with the allowed methods, no content.
 */
const CONTENT = /^(?!OPTIONS )\S+ [^?\s]*(\/blobs\/|\/manifests\/|\/tags\/list|\/_catalog|\/api\/v0\/warm)/;

/** Runs the fuzz loop; never throws for what the node does. */
export async function fuzz(o: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const deadline = started + (o.deadlineMs ?? 90_000);
  const result: FuzzResult = { requests: 0, scenarios: 0, nextScenario: o.firstScenario ?? 0, statuses: new Map(), closed: 0, timeouts: 0, findings: [], ms: 0 };
  const only = o.only ? [...o.only] : undefined;
  let stop: string | undefined;

  const check = (scenario: number, req: FuzzRequest, res: RawResponse, which: string) => {
    result.statuses.set(res.status, (result.statuses.get(res.status) ?? 0) + 1);
    const finding = (kind: FindingKind, detail: string) => result.findings.push({ kind, scenario, line: req.line, detail, request: printable(req.bytes, 1500) });
    if (which === '' && req.expect && !req.expect.includes(res.status)) finding('spec', `${res.status} ${res.reason} where the OCI distribution spec asks for ${req.expect.join(' or ')}: ${printable(res.body, 300)}`);
    // Further answers on the connection answer requests smuggled after this one: not what `deny` speaks of.
    const denied = which === '' && (req.deny ?? (o.world.role === 'grant-cache' && CONTENT.test(req.line)));
    if (denied && res.status >= 200 && res.status < 300) finding('unauthorized', `${which}${res.status} ${res.reason} to a request holding no grant valid for what it asks: ${printable(res.body, 120)}`);
    if (res.status >= 500) finding('5xx', `${which}${res.status} ${res.reason}: ${printable(res.body, 300)}`);
    const text = `${res.headers.map(([k, v]) => `${k}: ${v}`).join('\n')}\n${res.body.toString('latin1')}`;
    for (const s of o.secrets) if (text.includes(s)) finding('leak', `${which}${res.status}: the answer holds a canary secret`);
  };

  const worker = async (w: number) => {
    const conn = new RawConnection(o.host, o.port);
    try {
      for (;;) {
        if (stop || Date.now() > deadline) {
          stop ??= `deadline of ${o.deadlineMs ?? 90_000} ms reached`;
          return;
        }
        let index: number;
        if (only) {
          const next = only.shift();
          if (next === undefined) return;
          index = next;
        } else {
          if (result.requests >= o.requests) return;
          index = result.nextScenario++;
        }
        result.scenarios++;
        const rng = new Rng(`${o.seed}/${o.label}/${index}`);
        await runScenario({
          rng,
          world: o.world,
          send: async (req: FuzzRequest): Promise<RawOutcome> => {
            if (stop) return { kind: 'closed', detail: 'run stopped', ms: 0 };
            result.requests++;
            const timeoutMs = o.timeoutMs ?? 5000;
            const outcome = req.drain ? await rawRequest(o.host, o.port, req.bytes, { head: req.head, drain: true, timeoutMs, ...(req.heads ? { heads: req.heads } : {}) }) : await conn.request(req.bytes, { head: req.head, timeoutMs });
            if (process.env.FUZZ_LOG) appendFileSync(process.env.FUZZ_LOG, `${o.label}\tw${w}.${req.drain ? 'd' : conn.connects}\t${index}\t${outcome.kind === 'response' ? [outcome.response.status, ...outcome.extra.map((e) => e.status)].join(',') : outcome.kind}\t${req.line.slice(0, 200)}\t${printable(req.bytes, 600)}\n`);
            if (outcome.kind === 'response') {
              check(index, req, outcome.response, '');
              for (const extra of outcome.extra) check(index, req, extra, 'a further answer on the connection: ');
            } else if (outcome.kind === 'garbage') {
              result.findings.push({ kind: 'protocol', scenario: index, line: req.line, detail: outcome.detail, request: printable(req.bytes, 1500) });
            } else {
              if (outcome.kind === 'timeout') result.timeouts++;
              else result.closed++;
              if (outcome.kind === 'timeout' && req.valid) {
                result.findings.push({ kind: 'hang', scenario: index, line: req.line, detail: `a well-formed request of a client flow got no answer: ${outcome.detail}`, request: printable(req.bytes, 1500) });
              }
              if (outcome.kind === 'timeout' || !req.drain) {
                if (!(await o.alive())) {
                  result.findings.push({ kind: outcome.kind === 'timeout' ? 'hang' : 'crash', scenario: index, line: req.line, detail: `${outcome.detail}; then the node stopped answering GET /v2/`, request: printable(req.bytes, 1500) });
                  stop = 'the node stopped answering';
                }
              }
            }
            return outcome;
          },
        }).catch((err: unknown) => {
          result.findings.push({ kind: 'protocol', scenario: index, line: '(scenario)', detail: `the scenario threw: ${(err as Error).stack ?? String(err)}`, request: '' });
        });
      }
    } finally {
      conn.destroy();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, (_, w) => worker(w)));
  result.ms = Date.now() - started;
  if (stop) result.stoppedEarly = stop;
  return result;
}

/** The findings of a run as report lines: the first `max` of each kind, with the seed to replay them. */
export function describeFindings(findings: readonly Finding[], seed: string, label: string, max = 5): string[] {
  const out: string[] = [];
  const kinds = [...new Set(findings.map((f) => f.kind))];
  for (const kind of kinds) {
    const of = findings.filter((f) => f.kind === kind);
    out.push(`${of.length} x ${kind} (${label}, FUZZ_SEED=${seed}):`);
    const seen = new Set<string>();
    let shown = 0;
    for (const f of of) {
      const key = `${f.line.replace(/[0-9a-f]{16,}/g, 'H').slice(0, 60)} ${f.detail.slice(0, 40)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(`  [FUZZ_SCENARIO=${f.scenario}] ${f.line}\n      -> ${f.detail}\n      request: ${f.request.slice(0, 600)}`);
      if (++shown >= max) break;
    }
  }
  return out;
}

/** Statuses as `200x123 404x55 ...`. */
export function statusSummary(statuses: Map<number, number>): string {
  return [...statuses.entries()]
    .sort(([a], [b]) => a - b)
    .map(([s, n]) => `${s}x${n}`)
    .join(' ');
}
