export * from './request.js';
export * from './errors.js';
export * from './routes.js';
