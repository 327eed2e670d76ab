/**
 * The kernel and the plugin API (`themis` package exports).
 * @module
 */
export * from './errors.ts';
export * from './plugin.ts';
export * from './merge.ts';
export * from './kernel.ts';
export * from '../store/index.ts';
export * from './loader.ts';
export * from './policy.ts';
export * from './networks.ts';
export * from '../config.ts';
export * from './runtime.ts';
export * from './reply-config.ts';
