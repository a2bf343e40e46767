/**
 * What Cascade's token server grants: the scopes a client asks for (`repository:team/app:pull,push`),
 * intersected with the `auth.token.access` rules.
 *
 * Semantics (docs/configuration.md, "auth.token"):
 * - Rules are read in order, separately for each resource asked for; the **first rule that matches** the
 *   account and the resource decides which actions are allowed on it, and later rules are not consulted.
 *   A rule with `actions: []` therefore denies, and specific rules go before general ones.
 * - `account` is a user name, `*` (any authenticated user) or `anonymous` (a request without credentials;
 *   `*` does not match it).
 * - `name` is a glob: `*` matches any run of characters, `/` included, so `team/*` covers `team/app` and
 *   `team/sub/app`, and `*` every repository. `${account}` stands for the requesting user's name (never
 *   matched by anonymous requests).
 * - `type: repository` (the default) rules grant repositories; `type: registry` rules grant the catalog
 *   (`registry:catalog:*`), so that a repository glob never lists every repository.
 * - Granted = requested ∩ allowed, never more; `*` allowed grants whatever was asked, while `*` asked is
 *   only granted by a rule allowing `*`.
 */
import { validateName } from '../../names.js';
import type { ResourceActions } from './jwt.js';

/** The account name rules use for requests without credentials. */
export const ANONYMOUS = 'anonymous';

/** One access rule (the shape of an `auth.token.access` entry). */
export interface AccessRule {
  /** A user, `*` (any authenticated user) or `anonymous`. */
  readonly account: string;
  /** `repository` (default) or `registry`. */
  readonly type?: 'repository' | 'registry';
  /** Glob of resource names. */
  readonly name: string;
  /** Allowed actions: `pull`, `push`, `delete`, `*`. */
  readonly actions: readonly string[];
}

/** A `scope` parameter that is not `type[(class)]:name:actions`. */
export class ScopeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScopeError';
  }
}

const RESOURCE_TYPE = /^([a-z0-9]+)(?:\([a-z0-9]+\))?$/;

/**
 * Parses one `scope` parameter value: scopes separated by spaces, each `type[(class)]:name:actions`. The
 * name may itself contain `:` (a host with a port), so the type ends at the first `:` and the actions
 * start after the last one, as in the token spec's grammar.
 *
 * @throws ScopeError naming the malformed scope.
 * @example parseScopes('repository:team/app:pull,push registry:catalog:*')
 */
export function parseScopes(value: string): ResourceActions[] {
  const out: ResourceActions[] = [];
  for (const scope of value.split(' ')) {
    if (scope === '') continue;
    const first = scope.indexOf(':');
    const last = scope.lastIndexOf(':');
    const typeMatch = first < 0 ? null : RESOURCE_TYPE.exec(scope.slice(0, first));
    const name = scope.slice(first + 1, last);
    if (typeMatch === null || last <= first || name === '') {
      throw new ScopeError(`scope ${JSON.stringify(scope.slice(0, 200))} is not of the form type:name:actions`);
    }
    out.push({ type: typeMatch[1] ?? '', name, actions: scope.slice(last + 1).split(',').filter((a) => a !== '') });
  }
  return out;
}

/** Merges scopes that name the same resource into one, actions united, in first-seen order. */
export function mergeScopes(scopes: readonly ResourceActions[]): ResourceActions[] {
  const merged = new Map<string, { type: string; name: string; actions: Set<string> }>();
  for (const s of scopes) {
    const key = `${s.type}\u0000${s.name}`;
    const entry = merged.get(key) ?? { type: s.type, name: s.name, actions: new Set<string>() };
    for (const a of s.actions) entry.actions.add(a);
    merged.set(key, entry);
  }
  return [...merged.values()].map((e) => ({ type: e.type, name: e.name, actions: [...e.actions] }));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * True when `name` matches the rule glob `pattern`: `*` is any run of characters (`/` included), `${account}`
 * the account (a pattern with it never matches when `account` is undefined), everything else literal.
 */
export function globMatches(pattern: string, name: string, account: string | undefined): boolean {
  const pieces = pattern.split('${account}');
  if (pieces.length > 1 && account === undefined) return false;
  const source = pieces.map((piece) => piece.split('*').map(escapeRegExp).join('.*')).join(escapeRegExp(account ?? ''));
  return new RegExp(`^${source}$`, 's').test(name);
}

function accountMatches(ruleAccount: string, account: string | undefined): boolean {
  if (ruleAccount === ANONYMOUS) return account === undefined;
  if (account === undefined) return false;
  return ruleAccount === '*' || ruleAccount === account;
}

/** Names outside the repository grammar are never granted: `team/*` must not cover `team/../other`. */
function isRepositoryName(name: string): boolean {
  try {
    validateName(name);
    return true;
  } catch {
    return false;
  }
}

/** The access rules of `auth.token.access`, evaluated as the module comment describes. */
export class AccessRules {
  constructor(private readonly rules: readonly AccessRule[]) {}

  /**
   * The actions the first matching rule allows `account` (undefined: anonymous) on the resource; empty
   * when no rule matches.
   */
  allowed(account: string | undefined, type: string, name: string): readonly string[] {
    if (type !== 'repository' && type !== 'registry') return [];
    if (type === 'repository' && !isRepositoryName(name)) return [];
    for (const rule of this.rules) {
      if ((rule.type ?? 'repository') !== type) continue;
      if (!accountMatches(rule.account, account) || !globMatches(rule.name, name, account)) continue;
      return rule.actions;
    }
    return [];
  }

  /**
   * What to put in a token for `requested`: for each resource, the requested actions the rules allow.
   * Resources with nothing granted are left out.
   */
  grant(account: string | undefined, requested: readonly ResourceActions[]): ResourceActions[] {
    const granted: ResourceActions[] = [];
    for (const r of mergeScopes(requested)) {
      const allowed = this.allowed(account, r.type, r.name);
      const actions = allowed.includes('*') ? r.actions : r.actions.filter((a) => allowed.includes(a));
      if (actions.length > 0) granted.push({ type: r.type, name: r.name, actions: [...actions] });
    }
    return granted;
  }
}
