import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EMBEDDED_REGISTRY_CONFIG, main } from '../src/cli.js';
import { parseConfig } from '@cascade/registry-core';

/** Captures what `fn` writes to stdout and stderr. */
async function capture(fn: () => Promise<number | undefined>): Promise<{ code: number | undefined; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const origOut = process.stdout.write.bind(process.stdout);
  const origLog = console.log;
  const origErr = console.error;
  process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  try {
    return { code: await fn(), out: out.join(''), err: err.join('\n') };
  } finally {
    process.stdout.write = origOut;
    console.log = origLog;
    console.error = origErr;
  }
}

describe('cascade CLI', () => {
  it('prints the version', async () => {
    const r = await capture(() => main(['version']));
    assert.equal(r.code, 0);
    assert.match(r.out, /^cascade \d+\.\d+\.\d+/);
  });
  it('prints help, and exits 64 without a command', async () => {
    assert.equal((await capture(() => main(['help']))).code, 0);
    const none = await capture(() => main([]));
    assert.equal(none.code, 64);
    assert.match(none.out, /Usage: cascade/);
  });
  it('refuses unknown commands and options in one line', async () => {
    const r = await capture(() => main(['fly']));
    assert.equal(r.code, 64);
    assert.equal(r.err, 'cascade: unknown command "fly"; run "cascade help" for the list');
    const o = await capture(() => main(['registry', '--fast']));
    assert.equal(o.code, 64);
    assert.match(o.err, /unknown option --fast/);
  });
  it('embeds a valid default config: loopback, ./data, deletes on', () => {
    const { config } = parseConfig(EMBEDDED_REGISTRY_CONFIG, '<embedded defaults>', {});
    assert.equal(config.http.addr, '127.0.0.1:5000');
    assert.equal(config.storage.filesystem?.rootdirectory, './data');
    assert.equal(config.storage.delete.enabled, true);
  });
});
