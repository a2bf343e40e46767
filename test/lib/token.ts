/**
 * A Cascade registry in `auth.token` mode with its own token server: an origin that wants Bearer tokens,
 * as Docker Hub, ghcr.io or quay.io do.
 */
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { startCascade, type CascadeProcess } from './cascade.js';
import { freePort } from './peers.js';

export const SERVICE = 'cascade-e2e';
export const ISSUER = 'cascade-e2e-token';
export const USERS = { alice: 'alice-Passw0rd', bob: 'bob-Passw0rd' } as const;

/** alice pushes anywhere in team/ and public/; bob only pulls team/; anonymous only pulls public/. */
export const ACCESS = [
  { account: 'alice', name: 'team/*', actions: ['pull', 'push'] },
  { account: 'alice', name: 'public/*', actions: ['pull', 'push'] },
  { account: 'bob', name: 'team/*', actions: ['pull'] },
  { account: 'anonymous', name: 'public/*', actions: ['pull'] },
];

export const creds = (user: keyof typeof USERS) => `${user}:${USERS[user]}`;

/** Writes an EC P-256 signing key (so ES256 tokens) into `dir`; returns its path. */
export async function writeSigningKey(dir: string): Promise<string> {
  const file = join(dir, 'token-signing.pem');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return file;
}

/** Writes the bcrypt users file into `dir`; returns its path. */
export async function writeUsers(dir: string): Promise<string> {
  const file = join(dir, 'htpasswd');
  await writeFile(file, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}\n`).join(''));
  return file;
}

/**
 * Starts Cascade with `auth.token` on a port picked in advance, because the realm clients are sent to must
 * name it. Another process can take the port in between, so a bind failure is retried.
 */
export async function startTokenCascade(dir: string, token: Record<string, unknown>): Promise<{ proc: CascadeProcess; realm: string }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const realm = `http://127.0.0.1:${port}/auth/token`;
    try {
      const proc = await startCascade(dir, {
        storage: { filesystem: { rootdirectory: join(dir, 'data') } },
        http: { addr: `127.0.0.1:${port}` },
        auth: { token: { realm, service: SERVICE, issuer: ISSUER, ...token } },
        log: { level: 'debug' },
      });
      return { proc, realm };
    } catch (err) {
      if (attempt < 3 && /EADDRINUSE/.test(String(err))) continue;
      throw err;
    }
  }
}

