/**
 * Which content cache serves a blob request, and the IP address and CIDR arithmetic that takes.
 *
 * Precedence, first match wins:
 *  1. the user's own setting (`PATCH /api/v0/accounts/{user}/settings`), DTR's only rule;
 *  2. the namespace rule with the longest namespace that contains the repository (`team/sub` before `team`);
 *  3. the network rule with the longest prefix that contains the client address (IPv4-mapped IPv6
 *     addresses such as `::ffff:10.1.2.3` are matched as the IPv4 address they carry);
 *  4. the default cache;
 *  5. none: the server serves the blob itself.
 *
 * A rule whose cache was deleted concurrently is skipped, so the request falls through to the next step.
 */
import type { ContentCache, StateRepository } from './repository.js';

/** The request a cache is selected for. */
export interface SelectionRequest {
  /** The authenticated user; undefined for an anonymous pull. */
  readonly user?: string | undefined;
  /** The repository name, such as `team/sub/app`. */
  readonly repository?: string | undefined;
  /** The client's address as the socket (or a trusted proxy header) reports it. */
  readonly clientIp?: string | undefined;
}

/** Which step of the precedence chose the cache. */
export type SelectionSource = 'user' | 'namespace' | 'network' | 'default' | 'none';

/** The selected cache and why; for logs and metrics. */
export interface CacheSelection {
  readonly cache: ContentCache | undefined;
  readonly source: SelectionSource;
  /** The namespace or CIDR of the rule that matched, for `namespace` and `network`. */
  readonly rule?: string;
}

/**
 * The content cache a blob request is redirected to, or undefined when the server serves the blob itself.
 * See the module comment for the precedence.
 */
export async function selectCache(state: StateRepository, request: SelectionRequest): Promise<ContentCache | undefined> {
  return (await explainCacheSelection(state, request)).cache;
}

/** {@link selectCache}, with the step and the rule that decided. */
export async function explainCacheSelection(state: StateRepository, request: SelectionRequest): Promise<CacheSelection> {
  if (request.user !== undefined && request.user !== '') {
    const { contentCacheUUID } = await state.getSettings(request.user);
    const cache = contentCacheUUID === null ? undefined : await state.get(contentCacheUUID);
    if (cache !== undefined) return { cache, source: 'user' };
  }

  if (request.repository !== undefined && request.repository !== '') {
    const rule = longestNamespaceMatch(await state.listNamespaceRules(), request.repository);
    const cache = rule === undefined ? undefined : await state.get(rule.cacheId);
    if (rule !== undefined && cache !== undefined) return { cache, source: 'namespace', rule: rule.namespace };
  }

  const address = request.clientIp === undefined ? undefined : parseIp(request.clientIp, { allowZone: true });
  if (address !== undefined) {
    const rule = longestNetworkMatch(await state.listNetworkRules(), address);
    const cache = rule === undefined ? undefined : await state.get(rule.cacheId);
    if (rule !== undefined && cache !== undefined) return { cache, source: 'network', rule: rule.cidr };
  }

  const fallback = await state.getDefaultCache();
  if (fallback !== undefined) return { cache: fallback, source: 'default' };
  return { cache: undefined, source: 'none' };
}

/**
 * The rule with the longest namespace that contains `repository` by whole path components: `team` contains
 * `team` and `team/app`, but not `teamwork/app`.
 */
export function longestNamespaceMatch<R extends { readonly namespace: string }>(rules: readonly R[], repository: string): R | undefined {
  let best: R | undefined;
  for (const rule of rules) {
    const contains = repository === rule.namespace || repository.startsWith(`${rule.namespace}/`);
    if (contains && (best === undefined || rule.namespace.length > best.namespace.length)) best = rule;
  }
  return best;
}

/** The rule with the longest prefix whose network contains `address`; rules that do not parse never match. */
export function longestNetworkMatch<R extends { readonly cidr: string }>(rules: readonly R[], address: IpAddress): R | undefined {
  let best: { rule: R; prefix: number } | undefined;
  for (const rule of rules) {
    const network = parseCidr(rule.cidr);
    if (network === undefined || !cidrContains(network, address)) continue;
    if (best === undefined || network.prefix > best.prefix) best = { rule, prefix: network.prefix };
  }
  return best?.rule;
}

// ---------------------------------------------------------------------------------------------------------
// Addresses and networks. Small and strict on purpose: a rule that means something other than what the
// admin typed (octal "010", a stray zone) would send users to the wrong cache without a word.

/** An IP address as a number: 32 bits for IPv4, 128 for IPv6. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly value: bigint;
}

/** A network: the address with its host bits cleared, and the prefix length. */
export interface Cidr extends IpAddress {
  readonly prefix: number;
}

/** Options of {@link parseIp}. */
export interface ParseIpOptions {
  /**
   * Accept and drop an IPv6 zone (`fe80::1%eth0`), as socket addresses of link-local peers carry one.
   * Off for rules, where a zone would be meaningless.
   */
  readonly allowZone?: boolean;
}

const IPV4_PART = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;
const PREFIX = /^(?:0|[1-9][0-9]{0,2})$/;
const MAPPED_PREFIX = 0xffffn << 32n; // ::ffff:0:0/96
const MAPPED_MASK = ~((1n << 32n) - 1n) & ((1n << 128n) - 1n);

/** The bit width of a family. */
function width(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

function parseIpv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are refused: inet_aton reads "010" as octal 8, other parsers as decimal 10.
    if (!IPV4_PART.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  const groupsOf = (half: string | undefined): string[] => (half === undefined || half === '' ? [] : half.split(':'));
  const head = groupsOf(halves[0]);
  const tail = groupsOf(halves[1]);

  // A dotted quad as the very last group stands for the last two words (::ffff:1.2.3.4, 64:ff9b::1.2.3.4).
  const lastGroups = compressed ? tail : head;
  let ipv4: bigint | undefined;
  if (lastGroups.at(-1)?.includes('.') === true) {
    ipv4 = parseIpv4(lastGroups.pop() ?? '');
    if (ipv4 === undefined) return undefined;
  }
  for (const group of [...head, ...tail]) if (!IPV6_GROUP.test(group)) return undefined;

  const explicit = head.length + tail.length + (ipv4 === undefined ? 0 : 2);
  // "::" stands for at least one zero word; without it, all eight must be written.
  if (compressed ? explicit > 7 : explicit !== 8) return undefined;
  const words = [...head.map((g) => parseInt(g, 16)), ...new Array<number>(8 - explicit).fill(0), ...tail.map((g) => parseInt(g, 16))];

  let value = 0n;
  for (const word of words) value = (value << 16n) | BigInt(word);
  if (ipv4 !== undefined) value = (value << 32n) | ipv4;
  return value;
}

/**
 * Parses an IPv4 (dotted quad, no leading zeros) or IPv6 address; undefined when it is neither. An
 * IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, in any notation) is answered as the IPv4 address, so that one
 * rule matches a client whether it came over IPv4 or a dual-stack socket.
 */
export function parseIp(text: string, options: ParseIpOptions = {}): IpAddress | undefined {
  let address = text;
  const zone = address.indexOf('%');
  if (zone !== -1) {
    if (options.allowZone !== true || zone === address.length - 1 || !address.slice(0, zone).includes(':')) return undefined;
    address = address.slice(0, zone);
  }
  if (address.length > 45) return undefined; // the longest IPv6 text form; bounds the work on garbage
  if (!address.includes(':')) {
    const value = parseIpv4(address);
    return value === undefined ? undefined : { family: 4, value };
  }
  const value = parseIpv6(address);
  if (value === undefined) return undefined;
  if ((value & MAPPED_MASK) === MAPPED_PREFIX) return { family: 4, value: value & 0xffffffffn };
  return { family: 6, value };
}

/**
 * Parses `address/prefix` (or a bare address, a single-host network) and clears the host bits, so
 * `10.1.2.3/8` is `10.0.0.0/8`. An IPv4-mapped IPv6 network of prefix 96 or more becomes the IPv4 network it
 * covers (`::ffff:10.0.0.0/104` is `10.0.0.0/8`); undefined when the text is not a network.
 */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? undefined : text.slice(slash + 1);
  if (addressText.includes('%')) return undefined;

  let family: 4 | 6;
  let value: bigint | undefined;
  if (addressText.includes(':')) {
    family = 6;
    value = parseIpv6(addressText);
  } else {
    family = 4;
    value = parseIpv4(addressText);
  }
  if (value === undefined) return undefined;

  let prefix = width(family);
  if (prefixText !== undefined) {
    if (!PREFIX.test(prefixText)) return undefined;
    prefix = Number(prefixText);
    if (prefix > width(family)) return undefined;
  }
  if (family === 6 && prefix >= 96 && (value & MAPPED_MASK) === MAPPED_PREFIX) {
    family = 4;
    value &= 0xffffffffn;
    prefix -= 96;
  }
  return { family, value: value & netmask(family, prefix), prefix };
}

/** The mask of the first `prefix` bits of a family's width. */
function netmask(family: 4 | 6, prefix: number): bigint {
  const bits = BigInt(width(family));
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

/** True when `address` is inside `network` (always false across families). */
export function cidrContains(network: Cidr, address: IpAddress): boolean {
  return network.family === address.family && (address.value & netmask(network.family, network.prefix)) === network.value;
}

/** The canonical text of an address: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run as `::`). */
export function formatIp(address: IpAddress): string {
  if (address.family === 4) {
    const v = address.value;
    return [24n, 16n, 8n, 0n].map((shift) => String((v >> shift) & 0xffn)).join('.');
  }
  const words: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) words.push(Number((address.value >> shift) & 0xffffn));

  // RFC 5952 4.2: compress the longest run of two or more zero words, the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (bestStart === -1) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

/** The canonical text of a network, such as `10.0.0.0/8` or `2001:db8::/32`. */
export function formatCidr(network: Cidr): string {
  return `${formatIp(network)}/${network.prefix}`;
}
