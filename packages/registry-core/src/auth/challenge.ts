/**
 * `WWW-Authenticate` challenges (RFC 9110 §11.6.1), as registries send them: `Basic realm="Registry"`,
 * `Bearer realm="https://auth.example/token",service="registry",scope="repository:team/app:pull"`, or several
 * in one header. The one parser of the project: the mirror's remotes, the server's origin, prefetch and
 * doctor read challenges with it.
 */

/** One challenge: its scheme (lower-cased) and its parameters (names lower-cased, values unquoted). */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** A Basic or Bearer challenge. */
export interface RegistryChallenge extends Challenge {
  readonly scheme: 'basic' | 'bearer';
}

/** RFC 9110's `token` characters (sticky: matched where the parser stands, no copy of the rest). */
const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;
/** An unquoted parameter value: a token by the grammar, but registries also send unquoted URLs. */
const BARE_VALUE = /[^\s,"]*/y;

/**
 * Every challenge of a header value, in order. Parameters are `name=value` or `name="quoted \"value\""`,
 * separated by commas; a challenge starts at a token that is not followed by `=`. A `token68` (Negotiate's
 * opaque blob) is kept as the parameter `token68`. Never throws: what cannot be read is skipped.
 */
export function parseChallenges(header: string | undefined): Challenge[] {
  const s = header ?? '';
  const challenges: Challenge[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const read = (pattern: RegExp): string | undefined => {
    pattern.lastIndex = i;
    const m = pattern.exec(s);
    if (!m || m[0] === '') return undefined;
    i += m[0].length;
    return m[0];
  };
  while (i < s.length) {
    skipSpace();
    if (s[i] === ',') {
      i++;
      continue;
    }
    const scheme = read(TOKEN);
    if (scheme === undefined) {
      i++;
      continue;
    }
    const params: Record<string, string> = {};
    for (;;) {
      skipSpace();
      const start = i;
      const name = read(TOKEN);
      if (name === undefined) break;
      skipSpace();
      if (s[i] !== '=') {
        // The next challenge's scheme.
        i = start;
        break;
      }
      if (s[i + 1] === '=') {
        // token68: `abc==` (the '=' are padding, not a parameter).
        while (s[i] === '=') i++;
        params.token68 = s.slice(start, i).trim();
      } else {
        i++;
        skipSpace();
        params[name.toLowerCase()] = s[i] === '"' ? readQuoted() : (read(BARE_VALUE) ?? '');
      }
      skipSpace();
      if (s[i] !== ',') break;
      i++;
    }
    challenges.push({ scheme: scheme.toLowerCase(), params });
  }
  return challenges;

  function readQuoted(): string {
    let value = '';
    i++;
    while (i < s.length && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < s.length) i++;
      value += s[i];
      i++;
    }
    i++;
    return value;
  }
}

/** The first Basic or Bearer challenge of a header value, or undefined when it has none. */
export function parseChallenge(header: string | undefined): RegistryChallenge | undefined {
  return parseChallenges(header).find((c): c is RegistryChallenge => c.scheme === 'basic' || c.scheme === 'bearer');
}
