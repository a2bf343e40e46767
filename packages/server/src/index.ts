export { main } from './cli.js';
export { PostgresStateRepository, POSTGRES_MIGRATIONS, migratePostgres, redactDatabaseUrl, type PostgresStateOptions } from './state/postgres.js';
export { SqliteStateRepository, MIGRATIONS, type Migration } from './state/sqlite.js';
export type { StateRepository } from './state/repository.js';
