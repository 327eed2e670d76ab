/**
 * The `themis` package: the plugin API and kernel, and the milter engine they stand on.
 * @module
 */
export * from './milter/index.ts';
export * from './kernel/index.ts';
