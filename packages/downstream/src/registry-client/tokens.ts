/**
 * Bearer tokens of the distribution token flow: what a token service answers, and a cache of tokens by
 * realm, service and scope that honours their `expires_in` and fetches each one once however many
 * requests wait for it.
 */
import type { TokenRealm } from './realm.js';

/** A token service's answer read: the token and its lifetime, or why there is none. */
export type TokenAnswer = { readonly token: string; readonly expiresIn?: number } | { readonly invalid: 'not-json' | 'no-token' };

/** Reads a token service's 200 body: `token` (or OAuth2's `access_token`) and `expires_in`. */
export function tokenAnswerOf(body: Buffer | string): TokenAnswer {
  let json: { token?: unknown; access_token?: unknown; expires_in?: unknown };
  try {
    json = JSON.parse(body.toString()) as typeof json;
    if (typeof json !== 'object' || json === null) return { invalid: 'no-token' };
  } catch {
    return { invalid: 'not-json' };
  }
  const token = typeof json.token === 'string' ? json.token : typeof json.access_token === 'string' ? json.access_token : undefined;
  if (!token) return { invalid: 'no-token' };
  return { token, ...(typeof json.expires_in === 'number' && json.expires_in > 0 ? { expiresIn: json.expires_in } : {}) };
}

/** The spec's lifetime of a token whose answer gives none, in seconds. */
const DEFAULT_LIFETIME_S = 60;

interface CachedToken {
  readonly token: string;
  readonly expiresAt: number;
}

/** Tokens cached past this many entries have the expired ones dropped. */
const PRUNE_AT = 10_000;

/**
 * Tokens by (realm, service, scope). A token is reused until shortly before it expires (a tenth of its
 * lifetime early, at most 10 s) so that it never expires in flight; concurrent requests for the same key
 * share one fetch.
 */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Tokens held (expired ones included until pruned). */
  get size(): number {
    return this.tokens.size;
  }

  /**
   * A valid token for `scope` at `realm`: cached, being fetched, or fetched now with `fetch` (which resolves
   * with the token and its `expires_in` in seconds, and rejects to fail every waiter).
   */
  get(realm: TokenRealm, scope: string, fetch: () => Promise<{ token: string; expiresIn?: number }>): Promise<string> {
    const key = keyOf(realm, scope);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > this.now()) return Promise.resolve(cached.token);
    const running = this.pending.get(key);
    if (running) return running;
    const started = this.now();
    const p = fetch()
      .then(({ token, expiresIn }) => {
        const lifetimeMs = (expiresIn !== undefined && expiresIn > 0 ? expiresIn : DEFAULT_LIFETIME_S) * 1000;
        this.tokens.set(key, { token, expiresAt: started + lifetimeMs - Math.min(10_000, lifetimeMs / 10) });
        if (this.tokens.size > PRUNE_AT) this.prune();
        return token;
      })
      .finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  /** Forgets the token for `scope` at `realm` (it was refused). */
  delete(realm: TokenRealm, scope: string): void {
    this.tokens.delete(keyOf(realm, scope));
  }

  private prune(): void {
    const now = this.now();
    for (const [key, t] of this.tokens) if (t.expiresAt <= now) this.tokens.delete(key);
  }
}

function keyOf(realm: TokenRealm, scope: string): string {
  return JSON.stringify([realm.realm, realm.service ?? '', scope]);
}
