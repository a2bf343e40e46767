export * from './errors.js';
export * from './digest.js';
export * from './names.js';
export * from './storage/driver.js';
