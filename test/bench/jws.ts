/**
 * ES256 sign and verify cost of Cascade's JWS module (registry-core/src/jws) against `jose`, the figures
 * behind docs/architecture.md's "JWS: our own code, measured against jose". CPU time per operation (user +
 * system of this process) and wall-clock throughput, medians of interleaved rounds: on a shared machine the
 * CPU time is the figure to compare.
 *
 *     npm install --no-save jose && npx tsc -b test && node test/dist/bench/jws.js [rounds=11] [ms-per-case=1000]
 *
 * Without jose installed only Cascade's own cases run.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { jwkThumbprint, signJws, verifyJws } from '@cascade/registry-core';

interface Jose {
  CompactSign: new (payload: Uint8Array) => { setProtectedHeader(h: object): { sign(key: unknown): Promise<string> } };
  compactVerify(token: string, key: unknown, options: object): Promise<{ payload: Uint8Array }>;
  importJWK(jwk: object, alg: string): Promise<unknown>;
}

const rounds = Number(process.argv[2] ?? 11);
const ms = Number(process.argv[3] ?? 1000);
const joseName = 'jose';
const jose = (await import(joseName).catch(() => undefined)) as Jose | undefined;

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const kid = jwkThumbprint(publicKey);
const now = Math.floor(Date.now() / 1000);
const grant = { iss: 'https://server.example', sub: 'alice', aud: 'cache-eu', repo: 'team/app', digest: `sha256:${'a'.repeat(64)}`, iat: now, exp: now + 60, jti: randomBytes(16).toString('base64url') };
const typ = 'cascade-grant+jwt';
const token = signJws(grant, { privateKey, kid }, typ);
const getKey = async (k: string): Promise<KeyObject | undefined> => (k === kid ? publicKey : undefined);

const cases: Record<string, () => unknown> = {
  'sign    cascade (signJws)': () => signJws(grant, { privateKey, kid }, typ),
  'verify  cascade (verifyJws, key by kid)': () => verifyJws(token, getKey),
};
if (jose) {
  const enc = new TextEncoder();
  const cryptoPriv = await jose.importJWK(privateKey.export({ format: 'jwk' }), 'ES256');
  const cryptoPub = await jose.importJWK(publicKey.export({ format: 'jwk' }), 'ES256');
  const sign = (key: unknown) => new jose.CompactSign(enc.encode(JSON.stringify(grant))).setProtectedHeader({ alg: 'ES256', kid, typ }).sign(key);
  const verify = (key: unknown) => jose.compactVerify(token, key, { algorithms: ['ES256'] });
  cases['sign    jose    (CompactSign, KeyObject)'] = () => sign(privateKey);
  cases['sign    jose    (CompactSign, CryptoKey)'] = () => sign(cryptoPriv);
  cases['verify  jose    (compactVerify, key by kid)'] = () => verify(async (h: { kid: string }) => getKey(h.kid));
  cases['verify  jose    (compactVerify, CryptoKey)'] = () => verify(cryptoPub);
}

const cpu: Record<string, number[]> = {};
const wall: Record<string, number[]> = {};
for (const fn of Object.values(cases)) for (let i = 0; i < 300; i++) await fn();
for (let r = 0; r < rounds; r++) {
  for (const [name, fn] of Object.entries(cases)) {
    let ops = 0;
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    while (performance.now() - t0 < ms) {
      await fn();
      ops++;
    }
    const c = process.cpuUsage(c0);
    (cpu[name] ??= []).push((c.user + c.system) / ops);
    (wall[name] ??= []).push((ops * 1000) / (performance.now() - t0));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
console.log(`node ${process.version}, ${jose ? 'jose installed' : 'jose not installed (npm install --no-save jose)'}, ${rounds} interleaved rounds x ${ms} ms, medians`);
console.log(`${'case'.padEnd(46)} ${'CPU µs/op'.padStart(10)} ${'wall ops/s'.padStart(11)}`);
for (const name of Object.keys(cases)) console.log(`${name.padEnd(46)} ${median(cpu[name] ?? []).toFixed(1).padStart(10)} ${String(Math.round(median(wall[name] ?? []))).padStart(11)}`);
