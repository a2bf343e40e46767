/** Test support shared by the packages' unit tests and the end-to-end tests (not shipped). */
export * from './pki.js';
export * from './registry.js';
export * from './net.js';
export * from './redis.js';
