/**
 * The store a command works on (kept apart from env.ts, which the daemon's start path loads before
 * it knows whether it needs the store's schemas).
 * @module
 */
import { applyStoreOverrides, type StoreConfig } from '../store/config.ts';
import { envRedisPassword, envRedisUrl } from './env.ts';

/**
 * The store a command works on: the configuration's, with `--redis-url`/`--redis-password` (given
 * here) winning over the environment, which wins over the file.
 */
export function commandStoreConfig(store: StoreConfig | undefined, flags: { url?: string; password?: string } = {}): StoreConfig {
  return applyStoreOverrides(store ?? { type: 'memory' }, { url: flags.url ?? envRedisUrl(), password: flags.password ?? envRedisPassword() });
}
