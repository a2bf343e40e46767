#!/usr/bin/env node
// The `cascade` command. The code lives in src/cli.ts (compiled to dist/).
//
// File reads and writes go through libuv's thread pool, 4 threads by default: too few for a cache serving
// dozens of blobs at once. It must be sized before the pool first starts, so before the code is imported.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('../dist/src/cli.js');

process.exitCode = await main(process.argv.slice(2));
