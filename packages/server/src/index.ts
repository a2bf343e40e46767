export { loadServerConfig, parseServerConfig, serverConfigSchema, type DatabaseConfig, type ServerConfig } from './config.js';
export { authenticateThroughOrigin, createServer, type RunningCascadeServer, type ServerOptions } from './create.js';
export { OriginClient, type OriginOptions } from './gateway/origin.js';
export { PostgresStateRepository, POSTGRES_MIGRATIONS, migratePostgres, redactDatabaseUrl, type PostgresStateOptions } from './state/postgres.js';
export { SqliteStateRepository, MIGRATIONS, type Migration } from './state/sqlite.js';
export type { StateRepository } from './state/repository.js';
