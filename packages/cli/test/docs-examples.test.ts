/**
 * Every YAML example in the documentation loads with Cascade's own loaders, so an example cannot drift
 * from what `cascade` accepts: registry configs (cache nodes and mirrors included) with `parseConfig` and
 * the same validators as `cascade registry`, server configs with `parseServerConfig`, Kubernetes and Kind
 * files as YAML. Fragments of a registry config are completed with in-memory storage; `options:` fragments
 * are the downstream middleware's options. The CA files the examples name are replaced by a real CA, so
 * that everything else about them is checked.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { parseConfig } from '@cascade/registry-core';
import { validateDownstreamOptions, validateMirrorConfig } from '@cascade/downstream';
import { createCa } from '../src/commands/certs.js';
import { parseServerConfig } from '@cascade/server';

const ROOT = new URL('../../../../', import.meta.url);
const DOCS = [...readdirSync(new URL('docs/', ROOT)).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md', 'deploy/README.md'];

/** The fenced ```yaml blocks of a Markdown file. */
function yamlBlocks(file: string): string[] {
  const text = readFileSync(new URL(file, ROOT), 'utf8');
  // Blocks inside list items are indented: the fence's indentation is removed from every line.
  return [...text.matchAll(/^( *)```yaml\n([\s\S]*?)^\1```/gm)].map((m) => {
    const indent = (m[1] as string).length;
    return (m[2] as string)
      .split('\n')
      .map((line) => line.slice(Math.min(indent, line.length - line.trimStart().length)))
      .join('\n');
  });
}

const caDir = mkdtempSync(join(tmpdir(), 'docs-examples-'));
const caFile = join(caDir, 'ca.pem');
writeFileSync(caFile, createCa({ name: 'Docs Example CA', days: 30 }).certPem);

/** Points every `.pem` path of an example at the real CA (the examples' paths exist on their hosts). */
function withRealCa(value: unknown, key = ''): unknown {
  if (Array.isArray(value)) return value.map((v) => withRealCa(v, key));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withRealCa(v, k)]));
  if (typeof value === 'string' && /\.pem$/.test(value) && /^(cas|certificate|key|rootcertbundle|signingkey)$|^\d*$/.test(key)) return caFile;
  return value;
}

describe('documentation examples', () => {
  let count = 0;
  for (const file of DOCS) {
    yamlBlocks(file).forEach((block, i) => {
      const name = `${file}, YAML example ${i + 1}`;
      count += 1;
      it(`${name} loads`, () => {
        const docs = block.split(/^---$/m).map((d) => parse(d) as unknown);
        const doc = docs[0] as Record<string, unknown> | null;
        assert.ok(doc && typeof doc === 'object', `${name} is a mapping`);
        const keys = Object.keys(doc);
        if (keys.includes('kind') || keys.includes('apiVersion')) return; // Kubernetes / Kind: parsing is the check
        if (keys.includes('origin')) {
          // A server config; a fragment is completed with the sections it leaves out.
          const server = { grants: { keysdir: join(caDir, 'keys') }, database: { sqlite: ':memory:' }, ...(withRealCa(doc) as Record<string, unknown>) };
          parseServerConfig(JSON.stringify(server), name, { CASCADE_ORIGIN_PASSWORD: 'example' });
          return;
        }
        const config = keys.length === 1 && keys[0] === 'options' ? { middleware: { registry: [{ name: 'downstream', options: doc['options'] }] } } : doc;
        const full = { version: '0.1', storage: { inmemory: {}, delete: { enabled: true } }, ...(withRealCa(config) as Record<string, unknown>) };
        const { warnings } = parseConfig(JSON.stringify(full), name, {}, { middleware: { downstream: validateDownstreamOptions }, checks: [validateMirrorConfig] });
        assert.deepEqual(warnings.filter((w) => !/accepted but not implemented/.test(w)), [], name);
      });
    });
  }
  it('found the examples', () => {
    assert.ok(count >= 20, `only ${count} YAML examples found`);
  });
});
