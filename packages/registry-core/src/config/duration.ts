/**
 * The two duration syntaxes found in registry configuration files.
 *
 * - Go durations (`10s`, `1h30m`, `300ms`), used by distribution for every `time.Duration` key
 *   (`http.draintimeout`, `health.*.interval`, `proxy.ttl`, ...).
 * - DTR durations (`24h`, `1500ms`, `86400000000000`), used by the `downstream` middleware's `blobttl`:
 *   one positive integer with an optional unit, and no unit means nanoseconds.
 */

/** Nanoseconds per unit of a Go duration. Go accepts both micro signs for microseconds. */
const GO_UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  'µs': 1e3, // U+00B5 MICRO SIGN
  'μs': 1e3, // U+03BC GREEK SMALL LETTER MU
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** What a Go duration looks like, for messages that report a malformed one. */
export const GO_DURATION_EXPECTED = 'a Go duration such as "10s", "1h30m" or "300ms" (numbers with units ns, us, ms, s, m, h)';

/** One `<number><unit>` component of a Go duration; the unit alternatives are longest first. */
const GO_COMPONENT = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * Parses a Go duration string (`time.ParseDuration` syntax) and returns it in milliseconds, possibly
 * fractional (`"300us"` is `0.3`) and possibly negative (`"-1s"` is `-1000`), exactly as Go does.
 * `"0"` is the only value allowed without a unit.
 *
 * @throws Error whose message states what was expected, when `s` is not a Go duration.
 * @example parseGoDuration('1h30m') // 5_400_000
 */
export function parseGoDuration(s: string): number {
  const fail = (): never => {
    throw new Error(`invalid duration ${JSON.stringify(s)}: expected ${GO_DURATION_EXPECTED}`);
  };
  let rest = s;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest.startsWith('-')) sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') fail();
  let totalNs = 0;
  GO_COMPONENT.lastIndex = 0;
  while (GO_COMPONENT.lastIndex < rest.length) {
    const at = GO_COMPONENT.lastIndex;
    const m = GO_COMPONENT.exec(rest);
    if (m === null || m.index !== at) fail();
    const [, amount = '', unit = ''] = m ?? [];
    const perUnit = GO_UNIT_NS[unit];
    if (perUnit === undefined) fail();
    totalNs += Number(amount) * (perUnit ?? 0);
  }
  // Go rejects durations that overflow int64 nanoseconds (about 292 years).
  if (totalNs > 9.223372036854775e18) {
    throw new Error(`invalid duration ${JSON.stringify(s)}: expected at most about 292 years (2562047h), got more`);
  }
  return (sign * totalNs) / 1e6;
}

/** Nanoseconds per unit of a DTR duration. */
const DTR_UNIT_NS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const DTR_DURATION_EXPECTED = 'a positive integer with an optional unit ns, us, ms, s, m or h (no unit means nanoseconds), such as "24h", "30m", "1500ms" or 86400000000000';

/**
 * Parses a DTR duration (the `blobttl` of the `downstream` middleware): a positive integer followed by an
 * optional unit `ns|us|ms|s|m|h`, where no unit means nanoseconds. Numbers (YAML integers) are accepted when
 * they are positive safe integers. Compound forms such as `1h30m` are not DTR syntax and are rejected.
 *
 * @returns the duration in nanoseconds.
 * @throws Error whose message states what was expected, when `value` is not a DTR duration.
 * @example parseDtrDuration('24h') // 86_400_000_000_000n
 */
export function parseDtrDuration(value: string | number): bigint {
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  const fail = (why = ''): never => {
    throw new Error(`invalid duration ${shown}: expected ${DTR_DURATION_EXPECTED}${why}`);
  };
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value <= 0) fail();
    // Beyond 2^53 a YAML number has already lost digits; the string form keeps them all.
    if (!Number.isSafeInteger(value)) fail('; this number is too large to be exact, write it with a unit or quote it');
    return BigInt(value);
  }
  const m = /^(\d+)(ns|us|ms|s|m|h)?$/.exec(value);
  if (m === null) fail();
  const [, digits = '', unit = 'ns'] = m ?? [];
  const ns = BigInt(digits) * (DTR_UNIT_NS[unit] ?? 1n);
  if (ns <= 0n) fail();
  return ns;
}
