/**
 * Starts `cascade ROLE CONFIG` under strace (see test/lib/syscalls.ts) through `spawnCascade`, so it has
 * the same contract as every node under test: the process guard is loaded, the start waits for the JSON
 * `listening` line, a guard line fails the test (`testScope`), and `stop()` signals the node itself.
 */
import { spawnCascade, type CascadeProcess } from '../../lib/cascade.js';
import { readSyscallTrace, straceArgs, type SyscallTrace } from '../../lib/syscalls.js';

/** A cascade process running under strace. */
export interface TracedCascade extends CascadeProcess {
  /** Where strace writes. */
  readonly traceFile: string;
  /** The working directory of the process (relative paths in the trace resolve against it). */
  readonly cwd: string;
  /** Parses the trace written so far. */
  trace(): Promise<SyscallTrace>;
}

/** Starts `cascade ARGS...` under strace in `cwd`, recording to `traceFile`. */
export async function spawnTraced(args: string[], options: { cwd: string; traceFile: string; env?: Record<string, string>; timeoutMs?: number }): Promise<TracedCascade> {
  const proc = await spawnCascade(args, {
    wrapper: ['strace', ...straceArgs(options.traceFile)],
    cwd: options.cwd,
    timeoutMs: options.timeoutMs ?? 20_000,
    ...(options.env ? { env: options.env } : {}),
    // FUZZ_CASCADE_BIN runs another build of the program (an older checkout, to check that a test catches a defect it fixed).
    ...(process.env.FUZZ_CASCADE_BIN ? { bin: process.env.FUZZ_CASCADE_BIN } : {}),
  });
  return Object.assign(proc, { traceFile: options.traceFile, cwd: options.cwd, trace: () => readSyscallTrace(options.traceFile, options.cwd) });
}
