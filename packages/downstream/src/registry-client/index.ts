/** The one registry client: requests with CA trust, the token flow's parts, realm checks. */
export * from './body.js';
export * from './client.js';
export * from './realm.js';
export * from './tokens.js';
