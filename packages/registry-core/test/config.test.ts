import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  ConfigError,
  loadConfig,
  parseConfig,
  parseDtrDuration,
  parseGoDuration,
  type LoadConfigOptions,
  type MiddlewareOptionsValidator,
  type RegistryConfig,
} from '../src/config/index.js';

const FILE = 'config.yml';

/** Accepts any options, recording what it was given; the real validator comes with the downstream middleware. */
function acceptingDownstream(): { options: LoadConfigOptions; calls: Array<{ options: Record<string, unknown>; key: string; config: RegistryConfig }> } {
  const calls: Array<{ options: Record<string, unknown>; key: string; config: RegistryConfig }> = [];
  const downstream: MiddlewareOptionsValidator = (options, key, config) => {
    calls.push({ options, key, config });
    return [];
  };
  return { options: { middleware: { downstream } }, calls };
}

/** Parses and expects a ConfigError, which is returned. */
function fails(text: string, env: NodeJS.ProcessEnv = {}, options: LoadConfigOptions = {}): ConfigError {
  try {
    parseConfig(text, FILE, env, options);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected the configuration to be rejected');
}

const MINIMAL = 'version: 0.1\nstorage:\n  inmemory:\n';

// Seed 003: the DTR content cache configuration, verbatim but for the host.
const DTR_CACHE = `version: 0.1
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
          - originhost: https://dtr.example.com
        cas:
          - /certs/dtr-ca.pem
`;

// Seed 000: sealer's registry configurations.
const SEALER_WITH_REMOTES = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
proxy:
  remoteregistries:
  # will cache image from docker pull docker.io/library/nginx:latest or docker pull nginx
  - url: https://registry-1.docker.io #dockerhub default registry
    username:
    password:
  # will cache image from docker pull reg.test1.com/library/nginx:latest
  - url: https://reg.test1.com
    username: username
    password: password
  - url: http://reg.test2.com
    username: username
    password: password
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

const SEALER_PROXY_ON = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
proxy:
  #turn on the proxy ability, but with noting registry auth info.
  on: true
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

const SEALER_NO_PROXY = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

const SEALER_PROXY_FIRST = `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
proxy:
  on: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
`;

describe('seed configurations', () => {
  test('DTR content cache (seed 003) parses, and the downstream validator sees its options', () => {
    const { options, calls } = acceptingDownstream();
    const { config, warnings } = parseConfig(DTR_CACHE, FILE, {}, options);
    assert.deepEqual(warnings, []);
    assert.equal(config.version, '0.1');
    assert.equal(config.storage.delete.enabled, true);
    assert.equal(config.storage.filesystem?.rootdirectory, '/var/lib/registry');
    assert.equal(config.http.addr, ':5000');
    assert.equal(config.middleware.registry.length, 1);
    assert.equal(calls.length, 1);
    const call = calls[0];
    assert.ok(call);
    assert.equal(call.key, 'middleware.registry[0].options');
    assert.deepEqual(call.options, { blobttl: '24h', upstreams: [{ originhost: 'https://dtr.example.com' }], cas: ['/certs/dtr-ca.pem'] });
    assert.equal(call.config.storage.delete.enabled, true);
  });

  test('sealer with remote registries (seed 000) parses; empty credentials are absent', () => {
    const { config, warnings } = parseConfig(SEALER_WITH_REMOTES, FILE, {});
    assert.deepEqual(warnings, []);
    assert.deepEqual(config.log.fields, { service: 'registry' });
    assert.deepEqual(config.storage.cache, { blobdescriptor: 'inmemory' });
    assert.deepEqual(config.http.headers, { 'X-Content-Type-Options': ['nosniff'] });
    assert.deepEqual(config.proxy?.remoteregistries, [
      { url: 'https://registry-1.docker.io' },
      { url: 'https://reg.test1.com', username: 'username', password: 'password' },
      { url: 'http://reg.test2.com', username: 'username', password: 'password' },
    ]);
    assert.deepEqual(config.health.storagedriver, { enabled: true, interval: 10_000, threshold: 3 });
  });

  test('sealer with proxy on (seed 000) parses, whatever the order of the sections', () => {
    for (const text of [SEALER_PROXY_ON, SEALER_PROXY_FIRST]) {
      const { config, warnings } = parseConfig(text, FILE, {});
      assert.deepEqual(warnings, []);
      assert.equal(config.proxy?.on, true);
      assert.equal(config.proxy?.remoteurl, undefined);
    }
  });

  test('sealer without proxy (seed 000) parses', () => {
    const { config, warnings } = parseConfig(SEALER_NO_PROXY, FILE, {});
    assert.deepEqual(warnings, []);
    assert.equal(config.proxy, undefined);
    assert.deepEqual(config.http.sendfile, { enabled: true, threads: 2 });
  });

  test('http.sendfile: set in the file or by REGISTRY_HTTP_SENDFILE_*; threads from 1 to 16', () => {
    const { config } = parseConfig(`${MINIMAL}http:\n  sendfile:\n    threads: 4\n`, FILE, { REGISTRY_HTTP_SENDFILE_ENABLED: 'false' });
    assert.deepEqual(config.http.sendfile, { enabled: false, threads: 4 });
    assert.throws(() => parseConfig(`${MINIMAL}http:\n  sendfile:\n    threads: 0\n`, FILE, {}), (err: Error) => /http\.sendfile\.threads/.test(err.message));
    assert.throws(() => parseConfig(`${MINIMAL}http:\n  sendfile:\n    thread: 2\n`, FILE, {}), (err: Error) => /http\.sendfile\.thread\b/.test(err.message));
  });

  test('distribution pull-through cache (seeds 001, 002) parses', () => {
    const text = `${MINIMAL}proxy:\n  remoteurl: https://registry-1.docker.io\n  username: someone\n  password: s3cret\n`;
    const { config } = parseConfig(text, FILE, {});
    assert.deepEqual(config.proxy, { remoteurl: 'https://registry-1.docker.io', username: 'someone', password: 's3cret', ttl: 7 * 24 * 3600 * 1000 });
  });

  test('proxy.region (a mirror in a region): its shape is checked here, its values by the mirror\'s options', () => {
    const { config } = parseConfig(`${MINIMAL}proxy:\n  remoteurl: https://r.example\n  region:\n    redis: redis://redis.example:6379/0\n    name: eu\n`, FILE, {});
    assert.deepEqual(config.proxy?.region, { redis: 'redis://redis.example:6379/0', name: 'eu' });
    // redis may come from CASCADE_REGION_REDIS instead (the mirror's options parser applies it).
    assert.deepEqual(parseConfig(`${MINIMAL}proxy:\n  remoteurl: https://r.example\n  region: {name: eu}\n`, FILE, {}).config.proxy?.region, { name: 'eu' });
    assert.deepEqual(fails(`${MINIMAL}proxy:\n  remoteurl: https://r.example\n  region: {redis: redis://r:6379, nodes: 3}\n`).issues.map((i) => i.key), ['proxy.region.nodes']);
    assert.deepEqual(fails(`${MINIMAL}proxy:\n  remoteurl: https://r.example\n  region: [redis://r:6379]\n`).issues.map((i) => i.key), ['proxy.region']);
  });
});

describe('defaults and accepted sections', () => {
  test('a minimal file gets distribution defaults', () => {
    const { config } = parseConfig('version: 0.1\nstorage:\n  filesystem:\n', FILE, {});
    assert.equal(config.storage.filesystem?.rootdirectory, '/var/lib/registry');
    assert.equal(config.storage.delete.enabled, false);
    assert.equal(config.http.addr, ':5000');
    assert.equal(config.http.net, 'tcp');
    assert.equal(config.log.level, 'info');
    assert.equal(config.log.accesslog.disabled, false);
    assert.deepEqual(config.auth, {});
    assert.deepEqual(config.middleware, { registry: [], repository: [], storage: [] });
    assert.equal(config.proxy, undefined);
  });

  test('storage and auth may name a driver or scheme without parameters', () => {
    const { config } = parseConfig('version: 0.1\nstorage: inmemory\nauth: none\n', FILE, {});
    assert.deepEqual(config.storage.inmemory, {});
    assert.deepEqual(config.auth, { none: {} });
  });

  test('unimplemented distribution sections are accepted with a warning each', () => {
    const text = `${MINIMAL}notifications:\n  endpoints: []\nredis:\n  addr: localhost:6379\nreporting:\n  bugsnag:\n    apikey: x\nvalidation:\n  disabled: true\ncompatibility:\n  schema1:\n    enabled: true\n`;
    const { warnings } = parseConfig(text, FILE, {});
    assert.deepEqual(warnings, [
      'redis: accepted but not implemented by Cascade; ignored',
      'reporting: accepted but not implemented by Cascade; ignored',
      'validation: accepted but not implemented by Cascade; ignored',
      'compatibility: accepted but not implemented by Cascade; ignored',
    ]);
  });

  test('notifications: distribution\'s keys and forms, defaults, REGISTRY_NOTIFICATIONS_* overrides', () => {
    // distribution's documented example (docs/content/about/notifications.md), plus the other keys.
    const text = `${MINIMAL}notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      url: https://mylistener.example.com/event
      headers:
        Authorization: [Bearer secret-token]
        X-One: single
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
      ignore:
        mediatypes: [application/vnd.docker.image.rootfs.diff.tar.gzip]
        actions: [pull]
    - name: off
      disabled: yes
      url: http://127.0.0.1:1/x
      timeout: 2000000000
`;
    const { config, warnings } = parseConfig(text, FILE, { REGISTRY_NOTIFICATIONS_ENDPOINTS_1_BACKOFF: '3s', REGISTRY_NOTIFICATIONS_ENDPOINTS_0_QUEUELIMIT: '50' });
    assert.deepEqual(warnings, []);
    const [a, b] = config.notifications.endpoints;
    assert.equal(config.notifications.events.includereferences, true);
    assert.deepEqual(a, {
      name: 'alistener',
      disabled: false,
      url: 'https://mylistener.example.com/event',
      headers: { Authorization: ['Bearer secret-token'], 'X-One': ['single'] },
      timeout: 500,
      threshold: 5,
      backoff: 1000,
      ignoredmediatypes: ['application/octet-stream'],
      ignore: { mediatypes: ['application/vnd.docker.image.rootfs.diff.tar.gzip'], actions: ['pull'] },
      queuelimit: 50,
      batchsize: 1,
    });
    assert.equal(b?.disabled, true);
    assert.equal(b?.timeout, 2000);
    assert.equal(b?.backoff, 3000);
    assert.equal(b?.queuelimit, 100_000);
    assert.deepEqual(parseConfig(MINIMAL, FILE, {}).config.notifications, { events: { includereferences: false }, endpoints: [] });
    const bad = fails(`${MINIMAL}notifications:\n  endpoints:\n    - name: x\n      url: ftp://h/\n      timeout: 5 seconds\n      ignore:\n        actions: [pul]\n    - name: x\n      url: http://h/\n      headers:\n        'Bad Name': [v]\n`);
    const keys = bad.issues.map((i) => i.key).sort();
    assert.deepEqual(keys, ['notifications.endpoints[0].ignore.actions[0]', 'notifications.endpoints[0].timeout', 'notifications.endpoints[0].url', 'notifications.endpoints[1].headers.Bad Name', 'notifications.endpoints[1].name']);
  });

  test('the deprecated top-level loglevel is applied as log.level, with a warning', () => {
    const applied = parseConfig(`${MINIMAL}loglevel: DEBUG\n`, FILE, {});
    assert.equal(applied.config.log.level, 'debug');
    assert.deepEqual(applied.warnings, ['loglevel: deprecated, use log.level; applied as log.level']);
    const ignored = parseConfig(`${MINIMAL}loglevel: debug\nlog:\n  level: warn\n`, FILE, {});
    assert.equal(ignored.config.log.level, 'warn');
    assert.deepEqual(ignored.warnings, ['loglevel: deprecated, use log.level; ignored because log.level is set']);
  });

  test('unknown storage driver parameters are warned about, not rejected', () => {
    const { warnings } = parseConfig('version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /data\n    flavour: x\n', FILE, {});
    assert.deepEqual(warnings, ['storage.filesystem.flavour: not a parameter of the filesystem driver; ignored']);
  });

  test('string keys keep the text as written, as Go does; YAML 1.1 booleans are booleans', () => {
    const text = `${MINIMAL}http:\n  secret: 0123\n  relativeurls: yes\nproxy:\n  remoteurl: https://r.example.com\n  password: 1e3\n`;
    const { config } = parseConfig(text, FILE, {});
    assert.equal(config.http.secret, '0123');
    assert.equal(config.http.relativeurls, true);
    assert.equal(config.proxy?.password, '1e3');
  });

  test('Go durations become milliseconds; integers are nanoseconds', () => {
    const text = `${MINIMAL}http:\n  draintimeout: 1m30s\nhealth:\n  storagedriver:\n    interval: 2000000000\n`;
    const { config } = parseConfig(text, FILE, {});
    assert.equal(config.http.draintimeout, 90_000);
    assert.equal(config.health.storagedriver.interval, 2000);
  });
});

describe('environment overrides', () => {
  const base = `version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
middleware:
  registry:
    - name: downstream
      options:
        blobttl: 24h
`;

  test("each of distribution's documented forms", () => {
    const { options } = acceptingDownstream();
    const env = {
      REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/x',
      REGISTRY_HTTP_ADDR: ':5001',
      REGISTRY_LOG_LEVEL: 'debug',
      REGISTRY_STORAGE_DELETE_ENABLED: 'true',
      REGISTRY_PROXY_REMOTEURL: 'https://registry-1.docker.io',
      REGISTRY_AUTH_HTPASSWD_REALM: 'Registry',
      REGISTRY_AUTH_HTPASSWD_PATH: '/auth/htpasswd',
      REGISTRY_HTTP_TLS_CERTIFICATE: '/certs/tls.crt',
      REGISTRY_HTTP_TLS_KEY: '/certs/tls.key',
    };
    const { config } = parseConfig(base, FILE, env, options);
    assert.equal(config.storage.filesystem?.rootdirectory, '/x');
    assert.equal(config.http.addr, ':5001');
    assert.equal(config.log.level, 'debug');
    assert.equal(config.storage.delete.enabled, true);
    assert.equal(config.proxy?.remoteurl, 'https://registry-1.docker.io');
    assert.deepEqual(config.auth.htpasswd, { realm: 'Registry', path: '/auth/htpasswd' });
    assert.equal(config.http.tls?.certificate, '/certs/tls.crt');
    assert.equal(config.http.tls?.key, '/certs/tls.key');
  });

  test('values are YAML: booleans and numbers are typed; string keys keep the text', () => {
    const { options, calls } = acceptingDownstream();
    const env = {
      REGISTRY_STORAGE_DELETE_ENABLED: 'true',
      REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD: '5',
      REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_BLOBTTL: '86400000000000',
      REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_CAS: '[/certs/a.pem, /certs/b.pem]',
      REGISTRY_HTTP_SECRET: '0123',
      REGISTRY_PROXY_REMOTEURL: 'https://r.example.com',
      REGISTRY_PROXY_PASSWORD: 'true',
    };
    const { config } = parseConfig(base, FILE, env, options);
    assert.equal(config.storage.delete.enabled, true);
    assert.equal(config.health.storagedriver.threshold, 5);
    assert.deepEqual(calls[0]?.options, { blobttl: 86400000000000, cas: ['/certs/a.pem', '/certs/b.pem'] });
    assert.equal(config.http.secret, '0123');
    assert.equal(config.proxy?.password, 'true');
  });

  test('segments match keys case-insensitively; free-form map keys are lower-cased', () => {
    const { options } = acceptingDownstream();
    const { config } = parseConfig(base, FILE, { REGISTRY_Http_AddR: ':6000', REGISTRY_LOG_FIELDS_SERVICE: 'cache' }, options);
    assert.equal(config.http.addr, ':6000');
    assert.deepEqual(config.log.fields, { service: 'cache' });
  });

  test('storage driver parameters are free-form: unknown ones are lower-cased and warned about', () => {
    const { options } = acceptingDownstream();
    const { config, warnings } = parseConfig(base, FILE, { REGISTRY_STORAGE_FILESYSTEM_MAXTHREADS: '50', REGISTRY_STORAGE_FILESYSTEM_FLAVOUR: 'x' }, options);
    assert.equal(config.storage.filesystem?.maxthreads, 50);
    assert.deepEqual(warnings, ['storage.filesystem.flavour: not a parameter of the filesystem driver; ignored']);
  });

  test('REGISTRY_STORAGE=inmemory selects the driver and keeps delete', () => {
    const { options } = acceptingDownstream();
    const text = base.replace('storage:\n', 'storage:\n  delete:\n    enabled: true\n');
    const { config } = parseConfig(text, FILE, { REGISTRY_STORAGE: 'inmemory' }, options);
    assert.deepEqual(config.storage.inmemory, {});
    assert.equal(config.storage.filesystem, undefined);
    assert.equal(config.storage.delete.enabled, true);
  });

  test('a variable naming no key is an error naming the variable', () => {
    const { options } = acceptingDownstream();
    const err = fails(base, { REGISTRY_HTTP_ADR: ':5001' }, options);
    assert.equal(err.key, 'http.adr');
    assert.equal(err.issues[0]?.env, 'REGISTRY_HTTP_ADR');
    assert.match(err.message, /^config\.yml: http\.adr \(from environment variable REGISTRY_HTTP_ADR\): expected a key of http \(addr, .*\), got unknown key "adr" \(did you mean "addr"\?\)$/);
    assert.equal(fails(base, { REGISTRY_NOPE: 'x' }, options).key, 'nope');
    assert.equal(fails(base, { REGISTRY_STORAGE_S3_BUCKET: 'b' }, options).key, 'storage.s3');
    assert.equal(fails(base, { REGISTRY_LOG_LEVEL_X: 'b' }, options).key, 'log.level');
    assert.equal(fails(base, { REGISTRY_MIDDLEWARE_REGISTRY_5_NAME: 'x' }, options).key, 'middleware.registry[5]');
    const onlyOne = fails(base, { REGISTRY_AUTH_HTPASSWD_REAML: 'x' }, options);
    assert.deepEqual(onlyOne.issues.map((i) => i.key), ['auth.htpasswd.reaml'], 'a bad variable leaves no half-made section behind');
  });

  test('a mistyped value names the key and the variable', () => {
    const { options } = acceptingDownstream();
    const err = fails(base, { REGISTRY_STORAGE_DELETE_ENABLED: 'maybe' }, options);
    assert.equal(err.key, 'storage.delete.enabled');
    assert.equal(err.message, 'config.yml: storage.delete.enabled (from environment variable REGISTRY_STORAGE_DELETE_ENABLED): expected true or false, got "maybe"');
  });

  test('REGISTRY_CONFIGURATION_PATH is left to the CLI; Kubernetes service links are warned about', () => {
    const { options } = acceptingDownstream();
    const { warnings } = parseConfig(base, FILE, { REGISTRY_CONFIGURATION_PATH: '/etc/x.yml', REGISTRY_PORT: 'tcp://10.0.0.1:5000', REGISTRY_SERVICE_HOST: '10.0.0.1' }, options);
    assert.deepEqual(warnings, [
      'environment variable REGISTRY_PORT ignored: it looks like a Kubernetes service link, not a configuration key',
      'environment variable REGISTRY_SERVICE_HOST ignored: it looks like a Kubernetes service link, not a configuration key',
    ]);
  });

  test('middleware list entries can be added by index', () => {
    const { options, calls } = acceptingDownstream();
    parseConfig(MINIMAL, FILE, { REGISTRY_MIDDLEWARE_REGISTRY_0_NAME: 'downstream', REGISTRY_MIDDLEWARE_REGISTRY_0_OPTIONS_BLOBTTL: '12h' }, options);
    assert.deepEqual(calls[0]?.options, { blobttl: '12h' });
  });
});

describe('errors name the file, the key and what was expected', () => {
  const cases: Array<{ name: string; text: string; key: string; message?: string }> = [
    { name: 'version missing', text: 'storage: inmemory\n', key: 'version', message: 'config.yml: version: expected "0.1", got nothing' },
    { name: 'version wrong', text: 'version: 0.2\nstorage: inmemory\n', key: 'version', message: 'config.yml: version: expected "0.1", got "0.2"' },
    { name: 'unknown top-level key', text: `${MINIMAL}foo: 1\n`, key: 'foo' },
    { name: 'unknown nested key', text: `${MINIMAL}http:\n  adr: ":5000"\n`, key: 'http.adr' },
    { name: 'storage missing', text: 'version: 0.1\n', key: 'storage' },
    { name: 'storage without a driver', text: 'version: 0.1\nstorage:\n  delete:\n    enabled: true\n', key: 'storage', message: 'config.yml: storage: expected exactly one storage driver (filesystem or inmemory), got none' },
    {
      name: 'storage with two drivers',
      text: 'version: 0.1\nstorage:\n  filesystem:\n  inmemory:\n',
      key: 'storage',
      message: 'config.yml: storage: expected exactly one storage driver (filesystem or inmemory), got 2: filesystem, inmemory',
    },
    { name: 'unsupported storage driver', text: 'version: 0.1\nstorage:\n  s3:\n    bucket: b\n', key: 'storage.s3' },
    { name: 'bad boolean', text: 'version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: maybe\n', key: 'storage.delete.enabled' },
    { name: 'bad log level', text: `${MINIMAL}log:\n  level: verbose\n`, key: 'log.level', message: 'config.yml: log.level: expected one of "error", "warn", "info", "debug", got "verbose"' },
    {
      name: 'two auth schemes',
      text: `${MINIMAL}auth:\n  htpasswd:\n    realm: r\n    path: /p\n  token:\n    realm: https://auth\n`,
      key: 'auth',
      message: 'config.yml: auth: expected at most one authentication scheme (htpasswd, token, silly, none), got 2: htpasswd, token',
    },
    { name: 'htpasswd without path', text: `${MINIMAL}auth:\n  htpasswd:\n    realm: r\n`, key: 'auth.htpasswd.path' },
    { name: 'unknown auth scheme', text: `${MINIMAL}auth:\n  ldap: {}\n`, key: 'auth.ldap' },
    {
      name: 'certificate without key',
      text: `${MINIMAL}http:\n  tls:\n    certificate: /certs/tls.crt\n`,
      key: 'http.tls.key',
      message: 'config.yml: http.tls.key: expected the path of the private key of http.tls.certificate, got nothing',
    },
    { name: 'key without certificate', text: `${MINIMAL}http:\n  tls:\n    key: /certs/tls.key\n`, key: 'http.tls.certificate' },
    { name: 'addr without port', text: `${MINIMAL}http:\n  addr: 5000\n`, key: 'http.addr' },
    { name: 'bad duration', text: `${MINIMAL}health:\n  storagedriver:\n    interval: 10 seconds\n`, key: 'health.storagedriver.interval' },
    { name: 'proxy remoteurl not a URL', text: `${MINIMAL}proxy:\n  remoteurl: registry-1.docker.io\n`, key: 'proxy.remoteurl' },
    { name: 'middleware entry without name', text: `${MINIMAL}middleware:\n  registry:\n    - options: {}\n`, key: 'middleware.registry[0].name' },
    { name: 'middleware options not a mapping', text: `${MINIMAL}middleware:\n  registry:\n    - name: downstream\n      options: [1]\n`, key: 'middleware.registry[0].options' },
    {
      name: 'unknown middleware',
      text: `${MINIMAL}middleware:\n  repository:\n    - name: cloudfront\n`,
      key: 'middleware.repository[0].name',
      message: 'config.yml: middleware.repository[0].name: expected a middleware Cascade knows (downstream), got unknown middleware "cloudfront"',
    },
    { name: 'header values not strings', text: `${MINIMAL}http:\n  headers:\n    X-A: {b: 1}\n`, key: 'http.headers.X-A' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const err = fails(c.text, {}, acceptingDownstream().options);
      assert.equal(err.file, FILE);
      assert.equal(err.key, c.key, err.message);
      assert.equal(err.issues.length, 1, err.message);
      assert.ok(err.message.startsWith(`${FILE}: ${c.key}: expected `), err.message);
      if (c.message !== undefined) assert.equal(err.message, c.message);
    });
  }

  test('unknown keys suggest the key that was probably meant', () => {
    const err = fails(`${MINIMAL}http:\n  relativeurl: true\n`);
    assert.match(err.message, /got unknown key "relativeurl" \(did you mean "relativeurls"\?\)$/);
  });

  test('the storage driver of another registry is named as unsupported', () => {
    assert.match(fails('version: 0.1\nstorage:\n  s3:\n    bucket: b\n').message, /got the "s3" storage driver, which Cascade does not implement/);
  });

  test('middleware validator messages are attributed to their key', () => {
    const downstream: MiddlewareOptionsValidator = (options, key, config) => [
      `${key}.blobttl: expected a DTR duration such as "24h", got ${JSON.stringify(options['blobttl'])}`,
      ...(config.storage.delete.enabled ? [] : [`storage.delete.enabled: expected true because ${key}.blobttl is set, got false`]),
    ];
    const err = fails(`${MINIMAL}middleware:\n  registry:\n    - name: downstream\n      options:\n        blobttl: soon\n`, {}, { middleware: { downstream } });
    assert.deepEqual(
      err.issues.map((i) => i.key),
      ['middleware.registry[0].options.blobttl', 'storage.delete.enabled'],
    );
    assert.equal(err.issues[0]?.message, 'config.yml: middleware.registry[0].options.blobttl: expected a DTR duration such as "24h", got "soon"');
  });

  test('disabled middleware is neither looked up nor validated', () => {
    const { config } = parseConfig(`${MINIMAL}middleware:\n  storage:\n    - name: cloudfront\n      disabled: true\n`, FILE, {});
    assert.equal(config.middleware.storage[0]?.disabled, true);
  });

  test('secrets are not echoed', () => {
    const err = fails(`${MINIMAL}proxy:\n  remoteurl: ftp://user:hunter2@r.example.com\n  password: [hunter2]\n`);
    assert.doesNotMatch(err.message, /hunter2/);
    assert.deepEqual(err.issues.map((i) => i.key), ['proxy.remoteurl', 'proxy.password']);
  });

  test('YAML syntax errors name the file and line', () => {
    const err = fails('version: 0.1\nstorage:\n  inmemory: [\nhttp: {}\n');
    assert.equal(err.issues[0]?.line, 4);
    assert.match(err.message, /^config\.yml:4:\d+: expected valid YAML, got /);
  });

  test('duplicate keys are YAML errors', () => {
    const err = fails('version: 0.1\nstorage: inmemory\nstorage: inmemory\n');
    assert.match(err.message, /^config\.yml:3:1: expected valid YAML, got Map keys must be unique/);
  });

  test('an empty file or a non-mapping is rejected', () => {
    assert.equal(fails('').message, 'config.yml: expected a mapping of configuration sections (version, storage, http, ...), got an empty file');
    assert.match(fails('- a\n').message, /got a list$/);
  });

  test('a missing file: <file>: cannot read config file: <reason>', () => {
    const file = join(tmpdir(), 'cascade-no-such-config.yml');
    assert.throws(() => loadConfig(file, {}), (e: unknown) => e instanceof ConfigError && e.message.startsWith(`${file}: cannot read config file: ENOENT`));
  });

  test('loadConfig reads a file', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'cascade-config-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'config.yml');
    writeFileSync(file, DTR_CACHE);
    const { config } = loadConfig(file, { REGISTRY_HTTP_ADDR: ':5002' }, acceptingDownstream().options);
    assert.equal(config.http.addr, ':5002');
  });
});

describe('all issues are reported together', () => {
  test('file, environment and middleware issues in one ConfigError, one per line', () => {
    const text = `version: 0.1
storage:
  filesystem:
  inmemory:
http:
  adr: ":5000"
  tls:
    certificate: /c.pem
log:
  level: loud
middleware:
  registry:
    - name: downstream
      options:
        blobttl: soon
    - name: mystery
`;
    const downstream: MiddlewareOptionsValidator = (_options, key) => [`${key}.blobttl: expected a DTR duration, got "soon"`];
    const err = fails(text, { REGISTRY_HEALTH_STORAGEDRIVER_ENABLED: 'perhaps', REGISTRY_NOPE: '1' }, { middleware: { downstream } });
    const keys = err.issues.map((i) => i.key).sort();
    assert.deepEqual(keys, [
      'health.storagedriver.enabled',
      'http.adr',
      'http.tls.key',
      'log.level',
      'middleware.registry[0].options.blobttl',
      'middleware.registry[1].name',
      'nope',
      'storage',
    ]);
    assert.equal(err.message.split('\n').length, err.issues.length);
    for (const line of err.message.split('\n')) assert.ok(line.startsWith('config.yml: '), line);
  });
});

describe('durations', () => {
  test('Go durations', () => {
    const valid: Array<[string, number]> = [
      ['10s', 10_000],
      ['1h30m', 5_400_000],
      ['300ms', 300],
      ['1.5h', 5_400_000],
      ['.5s', 500],
      ['0', 0],
      ['-1s', -1000],
      ['+2m', 120_000],
      ['300us', 0.3],
      ['300µs', 0.3],
      ['1500000ns', 1.5],
      ['1h1m1s1ms', 3_661_001],
    ];
    for (const [s, ms] of valid) assert.equal(parseGoDuration(s), ms, s);
    for (const s of ['', '10', '1x', 'h', '1h 30m', '1 h', 's10', '--1s', '1d']) {
      assert.throws(() => parseGoDuration(s), /expected a Go duration such as "10s", "1h30m" or "300ms" \(numbers with units ns, us, ms, s, m, h\)$/, s);
    }
  });

  test('DTR durations', () => {
    const valid: Array<[string | number, bigint]> = [
      ['24h', 86_400_000_000_000n],
      ['30m', 1_800_000_000_000n],
      ['1500ms', 1_500_000_000n],
      ['10us', 10_000n],
      ['5ns', 5n],
      ['45s', 45_000_000_000n],
      ['86400000000000', 86_400_000_000_000n],
      [86_400_000_000_000, 86_400_000_000_000n],
      ['100000000000000000000h', 360_000_000_000_000_000_000_000_000_000_000n],
    ];
    for (const [v, ns] of valid) assert.equal(parseDtrDuration(v), ns, String(v));
    for (const v of ['0', 0, '0h', '-1h', '1.5h', '1h30m', '24H', '1d', 'abc', '', ' 24h', 1.5, -5, 2 ** 60]) {
      assert.throws(() => parseDtrDuration(v), /expected a positive integer with an optional unit ns, us, ms, s, m or h \(no unit means nanoseconds\)/, String(v));
    }
  });
});
