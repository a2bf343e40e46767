/**
 * The registry configuration: distribution's `config.yml`, validated once at start-up.
 * See docs/configuration.md for every key.
 */
export {
  registryConfigSchema,
  LOG_LEVELS,
  STORAGE_DRIVERS,
  STORAGE_SECTIONS,
  AUTH_SCHEMES,
  MIDDLEWARE_POINTS,
  UNIMPLEMENTED_SECTIONS,
  EVENT_ACTIONS,
  NOTIFICATIONS_QUEUE_LIMIT,
  type RegistryConfig,
  type LogConfig,
  type StorageConfig,
  type HttpConfig,
  type AuthConfig,
  type MiddlewareConfig,
  type ProxyConfig,
  type HealthConfig,
  type NotificationsConfig,
  type EndpointConfig,
} from './schema.js';
export { parseGoDuration, parseDtrDuration } from './duration.js';
export { ConfigError, describeValue, suggestKey, type ConfigIssue } from './errors.js';
export { loadConfig, parseConfig, readConfigFile, type LoadConfigOptions, type LoadedConfig, type MiddlewareOptionsValidator } from './load.js';
