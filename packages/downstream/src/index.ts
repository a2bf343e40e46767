export * from './options.js';
export * from './cas.js';
export * from './upstream.js';
export * from './fill.js';
export * from './cache.js';
export * from './middleware.js';
export * from './expiry.js';
