export * from './request.js';
export * from './errors.js';
