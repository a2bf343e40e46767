/**
 * The roles a config gives a node (`createNode`, `createCacheNode`, `createMirrorNode`), loaded with the
 * options every command uses (`NODE_CONFIG_OPTIONS`).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { ConfigError, parseConfig, startRegistry, type RegistryConfig } from '@cascade/registry-core';
import { createCacheNode, createMirrorNode, createNode, NODE_CONFIG_OPTIONS, NodeRoleError } from '../src/node.js';

const silent = pino({ level: 'silent' });

function config(yaml: string): RegistryConfig {
  return parseConfig(`version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {inmemory: {}}\nhttp: {addr: "127.0.0.1:0"}\n${yaml}`, 'node.yml', {}, NODE_CONFIG_OPTIONS).config;
}

const CACHE = 'middleware:\n  registry:\n    - name: downstream\n      options: {originhost: "https://origin.example"}\n';
const GRANT_CACHE = 'middleware:\n  registry:\n    - name: downstream\n      options: {originhost: "https://origin.example", auth: grant, name: region-a}\n';
const MIRROR = 'proxy: {remoteurl: "https://registry-1.docker.io"}\n';

describe('createNode', () => {
  it('gives a config without middleware or proxy the plain registry role, with its own auth', () => {
    assert.deepEqual(createNode(config(''), silent), { role: 'registry', middleware: [] });
    assert.equal(createCacheNode(config(''), silent), undefined);
    assert.equal(createMirrorNode(config(''), silent), undefined);
  });

  it('makes a cache node of the downstream middleware, with the grant authorizer and the key route in auth: grant mode', () => {
    const plain = createNode(config(CACHE), silent);
    assert.equal(plain.role, 'cache');
    assert.equal(plain.middleware.length, 1);
    assert.equal(plain.authorizer, undefined);
    const grant = createNode(config(GRANT_CACHE), silent);
    assert.equal(grant.role, 'cache');
    assert.ok(grant.authorizer);
    assert.deepEqual(grant.extraRoutes?.map((r) => `${r.method} ${r.path}`), ['GET /api/v0/keys']);
    assert.equal(createCacheNode(config(CACHE), silent)?.role, 'cache');
  });

  it('makes a mirror of a proxy section, with the grants authorizer when proxy.grants is set', () => {
    const plain = createNode(config(MIRROR), silent);
    assert.equal(plain.role, 'mirror');
    assert.equal(plain.middleware.length, 1);
    assert.equal(plain.authorizer, undefined);
    const grants = createMirrorNode(config('proxy: {remoteurl: "https://registry-1.docker.io", grants: {issuer: cascade, name: m1, keys: "https://server.example"}}\n'), silent);
    assert.equal(grants?.role, 'mirror');
    assert.ok(grants?.authorizer);
    assert.deepEqual(grants?.extraRoutes, []);
  });

  it('refuses a config that asks for a cache node and a mirror at once', () => {
    assert.throws(() => createNode(config(CACHE + MIRROR), silent), (err: unknown) => err instanceof NodeRoleError && /a node is one or the other/.test(err.message));
  });

  it('loads configs with the downstream validator and the mirror checks', () => {
    assert.throws(() => config('middleware:\n  registry:\n    - name: downstream\n      options: {blobttl: soon}\n'), ConfigError);
    assert.throws(() => config('proxy: {on: true}\n'), ConfigError);
  });

  it('starts a cache node through startRegistry', async () => {
    const cfg = config(CACHE);
    const running = await startRegistry({ config: cfg, logger: silent, ...createNode(cfg, silent) });
    try {
      const res = await fetch(`${running.url}/v2/`);
      assert.ok([200, 401, 502, 503].includes(res.status), String(res.status));
    } finally {
      await running.close();
    }
  });
});
