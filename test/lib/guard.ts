/**
 * The process guard of every node under test: loaded into each `cascade` process the tests start (with
 * `node --import`, see `spawnCascade`), it turns an `uncaughtException` or `unhandledRejection` into one
 * marked line on stderr before the process ends (exit code 70). The harness reads that line and fails the
 * test that started the process (`testScope`), so an input that would end a node in production, even one
 * the test did not otherwise check, cannot pass unnoticed.
 */

/** The prefix of the guard's line on stderr, followed by JSON `{kind, error}`. */
export const GUARD_MARK = 'CASCADE_TEST_GUARD';

function report(kind: string, err: unknown): never {
  const e = err as { stack?: string; message?: string } | undefined;
  const error = e?.stack ?? e?.message ?? String(err);
  process.stderr.write(`${GUARD_MARK} ${JSON.stringify({ kind, error, pid: process.pid })}\n`);
  process.exit(70);
}

// Only in a process started with the guard: importing this module for GUARD_MARK must not install it.
if (process.env.CASCADE_TEST_GUARD === '1') {
  process.on('uncaughtException', (err) => report('uncaughtException', err));
  process.on('unhandledRejection', (reason) => report('unhandledRejection', reason));
}
