/**
 * The roles a config gives a node (`createNode`, `createCacheNode`, `createMirrorNode`), from configs loaded
 * with `parseNodeConfig` / `loadNodeConfig`, which parse the role's options once and read the CA files once.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { ConfigError, startRegistry } from '@cascade/registry-core';
import { makeCa, startFakeRegistry } from '@cascade/testkit';
import { createCacheNode, createMirrorNode, createNode, loadNodeConfig, NodeRoleError, parseNodeConfig, type NodeConfig } from '../src/node.js';
import { parseDownstreamOptions } from '../src/options.js';

const silent = pino({ level: 'silent' });
const HEAD = 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {inmemory: {}}\nhttp: {addr: "127.0.0.1:0"}\n';

function node(yaml: string): NodeConfig {
  return parseNodeConfig(`${HEAD}${yaml}`, 'node.yml', {});
}

const CACHE = 'middleware:\n  registry:\n    - name: downstream\n      options: {originhost: "https://origin.example"}\n';
const GRANT_CACHE = 'middleware:\n  registry:\n    - name: downstream\n      options: {originhost: "https://origin.example", auth: grant, name: region-a}\n';
const MIRROR = 'proxy: {remoteurl: "https://registry-1.docker.io"}\n';

describe('parseNodeConfig and loadNodeConfig', () => {
  it('give the options of the role, parsed as the options parser parses them', () => {
    const cache = node(CACHE);
    assert.equal(cache.mirror, undefined);
    const entry = cache.config.middleware.registry[0];
    assert.deepEqual(cache.cache, parseDownstreamOptions(entry?.options ?? {}, 'middleware.registry[0].options', cache.config, { checkCaFiles: false }).options);
    const mirror = node(MIRROR);
    assert.equal(mirror.cache, undefined);
    assert.equal(mirror.mirror?.defaultRemote?.name, 'docker.io');
    const plain = node('');
    assert.equal(plain.cache, undefined);
    assert.equal(plain.mirror, undefined);
  });

  it('take the first enabled downstream entry, with the REGISTRY_* overrides applied', () => {
    const yaml = 'middleware:\n  registry:\n    - name: downstream\n      disabled: true\n      options: {originhost: "https://old.example"}\n    - name: downstream\n      options: {originhost: "https://origin.example"}\n';
    const parsed = parseNodeConfig(`${HEAD}${yaml}`, 'node.yml', { REGISTRY_MIDDLEWARE_REGISTRY_1_OPTIONS_FILLTIMEOUT: '30s' });
    assert.equal(parsed.cache?.originhost, 'https://origin.example');
    assert.equal(parsed.cache?.filltimeoutMs, 30_000);
  });

  it('refuse bad options with the downstream validator and the mirror checks', () => {
    assert.throws(() => node('middleware:\n  registry:\n    - name: downstream\n      options: {blobttl: soon}\n'), ConfigError);
    assert.throws(() => node('proxy: {on: true}\n'), ConfigError);
  });

  it('read a file as loadConfig does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cascade-node-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'cache.yml');
    writeFileSync(file, `${HEAD}${CACHE}`);
    assert.equal(loadNodeConfig(file, {}).cache?.originhost, 'https://origin.example');
  });
});

describe('createNode', () => {
  it('gives a config without middleware or proxy the plain registry role, with its own auth', () => {
    assert.deepEqual(createNode(node(''), silent), { role: 'registry', middleware: [] });
  });

  it('makes a cache node of the downstream middleware, with the grant authorizer, the key route and the warm route in auth: grant mode', () => {
    const plain = createNode(node(CACHE), silent);
    assert.equal(plain.role, 'cache');
    assert.equal(plain.middleware.length, 1);
    assert.equal(plain.authorizer, undefined);
    const grant = createNode(node(GRANT_CACHE), silent);
    assert.equal(grant.role, 'cache');
    assert.ok(grant.authorizer);
    assert.deepEqual(grant.extraRoutes?.map((r) => `${r.method} ${r.path}`), ['GET /api/v0/keys', 'POST /api/v0/warm']);
    const options = node(CACHE).cache;
    assert.ok(options);
    assert.equal(createCacheNode(options, silent).role, 'cache');
  });

  it('makes a mirror of a proxy section, with the grants authorizer when proxy.grants is set', () => {
    const plain = createNode(node(MIRROR), silent);
    assert.equal(plain.role, 'mirror');
    assert.equal(plain.middleware.length, 1);
    assert.equal(plain.authorizer, undefined);
    const withGrants = node('proxy: {remoteurl: "https://registry-1.docker.io", grants: {issuer: cascade, name: m1, keys: "https://server.example"}}\n');
    assert.ok(withGrants.mirror);
    const grants = createMirrorNode(withGrants.mirror, withGrants.config, silent);
    assert.equal(grants.role, 'mirror');
    assert.ok(grants.authorizer);
    assert.deepEqual(grants.extraRoutes, []);
  });

  it('refuses a config that asks for a cache node and a mirror at once', () => {
    assert.throws(() => createNode(node(CACHE + MIRROR), silent), (err: unknown) => err instanceof NodeRoleError && /a node is one or the other/.test(err.message));
  });

  it('starts a cache node through startRegistry', async () => {
    const cache = node(CACHE);
    const running = await startRegistry({ config: cache.config, logger: silent, ...createNode(cache, silent) });
    try {
      const res = await fetch(`${running.url}/v2/`);
      assert.ok([200, 401, 502, 503].includes(res.status), String(res.status));
    } finally {
      await running.close();
    }
  });

  it('reads a CA file once, when the config is loaded: the node fills over TLS after the file is gone', async () => {
    const ca = makeCa('Node Test CA');
    const pair = ca.issue();
    const origin = await startFakeRegistry({ tls: { cert: pair.certPem, key: pair.keyPem } });
    const dir = mkdtempSync(join(tmpdir(), 'cascade-node-ca-'));
    const caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, ca.certPem);
    const digest = origin.addBlob(Buffer.from('a blob behind TLS'));
    const loaded = node(`middleware:\n  registry:\n    - name: downstream\n      options: {originhost: "${origin.url}", auth: none, cas: ["${caFile}"]}\n`);
    rmSync(dir, { recursive: true, force: true });
    const running = await startRegistry({ config: loaded.config, logger: silent, ...createNode(loaded, silent) });
    try {
      const res = await fetch(`${running.url}/v2/team/app/blobs/${digest}`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'a blob behind TLS');
    } finally {
      await running.close();
      await origin.stop();
    }
  });
});
