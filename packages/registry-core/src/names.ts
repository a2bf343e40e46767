/**
 * The OCI Distribution name and reference grammar: repository names, tags, and references that are either.
 */
import { Digest } from './digest.js';
import { RegistryError } from './errors.js';

/** Longest repository name accepted, as in distribution. */
export const NAME_MAX_LENGTH = 255;

const PATH_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_GRAMMAR = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/**
 * Validates a repository name.
 * @throws RegistryError NAME_INVALID with the reason.
 */
export function validateName(name: string): string {
  if (name.length === 0) throw new RegistryError('NAME_INVALID', 'repository name must not be empty');
  if (name.length > NAME_MAX_LENGTH) {
    throw new RegistryError('NAME_INVALID', `repository name is ${name.length} characters long, at most ${NAME_MAX_LENGTH} are allowed`);
  }
  if (!NAME_GRAMMAR.test(name)) {
    throw new RegistryError('NAME_INVALID', 'repository name must be lower-case path components of [a-z0-9] separated by ".", "_", "__" or "-", joined by "/"', {
      detail: { name: name.slice(0, NAME_MAX_LENGTH) },
    });
  }
  return name;
}

/** True when `tag` matches the tag grammar. */
export function isValidTag(tag: string): boolean {
  return TAG_GRAMMAR.test(tag);
}

/** A manifest reference: a tag or a digest. */
export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/**
 * Parses the `<reference>` of `/v2/<name>/manifests/<reference>`.
 * @throws RegistryError DIGEST_INVALID for a malformed digest, TAG_INVALID for a malformed tag.
 */
export function parseReference(value: string): Reference {
  if (Digest.looksLikeDigest(value)) return { kind: 'digest', digest: Digest.parse(value) };
  if (!isValidTag(value)) throw new RegistryError('TAG_INVALID', 'invalid tag: expected [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}');
  return { kind: 'tag', tag: value };
}
