import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError, parseConfig, type RegistryConfig } from '@cascade/registry-core';
import { certificatePem, makeCert } from '@cascade/testkit';
import { DOWNSTREAM_OPTION_KEYS, parseDownstreamOptions, validateDownstreamOptions, type DownstreamOptions } from '../src/options.js';

const KEY = 'middleware.registry[0].options';
const FILE = 'config.yml';
const ORIGIN = 'https://origin.example';
const CACHE_A = 'https://cache-a.example';
const CACHE_B = 'https://cache-b.example';
const CA_1 = '/certs/origin-ca.pem';
const CA_2 = '/certs/cache-ca.pem';

const withDeletes: RegistryConfig = parseConfig('version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: true\n', FILE, {}).config;
const withoutDeletes: RegistryConfig = parseConfig('version: 0.1\nstorage: inmemory\n', FILE, {}).config;

/** Parses without reading CA files (the paths above do not exist); the file checks have their own tests. */
function parse(options: Record<string, unknown>, config = withDeletes): { options?: DownstreamOptions; errors: string[] } {
  return parseDownstreamOptions(options, KEY, config, { checkCaFiles: false });
}

function ok(options: Record<string, unknown>, config = withDeletes): DownstreamOptions {
  const result = parse(options, config);
  assert.deepEqual(result.errors, []);
  assert.ok(result.options);
  return result.options;
}

/** Expects exactly one error, at `key`, and returns its message. */
function error(options: Record<string, unknown>, key: string, config = withDeletes): string {
  const result = parse(options, config);
  assert.equal(result.options, undefined);
  assert.equal(result.errors.length, 1, `one error expected, got:\n${result.errors.join('\n')}`);
  const message = result.errors[0] ?? '';
  assert.ok(message.startsWith(`${key}: `), `"${message}" should start with "${key}: "`);
  return message;
}

const DEFAULTS = { filltimeoutMs: 600_000, sweepintervalMs: 60_000, auth: 'passthrough', issuer: 'cascade', downstreams: [] as string[] } as const;

describe('the accepted forms', () => {
  const expected: DownstreamOptions = { blobttlMs: 86_400_000, originhost: ORIGIN, upstreamhosts: [CACHE_A, CACHE_B], cas: [CA_1, CA_2], ...DEFAULTS };

  test('(a) DTR nested, (b) DTR flat keys, and cas split across both, parse to the same options', () => {
    const nested = ok({ blobttl: '24h', upstreams: [{ originhost: ORIGIN, upstreamhosts: [CACHE_A, CACHE_B], cas: [CA_1, CA_2] }] });
    const flat = ok({ blobttl: '24h', originhost: ORIGIN, upstreamhosts: [CACHE_A, CACHE_B], cas: [CA_1, CA_2] });
    const split = ok({ blobttl: '24h', cas: [CA_1], upstreams: [{ originhost: ORIGIN, upstreamhosts: [CACHE_A, CACHE_B], cas: [CA_2] }] });
    const mixed = ok({ blobttl: '24h', originhost: ORIGIN, cas: [CA_1, CA_2], upstreams: [{ upstreamhosts: [CACHE_A, CACHE_B] }] });
    for (const options of [nested, flat, split, mixed]) assert.deepEqual(options, expected);
  });

  test('(c) a flat list of hosts: all round-robin upstreams, no origin', () => {
    const expectedHosts: DownstreamOptions = { upstreamhosts: [CACHE_A, CACHE_B], cas: [], ...DEFAULTS };
    assert.deepEqual(ok({ upstreams: [CACHE_A, CACHE_B] }), expectedHosts);
    assert.deepEqual(ok({ upstreamhosts: [CACHE_A, CACHE_B] }), expectedHosts);
    assert.deepEqual(ok({ upstreams: [{ upstreamhosts: [CACHE_A, CACHE_B] }] }), expectedHosts);
    assert.deepEqual(ok({ upstreams: [CACHE_A], cas: [CA_1] }), { upstreamhosts: [CACHE_A], cas: [CA_1], ...DEFAULTS });
    // The list names the upstream hosts; an origin may still be given beside it.
    assert.deepEqual(ok({ upstreams: [CACHE_A], originhost: ORIGIN }), { originhost: ORIGIN, upstreamhosts: [CACHE_A], cas: [], ...DEFAULTS });
  });

  test('only an origin: the minimal DTR cache', () => {
    assert.deepEqual(ok({ upstreams: [{ originhost: ORIGIN }] }), { originhost: ORIGIN, upstreamhosts: [], cas: [], ...DEFAULTS });
    assert.deepEqual(ok({ originhost: ORIGIN, upstreamhosts: [] }), { originhost: ORIGIN, upstreamhosts: [], cas: [], ...DEFAULTS });
  });

  test('hosts are kept as URL origins: no trailing slash, default port dropped, host lower-cased', () => {
    const options = ok({ originhost: 'HTTPS://Origin.Example:443/', upstreamhosts: ['http://cache:5000', 'https://[::1]:8443/'] });
    assert.equal(options.originhost, ORIGIN);
    assert.deepEqual(options.upstreamhosts, ['http://cache:5000', 'https://[::1]:8443']);
  });

  test('keys written without a value are absent, as the loader treats them', () => {
    assert.deepEqual(ok({ originhost: ORIGIN, blobttl: null, cas: null }), { originhost: ORIGIN, upstreamhosts: [], cas: [], ...DEFAULTS });
  });

  test('the optional options and their defaults', () => {
    const options = ok({ originhost: ORIGIN, maxsize: '50GiB', filltimeout: '30s', sweepinterval: '5m', auth: 'none' });
    assert.equal(options.maxsizeBytes, 50 * 2 ** 30);
    assert.equal(options.filltimeoutMs, 30_000);
    assert.equal(options.sweepintervalMs, 300_000);
    assert.equal(options.auth, 'none');
    assert.equal(options.blobttlMs, undefined);
    assert.equal(ok({ originhost: ORIGIN, filltimeout: '0' }).filltimeoutMs, 0);
    // A YAML integer is nanoseconds, as for every Go duration in distribution's file.
    assert.equal(ok({ originhost: ORIGIN, filltimeout: 90_000_000_000 }).filltimeoutMs, 90_000);
    assert.equal(ok({ originhost: ORIGIN, auth: 'passthrough' }).auth, 'passthrough');
  });
});

describe('blobttl', () => {
  test('DTR units, and no unit means nanoseconds', () => {
    const cases: Array<[unknown, number]> = [
      ['24h', 86_400_000],
      ['30m', 1_800_000],
      ['45s', 45_000],
      ['1500ms', 1500],
      ['1500us', 1.5],
      ['2000000ns', 2],
      [86_400_000_000_000, 86_400_000],
      ['86400000000000', 86_400_000],
      ['5000000', 5],
    ];
    for (const [blobttl, ms] of cases) assert.equal(ok({ originhost: ORIGIN, blobttl }).blobttlMs, ms, String(blobttl));
  });

  test('"5" is five nanoseconds, below the 1ms minimum: the message says so and suggests seconds', () => {
    assert.equal(
      error({ originhost: ORIGIN, blobttl: '5' }, `${KEY}.blobttl`),
      `${KEY}.blobttl: expected a duration of at least 1ms, got "5", which is 5 nanoseconds; no unit means nanoseconds: did you mean "5s"?`,
    );
    assert.match(error({ originhost: ORIGIN, blobttl: 5 }, `${KEY}.blobttl`), /got 5, which is 5 nanoseconds; .*did you mean "5s"\?$/);
    assert.match(error({ originhost: ORIGIN, blobttl: '999us' }, `${KEY}.blobttl`), /got "999us", which is 999000 nanoseconds$/);
  });

  test('values that are not DTR durations', () => {
    const expected = 'expected a positive integer with an optional unit ns, us, ms, s, m or h (no unit means nanoseconds)';
    const cases: Array<[unknown, RegExp]> = [
      ['1d', /got "1d" \(there is no unit "d": write "24h"\)$/],
      ['7d', /got "7d" \(there is no unit "d": write "168h"\)$/],
      ['-5s', /got "-5s" \(a duration must be positive\)$/],
      ['abc', /got "abc"$/],
      [0, /got 0$/],
      ['0', /got "0"$/],
      [-5, /got -5$/],
      [1.5, /got 1\.5$/],
      ['1h30m', /got "1h30m" \(durations with several units or a fraction are not DTR syntax: write "90m"\)$/],
      ['1.5h', /write "90m"\)$/],
      ['1m30s', /write "90s"\)$/],
      ['1.5s', /write "1500ms"\)$/],
      ['24 h', /got "24 h"$/],
      [true, /got true$/],
      [['24h'], /got a list of 1 item$/],
    ];
    for (const [blobttl, got] of cases) {
      const message = error({ originhost: ORIGIN, blobttl }, `${KEY}.blobttl`);
      if (typeof blobttl === 'string' || typeof blobttl === 'number') assert.ok(message.includes(expected), message);
      assert.match(message, got);
    }
  });

  test('more than Go can hold is refused', () => {
    assert.match(error({ originhost: ORIGIN, blobttl: '3000000h' }, `${KEY}.blobttl`), /expected a duration of at most 2562047h/);
  });

  test('requires storage.delete.enabled, and says why', () => {
    const message = error({ originhost: ORIGIN, blobttl: '24h' }, 'storage.delete.enabled', withoutDeletes);
    assert.equal(
      message,
      `storage.delete.enabled: expected true because ${KEY}.blobttl is set (the cache deletes blobs when they expire or are evicted, and the storage refuses deletes unless they are enabled), got false`,
    );
    assert.deepEqual(parse({ originhost: ORIGIN }, withoutDeletes).errors, []);
  });
});

describe('maxsize', () => {
  test('bytes, SI and IEC units', () => {
    const cases: Array<[unknown, number]> = [
      [1000, 1000],
      ['1000', 1000],
      ['1B', 1],
      ['1KB', 1000],
      ['1KiB', 1024],
      ['3MB', 3_000_000],
      ['3MiB', 3 * 2 ** 20],
      ['50GB', 50e9],
      ['50GiB', 50 * 2 ** 30],
      ['50gib', 50 * 2 ** 30],
      ['50 GiB', 50 * 2 ** 30],
      ['2TB', 2e12],
      ['2TiB', 2 * 2 ** 40],
      ['1.5GiB', 1.5 * 2 ** 30],
    ];
    for (const [maxsize, bytes] of cases) assert.equal(ok({ originhost: ORIGIN, maxsize }).maxsizeBytes, bytes, String(maxsize));
  });

  test('bad sizes', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['50G', /got "50G" \(unknown unit "G": did you mean "GB" or "GiB"\?\)$/],
      ['50PB', /unknown unit "PB"/],
      [0, /got 0$/],
      [-1, /got -1$/],
      ['abc', /got "abc"$/],
      ['1.5', /a number of bytes is a whole number/],
      [1.5, /got 1\.5$/],
      [false, /got false$/],
    ];
    for (const [maxsize, got] of cases) {
      const message = error({ originhost: ORIGIN, maxsize }, `${KEY}.maxsize`);
      assert.ok(message.includes('expected a positive number of bytes, or a size with a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)'), message);
      assert.match(message, got);
    }
  });

  test('requires storage.delete.enabled, as blobttl does (one message for both)', () => {
    assert.match(error({ originhost: ORIGIN, maxsize: '1GB' }, 'storage.delete.enabled', withoutDeletes), /expected true because middleware\.registry\[0\]\.options\.maxsize is set/);
    assert.match(
      error({ originhost: ORIGIN, maxsize: '1GB', blobttl: '1h' }, 'storage.delete.enabled', withoutDeletes),
      /because middleware\.registry\[0\]\.options\.blobttl and middleware\.registry\[0\]\.options\.maxsize are set/,
    );
  });
});

describe('filltimeout, sweepinterval, auth', () => {
  test('bad values name their key', () => {
    assert.match(error({ originhost: ORIGIN, filltimeout: '-1s' }, `${KEY}.filltimeout`), /expected a Go duration such as "10m", "90s" or "1h30m" .*, not negative, got "-1s"$/);
    assert.match(error({ originhost: ORIGIN, filltimeout: 'soon' }, `${KEY}.filltimeout`), /got "soon"$/);
    assert.match(error({ originhost: ORIGIN, sweepinterval: '0' }, `${KEY}.sweepinterval`), /greater than 0, got "0"$/);
    assert.match(error({ originhost: ORIGIN, sweepinterval: '1d' }, `${KEY}.sweepinterval`), /got "1d"$/);
    assert.equal(error({ originhost: ORIGIN, auth: 'passthru' }, `${KEY}.auth`), `${KEY}.auth: expected one of "passthrough", "none", got "passthru" (did you mean "passthrough"?)`.replace('"none", got', '"none", "grant", got'));
    assert.match(error({ originhost: ORIGIN, auth: 'grants' }, `${KEY}.auth`), /expected one of "passthrough", "none", "grant", got "grants"/);
    assert.match(error({ originhost: ORIGIN, auth: true }, `${KEY}.auth`), /got true$/);
  });
});

describe('upstream errors name their key', () => {
  test('more than one upstream set', () => {
    const message = error({ upstreams: [{ originhost: ORIGIN }, { originhost: 'https://other.example' }] }, `${KEY}.upstreams[1]`);
    assert.match(message, /expected one upstream set per cache node \(a cache fills from one origin; list several caches in middleware\.registry\[0\]\.options\.upstreams\[0\]\.upstreamhosts, which are tried round-robin\), got another upstream set$/);
  });

  test('no origin and no upstream hosts', () => {
    assert.match(error({}, `${KEY}.upstreams`), /expected where to fetch missing blobs from: an originhost or upstreamhosts \(for example "upstreams: \[\{originhost: https:\/\/origin\.example\}\]"\), got nothing$/);
    assert.match(error({ blobttl: '24h', cas: [CA_1] }, `${KEY}.upstreams`), /got nothing$/);
    assert.match(error({ upstreams: [{ cas: [CA_1] }] }, `${KEY}.upstreams[0]`), /got neither$/);
    assert.match(error({ upstreams: [{ upstreamhosts: [] }] }, `${KEY}.upstreams[0]`), /got neither$/);
  });

  test('originhost or upstream hosts written twice', () => {
    assert.match(
      error({ originhost: ORIGIN, upstreams: [{ originhost: ORIGIN }] }, `${KEY}.upstreams[0].originhost`),
      /expected originhost in one place only \(it is also set at middleware\.registry\[0\]\.options\.originhost\), got a second one$/,
    );
    assert.match(error({ upstreamhosts: [CACHE_A], upstreams: [CACHE_B] }, `${KEY}.upstreams`), /expected upstream hosts in one place only \(they are also set at middleware\.registry\[0\]\.options\.upstreamhosts\)/);
    assert.match(error({ upstreamhosts: [CACHE_A], upstreams: [{ upstreamhosts: [CACHE_B] }] }, `${KEY}.upstreams[0].upstreamhosts`), /in one place only/);
  });

  test('upstreams that are neither form', () => {
    assert.match(error({ upstreams: [CACHE_A, { originhost: ORIGIN }] }, `${KEY}.upstreams[1]`), /expected a host URL like middleware\.registry\[0\]\.options\.upstreams\[0\] .*not both\), got a mapping$/);
    assert.match(error({ upstreams: { originhost: ORIGIN } }, `${KEY}.upstreams`), /got a mapping \(write the upstream set as a list item: "- originhost: \.\.\."\)$/);
    assert.match(error({ upstreams: [] }, `${KEY}.upstreams`), /got an empty list$/);
    assert.match(error({ upstreams: ORIGIN }, `${KEY}.upstreams`), /got "https:\/\/origin\.example"$/);
    assert.match(error({ upstreams: [{ originhost: ORIGIN }, CACHE_A] }, `${KEY}.upstreams[1]`), /one upstream set per cache node .*, got "https:\/\/cache-a\.example"$/);
  });

  test('upstreamhosts must be a list of distinct hosts', () => {
    assert.match(error({ upstreamhosts: CACHE_A }, `${KEY}.upstreamhosts`), /expected a list of http\(s\) URLs, got "https:\/\/cache-a\.example"$/);
    assert.match(
      error({ upstreams: [{ originhost: ORIGIN, upstreamhosts: [CACHE_A, CACHE_B, `${CACHE_A}/`] }] }, `${KEY}.upstreams[0].upstreamhosts[2]`),
      /expected each host once \(it is already middleware\.registry\[0\]\.options\.upstreams\[0\]\.upstreamhosts\[0\]\), got "https:\/\/cache-a\.example\/"$/,
    );
    assert.match(error({ upstreams: [CACHE_A, CACHE_A] }, `${KEY}.upstreams[1]`), /expected each host once/);
  });
});

describe('URLs', () => {
  const expected = 'expected an absolute http:// or https:// URL without path, query or fragment, such as "https://origin.example"';
  const cases: Array<[unknown, RegExp]> = [
    ['origin.example', /got "origin\.example" \(add the scheme: "https:\/\/origin\.example"\)$/],
    ['origin.example:5000', /got "origin\.example:5000" \(add the scheme: "https:\/\/origin\.example:5000"\)$/],
    ['ftp://origin.example', /got "ftp:\/\/origin\.example"$/],
    ['https://origin.example/v2/', /\(the cache adds \/v2\/\.\.\. itself\), got "https:\/\/origin\.example\/v2\/"$/],
    ['https://origin.example/?ns=docker.io', /got "https:\/\/origin\.example\/\?ns=docker\.io"$/],
    ['https://origin.example?', /got "https:\/\/origin\.example\?"$/],
    ['https://origin.example#frag', /got "https:\/\/origin\.example#frag"$/],
    ['https://<dtr-url>', /got "https:\/\/<dtr-url>"$/],
    ['', /got an empty string$/],
    [5000, /got 5000$/],
  ];
  for (const [value, got] of cases) {
    test(`${JSON.stringify(value)} is refused, in each place a URL goes`, () => {
      for (const [options, key] of [
        [{ originhost: value }, `${KEY}.originhost`],
        [{ upstreams: [{ originhost: value }] }, `${KEY}.upstreams[0].originhost`],
        [{ originhost: ORIGIN, upstreamhosts: [value] }, `${KEY}.upstreamhosts[0]`],
        [{ upstreams: [{ originhost: ORIGIN, upstreamhosts: [CACHE_A, value] }] }, `${KEY}.upstreams[0].upstreamhosts[1]`],
        [{ upstreams: [CACHE_A, value] }, `${KEY}.upstreams[1]`],
      ] as const) {
        const message = error(options, key);
        if (typeof value === 'string' && !value.includes('/v2/')) assert.ok(message.includes(expected), message);
        assert.match(message, got);
      }
    });
  }

  test('credentials in a URL are an error, and are never echoed', () => {
    for (const value of ['https://alice:s3cret@origin.example', 'https://alice@origin.example', 'https://alice:s3cr/et@origin.example', 'ftp://alice:s3cret@origin.example']) {
      const message = error({ originhost: value }, `${KEY}.originhost`);
      assert.match(message, /expected a URL without credentials .*, got a URL with a user name or password \(not shown\)$/);
      assert.ok(!message.includes('s3cr') && !message.includes('alice'), message);
    }
    const listed = error({ upstreams: [CACHE_A, 'https://bob:hunter2@cache-b.example'] }, `${KEY}.upstreams[1]`);
    assert.ok(!listed.includes('hunter2'), listed);
  });
});

describe('cas', () => {
  test('must be a list of absolute paths', () => {
    assert.match(error({ originhost: ORIGIN, cas: CA_1 }, `${KEY}.cas`), /expected a list of absolute paths of PEM CA certificate files, got "\/certs\/origin-ca\.pem"$/);
    assert.match(error({ originhost: ORIGIN, cas: [CA_1, 'certs/ca.pem'] }, `${KEY}.cas[1]`), /expected an absolute path of a PEM CA certificate file, such as "\/certs\/origin-ca\.pem", got "certs\/ca\.pem"$/);
    assert.match(error({ upstreams: [{ originhost: ORIGIN, cas: ['./ca.pem'] }] }, `${KEY}.upstreams[0].cas[0]`), /got "\.\/ca\.pem"$/);
    assert.match(error({ upstreams: [{ originhost: ORIGIN, cas: [''] }] }, `${KEY}.upstreams[0].cas[0]`), /got an empty string$/);
    assert.match(error({ upstreams: [{ originhost: ORIGIN, cas: [42] }] }, `${KEY}.upstreams[0].cas[0]`), /got 42$/);
  });
});

describe('unknown keys', () => {
  test('at options level, with a suggestion when it looks like a typo', () => {
    const keys = DOWNSTREAM_OPTION_KEYS.join(', ');
    assert.equal(error({ originhost: ORIGIN, blobtll: '24h' }, `${KEY}.blobtll`), `${KEY}.blobtll: expected a key of ${KEY} (${keys}), got unknown key "blobtll" (did you mean "blobttl"?)`);
    assert.match(error({ originhost: ORIGIN, BlobTTL: '24h' }, `${KEY}.BlobTTL`), /\(did you mean "blobttl"\?\)$/);
    assert.match(error({ originhost: ORIGIN, upstream: [] }, `${KEY}.upstream`), /\(did you mean "upstreams"\?\)$/);
    assert.match(error({ originhost: ORIGIN, ca: [] }, `${KEY}.ca`), /\(did you mean "cas"\?\)$/);
    assert.match(error({ originhost: ORIGIN, zone: 'us' }, `${KEY}.zone`), /got unknown key "zone"$/);
  });

  test('in the upstream set, pointing options-level keys to their place', () => {
    assert.match(
      error({ upstreams: [{ orginhost: ORIGIN }] }, `${KEY}.upstreams[0].orginhost`),
      /expected a key of middleware\.registry\[0\]\.options\.upstreams\[0\] \(originhost, upstreamhosts, cas\), got unknown key "orginhost" \(did you mean "originhost"\?\)$/,
    );
    assert.match(error({ upstreams: [{ originhost: ORIGIN, blobttl: '24h' }] }, `${KEY}.upstreams[0].blobttl`), /got unknown key "blobttl" \(it belongs in middleware\.registry\[0\]\.options, beside upstreams\)$/);
  });
});

test('every problem is reported at once', () => {
  const { errors, options } = parse({ blobttl: '1d', maxsize: 'lots', auth: 'x', upstreams: [{ originhost: 'nope', cas: ['rel.pem'] }], extra: 1 }, withoutDeletes);
  assert.equal(options, undefined);
  assert.deepEqual(
    errors.map((e) => e.split(': ')[0]),
    [`${KEY}.extra`, `${KEY}.upstreams[0].originhost`, `${KEY}.upstreams[0].cas[0]`, `${KEY}.blobttl`, `${KEY}.maxsize`, `${KEY}.auth`, 'storage.delete.enabled'],
  );
});

// CA files generated here, for the checks the validator makes through the config loader.
const dir = mkdtempSync(join(tmpdir(), 'cascade-options-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function writeCa(name: string, notAfter: Date): string {
  const cert = makeCert({ subject: name, notBefore: new Date('2020-01-01T00:00:00Z'), notAfter, extensions: [{ name: 'basicConstraints', cA: true, critical: true }] });
  const path = join(dir, `${name.replace(/\W/g, '-')}.pem`);
  writeFileSync(path, certificatePem(cert));
  return path;
}

const dtrCa = writeCa('DTR CA', new Date('2060-01-01T00:00:00Z'));
const cacheCa = writeCa('Cache CA', new Date('2060-01-01T00:00:00Z'));
const expiredCa = writeCa('Expired CA', new Date('2024-01-01T00:00:00Z'));
const missingCa = join(dir, 'missing.pem');

/** The deployment example of seed 003 (DTR "Cache Docker images"), byte for byte but for the CA path and host. */
const DTR_EXAMPLE = `version: 0.1
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
middleware:
  registry:
      - name: downstream
        options:
          blobttl: 24h
          upstreams:
            - originhost: https://<dtr-url>
          cas:
            - /certs/dtr-ca.pem
`;

const middleware = { middleware: { downstream: validateDownstreamOptions } };

function configError(text: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    parseConfig(text, FILE, env, middleware);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e;
  }
  assert.fail('expected a ConfigError');
}

describe('through the config loader', () => {
  test("DTR's example (seed 003) loads, and its options parse", () => {
    const text = DTR_EXAMPLE.replace('<dtr-url>', 'dtr.example.com').replace('/certs/dtr-ca.pem', dtrCa);
    const { config } = parseConfig(text, FILE, {}, middleware);
    const entry = config.middleware.registry[0];
    assert.equal(entry?.name, 'downstream');
    const parsed = parseDownstreamOptions(entry?.options ?? {}, KEY, config);
    assert.deepEqual(parsed, {
      errors: [],
      options: { blobttlMs: 86_400_000, originhost: 'https://dtr.example.com', upstreamhosts: [], cas: [dtrCa], ...DEFAULTS },
    });
  });

  test("DTR's placeholder host is reported as a URL error on its key", () => {
    const err = configError(DTR_EXAMPLE.replace('/certs/dtr-ca.pem', dtrCa));
    assert.deepEqual(
      err.issues.map((i) => i.key),
      [`${KEY}.upstreams[0].originhost`],
    );
    assert.equal(
      err.message,
      `${FILE}: ${KEY}.upstreams[0].originhost: expected an absolute http:// or https:// URL without path, query or fragment, such as "https://origin.example", got "https://<dtr-url>"`,
    );
  });

  test("DTR's chained example: origin, two upstream caches, two CAs", () => {
    const text = `version: 0.1
storage: {delete: {enabled: true}, filesystem: {rootdirectory: /var/lib/registry}}
middleware:
  registry:
    - name: downstream
      options:
        blobttl: 24h
        upstreams:
          - originhost: https://origin.example
            upstreamhosts: [https://cache-a.example, https://cache-b.example]
            cas: [${dtrCa}, ${cacheCa}]
`;
    const { config } = parseConfig(text, FILE, {}, middleware);
    assert.deepEqual(parseDownstreamOptions(config.middleware.registry[0]?.options ?? {}, KEY, config).options, {
      blobttlMs: 86_400_000,
      originhost: ORIGIN,
      upstreamhosts: [CACHE_A, CACHE_B],
      cas: [dtrCa, cacheCa],
      ...DEFAULTS,
    });
  });

  test('a missing or bad CA file fails start-up, naming the key and the file', () => {
    const text = `version: 0.1
storage: {delete: {enabled: true}, inmemory: {}}
middleware:
  registry:
    - name: downstream
      options:
        cas: [${dtrCa}]
        upstreams:
          - originhost: https://origin.example
            cas: [${missingCa}, ${expiredCa}]
`;
    const err = configError(text);
    assert.deepEqual(
      err.issues.map((i) => i.key),
      [`${KEY}.upstreams[0].cas[0]`, `${KEY}.upstreams[0].cas[1]`],
    );
    const lines = err.message.split('\n');
    assert.equal(lines[0], `${FILE}: ${KEY}.upstreams[0].cas[0]: ${missingCa}: file not found; check the path, or get the CA certificate from the upstream (curl -k https://<host>/ca > ${missingCa})`);
    assert.equal(lines[1], `${FILE}: ${KEY}.upstreams[0].cas[1]: ${expiredCa}: certificate "CN=Expired CA" expired on 2024-01-01T00:00:00Z; get a current CA certificate from the upstream (curl -k https://<host>/ca)`);
  });

  test('blobttl without deletes enabled, and a value from the environment, are reported with the rest', () => {
    const text = `version: 0.1
storage: inmemory
middleware:
  registry:
    - name: downstream
      options:
        blobttl: 24h
        upstreams: [https://cache-a.example]
`;
    const err = configError(text, { REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_FILLTIMEOUT: 'forever' });
    assert.deepEqual(
      err.issues.map((i) => [i.key, i.env]),
      [
        [`${KEY}.filltimeout`, 'REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_FILLTIMEOUT'],
        ['storage.delete.enabled', undefined],
      ],
    );
    assert.match(err.message, /^config\.yml: middleware\.registry\[0\]\.options\.filltimeout \(from environment variable REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_FILLTIMEOUT\): expected a Go duration/);
    assert.match(err.message, /\nconfig\.yml: storage\.delete\.enabled: expected true because middleware\.registry\[0\]\.options\.blobttl is set \(the cache deletes blobs/);
  });

  test('a valid cache file passes the validator as it is', () => {
    const options = { blobttl: '24h', upstreams: [{ originhost: ORIGIN, cas: [dtrCa] }] };
    assert.deepEqual(validateDownstreamOptions(options, KEY, withDeletes), []);
    assert.deepEqual(validateDownstreamOptions({ ...options, cas: [missingCa] }, KEY, withDeletes).length, 1);
  });
});

describe('auth: grant', () => {
  test('needs the cache name; takes the issuer and the downstream caches', () => {
    const parsed = ok({ originhost: ORIGIN, auth: 'grant', name: 'region-a', issuer: 'cascade-prod', downstreams: ['region-b'] });
    assert.equal(parsed.auth, 'grant');
    assert.equal(parsed.name, 'region-a');
    assert.equal(parsed.issuer, 'cascade-prod');
    assert.deepEqual(parsed.downstreams, ['region-b']);
    const message = error({ originhost: ORIGIN, auth: 'grant' }, `${KEY}.name`);
    assert.match(message, /registered on the server/);
    error({ originhost: ORIGIN, auth: 'grant', name: 'a', downstreams: 'b' }, `${KEY}.downstreams`);
  });
});

describe('region', () => {
  const filesystem: RegistryConfig = parseConfig('version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /srv/shared\n  delete:\n    enabled: true\n', FILE, {}).config;
  const REDIS = 'redis://redis.eu-west.internal:6379/0';
  const parseWith = (options: Record<string, unknown>, env: NodeJS.ProcessEnv = {}, config = filesystem) => parseDownstreamOptions(options, KEY, config, { checkCaFiles: false, env });

  test('region.redis with filesystem storage: the node joins the region of its storage folder', () => {
    const { options, errors } = parseWith({ originhost: ORIGIN, region: { redis: REDIS } });
    assert.deepEqual(errors, []);
    assert.deepEqual(options?.region, { redis: REDIS, storageRoot: '/srv/shared' });
    assert.deepEqual(parseWith({ originhost: ORIGIN, region: { redis: 'rediss://:secret@redis.example:6380', name: 'eu-west' } }).options?.region, {
      redis: 'rediss://:secret@redis.example:6380',
      name: 'eu-west',
      storageRoot: '/srv/shared',
    });
  });

  test('CASCADE_REGION_REDIS supplies region.redis, and wins over the file', () => {
    assert.equal(parseWith({ originhost: ORIGIN }, { CASCADE_REGION_REDIS: REDIS }).options?.region?.redis, REDIS);
    assert.equal(parseWith({ originhost: ORIGIN, region: { redis: 'redis://other:6379', name: 'eu' } }, { CASCADE_REGION_REDIS: REDIS }).options?.region?.redis, REDIS);
    assert.equal(parseWith({ originhost: ORIGIN, region: { name: 'eu' } }, { CASCADE_REGION_REDIS: REDIS }).options?.region?.name, 'eu');
    assert.equal(parseWith({ originhost: ORIGIN }, { CASCADE_REGION_REDIS: '' }).options?.region, undefined, 'empty means unset');
  });

  test('a bad URL is an error naming region.redis that never shows the password', () => {
    for (const bad of ['http://:hunter2@redis.example:6379', 'redis.example:6379', 'redis://:hunter2@redis.example:6379/x', 'redis://:hunter2@']) {
      const { errors } = parseWith({ originhost: ORIGIN, region: { redis: bad } });
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.ok(errors[0]?.startsWith(`${KEY}.region.redis: expected a redis:// or rediss:// URL`), errors[0]);
      assert.ok(!errors[0]?.includes('hunter2'), errors[0]);
    }
    const fromEnv = parseWith({ originhost: ORIGIN }, { CASCADE_REGION_REDIS: 'http://:hunter2@x' }).errors;
    assert.equal(fromEnv.length, 1);
    assert.match(fromEnv[0] ?? '', /^middleware\.registry\[0\]\.options\.region\.redis: .*\(from CASCADE_REGION_REDIS\)$/);
    assert.ok(!fromEnv[0]?.includes('hunter2'));
    assert.match(parseWith({ originhost: ORIGIN, region: {} }).errors[0] ?? '', /^middleware\.registry\[0\]\.options\.region\.redis: expected .* \(or set CASCADE_REGION_REDIS\), got nothing$/);
    assert.match(parseWith({ originhost: ORIGIN, region: { redis: REDIS, nodes: 3 } }).errors[0] ?? '', /region\.nodes: expected a key of region \(redis, name\)/);
  });

  test('region needs filesystem storage (the shared folder): inmemory is refused', () => {
    const { errors } = parseWith({ originhost: ORIGIN, region: { redis: REDIS } }, {}, withDeletes);
    assert.deepEqual(errors, [`storage: expected storage.filesystem (a folder every node of the region mounts) because ${KEY}.region is set, got inmemory`]);
  });
});
