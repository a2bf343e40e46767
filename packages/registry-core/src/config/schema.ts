/**
 * The one schema of the registry's `config.yml`: distribution 2.8's format (plus the few keys distribution
 * 3 and sealer added), with Cascade's defaults. Every type of the configuration is derived from it.
 *
 * Conventions that keep a user's existing file working:
 * - Objects are strict: a key distribution does not have is an error, because a typo silently ignored is the
 *   worst configuration bug. Free-form maps (`options`, `fields`, `headers`, storage driver parameters, and
 *   the sections Cascade only accepts) take any key.
 * - Booleans also take YAML 1.1 spellings (`yes`, `on`, ...), as Go's yaml.v2 decoder does.
 * - Go durations take a string (`10s`) or an integer number of nanoseconds, as `time.Duration` does, and
 *   come out as milliseconds.
 */
import { z } from 'zod';
import { JWS_ALGORITHMS } from '../jws/index.js';
import { GO_DURATION_EXPECTED, parseGoDuration } from './duration.js';

/** Refinements that must run even when sibling keys failed, so that every issue is reported at once. */
const ALWAYS = { when: () => true } as const;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** YAML 1.1 booleans, which Go's yaml.v2 decodes into bool fields and YAML 1.2 parsers leave as strings. */
const YAML11_BOOLEANS: Readonly<Record<string, boolean>> = {
  y: true, yes: true, on: true, true: true,
  n: false, no: false, off: false, false: false,
};

function bool() {
  return z.preprocess((v) => {
    if (typeof v !== 'string') return v;
    const key = v.toLowerCase();
    return Object.hasOwn(YAML11_BOOLEANS, key) ? YAML11_BOOLEANS[key] : v;
  }, z.boolean());
}

function int() {
  return z.number().int();
}

/** A Go `time.Duration`: a duration string, or an integer number of nanoseconds. Output: milliseconds. */
function goDuration() {
  return z.unknown().transform((value, ctx): number => {
    if (typeof value === 'number' && Number.isInteger(value) && value >= 0) return value / 1e6;
    if (typeof value === 'string') {
      try {
        const ms = parseGoDuration(value);
        if (ms >= 0) return ms;
      } catch {
        // reported below with the expected syntax
      }
    }
    ctx.addIssue({
      code: 'custom',
      input: value,
      message: 'invalid duration',
      params: { expected: `${GO_DURATION_EXPECTED}, not negative` },
    });
    return z.NEVER;
  });
}

/** An absolute http(s) URL. */
function httpUrl() {
  return z.string().superRefine((value, ctx) => {
    let ok = false;
    try {
      const url = new URL(value);
      ok = (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
    } catch {
      ok = false;
    }
    if (!ok) ctx.addIssue({ code: 'custom', input: value, message: 'invalid URL', params: { expected: 'an absolute http:// or https:// URL' } });
  });
}

/** A free-form map whose keys the schema does not know. */
function freeForm() {
  return z.record(z.string(), z.unknown());
}

/** Header values: a list of strings, as Go's `http.Header`; a single scalar is taken as a one-item list. */
const headerValues = z.preprocess(
  (v) => (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? [String(v)] : v),
  z.array(z.string()),
);

/** The log levels distribution accepts; they are also pino level names. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;

/** distribution lower-cases the level before checking it. */
const logLevel = z.preprocess((v) => (typeof v === 'string' ? v.toLowerCase() : v), z.enum(LOG_LEVELS));

const logSchema = z.strictObject({
  // The default ("info", or the deprecated top-level `loglevel`) is applied by the root transform.
  level: logLevel.optional(),
  formatter: z.enum(['text', 'json', 'logstash']).optional(),
  fields: freeForm().default(() => ({})),
  hooks: z.array(z.unknown()).optional(),
  reportcaller: bool().optional(),
  accesslog: z.strictObject({ disabled: bool().default(false) }).prefault({}),
});

/** Keys of `storage` that configure the storage layer rather than name a driver (as in distribution). */
export const STORAGE_SECTIONS = ['delete', 'maintenance', 'cache', 'redirect', 'tag'] as const;

/** The storage drivers Cascade implements. */
export const STORAGE_DRIVERS = ['filesystem', 'inmemory'] as const;

const storageSchema = z
  .strictObject({
    // Driver parameters are free-form, as in distribution; unknown ones are reported as warnings.
    filesystem: z
      .looseObject({
        rootdirectory: z.string().min(1).default('/var/lib/registry'),
        maxthreads: int().min(25).optional(),
      })
      .optional(),
    inmemory: z.looseObject({}).optional(),
    delete: z.strictObject({ enabled: bool().default(false) }).prefault({}),
    maintenance: z
      .strictObject({
        uploadpurging: z
          .strictObject({ enabled: bool().optional(), age: goDuration().optional(), interval: goDuration().optional(), dryrun: bool().optional() })
          .optional(),
        readonly: z.strictObject({ enabled: bool().optional() }).optional(),
      })
      .optional(),
    cache: z.strictObject({ blobdescriptor: z.enum(['inmemory', 'redis']).optional(), blobdescriptorsize: int().min(0).optional() }).optional(),
    redirect: z.strictObject({ disable: bool().optional() }).optional(),
    tag: z.strictObject({ concurrencylimit: int().min(0).optional() }).optional(),
  })
  .superRefine((value: unknown, ctx) => {
    if (!isRecord(value)) return;
    const sections: readonly string[] = STORAGE_SECTIONS;
    const drivers = Object.keys(value).filter((k) => !sections.includes(k));
    if (drivers.length === 1) return;
    // An unknown key here is most likely the one driver (s3, a typo); it is reported as such already.
    const unknownKey = ctx.issues.some((i) => i.code === 'unrecognized_keys' && (i.path ?? []).length === 0);
    if (drivers.length === 0 && unknownKey) return;
    ctx.addIssue({
      code: 'custom',
      input: value,
      message: 'storage driver count',
      params: {
        expected: `exactly one storage driver (${STORAGE_DRIVERS.join(' or ')})`,
        got: drivers.length === 0 ? 'none' : `${drivers.length}: ${drivers.join(', ')}`,
      },
    });
  }, ALWAYS);

const tlsSchema = z
  .strictObject({
    certificate: z.string().optional(),
    key: z.string().optional(),
    clientcas: z.array(z.string()).optional(),
    minimumtls: z.enum(['tls1.0', 'tls1.1', 'tls1.2', 'tls1.3']).default('tls1.2'),
    ciphersuites: z.array(z.string()).optional(),
    letsencrypt: z
      .strictObject({ cachefile: z.string().optional(), email: z.string().optional(), hosts: z.array(z.string()).optional(), directoryurl: z.string().optional() })
      .optional(),
  })
  .superRefine((value: unknown, ctx) => {
    if (!isRecord(value)) return;
    const has = (k: string) => typeof value[k] === 'string' && value[k] !== '';
    if (has('certificate') && !has('key')) {
      ctx.addIssue({ code: 'custom', path: ['key'], input: value['key'], message: 'missing key', params: { expected: 'the path of the private key of http.tls.certificate' } });
    }
    if (has('key') && !has('certificate')) {
      ctx.addIssue({ code: 'custom', path: ['certificate'], input: value['certificate'], message: 'missing certificate', params: { expected: 'the path of the certificate for http.tls.key' } });
    }
  }, ALWAYS);

const httpSchema = z.strictObject({
  addr: z.string().min(1).default(':5000'),
  net: z.enum(['tcp', 'tcp4', 'tcp6', 'unix']).default('tcp'),
  prefix: z
    .string()
    .superRefine((v, ctx) => {
      if (!v.startsWith('/')) ctx.addIssue({ code: 'custom', input: v, message: 'bad prefix', params: { expected: 'a path starting with "/", such as "/registry/"' } });
    })
    .optional(),
  host: httpUrl().optional(),
  secret: z.string().optional(),
  relativeurls: bool().default(false),
  draintimeout: goDuration().optional(),
  tls: tlsSchema.optional(),
  headers: z.record(z.string(), headerValues).default(() => ({})),
  debug: z
    .strictObject({
      addr: z.string().optional(),
      prometheus: z.strictObject({ enabled: bool().default(false), path: z.string().default('/metrics') }).optional(),
    })
    .optional(),
  http2: z.strictObject({ disabled: bool().default(false) }).prefault({}),
  // Cascade: blob bodies from files are sent with sendfile(2) by `threads` native threads (Linux, plain TCP).
  sendfile: z.strictObject({ enabled: bool().default(true), threads: z.number().int().min(1).max(16).default(2) }).prefault({}),
}).superRefine((value: unknown, ctx) => {
  // Go's listener fails late on `addr: 5000`; catch it while the file is being read.
  if (!isRecord(value) || value['net'] === 'unix' || typeof value['addr'] !== 'string') return;
  if (!/^(\[[^\]]*\]|[^:\s[\]]*):(\d{1,5}|[a-z][a-z0-9-]*)$/i.test(value['addr'])) {
    ctx.addIssue({ code: 'custom', path: ['addr'], input: value['addr'], message: 'bad addr', params: { expected: 'host:port or :port, such as ":5000" (or a socket path with net: unix)' } });
  }
}, ALWAYS);

/** The authentication schemes distribution knows; at most one may be configured. */
export const AUTH_SCHEMES = ['htpasswd', 'token', 'silly', 'none'] as const;

/** The actions an `auth.token.access` rule may allow; `*` allows every action. */
export const TOKEN_RULE_ACTIONS = ['pull', 'push', 'delete', '*'] as const;

/**
 * One rule of Cascade's token server: which account may do what on which resources. The account is a user
 * of `auth.token.htpasswd`, `*` (any authenticated user) or `anonymous` (no credentials); the name a glob
 * where `*` matches any characters, `/` included, and `${account}` the requesting user's name.
 */
const tokenRuleSchema = z.strictObject({
  account: z.string().min(1),
  // `registry` rules grant the catalog (`registry:catalog:*`), which a repository glob must never grant.
  type: z.enum(['repository', 'registry']).default('repository'),
  name: z.string().min(1),
  actions: z.array(z.enum(TOKEN_RULE_ACTIONS)),
});

/** Default lifetime of the tokens Cascade's token server issues, in ms (5 minutes, as docker_auth). */
const TOKEN_EXPIRATION_MS = 5 * 60 * 1000;

/**
 * `auth.token`: distribution's keys (`realm`, `service`, `issuer`, `rootcertbundle`, `autoredirect`, and
 * distribution 3's `autoredirectpath`, `jwks`, `signingalgorithms`), plus Cascade's embedded token server
 * (`signingkey`, `htpasswd`, `expiration`, `access`). Which keys are required depends on whether `token`
 * is the only scheme, so that is checked by the `auth` section (see {@link authSchema}).
 */
const tokenSchema = z
  .strictObject({
    realm: httpUrl().optional(),
    service: z.string().min(1).optional(),
    issuer: z.string().min(1).optional(),
    rootcertbundle: z.string().min(1).optional(),
    // Accepted so that distribution files load; Cascade always challenges with `realm` as written.
    autoredirect: bool().optional(),
    autoredirectpath: z.string().optional(),
    jwks: z.string().min(1).optional(),
    signingalgorithms: z.array(z.enum(JWS_ALGORITHMS)).min(1).optional(),
    signingkey: z.string().min(1).optional(),
    htpasswd: z.string().min(1).optional(),
    expiration: goDuration().default(TOKEN_EXPIRATION_MS),
    access: z.array(tokenRuleSchema).default(() => []),
  })
  .superRefine((value: unknown, ctx) => {
    if (!isRecord(value)) return;
    const expiration = value['expiration'];
    if (typeof expiration === 'number' && expiration < 1000) {
      ctx.addIssue({ code: 'custom', path: ['expiration'], input: expiration, message: 'expiration too short', params: { expected: 'a Go duration of at least 1s, such as "5m"', got: `${expiration} ms` } });
    }
    // The users and the rules only mean something to the embedded token server, which needs a key to sign.
    if (value['signingkey'] === undefined) {
      for (const key of ['htpasswd', 'access'] as const) {
        const v = value[key];
        if (v === undefined || (Array.isArray(v) && v.length === 0)) continue;
        ctx.addIssue({
          code: 'custom',
          path: ['signingkey'],
          input: undefined,
          message: 'signingkey missing',
          params: { expected: `the PEM private key of Cascade's token server, which auth.token.${key} configures` },
        });
        break;
      }
    }
    const realm = value['realm'];
    if (value['signingkey'] !== undefined && typeof realm === 'string' && URL.canParse(realm)) {
      const path = new URL(realm).pathname;
      if (path === '/v2' || path.startsWith('/v2/') || path === '/') {
        ctx.addIssue({
          code: 'custom',
          path: ['realm'],
          input: realm,
          message: 'realm path',
          params: { expected: 'a URL whose path the token endpoint can be served at, outside /v2/, such as "https://registry.example.com/auth/token"' },
        });
      }
    }
  }, ALWAYS);

/** The keys `auth.token` needs when it is the configured scheme, and what each should hold. */
const TOKEN_REQUIRED: ReadonlyArray<readonly [string, string]> = [
  ['realm', 'the URL of the token endpoint, such as "https://registry.example.com/auth/token"'],
  ['service', 'the name of this registry as the token server knows it (the tokens\' audience)'],
  ['issuer', 'the name the token server signs its tokens as (the tokens\' issuer)'],
];

const authSchema = z
  .strictObject({
    htpasswd: z.strictObject({ realm: z.string().min(1), path: z.string().min(1) }).optional(),
    token: tokenSchema.optional(),
    silly: z.strictObject({ realm: z.string().optional(), service: z.string().optional() }).optional(),
    none: z.strictObject({}).optional(),
  })
  .superRefine((value: unknown, ctx) => {
    if (!isRecord(value)) return;
    const schemes = Object.keys(value);
    if (schemes.length > 1) {
      ctx.addIssue({
        code: 'custom',
        input: value,
        message: 'several auth schemes',
        params: { expected: `at most one authentication scheme (${AUTH_SCHEMES.join(', ')})`, got: `${schemes.length}: ${schemes.join(', ')}` },
      });
      return;
    }
    // Required keys are only asked for once `token` is the one scheme: while two schemes are configured the
    // user has a choice to make first, and one problem is reported, not the missing keys of both.
    const token = value['token'];
    if (!isRecord(token)) return;
    for (const [key, expected] of TOKEN_REQUIRED) {
      if (token[key] === undefined) ctx.addIssue({ code: 'custom', path: ['token', key], input: undefined, message: `${key} missing`, params: { expected } });
    }
    if (token['rootcertbundle'] === undefined && token['jwks'] === undefined && token['signingkey'] === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['token', 'rootcertbundle'],
        input: undefined,
        message: 'no token keys',
        params: { expected: 'the PEM certificates of the keys that sign tokens (or auth.token.jwks, or auth.token.signingkey for Cascade\'s own token server)' },
      });
    }
  }, ALWAYS);

const middlewareEntrySchema = z.strictObject({
  name: z.string().min(1),
  options: freeForm().default(() => ({})),
  disabled: bool().default(false),
});

/** Where middleware can be injected, as in distribution. */
export const MIDDLEWARE_POINTS = ['registry', 'repository', 'storage'] as const;

const middlewareSchema = z.strictObject({
  registry: z.array(middlewareEntrySchema).default(() => []),
  repository: z.array(middlewareEntrySchema).default(() => []),
  storage: z.array(middlewareEntrySchema).default(() => []),
});

const WEEK_MS = 7 * 24 * 3600 * 1000;

/** One remote registry of a mirror (`proxy.remotes[i]`). */
const remoteSchema = z.strictObject({
  url: httpUrl(),
  /** Path prefix and storage folder of the remote (default: its host). */
  name: z.string().min(1).optional(),
  /** Other registry hosts whose requests (`?ns=`, `domain`) go to this remote, e.g. `docker.io`. */
  aliases: z.array(z.string().min(1)).optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  revalidate: goDuration().optional(),
  cas: z.array(z.string().min(1)).optional(),
  anonymous: bool().optional(),
  default: bool().optional(),
});

const proxySchema = z.strictObject({
  remoteurl: httpUrl().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  ttl: goDuration().default(WEEK_MS),
  exec: z.strictObject({ command: z.string(), lifetime: goDuration().optional() }).optional(),
  // sealer's extensions: several remotes, and `on` to proxy without any remote configured.
  remoteregistries: z
    .array(z.strictObject({ url: httpUrl(), username: z.string().optional(), password: z.string().optional() }))
    .optional(),
  on: bool().optional(),
  // Cascade's extensions (mirror mode): several remotes with options of their own, local repositories
  // next to the proxied ones, and how often a tag is checked with the remote.
  remotes: z.array(remoteSchema).optional(),
  local: z.array(z.string().min(1)).optional(),
  revalidate: goDuration().optional(),
  anonymous: bool().optional(),
  cas: z.array(z.string().min(1)).optional(),
  // A mirror registered as a cache at the Cascade server: blob GETs with the server's grants.
  grants: z.strictObject({ issuer: z.string().min(1), name: z.string().min(1), keys: httpUrl(), cas: z.array(z.string().min(1)).optional() }).optional(),
  // A mirror in a region (nodes on one shared folder, coordinated through Redis). Only the shape is checked here:
  // the mirror's options parser checks the values as a cache node's `region` (`redis` may come from
  // CASCADE_REGION_REDIS instead).
  region: z.strictObject({ redis: z.string().optional(), name: z.string().optional() }).optional(),
});

const checkCommon = {
  interval: goDuration().default(10_000),
  // distribution treats 0 as "unhealthy after the first failure", like 1.
  threshold: int().min(0).default(1),
};

const healthSchema = z.strictObject({
  storagedriver: z.strictObject({ enabled: bool().default(false), ...checkCommon }).prefault({}),
  file: z.array(z.strictObject({ file: z.string().min(1), ...checkCommon })).default(() => []),
  http: z
    .array(
      z.strictObject({
        uri: httpUrl(),
        headers: z.record(z.string(), headerValues).optional(),
        statuscode: int().default(200),
        timeout: goDuration().optional(),
        ...checkCommon,
      }),
    )
    .default(() => []),
  tcp: z.array(z.strictObject({ addr: z.string().min(1), timeout: goDuration().optional(), ...checkCommon })).default(() => []),
});

/** The actions of notification events (distribution's `EventAction*`). */
export const EVENT_ACTIONS = ['push', 'pull', 'delete', 'mount'] as const;

/** Default bound of an endpoint's on-disk queue, in events (Cascade's `queuelimit`). */
export const NOTIFICATIONS_QUEUE_LIMIT = 100_000;

/** An HTTP header name (RFC 9110 token), so a configured header can never break the request it is sent on. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * One `notifications.endpoints[]` entry: distribution's keys, and Cascade's `queuelimit` (the bound of the
 * endpoint's on-disk queue) and `batchsize` (events per envelope; distribution sends one). distribution
 * treats a zero or absent `timeout`, `threshold` or `backoff` as its default (1s, 10, 1s); so does Cascade.
 */
const endpointSchema = z.strictObject({
  name: z.string().min(1),
  disabled: bool().default(false),
  url: httpUrl(),
  headers: z
    .record(z.string(), headerValues)
    .default(() => ({}))
    .superRefine((headers, ctx) => {
      for (const [name, values] of Object.entries(headers)) {
        if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], input: name, message: 'bad header name', params: { expected: 'an HTTP header name (letters, digits and !#$%&\'*+.^_`|~-)' } });
        else if (values.some((v) => /[\r\n\0]/.test(v))) ctx.addIssue({ code: 'custom', path: [name], input: values, message: 'bad header value', params: { expected: 'header values without line breaks or NUL' } });
      }
    }),
  timeout: goDuration().optional(),
  threshold: int().min(0).optional(),
  backoff: goDuration().optional(),
  ignoredmediatypes: z.array(z.string()).default(() => []),
  ignore: z.strictObject({ mediatypes: z.array(z.string()).default(() => []), actions: z.array(z.enum(EVENT_ACTIONS)).default(() => []) }).prefault({}),
  queuelimit: int().min(1).default(NOTIFICATIONS_QUEUE_LIMIT),
  batchsize: int().min(1).max(1000).default(1),
});

/** `notifications`: webhook endpoints that receive registry events (distribution's format). */
const notificationsSchema = z
  .strictObject({
    events: z.strictObject({ includereferences: bool().default(false) }).prefault({}),
    endpoints: z.array(endpointSchema).default(() => []),
  })
  .superRefine((value: unknown, ctx) => {
    // The name keys an endpoint's queue folder and its metrics, so two endpoints cannot share one.
    if (!isRecord(value) || !Array.isArray(value['endpoints'])) return;
    const seen = new Set<string>();
    value['endpoints'].forEach((e: unknown, i) => {
      const name = isRecord(e) ? e['name'] : undefined;
      if (typeof name !== 'string') return;
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['endpoints', i, 'name'], input: name, message: 'duplicate endpoint name', params: { expected: 'a name no other endpoint has' } });
      seen.add(name);
    });
  }, ALWAYS);

/**
 * Top-level sections of distribution that Cascade accepts so that existing files load, but does not
 * implement. Their content is not validated; each one present is reported as a warning.
 */
export const UNIMPLEMENTED_SECTIONS = ['redis', 'reporting', 'validation', 'compatibility', 'policy', 'catalog'] as const;

/**
 * The whole `config.yml`. Parse the output of `parseConfig`'s normalization (YAML nulls removed, storage and
 * auth given as a bare name expanded to a map) rather than raw YAML; `parseConfig` does both.
 *
 * The output differs from the input in two places: `log.level` is always set (from `log.level`, else the
 * deprecated top-level `loglevel`, else `info`), and `loglevel` itself is dropped.
 */
export const registryConfigSchema = z
  .strictObject({
    version: z.string().pipe(z.literal('0.1')),
    log: logSchema.prefault({}),
    loglevel: logLevel.optional(),
    storage: storageSchema,
    http: httpSchema.prefault({}),
    auth: authSchema.prefault({}),
    middleware: middlewareSchema.prefault({}),
    proxy: proxySchema.optional(),
    health: healthSchema.prefault({}),
    notifications: notificationsSchema.prefault({}),
    redis: freeForm().optional(),
    reporting: freeForm().optional(),
    validation: freeForm().optional(),
    compatibility: freeForm().optional(),
    policy: freeForm().optional(),
    catalog: freeForm().optional(),
  })
  .transform(({ loglevel, ...rest }) => ({ ...rest, log: { ...rest.log, level: rest.log.level ?? loglevel ?? 'info' } }));

/** The validated configuration, with every default applied. */
export type RegistryConfig = z.output<typeof registryConfigSchema>;
/** `log`: level (always set), formatter, static fields, access log switch. */
export type LogConfig = RegistryConfig['log'];
/** `storage`: exactly one of `filesystem` or `inmemory`, plus `delete` and the accepted sections. */
export type StorageConfig = RegistryConfig['storage'];
/** `http`: listener, TLS, response headers, debug server. */
export type HttpConfig = RegistryConfig['http'];
/** `auth`: at most one scheme. */
export type AuthConfig = RegistryConfig['auth'];
/** `auth.token`: the Docker token scheme, and Cascade's embedded token server. */
export type TokenAuthConfig = z.output<typeof tokenSchema>;
/** One rule of `auth.token.access`. */
export type TokenAccessRule = z.output<typeof tokenRuleSchema>;
/** One entry of `middleware.registry|repository|storage`. */
export type MiddlewareConfig = z.output<typeof middlewareEntrySchema>;
/** `proxy`: the pull-through (mirror) mode; absent when not configured. */
export type ProxyConfig = z.output<typeof proxySchema>;
/** `notifications`: the event endpoints. */
export type NotificationsConfig = RegistryConfig['notifications'];
/** One `notifications.endpoints[]` entry. */
export type EndpointConfig = z.output<typeof endpointSchema>;
/** `health`: the storage driver check and the accepted file/http/tcp checks. */
export type HealthConfig = RegistryConfig['health'];

/** Validates one middleware entry on its own, so that the loader can check names even when other keys fail. */
export const middlewareConfigSchema = middlewareEntrySchema;

/**
 * Friendlier "expected" texts for a missing or mistyped value at a few keys, by dotted key with list
 * indexes written `[]`.
 */
export const EXPECTED_AT: Readonly<Record<string, string>> = {
  '': 'a mapping of configuration sections (version, storage, http, ...)',
  version: '"0.1"',
  storage: `a mapping naming one storage driver (${STORAGE_DRIVERS.join(' or ')}), or the name of one`,
  auth: `a mapping naming one authentication scheme (${AUTH_SCHEMES.join(', ')})`,
};
