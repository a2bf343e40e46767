/** The pino logger of a role. Credentials never reach the log: authorization and password fields are redacted. */
import { pino, type DestinationStream, type Logger } from 'pino';

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  readonly level?: string;
  /** Static fields added to every line (`log.fields`). */
  readonly fields?: Record<string, unknown>;
  /** Where to write (default stdout). */
  readonly destination?: DestinationStream;
}

/** Field paths that could hold a secret; they are replaced by "[redacted]" whatever logs them. */
export const REDACTED_PATHS = [
  'authorization',
  'password',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.authorization',
  '*.password',
  '*.token',
];

/** A JSON logger for one process. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { ...(options.fields ?? {}) },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination({ sync: false }),
  );
}
