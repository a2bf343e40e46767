/**
 * The registry under test for the client end-to-end tests (skopeo, containerd).
 *
 * It is Cascade (`cascade registry`, filesystem storage) unless `E2E_REGISTRY=distribution`, which runs
 * the very same tests against distribution's `docker-registry`: when a test fails against Cascade, that
 * run tells a harness or client problem (fails against both) from a Cascade bug (fails only on Cascade).
 */
import { join } from 'node:path';
import { startCascade, type CascadeProcess } from './cascade.js';
import { startDistribution, type Distribution } from './peers.js';

export type TargetKind = 'cascade' | 'distribution';

/** The kind of registry the client tests run against (`E2E_REGISTRY`, default `cascade`). */
export const TARGET_KIND: TargetKind = (() => {
  const v = process.env.E2E_REGISTRY ?? 'cascade';
  if (v !== 'cascade' && v !== 'distribution') throw new Error(`E2E_REGISTRY must be "cascade" or "distribution", not ${JSON.stringify(v)}`);
  return v;
})();

/** A running registry that clients push to and pull from over plain http. */
export interface Target {
  readonly kind: TargetKind;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** Filesystem storage root (distribution's layout: `<root>/docker/registry/v2/...`). */
  readonly rootdirectory: string;
  /** The last access-log and error lines, to append to a failure. */
  diagnostics(lines?: number): string;
  stop(): Promise<void>;
}

/** The Cascade configuration every client test uses: filesystem storage under `dir/data`, deletes on. */
export function cascadeConfig(rootdirectory: string): Record<string, unknown> {
  return { storage: { filesystem: { rootdirectory }, delete: { enabled: true } } };
}

/** Wraps a running Cascade process as a {@link Target}. */
export function cascadeTarget(proc: CascadeProcess, rootdirectory: string): Target {
  return {
    kind: 'cascade',
    url: proc.url,
    host: proc.host,
    rootdirectory,
    diagnostics(lines = 60) {
      const reqs = proc.requests().slice(-lines).map((l) => `${l.method} ${l.path} -> ${l.status} (${l.bytes ?? '?'} bytes)`);
      const errors = proc.logs.filter((l) => typeof l.level === 'number' && l.level >= 40).slice(-20).map((l) => JSON.stringify(l));
      return [`--- cascade access log (last ${reqs.length}) ---`, ...reqs, '--- cascade warnings/errors ---', ...errors, ...proc.text.slice(-20)].join('\n');
    },
    async stop() {
      await proc.stop();
    },
  };
}

/** Wraps a running distribution as a {@link Target}. */
export function distributionTarget(d: Distribution): Target {
  return {
    kind: 'distribution',
    url: d.url,
    host: d.host,
    rootdirectory: d.rootdirectory,
    diagnostics(lines = 60) {
      return [`--- distribution log (last ${lines}) ---`, ...d.output.slice(-lines)].join('\n');
    },
    stop: () => d.stop(),
  };
}

/** Starts the registry under test with its storage in `dir/data` (`dir` is the caller's temp dir). */
export async function startTarget(dir: string, kind: TargetKind = TARGET_KIND): Promise<Target> {
  const rootdirectory = join(dir, 'data');
  if (kind === 'distribution') return distributionTarget(await startDistribution({ rootdirectory, deleteEnabled: true }));
  return cascadeTarget(await startCascade(dir, cascadeConfig(rootdirectory)), rootdirectory);
}

/**
 * Runs `step` and, if it throws, rethrows with the target's recent logs appended, so a failing client
 * command comes with the requests the registry saw.
 */
export async function withDiagnostics<T>(target: Target, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof Error) {
      err.message += `\n${target.diagnostics()}`;
      throw err;
    }
    throw err;
  }
}
