/** `server.yml` defaults: every section left out gets its documented defaults, parsed (durations in ms). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseServerConfig } from '../src/config.js';

describe('server.yml defaults', () => {
  it('applies the defaults of omitted sections as parsed values, not as the strings they are written as', () => {
    const c = parseServerConfig('origin: {url: "http://origin.example:5000"}\n', 'server.yml', {});
    // A duration left as "15s" made setInterval fire every millisecond (a string delay is NaN, i.e. 1 ms).
    assert.equal(c.healthcheck.interval, 15_000);
    assert.equal(c.authorization.cachettl, 5_000);
    assert.equal(c.grants.ttl, 60_000);
    assert.equal(c.grants.rotate, 720 * 3600_000, 'grant keys rotate every 30 days');
    assert.equal(c.grants.issuer, 'cascade');
    assert.equal(c.log.level, 'info');
    assert.equal(c.http.addr, ':8443');
    assert.match(c.database.sqlite ?? '', /cascade\.db$/);
    assert.equal(c.database.postgres, undefined);
  });

  it('parses durations given in the file', () => {
    const c = parseServerConfig('origin: {url: "http://o:1"}\nhealthcheck: {interval: 2s}\nauthorization: {cachettl: 0s}\ngrants: {ttl: 5m}\n', 'server.yml', {});
    assert.equal(c.healthcheck.interval, 2_000);
    assert.equal(c.authorization.cachettl, 0);
    assert.equal(c.grants.ttl, 300_000);
  });
});

describe('server.yml database', () => {
  const origin = 'origin: {url: "http://o:1"}\n';
  const refused = (text: string, env: NodeJS.ProcessEnv, message: RegExp) =>
    assert.throws(
      () => parseServerConfig(text, 'server.yml', env),
      (err: Error) => {
        assert.match(err.message, message);
        assert.doesNotMatch(err.message, /s3cret/, 'the password is never echoed');
        return true;
      },
    );

  it('takes a SQLite file (relative to the config) or a PostgreSQL URL', () => {
    assert.equal(parseServerConfig(`${origin}database: {sqlite: state/cascade.db}\n`, '/etc/cascade/server.yml', {}).database.sqlite, '/etc/cascade/state/cascade.db');
    const pg = parseServerConfig(`${origin}database: {postgres: "postgres://cascade:s3cret@db.internal:5432/cascade"}\n`, 'server.yml', {});
    assert.deepEqual(pg.database, { postgres: 'postgres://cascade:s3cret@db.internal:5432/cascade' });
  });

  it('takes the PostgreSQL URL from CASCADE_DATABASE_URL, which overrides the file, so the password need not be in it', () => {
    const c = parseServerConfig(origin, 'server.yml', { CASCADE_DATABASE_URL: 'postgresql://cascade:s3cret@db/cascade' });
    assert.deepEqual(c.database, { postgres: 'postgresql://cascade:s3cret@db/cascade' });
    const overridden = parseServerConfig(`${origin}database: {sqlite: a.db}\n`, 'server.yml', { CASCADE_DATABASE_URL: 'postgres://cascade@db/cascade' });
    assert.deepEqual(overridden.database, { postgres: 'postgres://cascade@db/cascade' });
  });

  it('refuses both kinds at once, and a URL that is not a postgres:// URL, naming the key', () => {
    refused(`${origin}database: {sqlite: a.db, postgres: "postgres://u@h/d"}\n`, {}, /database: either sqlite or postgres, not both/);
    refused(`${origin}database: {postgres: "mysql://u:s3cret@h/d"}\n`, {}, /database\.postgres: expected a postgres:\/\/user@host\/database URL, got a mysql: URL/);
    refused(origin, { CASCADE_DATABASE_URL: 'not a url s3cret' }, /CASCADE_DATABASE_URL: expected a postgres:\/\/user@host\/database URL, got a string that is not a URL/);
  });
});

describe('server.yml grants.rotate', () => {
  it('takes 0 (never) or at least an hour', () => {
    assert.equal(parseServerConfig('origin: {url: "http://o:1"}\ngrants: {rotate: 0}\n', 'server.yml', {}).grants.rotate, 0);
    assert.equal(parseServerConfig('origin: {url: "http://o:1"}\ngrants: {rotate: 2160h}\n', 'server.yml', {}).grants.rotate, 2160 * 3600_000);
    assert.throws(() => parseServerConfig('origin: {url: "http://o:1"}\ngrants: {rotate: 30m}\n', 'server.yml', {}), /grants\.rotate: expected 0 \(never\) or at least 1h/);
  });
});

describe('server.yml events and warm', () => {
  const origin = 'origin: {url: "http://o:1"}\n';

  it('has no events secret and the documented warm defaults when left out', () => {
    const c = parseServerConfig(origin, '/etc/cascade/server.yml', {});
    assert.deepEqual(c.events, { tokens: [] });
    assert.deepEqual(c.warm, { concurrency: 2, attempts: 8, backoff: 5_000, maxbackoff: 300_000, timeout: 1_800_000, history: 1000 });
  });

  it('takes secrets from the file, a token file beside it, and CASCADE_EVENTS_TOKEN', () => {
    const c = parseServerConfig(`${origin}events: {tokens: [from-the-file-0123456789], tokenfile: secrets/events}\nwarm: {backoff: 1s, attempts: 3}\n`, '/etc/cascade/server.yml', { CASCADE_EVENTS_TOKEN: 'from-the-env-0123456789' });
    assert.deepEqual(c.events, { tokens: ['from-the-file-0123456789', 'from-the-env-0123456789'], tokenfile: '/etc/cascade/secrets/events' });
    assert.equal(c.warm.backoff, 1_000);
    assert.equal(c.warm.attempts, 3);
  });

  it('refuses a short secret and warm values out of range, without echoing the secret', () => {
    assert.throws(() => parseServerConfig(`${origin}events: {tokens: [short]}\n`, 'server.yml', {}), (err: Error) => /events\.tokens\.0: a secret of at least 16 characters/.test(err.message) && !err.message.includes('short]'));
    assert.throws(() => parseServerConfig(`${origin}warm: {concurrency: 0}\n`, 'server.yml', {}), /warm\.concurrency/);
    assert.throws(() => parseServerConfig(`${origin}warm: {unknown: 1}\n`, 'server.yml', {}), /warm: no key "unknown"/);
  });
});
