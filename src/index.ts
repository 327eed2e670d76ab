/**
 * The `themis-milter` package: what a plugin author and a configuration file use — the plugin API
 * (`definePlugin`, hooks, verdicts, errors, reply helpers), the store a plugin gets (its interface,
 * the memory and Redis stores, atomic operations) and the configuration helpers (`defineConfig`).
 * The milter engine on its own is `themis-milter/milter`; the test harness `themis-milter/testing`.
 * Everything else (the daemon, the command line, the kernel's internals) is not part of the API.
 * @module
 */

// The plugin API.
export * from './kernel/plugin.ts';
export {
  ThemisError,
  PluginError,
  isThemisError,
  isPluginError,
  pluginErrors,
  errorRegistry,
  THEMIS_ERRORS,
  type KernelErrorCode,
  type PluginErrorFactory,
  type RegisteredError,
  type ErrorOwner,
} from './kernel/errors.ts';
export { replyConfigSchema, fillTemplate, resolveReply, type ReplyConfig, type ResolvedReply } from './kernel/reply-config.ts';
export { parseNetwork, NetworkList, type Network } from './kernel/networks.ts';
export type { TraceEntry } from './kernel/merge.ts';
export type { PolicyDefinition, PolicyMatch, PolicySettings, PoolDefinition, Selector, MatchFacts } from './kernel/policy.ts';
export { Kernel, KERNEL_VERSION, pagesOf, type KernelOptions, type KernelLogger, type PluginEntry, type PolicyInput, type PluginPage, type DecisionTrace } from './kernel/kernel.ts';

// What hooks receive and answer, from the milter engine.
export { CodedError } from './milter/errors.ts';
export type { ConnectEvent, HeloEvent, EnvelopeEvent, HeaderEvent, MessageModifier } from './milter/session.ts';
export type { SmtpReply, Decision, DecisionAction } from './milter/reply.ts';
export type { Stage } from './milter/constants.ts';
export type { Modification } from './milter/client.ts';

// The store.
export {
  MemoryStore,
  RedisStore,
  createStore,
  StoreError,
  isStoreError,
  defineAtomicOperation,
  invalidAtomicArgument,
  parseStoredList,
  replyText,
  type Store,
  type StoreErrorCode,
  type RankAddOptions,
  type MemoryStoreOptions,
  type CreateStoreOptions,
  type RedisStoreOptions,
  type RedisStoreStatus,
  type StoreLogger,
  type StoreConfig,
  type MemoryStoreConfig,
  type RedisStoreConfig,
  type RedisTlsConfig,
  type RedisSentinelConfig,
  type RedisClusterConfig,
  type AtomicArgument,
  type AtomicCall,
  type AtomicHashKey,
  type AtomicKey,
  type AtomicKeyExpiry,
  type AtomicKeyType,
  type AtomicOperation,
  type AtomicOperationDefinition,
  type AtomicStringKey,
} from './store/index.ts';

// The configuration file.
export { defineConfig, loadConfig, findConfig, type ThemisConfig, type PolicyOf, type PluginConfig, type LoadedConfig, type LogLevel } from './config.ts';
export type { PluginSpec } from './kernel/loader.ts';
