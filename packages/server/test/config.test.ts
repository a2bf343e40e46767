/** `server.yml` defaults: every section left out gets its documented defaults, parsed (durations in ms). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseServerConfig } from '../src/front/config.js';

describe('server.yml defaults', () => {
  it('applies the defaults of omitted sections as parsed values, not as the strings they are written as', () => {
    const c = parseServerConfig('origin: {url: "http://origin.example:5000"}\n', 'server.yml', {});
    // A duration left as "15s" made setInterval fire every millisecond (a string delay is NaN, i.e. 1 ms).
    assert.equal(c.healthcheck.interval, 15_000);
    assert.equal(c.authorization.cachettl, 5_000);
    assert.equal(c.grants.ttl, 60_000);
    assert.equal(c.grants.issuer, 'cascade');
    assert.equal(c.log.level, 'info');
    assert.equal(c.http.addr, ':8443');
    assert.match(c.database.sqlite, /cascade\.db$/);
  });

  it('parses durations given in the file', () => {
    const c = parseServerConfig('origin: {url: "http://o:1"}\nhealthcheck: {interval: 2s}\nauthorization: {cachettl: 0s}\ngrants: {ttl: 5m}\n', 'server.yml', {});
    assert.equal(c.healthcheck.interval, 2_000);
    assert.equal(c.authorization.cachettl, 0);
    assert.equal(c.grants.ttl, 300_000);
  });
});
