/** Cascade's one JWS module: compact JWS on node:crypto, key IDs and JWKs, `x5c` chains, the ES256 profile. */
export * from './compact.js';
export * from './keys.js';
export * from './x5c.js';
export * from './es256.js';
