/**
 * The origin's notifications, as distribution sends them (and Cascade's registry, which sends the same
 * envelope): `{"events": [{"id", "action", "target": {"mediaType", "digest", "repository", "tag", ...}, ...}]}`
 * with `Content-Type: application/vnd.docker.distribution.events.v1+json`. The envelope is checked with a
 * zod schema (unknown fields are kept and ignored: distribution adds some between versions); only a `push`
 * of a manifest starts a warm. The secret the origin sends (`Authorization: Bearer <secret>`) is compared in
 * constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { Digest, MANIFEST_MEDIA_TYPES, NAME_MAX_LENGTH, validateName } from '@cascade/registry-core';

/** The largest envelope accepted (distribution sends at most `threshold` events, 10 by default, a few hundred bytes each). */
export const EVENTS_BODY_LIMIT = 1 << 20;

/** Most events in one envelope. */
export const EVENTS_MAX = 1000;

const event = z.looseObject({
  id: z.string().min(1).max(256),
  action: z.string().max(64),
  timestamp: z.string().max(64).optional(),
  target: z
    .looseObject({
      mediaType: z.string().max(256).optional(),
      digest: z.string().max(256).optional(),
      repository: z.string().max(NAME_MAX_LENGTH).optional(),
      tag: z.string().max(256).optional(),
    })
    .optional(),
  actor: z.looseObject({ name: z.string().max(256).optional() }).optional(),
});

/** The notification envelope. */
export const eventsEnvelopeSchema = z.looseObject({ events: z.array(event).max(EVENTS_MAX) });

/** One notification, as checked by {@link eventsEnvelopeSchema}. */
export type RegistryEvent = z.output<typeof event>;

/** The actions counted by name in the metrics; any other is counted as `other`. */
export const KNOWN_ACTIONS = new Set(['push', 'pull', 'mount', 'delete']);

/** What an event asks of the warmer: a pushed manifest to fetch, or why it starts nothing. */
export type EventVerdict =
  | { readonly kind: 'push'; readonly repository: string; readonly digest: string; readonly tag?: string }
  | { readonly kind: 'ignored'; readonly reason: string };

/**
 * Whether `e` starts a warm: a `push` whose target is a manifest (by media type) with a valid repository name
 * and digest. Anything else (a blob push, a pull, a delete, a malformed target) is ignored.
 */
export function verdictOf(e: RegistryEvent): EventVerdict {
  if (e.action !== 'push') return { kind: 'ignored', reason: `action ${e.action.slice(0, 64)}` };
  const target = e.target;
  const mediaType = (target?.mediaType ?? '').split(';', 1)[0]?.trim() ?? '';
  if (!MANIFEST_MEDIA_TYPES.has(mediaType)) return { kind: 'ignored', reason: 'not a manifest' };
  const digest = Digest.tryParse(target?.digest ?? '');
  if (!digest) return { kind: 'ignored', reason: 'no valid digest' };
  try {
    validateName(target?.repository ?? '');
  } catch {
    return { kind: 'ignored', reason: 'no valid repository' };
  }
  return { kind: 'push', repository: target?.repository ?? '', digest: digest.toString(), ...(target?.tag ? { tag: target.tag } : {}) };
}

/** True when `repository` is `namespace` or under it (whole path components: `team` covers `team/app`, not `teamwork`). */
export function coveredBy(repository: string, namespace: string): boolean {
  return repository === namespace || repository.startsWith(`${namespace}/`);
}

/**
 * Checks `Authorization: Bearer <secret>` against the configured secrets, in constant time (both sides are
 * hashed first, so neither the length nor the bytes of a secret leak through timing).
 */
export class EventsTokens {
  private readonly hashes: Buffer[];

  constructor(tokens: readonly string[]) {
    this.hashes = tokens.map(hash);
  }

  /** True when there is at least one secret (without one, nothing may post events). */
  get configured(): boolean {
    return this.hashes.length > 0;
  }

  /** True when `authorization` carries one of the secrets. */
  accepts(authorization: string | undefined): boolean {
    const m = /^bearer\s+(.+)$/i.exec(authorization?.trim() ?? '');
    if (!m || this.hashes.length === 0) return false;
    const given = hash(m[1] as string);
    let ok = false;
    // Every secret is compared, so the time does not say which one matched.
    for (const h of this.hashes) ok = timingSafeEqual(h, given) || ok;
    return ok;
  }
}

function hash(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** The secrets of a token file: one per line, blank lines and `#` comments skipped. */
export function tokensOfFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'));
}
