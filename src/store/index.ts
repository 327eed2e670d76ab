/**
 * The store plugins share, and its construction from the configuration.
 * @module
 */
import { parseStoreConfig, type StoreConfig } from './config.ts';
import { RedisStore, type StoreLogger } from './redis.ts';
import { MemoryStore, type Store } from './store.ts';

export * from './store.ts';
export * from './config.ts';
export * from './errors.ts';
export * from './redis.ts';
export * from './redis-options.ts';
export { defineAtomicOperation, invalidAtomicArgument, parseStoredList, replyText } from './atomic.ts';
export type { AtomicArgument, AtomicCall, AtomicHashKey, AtomicKey, AtomicKeyExpiry, AtomicKeyType, AtomicOperation, AtomicOperationDefinition, AtomicStringKey } from './atomic.ts';

/** Wiring of {@link createStore}. */
export interface CreateStoreOptions {
  /** Where a Redis store logs connection errors, losses and recoveries (rate-limited). */
  logger?: StoreLogger;
}

/**
 * The store a configuration describes: a {@link MemoryStore}, or a {@link RedisStore} that connects in
 * the background (never throws for an unreachable Redis; `status` and `connect()` tell). The
 * configuration is validated first.
 * @throws StoreError `THEMIS_ERR_STORE_CONFIG` for an invalid configuration, `THEMIS_ERR_STORE_TLS_FILE`
 * for an unreadable TLS file.
 */
export function createStore(config: StoreConfig, options: CreateStoreOptions = {}): Store {
  const valid = parseStoreConfig(config);
  if (valid.type === 'memory') return new MemoryStore({ maxKeys: valid.maxKeys, sweepIntervalMs: valid.sweepIntervalMs });
  return new RedisStore(valid, { logger: options.logger });
}
