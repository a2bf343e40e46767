/**
 * deploy/ stays valid without a Docker engine or a cluster: every YAML file parses, every cascade config
 * in it (deploy/*.yml, the compose configs, the Kubernetes ConfigMap) loads with cascade's own loaders and
 * validators, the compose services and the Kubernetes objects fit together, and the Dockerfile runs a
 * non-root user and an entrypoint that exists. The certificates the configs name are made with the
 * `cascade certs` commands of deploy/README.md, so the CA checks of the downstream middleware run for real.
 * The region (compose.region.yml, k8s/region.yml): three nodes on one shared volume with Redis behind one
 * balancer; the nodes' config loads with `loadNodeConfig` (`region.redis`, overridden by
 * `CASCADE_REGION_REDIS`), and nginx itself checks the balancer's config (`nginx -t`).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { ConfigError, loadConfig, parseConfig, type LoadConfigOptions } from '@cascade/registry-core';
import { DOWNSTREAM, loadNodeConfig, parseDownstreamOptions, validateDownstreamOptions } from '@cascade/downstream';
import { runCerts } from '../src/commands/certs.js';
import { loadServerConfig } from '@cascade/server';

const ROOT = new URL('../../../../', import.meta.url).pathname;
const DEPLOY = join(ROOT, 'deploy');
const COMPOSE = join(DEPLOY, 'compose');

/** What `cascade registry` validates configs with (CONFIG_OPTIONS in src/cli.ts). */
const CONFIG_OPTIONS: LoadConfigOptions = { middleware: { [DOWNSTREAM]: validateDownstreamOptions } };

/** Every file under `dir`, relative to it. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)).map((f) => join(e.name, f)) : [e.name]));
}

type Obj = Record<string, unknown>;
const obj = (v: unknown, what: string): Obj => {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `${what} is a mapping`);
  return v as Obj;
};
const list = (v: unknown, what: string): unknown[] => {
  assert.ok(Array.isArray(v), `${what} is a list`);
  return v;
};

/** Every string value in a parsed YAML document. */
const strings = (v: unknown): string[] => (typeof v === 'string' ? [v] : typeof v === 'object' && v !== null ? Object.values(v).flatMap(strings) : []);

/** The port of an `addr` such as ":5001". */
const portOf = (addr: string): number => Number(/:(\d+)$/.exec(addr)?.[1]);

/** Runs `fn` with console.log silenced (runCerts prints what it wrote). */
async function quietly<T>(fn: () => Promise<T>): Promise<T> {
  const log = console.log;
  console.log = () => undefined;
  try {
    return await fn();
  } finally {
    console.log = log;
  }
}

describe('deploy/ config files', () => {
  it("every deploy/*.yml loads with cascade's own config loader, without warnings", async () => {
    const files = readdirSync(DEPLOY).filter((f) => f.endsWith('.yml'));
    assert.ok(files.length > 0, 'deploy/ has config files');
    for (const f of files) {
      const { warnings } = loadConfig(join(DEPLOY, f), {}, CONFIG_OPTIONS);
      assert.deepEqual(warnings, [], f);
    }
  });

  it('every YAML file under deploy/ parses (all documents), and README.md describes every file', () => {
    const files = walk(DEPLOY);
    const yamlFiles = files.filter((f) => /\.ya?ml$/.test(f));
    for (const f of ['compose/compose.yml', 'k8s/cache-node.yml', 'compose/config/server.yml', 'compose/config/cache-a.yml']) assert.ok(yamlFiles.includes(f), f);
    for (const f of yamlFiles) {
      const docs = YAML.parseAllDocuments(readFileSync(join(DEPLOY, f), 'utf8'), { uniqueKeys: true });
      assert.ok(Array.isArray(docs) && docs.length > 0, `${f}: YAML documents`);
      for (const [i, doc] of docs.entries()) {
        assert.deepEqual(doc.errors, [], `${f} document ${i + 1}: ${doc.errors.map((e) => e.message).join('; ')}`);
        assert.deepEqual(doc.warnings, [], `${f} document ${i + 1}`);
        assert.ok(doc.toJS() !== null, `${f} document ${i + 1} is not empty`);
      }
    }
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    for (const f of files.filter((f) => f !== 'README.md' && !f.endsWith('.gitignore'))) assert.ok(readme.includes(`\`${f}\``), `deploy/README.md describes ${f}`);
  });
});

describe('deploy/compose', () => {
  let tmp: string;
  let certs: string;
  /** The files the README's `cascade certs` commands write into deploy/compose/certs. */
  let made: Set<string>;
  const compose = obj(YAML.parse(readFileSync(join(COMPOSE, 'compose.yml'), 'utf8')), 'compose.yml');
  const services = obj(compose['services'], 'services');

  /** A service's bind mounts, target -> source (relative to deploy/compose). */
  const mounts = (name: string): Map<string, string> => {
    const m = new Map<string, string>();
    for (const v of list(obj(services[name], name)['volumes'], `${name}.volumes`)) {
      const [source, target] = String(v).split(':') as [string, string];
      if (source.startsWith('.')) m.set(target, source);
    }
    return m;
  };
  /** role (registry | server) and config path (in the container) of a service. */
  const commandOf = (name: string): { role: string; config: string } => {
    const [role, config] = list(obj(services[name], name)['command'], `${name}.command`) as string[];
    return { role: role as string, config: config as string };
  };
  /** The config file of a service, in deploy/compose. */
  const configFileOf = (name: string): string => {
    const source = mounts(name).get(commandOf(name).config);
    assert.ok(source, `${name}: its config ${commandOf(name).config} is mounted`);
    return join(COMPOSE, source);
  };
  /** A config's text with the container's certificate directory replaced by the certificates made here. */
  const withCerts = (text: string): string => text.replaceAll('/etc/cascade/certs/', `${certs}/`);

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cascade-deploy-'));
    certs = join(tmp, 'certs');
    // The README's commands, with deploy/compose/certs made a temporary directory.
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    const commands = [...readme.matchAll(/^npx cascade (certs .*deploy\/compose\/certs.*)$/gm)].map((m) => (m[1] as string).split(' ').map((w) => (w === 'deploy/compose/certs' ? certs : w)));
    assert.ok(commands.length >= 5, 'deploy/README.md shows the cascade certs commands of the compose setup');
    for (const words of commands) {
      assert.ok(!words.some((w) => /["'$\\]/.test(w)), `plain words: ${words.join(' ')}`);
      assert.equal(await quietly(() => runCerts(words.slice(1))), 0, words.join(' '));
    }
    made = new Set(readdirSync(certs));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('has the origin, the server and two chained caches, built from deploy/Dockerfile', () => {
    assert.deepEqual(Object.keys(services).sort(), ['cache-a', 'cache-b', 'origin', 'server']);
    for (const name of Object.keys(services)) {
      const build = obj(obj(services[name], name)['build'], `${name}.build`);
      const context = join(COMPOSE, String(build['context']));
      assert.equal(relative(ROOT, context), '', `${name}: the build context is the repository root`);
      assert.ok(existsSync(join(context, String(build['dockerfile']))), `${name}: the Dockerfile exists`);
    }
    assert.equal(commandOf('origin').role, 'registry');
    assert.equal(commandOf('server').role, 'server');
    assert.equal(commandOf('cache-a').role, 'registry');
    assert.equal(commandOf('cache-b').role, 'registry');
  });

  it('mounts config files that exist, and only certificates and secrets the README makes', () => {
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    for (const name of Object.keys(services)) {
      for (const [target, source] of mounts(name)) {
        if (source.startsWith('./certs/')) {
          assert.ok(made.has(source.slice('./certs/'.length)), `${name}: ${source} is made by the README's cascade certs commands`);
          assert.ok(!source.endsWith('ca-key.pem'), `${name}: the CA key stays out of the containers`);
        } else if (source.startsWith('./secrets/')) {
          assert.ok(readme.includes(`deploy/compose/${source.slice(2)}`), `${name}: the README says how to make ${source}`);
        } else {
          assert.ok(existsSync(join(COMPOSE, source)) && statSync(join(COMPOSE, source)).isFile(), `${name}: ${source} exists`);
        }
        assert.ok(target.startsWith('/etc/cascade/'), `${name}: ${target}`);
      }
      assert.ok(existsSync(configFileOf(name)), name);
    }
  });

  it('cascade registry configs load with the downstream validators, CA checks included, without warnings', () => {
    for (const name of ['origin', 'cache-a', 'cache-b']) {
      const file = configFileOf(name);
      const text = readFileSync(file, 'utf8');
      const { config, warnings } = parseConfig(withCerts(text), file, {}, CONFIG_OPTIONS);
      assert.deepEqual(warnings, [], name);
      // Every file the config names in the container is mounted into it.
      const paths = strings(YAML.parse(text)).filter((v) => v.startsWith('/etc/cascade/'));
      assert.ok(paths.length >= 2, `${name}: names its certificate and key`);
      for (const path of paths) assert.ok(mounts(name).has(path), `${name}: ${path} is mounted`);
      const published = list(obj(services[name], name)['ports'] ?? [], `${name}.ports`).map(String);
      const port = portOf(config.http.addr);
      if (name !== 'origin') assert.deepEqual(published, [`${port}:${port}`], `${name}: published on the port it listens on`);
      assert.ok(config.http.tls?.certificate?.endsWith(`/${name}.pem`), `${name}: serves its own certificate`);
    }
  });

  it('the CA files are checked when the config is loaded: without them, loading fails on cas', () => {
    const file = configFileOf('cache-a');
    const text = readFileSync(file, 'utf8');
    assert.throws(
      () => parseConfig(text.replaceAll('/etc/cascade/certs/', `${tmp}/nowhere/`), file, {}, CONFIG_OPTIONS),
      (e: unknown) => e instanceof ConfigError && /cas\[0\]: .*ca\.pem: file not found/.test(e.message),
    );
    // Parsed without the file checks, the configs as written (container paths) are valid too.
    const parseOnly: LoadConfigOptions = { middleware: { [DOWNSTREAM]: (o, k, c) => parseDownstreamOptions(o, k, c, { checkCaFiles: false }).errors } };
    for (const name of ['cache-a', 'cache-b']) assert.deepEqual(parseConfig(readFileSync(configFileOf(name), 'utf8'), configFileOf(name), {}, parseOnly).warnings, []);
  });

  it('the caches chain cache-b -> cache-a -> server with grants, on hosts and ports that exist', () => {
    const serverConfig = loadServerConfig(configFileOf('server'), { CASCADE_ORIGIN_PASSWORD: 'test' });
    const downstream = (name: string) => {
      const { config } = parseConfig(withCerts(readFileSync(configFileOf(name), 'utf8')), configFileOf(name), {}, CONFIG_OPTIONS);
      const { options, errors } = parseDownstreamOptions(config.middleware.registry[0]?.options ?? {}, 'options', config);
      assert.deepEqual(errors, []);
      return options!;
    };
    const a = downstream('cache-a');
    const b = downstream('cache-b');
    const serverUrl = `https://server:${portOf(serverConfig.http.addr)}`;
    assert.equal(a.auth, 'grant');
    assert.equal(a.name, 'cache-a');
    assert.deepEqual(a.downstreams, ['cache-b']);
    assert.equal(a.originhost, serverUrl);
    assert.deepEqual(a.upstreamhosts, []);
    assert.equal(b.auth, 'grant');
    assert.equal(b.name, 'cache-b');
    assert.equal(b.originhost, serverUrl);
    const cacheA = parseConfig(withCerts(readFileSync(configFileOf('cache-a'), 'utf8')), 'cache-a', {}, CONFIG_OPTIONS).config;
    assert.deepEqual(b.upstreamhosts, [`https://cache-a:${portOf(cacheA.http.addr)}`]);
    assert.equal(a.issuer, serverConfig.grants.issuer);
    assert.equal(b.issuer, serverConfig.grants.issuer);
    const origin = parseConfig(withCerts(readFileSync(configFileOf('origin'), 'utf8')), 'origin', {}, CONFIG_OPTIONS).config;
    assert.equal(serverConfig.origin.url, `https://origin:${portOf(origin.http.addr)}`);
    assert.ok(origin.auth?.htpasswd, 'the origin has users: the server authorizes through it');
  });

  it('the server config loads with loadServerConfig; its password comes from the environment', () => {
    const file = configFileOf('server');
    const config = loadServerConfig(file, { CASCADE_ORIGIN_PASSWORD: 'from-env' });
    assert.equal(config.origin.password, 'from-env');
    assert.equal(config.origin.username, 'cascade-svc');
    assert.deepEqual(config.origin.cas, ['/etc/cascade/certs/ca.pem']);
    assert.ok(config.grants.keysdir.startsWith('/var/lib/cascade/') && (config.database.sqlite ?? '').startsWith('/var/lib/cascade/'), 'state in the volume');
    assert.ok(config.admins.length > 0);
    for (const path of [config.origin.cas[0], config.http.tls?.certificate, config.http.tls?.key]) assert.ok(path && mounts('server').has(path), `${path} is mounted`);
    assert.doesNotMatch(readFileSync(file, 'utf8'), /^\s*password:/m, 'no password in the file');
    const env = obj(obj(services['server'], 'server')['environment'], 'server.environment');
    assert.match(String(env['CASCADE_ORIGIN_PASSWORD']), /^\$\{CASCADE_ORIGIN_PASSWORD:\?/);
    assert.equal(env['NODE_EXTRA_CA_CERTS'], undefined, 'the health check trusts origin.cas itself');
    assert.deepEqual(list(obj(services['server'], 'server')['ports'], 'ports'), [`${portOf(config.http.addr)}:${portOf(config.http.addr)}`]);
  });

  it('compose.postgres.yml: both servers use the PostgreSQL service through CASCADE_DATABASE_URL, with the same config, keys and certificates', () => {
    const override = obj(YAML.parse(readFileSync(join(COMPOSE, 'compose.postgres.yml'), 'utf8')), 'compose.postgres.yml');
    const extra = obj(override['services'], 'services');
    const postgres = obj(extra['postgres'], 'postgres');
    const pgEnv = obj(postgres['environment'], 'postgres.environment');
    const server2 = obj(extra['server-2'], 'server-2');
    for (const name of ['server', 'server-2']) {
      const env = obj(obj(extra[name], name)['environment'], `${name}.environment`);
      const url = String(env['CASCADE_DATABASE_URL']);
      assert.equal(url, `postgres://${String(pgEnv['POSTGRES_USER'])}:\${CASCADE_DB_PASSWORD}@postgres:5432/${String(pgEnv['POSTGRES_DB'])}`, `${name} reaches the postgres service`);
      // The same server.yml, with that variable: the state goes to PostgreSQL.
      const config = loadServerConfig(configFileOf('server'), { CASCADE_ORIGIN_PASSWORD: 'x', CASCADE_DATABASE_URL: url.replace('${CASCADE_DB_PASSWORD}', 'pw') });
      assert.deepEqual(config.database, { postgres: 'postgres://cascade:pw@postgres:5432/cascade' });
    }
    assert.match(String(pgEnv['POSTGRES_PASSWORD']), /^\$\{CASCADE_DB_PASSWORD:\?/);
    // server-2 is the server again: same command, mounts (config, CA, certificate) and volume (the keys).
    assert.deepEqual(server2['command'], obj(services['server'], 'server')['command']);
    assert.deepEqual(list(server2['volumes'], 'server-2.volumes'), list(obj(services['server'], 'server')['volumes'], 'server.volumes'));
    assert.deepEqual(list(server2['ports'], 'server-2.ports'), ['8444:8443']);
    assert.ok('postgres-data' in obj(override['volumes'], 'volumes'));
  });

  it("each service's certificate names it (its compose host name), and is signed by the CA", () => {
    const ca = new X509Certificate(readFileSync(join(certs, 'ca.pem')));
    for (const name of Object.keys(services)) {
      const cert = new X509Certificate(readFileSync(join(certs, `${name}.pem`)));
      assert.equal(cert.checkHost(name), name, `${name}.pem names ${name}`);
      assert.ok(cert.checkIssued(ca), name);
    }
  });
});

/** A Kubernetes manifest of deploy/k8s: its documents, and the Deployment's (the one named `deploymentName`, given several) pod, container, mounts and volumes. */
function k8sManifest(file: string, deploymentName?: string) {
  const docs = YAML.parseAllDocuments(readFileSync(join(DEPLOY, 'k8s', file), 'utf8')).map((d, i) => obj((d as YAML.Document).toJS(), `document ${i + 1}`));
  /** The one document of `kind` (and `name`, when given). */
  const named = (kind: string, name?: string): Obj => {
    const found = docs.filter((d) => d['kind'] === kind && (name === undefined || obj(d['metadata'], 'metadata')['name'] === name));
    assert.equal(found.length, 1, `one ${kind} ${name ?? ''}`);
    return found[0] as Obj;
  };
  const deployment = named('Deployment', deploymentName);
  const pod = obj(obj(obj(deployment['spec'], 'spec')['template'], 'template')['spec'], 'pod spec');
  const container = obj(list(pod['containers'], 'containers')[0], 'container');
  const mounts = new Map(list(container['volumeMounts'], 'volumeMounts').map((m) => [String(obj(m, 'mount')['mountPath']), obj(m, 'mount')]));
  const volumes = new Map(list(pod['volumes'], 'volumes').map((v) => [String(obj(v, 'volume')['name']), obj(v, 'volume')]));
  const port = obj(list(container['ports'], 'ports')[0], 'port');
  return { docs, named, deployment, pod, container, mounts, volumes, port };
}

/** Liveness on `/health` and readiness on `/ready`, both on the container's port. */
function assertProbes(m: ReturnType<typeof k8sManifest>): void {
  const probe = (kind: string) => obj(obj(m.container[kind], kind)['httpGet'], `${kind}.httpGet`);
  assert.equal(probe('livenessProbe')['path'], '/health');
  assert.equal(probe('readinessProbe')['path'], '/ready');
  for (const kind of ['livenessProbe', 'readinessProbe']) assert.ok([m.port['name'], m.port['containerPort']].includes(probe(kind)['port']), kind);
}

/** The Service selects the Deployment's pods and targets the container's port. */
function assertServiceTargets(m: ReturnType<typeof k8sManifest>): void {
  const spec = obj(m.named('Service')['spec'], 'service spec');
  const labels = obj(obj(obj(obj(m.deployment['spec'], 'spec')['template'], 'template')['metadata'], 'metadata')['labels'], 'labels');
  for (const [k, v] of Object.entries(obj(spec['selector'], 'selector'))) assert.equal(labels[k], v, k);
  assert.ok([m.port['name'], m.port['containerPort']].includes(obj(list(spec['ports'], 'ports')[0], 'service port')['targetPort']));
}

describe('deploy/k8s/cache-node.yml', () => {
  const manifest = k8sManifest('cache-node.yml');
  const { docs, named, deployment, pod, container, mounts, volumes } = manifest;
  const name = (o: Obj) => String(obj(o['metadata'], 'metadata')['name']);

  it('has a Namespace, ConfigMap, Secret, PersistentVolumeClaim, Deployment and Service, all in the namespace', () => {
    assert.deepEqual(docs.map((d) => d['kind']), ['Namespace', 'ConfigMap', 'Secret', 'PersistentVolumeClaim', 'Deployment', 'Service']);
    const ns = name(named('Namespace'));
    for (const d of docs.slice(1)) assert.equal(obj(d['metadata'], 'metadata')['namespace'], ns, String(d['kind']));
  });

  it("the ConfigMap's config.yml loads with the downstream validators (CA checked), without warnings", async () => {
    const text = String(obj(named('ConfigMap')['data'], 'data')['config.yml']);
    const dir = await mkdtemp(join(tmpdir(), 'cascade-k8s-'));
    try {
      assert.equal(await quietly(() => runCerts(['ca', '--out', dir])), 0);
      await writeFile(join(dir, 'ca.crt'), readFileSync(join(dir, 'ca.pem')));
      const { config, warnings } = parseConfig(text.replaceAll('/etc/cascade/tls/', `${dir}/`), 'cache-node.yml ConfigMap config.yml', {}, CONFIG_OPTIONS);
      assert.deepEqual(warnings, []);
      assert.equal(config.middleware.registry[0]?.name, 'downstream');
      assert.ok(config.storage.filesystem?.rootdirectory?.startsWith('/var/lib/cascade/'));
      assert.ok(mounts.has('/var/lib/cascade'), 'the storage is on the volume');
      // The container's port is the one the config listens on.
      assert.equal(obj(list(container['ports'], 'ports')[0], 'port')['containerPort'], portOf(config.http.addr));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('mounts the ConfigMap where the container reads its config, and the Secret keys the config names', () => {
    const [role, configPath] = list(container['args'], 'args') as string[];
    assert.equal(role, 'registry');
    const configMount = mounts.get(configPath as string);
    assert.ok(configMount, `${configPath} is mounted`);
    assert.equal(obj(volumes.get(String(configMount['name'])), 'config volume')['configMap'] && obj(obj(volumes.get(String(configMount['name'])), 'v')['configMap'], 'cm')['name'], name(named('ConfigMap')));
    assert.equal(configMount['subPath'], 'config.yml');

    const text = String(obj(named('ConfigMap')['data'], 'data')['config.yml']);
    const secret = named('Secret');
    const keys = Object.keys(obj(secret['stringData'] ?? secret['data'], 'secret data'));
    const tlsMount = [...mounts.entries()].find(([, m]) => obj(volumes.get(String(m['name'])), 'v')['secret']);
    assert.ok(tlsMount, 'the Secret is mounted');
    assert.equal(obj(obj(volumes.get(String(tlsMount[1]['name'])), 'v')['secret'], 'secret')['secretName'], name(secret));
    const fromSecret = [...text.matchAll(new RegExp(`${tlsMount[0]}/([\\w.-]+)`, 'g'))].map((m) => m[1]);
    assert.ok(fromSecret.length >= 3, 'certificate, key and CA come from the Secret');
    for (const key of fromSecret) assert.ok(keys.includes(key as string), `the Secret has ${key}`);

    const pvc = volumes.get(String(mounts.get('/var/lib/cascade')?.['name']));
    assert.equal(obj(obj(pvc, 'v')['persistentVolumeClaim'], 'pvc')['claimName'], name(named('PersistentVolumeClaim')));
  });

  it('probes /health (liveness) and /ready (readiness) on the registry port, and runs as non-root', () => {
    assertProbes(manifest);
    assert.equal(obj(obj(deployment['spec'], 'spec'), 'spec')['replicas'], 1);
    const podSecurity = obj(pod['securityContext'], 'pod securityContext');
    assert.equal(podSecurity['runAsNonRoot'], true);
    assert.ok(typeof podSecurity['runAsUser'] === 'number' && podSecurity['runAsUser'] > 0);
    const containerSecurity = obj(container['securityContext'], 'container securityContext');
    assert.equal(containerSecurity['allowPrivilegeEscalation'], false);
    assert.notEqual(containerSecurity['runAsUser'], 0);
  });

  it('the Service selects the pods and targets the registry port', () => {
    assertServiceTargets(manifest);
  });
});

describe('deploy/k8s/server.yml', () => {
  const manifest = k8sManifest('server.yml');
  const { docs, named, deployment, pod, container, mounts, volumes } = manifest;
  const envSecret = named('Secret', 'cascade-server-env');
  const env = obj(envSecret['stringData'], 'env secret stringData') as Record<string, string>;

  it('has a Namespace, ConfigMap, two Secrets, a Deployment of several replicas and a Service, all in the namespace, and no volume claim', () => {
    assert.deepEqual(docs.map((d) => d['kind']), ['Namespace', 'ConfigMap', 'Secret', 'Secret', 'Deployment', 'Service']);
    const ns = String(obj(named('Namespace')['metadata'], 'metadata')['name']);
    for (const d of docs.slice(1)) assert.equal(obj(d['metadata'], 'metadata')['namespace'], ns, String(d['kind']));
    assert.ok(Number(obj(deployment['spec'], 'spec')['replicas']) >= 2, 'several replicas');
    assert.ok(![...volumes.values()].some((v) => 'persistentVolumeClaim' in v), 'the state is in PostgreSQL, not on a volume');
  });

  it("the ConfigMap's server.yml loads with the Secret's environment: state and grant keys in PostgreSQL", async () => {
    const text = String(obj(named('ConfigMap')['data'], 'data')['server.yml']);
    const [role, configPath] = list(container['args'], 'args') as string[];
    assert.equal(role, 'server');
    const configMount = mounts.get(configPath as string);
    assert.ok(configMount && configMount['subPath'] === 'server.yml', `${configPath} is mounted from the ConfigMap`);
    assert.equal(obj(obj(volumes.get(String(configMount['name'])), 'v')['configMap'], 'cm')['name'], 'cascade-server');
    const dir = await mkdtemp(join(tmpdir(), 'cascade-k8s-server-'));
    try {
      const file = join(dir, 'server.yml');
      await writeFile(file, text);
      const config = loadServerConfig(file, env);
      assert.deepEqual(config.database, { postgres: env['CASCADE_DATABASE_URL'] });
      assert.equal(config.origin.password, env['CASCADE_ORIGIN_PASSWORD']);
      assert.equal(config.grants.keystore, 'database', 'the replicas share their keys through the database');
      assert.ok(config.http.publicurl?.startsWith('https://'));
      assert.equal(obj(list(container['ports'], 'ports')[0], 'port')['containerPort'], portOf(config.http.addr));
      // The TLS files the config names come from the TLS Secret, mounted where the config reads them.
      const tls = named('Secret', 'cascade-server-tls');
      const keys = Object.keys(obj(tls['stringData'], 'tls stringData'));
      for (const path of [config.http.tls?.certificate, config.http.tls?.key, ...config.origin.cas]) {
        assert.ok(path?.startsWith('/etc/cascade/tls/') && keys.includes(path.slice('/etc/cascade/tls/'.length)), `${path} is in the TLS Secret`);
      }
      assert.equal(obj(obj(volumes.get(String(mounts.get('/etc/cascade/tls')?.['name'])), 'v')['secret'], 'secret')['secretName'], 'cascade-server-tls');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.doesNotMatch(text, /^\s*password:/m, 'no password in the ConfigMap');
    assert.doesNotMatch(text, /^\s*postgres:/m, 'no database URL in the ConfigMap: it comes from the Secret');
    const envFrom = list(container['envFrom'], 'envFrom').map((e) => obj(obj(e, 'envFrom')['secretRef'], 'secretRef')['name']);
    assert.deepEqual(envFrom, ['cascade-server-env']);
  });

  it('probes /health and /ready on the server port, runs as non-root with a read-only root, and the Service targets it', () => {
    assertProbes(manifest);
    assert.equal(obj(pod['securityContext'], 'pod securityContext')['runAsNonRoot'], true);
    const security = obj(container['securityContext'], 'container securityContext');
    assert.equal(security['allowPrivilegeEscalation'], false);
    assert.equal(security['readOnlyRootFilesystem'], true);
    assert.ok(mounts.has('/tmp'), 'a writable /tmp');
    assertServiceTargets(manifest);
  });
});

describe('deploy/compose/compose.region.yml', () => {
  const compose = obj(YAML.parse(readFileSync(join(COMPOSE, 'compose.yml'), 'utf8')), 'compose.yml');
  const region = obj(YAML.parse(readFileSync(join(COMPOSE, 'compose.region.yml'), 'utf8')), 'compose.region.yml');
  const services = obj(region['services'], 'services');
  const nodes = ['region-1', 'region-2', 'region-3'];
  const service = (name: string) => obj(services[name], name);
  const volumesOf = (name: string) => list(service(name)['volumes'], `${name}.volumes`).map(String);
  const configFile = join(COMPOSE, 'config', 'region.yml');
  const nginxFile = join(COMPOSE, 'config', 'region-nginx.conf');
  const redisEnv = 'redis://:${CASCADE_REDIS_PASSWORD}@redis:6379/0';

  it('adds redis, three nodes on one named volume with the same config, and a balancer; no name clashes with compose.yml', () => {
    assert.deepEqual(Object.keys(services).sort(), ['redis', 'region', 'region-1', 'region-2', 'region-3']);
    for (const name of Object.keys(services)) assert.ok(!(name in obj(compose['services'], 'services')), `${name} is new`);
    for (const name of nodes) {
      assert.deepEqual(service(name)['command'], ['registry', '/etc/cascade/config.yml']);
      assert.deepEqual(volumesOf(name), volumesOf('region-1'), `${name} mounts what region-1 mounts`);
      assert.deepEqual(service(name)['environment'], { CASCADE_REGION_REDIS: redisEnv });
      assert.deepEqual(list(service(name)['depends_on'], 'depends_on').sort(), ['redis', 'server']);
      assert.equal(service(name)['ports'], undefined, `${name}: reached through the balancer only`);
    }
    assert.ok(volumesOf('region-1').includes('region-data:/var/lib/cascade'), 'the shared volume');
    assert.ok(volumesOf('region-1').includes('./config/region.yml:/etc/cascade/config.yml:ro'));
    assert.ok('region-data' in obj(region['volumes'], 'volumes'));
    const redisCommand = list(service('redis')['command'], 'redis.command').map(String);
    assert.equal(redisCommand[redisCommand.indexOf('--requirepass') + 1], '${CASCADE_REDIS_PASSWORD:?set CASCADE_REDIS_PASSWORD in deploy/compose/.env}');
    assert.equal(service('redis')['ports'], undefined, 'Redis is not published');
    for (const v of [...volumesOf('region'), ...volumesOf('region-1')]) {
      const source = v.split(':')[0]!;
      if (source.startsWith('./') && !source.startsWith('./certs/')) assert.ok(existsSync(join(COMPOSE, source)), `${source} exists`);
    }
  });

  it("the nodes' config loads with loadNodeConfig: a region cache with auth: grant, CASCADE_REGION_REDIS overriding region.redis", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cascade-deploy-region-'));
    try {
      assert.equal(await quietly(() => runCerts(['ca', '--out', dir])), 0);
      const file = join(dir, 'region.yml');
      await writeFile(file, readFileSync(configFile, 'utf8').replaceAll('/etc/cascade/certs/', `${dir}/`));
      const fromFile = loadNodeConfig(file, {});
      assert.deepEqual(fromFile.warnings, []);
      const options = fromFile.cache as (typeof fromFile.cache & { region?: { redis: string } }) | undefined;
      assert.equal(options?.auth, 'grant');
      assert.equal(options?.name, 'region-c');
      assert.equal(options?.originhost, 'https://server:8443');
      assert.equal(options?.region?.redis, 'redis://redis:6379/0');
      assert.equal(fromFile.config.storage.filesystem?.rootdirectory, '/var/lib/cascade/registry');
      const url = redisEnv.replace('${CASCADE_REDIS_PASSWORD}', 'pw');
      const fromEnv = loadNodeConfig(file, { CASCADE_REGION_REDIS: url }).cache as { region?: { redis: string } } | undefined;
      assert.equal(fromEnv?.region?.redis, url);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the balancer: nginx accepts its config, round-robin over the three nodes on their port, bodies streamed, TLS on the published port', async () => {
    const conf = readFileSync(nginxFile, 'utf8');
    const addr = String(obj(YAML.parse(readFileSync(configFile, 'utf8')), 'region.yml')['http'] && obj(obj(YAML.parse(readFileSync(configFile, 'utf8')), 'region.yml')['http'], 'http')['addr']);
    const upstreams = [...conf.matchAll(/^\s*server (region-\d):(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`);
    assert.deepEqual(upstreams, nodes.map((n) => `${n}:${portOf(addr)}`));
    assert.doesNotMatch(conf, /\b(ip_hash|hash|least_conn|random)\b/, 'round-robin, the default');
    for (const directive of [/proxy_buffering off;/, /proxy_request_buffering off;/, /client_max_body_size 0;/, /proxy_read_timeout 900s;/, /proxy_send_timeout 900s;/, /proxy_http_version 1\.1;/]) assert.match(conf, directive);
    const listen = Number(/listen (\d+) ssl;/.exec(conf)?.[1]);
    assert.deepEqual(service('region')['ports'], [`${listen}:${listen}`]);
    const certFiles = [...conf.matchAll(/ssl_certificate(?:_key)? (\S+);/g)].map((m) => m[1]!);
    for (const f of certFiles) assert.ok(volumesOf('region').some((v) => v.endsWith(`:${f}:ro`) && v.startsWith('./certs/region')), `${f} is mounted from the README's region certificate`);
    // nginx itself checks the file, with the nodes' names and the certificate paths made local.
    const dir = await mkdtemp(join(tmpdir(), 'cascade-deploy-nginx-'));
    try {
      assert.equal(await quietly(() => runCerts(['ca', '--out', dir])), 0);
      assert.equal(await quietly(() => runCerts(['server', '--ca', dir, '--out', dir, '--name', 'region', '--san', 'region,localhost'])), 0);
      const local = join(dir, 'nginx.conf');
      await writeFile(local, conf.replace(/server region-\d:/g, 'server 127.0.0.1:').replaceAll('/etc/nginx/certs/', `${dir}/`));
      const out = execFileSync('nginx', ['-t', '-p', dir, '-c', local, '-g', `pid ${join(dir, 'nginx.pid')}; error_log ${join(dir, 'error.log')};`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.equal(typeof out, 'string');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the README registers the region at the server as one cache: its name, at the balancer', () => {
    const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8');
    const listen = Number(/listen (\d+) ssl;/.exec(readFileSync(nginxFile, 'utf8'))?.[1]);
    assert.ok(readme.includes(`{"name": "region-c", "host": "https://region:${listen}"}`), 'registered at the balancer');
    assert.match(readme, /npx cascade certs server .*--name region --san region,/);
    assert.match(readme, /CASCADE_REDIS_PASSWORD=/);
  });
});

describe('deploy/k8s/region.yml', () => {
  const manifest = k8sManifest('region.yml', 'cascade-region');
  const { docs, named, deployment, container, mounts, volumes } = manifest;

  it('has the namespace, ConfigMap, Secrets, a ReadWriteMany claim, the nodes, their Service and Redis', () => {
    assert.deepEqual(docs.map((d) => d['kind']), ['Namespace', 'ConfigMap', 'Secret', 'Secret', 'PersistentVolumeClaim', 'Deployment', 'Service', 'Deployment', 'Service']);
    const ns = String(obj(named('Namespace')['metadata'], 'metadata')['name']);
    for (const d of docs.slice(1)) assert.equal(obj(d['metadata'], 'metadata')['namespace'], ns, String(d['kind']));
    assert.deepEqual(obj(named('PersistentVolumeClaim')['spec'], 'pvc spec')['accessModes'], ['ReadWriteMany']);
    assert.equal(obj(deployment['spec'], 'spec')['replicas'], 3);
    assert.equal(obj(obj(volumes.get(String(mounts.get('/var/lib/cascade')?.['name'])), 'v')['persistentVolumeClaim'], 'pvc')['claimName'], 'cascade-region-data');
  });

  it("the ConfigMap's config.yml loads with loadNodeConfig; each replica gets CASCADE_REGION_REDIS with the password, pointing at the Redis Service", async () => {
    const text = String(obj(named('ConfigMap')['data'], 'data')['config.yml']);
    const env = list(container['env'], 'env').map((e) => obj(e, 'env'));
    const password = env.findIndex((e) => e['name'] === 'REDIS_PASSWORD');
    const url = env.findIndex((e) => e['name'] === 'CASCADE_REGION_REDIS');
    assert.ok(password >= 0 && password < url, 'REDIS_PASSWORD is defined before the URL that uses it');
    assert.deepEqual(obj(obj(env[password]!['valueFrom'], 'valueFrom')['secretKeyRef'], 'ref'), { name: 'cascade-redis', key: 'password' });
    const redisService = named('Service', 'cascade-redis');
    const redisPort = obj(list(obj(redisService['spec'], 'spec')['ports'], 'ports')[0], 'port')['port'];
    assert.equal(env[url]!['value'], `redis://:$(REDIS_PASSWORD)@cascade-redis:${redisPort}/0`);
    assert.doesNotMatch(text, /redis:\/\/[^\s]*@/, 'no password in the ConfigMap');
    const dir = await mkdtemp(join(tmpdir(), 'cascade-k8s-region-'));
    try {
      assert.equal(await quietly(() => runCerts(['ca', '--out', dir])), 0);
      await writeFile(join(dir, 'ca.crt'), readFileSync(join(dir, 'ca.pem')));
      const file = join(dir, 'config.yml');
      await writeFile(file, text.replaceAll('/etc/cascade/tls/', `${dir}/`));
      const node = loadNodeConfig(file, {});
      assert.deepEqual(node.warnings, []);
      assert.equal((node.cache as { region?: { redis: string } } | undefined)?.region?.redis, 'redis://cascade-redis:6379/0');
      assert.equal(obj(list(container['ports'], 'ports')[0], 'port')['containerPort'], portOf(node.config.http.addr));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('probes /health and /ready, runs as non-root, and the Services select their pods', () => {
    assertProbes(manifest);
    assertServiceTargets({ ...manifest, named: (kind: string, name?: string) => manifest.named(kind, name ?? (kind === 'Service' ? 'cascade-region' : undefined)) });
    const redis = k8sManifest('region.yml', 'cascade-redis');
    const redisArgs = list(redis.container['args'], 'args').map(String);
    assert.equal(redisArgs[redisArgs.indexOf('--requirepass') + 1], '$(REDIS_PASSWORD)');
    assertServiceTargets({ ...redis, named: (kind: string, name?: string) => redis.named(kind, name ?? (kind === 'Service' ? 'cascade-redis' : undefined)) });
    assert.equal(obj(redis.pod['securityContext'], 'securityContext')['runAsNonRoot'], true);
  });
});

describe('deploy/Dockerfile', () => {
  const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  /** Instructions, with continuation lines joined and comments dropped. */
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.trim().split(/\s+/);
      return { op: (op as string).toUpperCase(), args: rest.join(' ') };
    });
  const runtime = instructions.slice(instructions.map((i) => i.op).lastIndexOf('FROM'));

  it('builds in one stage (npm install, tsc -b, prune) and runs in a slim Node image', () => {
    const froms = instructions.filter((i) => i.op === 'FROM');
    assert.ok(froms.length >= 2, 'multi-stage');
    assert.match(runtime[0]?.args ?? '', /^node:\$\{NODE_VERSION\}-bookworm-slim$|^node:2\d-bookworm-slim$/);
    const runs = instructions.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
    assert.match(runs, /npm install --no-audit --no-fund/);
    assert.doesNotMatch(runs, /npm ci\b/);
    assert.match(runs, /npx tsc -b/);
    assert.match(runs, /npm prune --omit=dev/);
    assert.match(runs, /python3 make g\+\+/, 'better-sqlite3 builds from source');
  });

  it('copies the package.json of every workspace before npm install (npm refuses a lock file naming a missing workspace)', () => {
    const workspaces = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { workspaces: string[] }).workspaces;
    const install = instructions.findIndex((i) => i.op === 'RUN' && /npm install/.test(i.args));
    const copied = instructions.slice(0, install).filter((i) => i.op === 'COPY').map((i) => i.args);
    for (const ws of workspaces) assert.ok(copied.some((args) => args.startsWith(`${ws}/package.json `)), `COPY ${ws}/package.json before npm install`);
  });

  it('runs as a non-root user', () => {
    const users = runtime.filter((i) => i.op === 'USER');
    assert.ok(users.length > 0, 'the runtime stage has a USER');
    const user = (users.at(-1) as { args: string }).args.split(':')[0];
    assert.ok(user !== 'root' && user !== '0', `USER ${user}`);
    assert.match(runtime.map((i) => i.args).join('\n'), new RegExp(`--uid ${user}\\b|useradd .*${user}`), 'the user is created');
  });

  it('has an ENTRYPOINT that exists after the build, the default CMD config, the port and the volume', () => {
    const entrypoint = JSON.parse(runtime.find((i) => i.op === 'ENTRYPOINT')?.args ?? 'null') as string[];
    assert.equal(entrypoint[0], 'node');
    const script = entrypoint[1] as string;
    assert.match(script, /^\/app\//);
    const inRepo = join(ROOT, script.slice('/app/'.length));
    assert.ok(existsSync(inRepo), `${script} is ${relative(ROOT, inRepo)} in the repository`);
    assert.match(readFileSync(inRepo, 'utf8'), /\.\.\/dist\/src\/cli\.js/);
    assert.ok(existsSync(join(dirname(inRepo), '../dist/src/cli.js')), 'and what it imports exists after the build');
    const cmd = JSON.parse(runtime.find((i) => i.op === 'CMD')?.args ?? 'null') as string[];
    assert.deepEqual(cmd, ['registry', '/etc/cascade/config.yml']);
    const copied = runtime.find((i) => i.op === 'COPY' && i.args.endsWith(' /etc/cascade/config.yml'));
    assert.ok(copied, 'the default config is in the image');
    const source = copied.args.split(' ')[0] as string;
    assert.deepEqual(loadConfig(join(ROOT, source), {}, CONFIG_OPTIONS).warnings, []);
    assert.ok(loadConfig(join(ROOT, source), {}, CONFIG_OPTIONS).config.storage.filesystem?.rootdirectory?.startsWith('/var/lib/cascade/'), 'its storage is in the volume');
    assert.ok(runtime.some((i) => i.op === 'EXPOSE' && i.args.split(' ').includes('5000')));
    assert.ok(runtime.some((i) => i.op === 'VOLUME' && i.args.includes('/var/lib/cascade')));
  });

  it('copies only files that exist in the build context (the repository root)', () => {
    const ignore = readFileSync(join(DEPLOY, 'Dockerfile.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const i of instructions.filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))) {
      const sources = i.args.split(' ').slice(0, -1);
      for (const s of sources) {
        assert.ok(existsSync(join(ROOT, s)), `COPY ${s}: exists`);
        assert.ok(!ignore.some((p) => p.replace(/^\*\*\//, '') === s.replace(/\/$/, '')), `COPY ${s}: not ignored`);
      }
    }
    for (const p of ['**/node_modules', '**/dist']) assert.ok(ignore.includes(p), `the context leaves out ${p}`);
  });
});
