/**
 * The package's native addons (`native/*.c`, built by node-gyp on `npm install` into `build/Release/`): loaded
 * once each, or the reason they are not there, for the start-up log and doctor.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** The addon `name` (`cascade_sendfile`, `cascade_hash`), or why it cannot be loaded. */
export function loadAddon<T>(name: string): T | string {
  try {
    return require(`../../build/Release/${name}.node`) as T;
  } catch (err) {
    return `the native addon is not built (${(err as Error).message.split('\n')[0]}); run \`npm rebuild @cascade/registry-core\``;
  }
}
