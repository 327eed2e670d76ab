/**
 * The `themis` package. The kernel and plugin API come next; for now it exports the milter engine.
 * @module
 */
export * from './milter/index.ts';
