/** The expiry and eviction index of a cache node; its parts are in `./expiry/`, its design in `./expiry/index.ts`. */
export * from './expiry/index.js';
