/**
 * distribution's on-disk layout, so that a folder written by Cascade is served by distribution and the
 * reverse:
 *
 *     /docker/registry/v2/blobs/<alg>/<hex[0:2]>/<hex>/data
 *     /docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
 *     /docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
 *     /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
 *     /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
 *     /docker/registry/v2/repositories/<name>/_uploads/<id>/{data,startedat}
 *
 * Cascade adds `_referrers/<subject alg>/<subject hex>/<alg>/<hex>/link` (distribution skips `_` folders),
 * and its own folders beside `blobs/` and `repositories/`, all named here ({@link CASCADE_DIRS}).
 */
import type { Digest } from '../digest.js';

/** Root of the registry tree inside the driver. */
export const ROOT = '/docker/registry/v2';
export const REPOSITORIES = `${ROOT}/repositories`;

export const paths = {
  blobData: (d: Digest) => `${ROOT}/blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}/data`,
  blobDir: (d: Digest) => `${ROOT}/blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}`,
  repository: (name: string) => `${REPOSITORIES}/${name}`,
  layerLink: (name: string, d: Digest) => `${REPOSITORIES}/${name}/_layers/${d.algorithm}/${d.hex}/link`,
  layerDir: (name: string, d: Digest) => `${REPOSITORIES}/${name}/_layers/${d.algorithm}/${d.hex}`,
  manifestsDir: (name: string) => `${REPOSITORIES}/${name}/_manifests`,
  revisionLink: (name: string, d: Digest) => `${REPOSITORIES}/${name}/_manifests/revisions/${d.algorithm}/${d.hex}/link`,
  revisionDir: (name: string, d: Digest) => `${REPOSITORIES}/${name}/_manifests/revisions/${d.algorithm}/${d.hex}`,
  tagsDir: (name: string) => `${REPOSITORIES}/${name}/_manifests/tags`,
  tagDir: (name: string, tag: string) => `${REPOSITORIES}/${name}/_manifests/tags/${tag}`,
  tagCurrentLink: (name: string, tag: string) => `${REPOSITORIES}/${name}/_manifests/tags/${tag}/current/link`,
  tagIndexLink: (name: string, tag: string, d: Digest) =>
    `${REPOSITORIES}/${name}/_manifests/tags/${tag}/index/${d.algorithm}/${d.hex}/link`,
  uploadDir: (name: string, id: string) => `${REPOSITORIES}/${name}/_uploads/${id}`,
  uploadData: (name: string, id: string) => `${REPOSITORIES}/${name}/_uploads/${id}/data`,
  uploadStartedAt: (name: string, id: string) => `${REPOSITORIES}/${name}/_uploads/${id}/startedat`,
  referrersDir: (name: string, subject: Digest) => `${REPOSITORIES}/${name}/_referrers/${subject.algorithm}/${subject.hex}`,
  referrerLink: (name: string, subject: Digest, d: Digest) =>
    `${REPOSITORIES}/${name}/_referrers/${subject.algorithm}/${subject.hex}/${d.algorithm}/${d.hex}/link`,
};

/**
 * Cascade's own folders in the registry tree (distribution ignores folders whose name starts with `_`): one
 * place for all of them, so that a reader of the storage folder finds what each holds.
 */
export const CASCADE_DIRS = {
  /** Partial files of running fills (a cache node), removed on start. */
  fills: `${ROOT}/_cascade_fills`,
  /** The expiry index's journals and state file (`blobttl`, `maxsize`, `proxy.ttl`). */
  expiry: `${ROOT}/_cascade_expiry`,
  /** A mirror's record of the blobs pushed to its local repositories (never expired). */
  local: `${ROOT}/_cascade_local`,
  /** Each notification endpoint's queue of events not yet delivered (`notifications.endpoints`). */
  events: `${ROOT}/_cascade_events`,
  /** Where `/ready` writes and deletes a file to prove the storage writable. */
  ready: `${ROOT}/_cascade_ready`,
} as const;
