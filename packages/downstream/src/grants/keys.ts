/**
 * The server's grant signing keys, one PKCS#8 PEM file per key in a directory. The files are the whole
 * state: which key is active and when an old key may go are read from their modification times, so a
 * restart neither forgets a rotation nor resets its clock.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertEs256Key, JwsError, jwkThumbprint, publicJwk, type Jwks, type PublicJwk } from '@cascade/registry-core';

/**
 * The longest lifetime a grant may have, in seconds. The signer refuses longer ones and verifiers refuse
 * grants that claim one, which is what lets a retired key be deleted at a known time.
 */
export const MAX_GRANT_TTL_SECONDS = 600;

/**
 * How long a superseded key stays published by default: twice the longest grant lifetime, so every grant it
 * signed has expired (with room for clock skew and for caches that fetched the key set late).
 */
export const DEFAULT_RETIRE_AFTER_MS = 2 * MAX_GRANT_TTL_SECONDS * 1000;

/** A signing key of the store. */
export interface SigningKey {
  /** RFC 7638 thumbprint of the public key. */
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** When the key was created (its file's modification time), epoch ms. */
  readonly createdAt: number;
  /** The key's file (or, for keys not in a folder, its `ref` in the backend). */
  readonly file: string;
}

/** One stored key, as a {@link GrantKeyBackend} keeps it. */
export interface StoredGrantKey {
  /** The private key, PEM (PKCS#8, or SEC1 for EC keys). */
  readonly pem: string;
  /** When it was created, epoch ms: the newest key signs. */
  readonly createdAt: number;
  /** Names it in messages and for {@link GrantKeyBackend.remove}: its file, or `<store>:<kid>`. */
  readonly ref: string;
}

/** Where a {@link GrantKeyStore} keeps its keys: a folder ({@link FolderKeyBackend}) or a database. */
export interface GrantKeyBackend {
  /** Every stored key. */
  list(): Promise<StoredGrantKey[]>;
  /** Stores a new key (nothing when `kid` is stored already); resolves with its `ref`. */
  add(kid: string, pem: string, createdAt: number): Promise<string>;
  /** Deletes a stored key (nothing when it is gone already). */
  remove(ref: string): Promise<void>;
}

/** Options of {@link GrantKeyStore.open}. */
export interface GrantKeyStoreOptions {
  /** The key directory; created (mode 0700) when missing. One of `dir` and `backend`. */
  readonly dir?: string;
  /** Where the keys are kept instead of a directory (a state database shared by several servers). */
  readonly backend?: GrantKeyBackend;
  /**
   * The longest lifetime of the grants this store's keys sign, in ms (default and at most
   * {@link MAX_GRANT_TTL_SECONDS}): sets the default of `retireAfterMs`.
   */
  readonly maxGrantTtlMs?: number;
  /**
   * How long a superseded key stays published after its successor became active (default twice
   * `maxGrantTtlMs`, {@link DEFAULT_RETIRE_AFTER_MS}).
   */
  readonly retireAfterMs?: number;
  /**
   * How long a new key is published before it signs (default 0): every server sharing the directory, and
   * every cache down a chain, then knows it before the first grant it signs arrives. The first key of an
   * empty directory signs at once.
   */
  readonly activationDelayMs?: number;
  /** {@link GrantKeyStore.maintain} creates a new key once the newest is this old (default: never). */
  readonly rotateAfterMs?: number;
  /** Clock, epoch ms (default Date.now). */
  readonly now?: () => number;
}

const KEY_FILE = /^[^.].*\.pem$/;
const TEMP_FILE = /^\..*\.pem\.tmp-[0-9a-f]+$/;

/**
 * Keys as files of a directory: every `*.pem` file is a key, created when its file was last modified. New
 * keys are written as `<kid>.pem`, mode 0600, atomically (temporary file, then rename); temporary files left
 * by a crash are removed when the directory is read.
 */
export class FolderKeyBackend implements GrantKeyBackend {
  constructor(readonly dir: string) {}

  async list(): Promise<StoredGrantKey[]> {
    const keys: StoredGrantKey[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      const file = join(this.dir, name);
      if (TEMP_FILE.test(name)) {
        await rm(file, { force: true });
        continue;
      }
      if (!KEY_FILE.test(name)) continue;
      // Rounded: utimes takes seconds, and the float trip can move the time by a fraction of a millisecond.
      keys.push({ pem: await readFile(file, 'utf8'), createdAt: Math.round((await stat(file)).mtimeMs), ref: file });
    }
    return keys;
  }

  async add(kid: string, pem: string, createdAt: number): Promise<string> {
    const file = join(this.dir, `${kid}.pem`);
    const temp = join(this.dir, `.${kid}.pem.tmp-${randomBytes(4).toString('hex')}`);
    await writeFile(temp, pem, { mode: 0o600, flag: 'wx' });
    // The time is set before the rename, so the key never appears with the wrong time.
    await utimes(temp, createdAt / 1000, createdAt / 1000);
    await rename(temp, file);
    return file;
  }

  async remove(ref: string): Promise<void> {
    await rm(ref, { force: true });
  }
}

/**
 * Loads, creates and rotates the ES256 keys grants are signed with.
 *
 * The keys live in a directory ({@link FolderKeyBackend}: every `*.pem` file is a key) or in another
 * {@link GrantKeyBackend}. Every key must be EC P-256 (PKCS#8 or SEC1; another kind stops
 * {@link GrantKeyStore.open} with an error naming it). The newest key that has been published for
 * `activationDelayMs` signs; the others stay published until `retireAfterMs` after the key that replaced them
 * became active, then are deleted.
 *
 * Servers sharing the keys see each other's at their next {@link GrantKeyStore.maintain}: with an
 * activation delay longer than the time between two calls, no server signs with a key another has not
 * published yet.
 *
 * @example
 * const store = await GrantKeyStore.open({ dir: '/var/lib/cascade/grant-keys' });
 * const signer = new GrantSigner({ issuer: 'https://dtr.example.com', keys: store });
 * app.get('/api/v0/keys', () => store.jwks());
 */
export class GrantKeyStore {
  private keys: SigningKey[] = [];
  private readonly now: () => number;
  private readonly retireAfterMs: number;
  private readonly activationDelayMs: number;
  private readonly rotateAfterMs: number | undefined;

  private constructor(
    private readonly backend: GrantKeyBackend,
    /** Where the keys are, for messages. */
    private readonly where: string,
    options: GrantKeyStoreOptions,
  ) {
    this.now = options.now ?? Date.now;
    const maxTtlMs = options.maxGrantTtlMs ?? MAX_GRANT_TTL_SECONDS * 1000;
    if (!(maxTtlMs > 0 && maxTtlMs <= MAX_GRANT_TTL_SECONDS * 1000)) {
      throw new Error(`grant keys: maxGrantTtlMs must be greater than 0 and at most ${MAX_GRANT_TTL_SECONDS * 1000} (${MAX_GRANT_TTL_SECONDS} s), got ${maxTtlMs}`);
    }
    this.retireAfterMs = options.retireAfterMs ?? 2 * maxTtlMs;
    if (!(this.retireAfterMs >= 0)) throw new Error(`grant keys: retireAfterMs must be a non-negative number, got ${this.retireAfterMs}`);
    this.activationDelayMs = options.activationDelayMs ?? 0;
    if (!(this.activationDelayMs >= 0)) throw new Error(`grant keys: activationDelayMs must be a non-negative number, got ${this.activationDelayMs}`);
    this.rotateAfterMs = options.rotateAfterMs;
    if (this.rotateAfterMs !== undefined && !(this.rotateAfterMs > this.activationDelayMs)) {
      throw new Error(`grant keys: rotateAfterMs must be longer than the activation delay (${this.activationDelayMs} ms), got ${this.rotateAfterMs}`);
    }
  }

  /**
   * Opens the store: loads every key, creates a P-256 key when there is none, and deletes the keys whose
   * retirement time has passed (and, in a directory, temporary files left by a crash).
   */
  static async open(options: GrantKeyStoreOptions): Promise<GrantKeyStore> {
    let store: GrantKeyStore;
    if (options.backend) store = new GrantKeyStore(options.backend, 'the key store', options);
    else if (options.dir !== undefined) {
      await mkdir(options.dir, { recursive: true, mode: 0o700 });
      store = new GrantKeyStore(new FolderKeyBackend(options.dir), options.dir, options);
    } else throw new Error('grant keys: give a directory (dir) or a backend');
    await store.load();
    if (store.keys.length === 0) await store.create();
    await store.retire();
    return store;
  }

  /**
   * The key new grants are signed with: the newest one published for at least the activation delay (the
   * oldest key while none is, as for the first key of a directory).
   */
  active(): SigningKey {
    const now = this.now();
    // Without a delay the newest signs, even when its time is ahead of this clock (a file from elsewhere).
    const key = (this.activationDelayMs === 0 ? this.keys.at(-1) : this.keys.findLast((k) => now - k.createdAt >= this.activationDelayMs)) ?? this.keys[0];
    // open() guarantees a key; only an outside deletion plus a reload could get here.
    if (key === undefined) throw new Error(`grant keys: no signing key in ${this.where}`);
    return key;
  }

  /** The public key `kid` while it is published (active or not yet retired), else undefined. */
  publicKey(kid: string): KeyObject | undefined {
    return this.published().find((k) => k.kid === kid)?.publicKey;
  }

  /** The published keys as a JWKS, active key first: the body of `/api/v0/keys`. */
  jwks(): Jwks {
    const keys: PublicJwk[] = this.published()
      .reverse()
      .map((k) => publicJwk(k.publicKey));
    return { keys };
  }

  /**
   * Creates a new key, which becomes active at once. The previous keys stay published, so grants they
   * signed keep verifying, until `retireAfterMs` from now.
   */
  async rotate(): Promise<SigningKey> {
    const key = await this.create();
    await this.retire();
    return key;
  }

  /**
   * Deletes the keys whose retirement time has passed and returns their kids. Cheap when there is nothing
   * to do; call it periodically (a retired key is unpublished at once, this only removes its file).
   */
  async retire(): Promise<string[]> {
    const published = new Set(this.published());
    const retired = this.keys.filter((k) => !published.has(k));
    for (const key of retired) await this.backend.remove(key.file);
    this.keys = this.keys.filter((k) => published.has(k));
    return retired.map((k) => k.kid);
  }

  /**
   * Keeps the store in step with its backend, for a server that runs for months or shares its keys:
   * re-reads them (keys another server or an operator added), creates a new key when the newest is older than
   * `rotateAfterMs`, and deletes retired keys. Call it periodically; keys that cannot be read leave the keys
   * already loaded in use (the error is thrown for the caller to log).
   */
  async maintain(): Promise<{ created?: string; retired: string[] }> {
    const previous = this.keys;
    try {
      await this.load();
    } catch (err) {
      this.keys = previous;
      throw err;
    }
    if (this.keys.length === 0) this.keys = previous;
    let created: string | undefined;
    const newest = this.keys[this.keys.length - 1];
    if (this.rotateAfterMs !== undefined && newest !== undefined && this.now() - newest.createdAt >= this.rotateAfterMs) created = (await this.create()).kid;
    const retired = await this.retire();
    return { ...(created ? { created } : {}), retired };
  }

  /**
   * Keys not yet retired, oldest first. A key retires `retireAfterMs` after its successor became active
   * (was created, plus the activation delay); keys not yet active are published already.
   */
  private published(): SigningKey[] {
    const now = this.now();
    return this.keys.filter((key, i) => {
      const successor = this.keys[i + 1];
      return successor === undefined || now - (successor.createdAt + this.activationDelayMs) < this.retireAfterMs;
    });
  }

  private async load(): Promise<void> {
    const byKid = new Map<string, SigningKey>();
    for (const stored of await this.backend.list()) {
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey(stored.pem);
        assertEs256Key(privateKey);
      } catch (err) {
        const reason = err instanceof JwsError ? err.message : 'not a PEM private key';
        throw new Error(`grant keys: ${stored.ref}: ${reason} (expected an EC P-256 private key, e.g. from "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")`);
      }
      const publicKey = createPublicKey(privateKey);
      const kid = jwkThumbprint(publicKey);
      const { createdAt } = stored;
      const previous = byKid.get(kid);
      // The same key under two names (a copy): keep the newer file's time, since that is when it was (re)activated.
      if (previous === undefined || createdAt > previous.createdAt) byKid.set(kid, { kid, privateKey, publicKey, createdAt, file: stored.ref });
    }
    // Ties (coarse file times) are broken by kid so that every process picks the same active key.
    this.keys = [...byKid.values()].sort((a, b) => a.createdAt - b.createdAt || (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0));
  }

  private async create(): Promise<SigningKey> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = jwkThumbprint(publicKey);
    const newest = this.keys[this.keys.length - 1];
    // Strictly newer than the newest key, so the new key is the active one even with a coarse or stepped clock.
    const createdAt = Math.max(this.now(), newest === undefined ? 0 : newest.createdAt + 1);
    const file = await this.backend.add(kid, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, createdAt);
    const key: SigningKey = { kid, privateKey, publicKey, createdAt, file };
    this.keys = [...this.keys.filter((k) => k.kid !== kid), key];
    return key;
  }
}
