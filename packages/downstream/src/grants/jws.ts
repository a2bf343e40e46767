/** The grants' JWS is registry-core's ES256 profile (`registry-core/src/jws/`), re-exported under this package's old names. */
export { assertEs256Key, decodeJws, importPublicJwk, JWS_ALGORITHM, JWS_MAX_LENGTH, JwsError, jwkThumbprint, publicJwk, signJws, verifyJws, verifyJwsSignature } from '@cascade/registry-core';
export type { DecodedJws, JwsErrorReason, JwsHeader, Jwks, PublicJwk } from '@cascade/registry-core';
