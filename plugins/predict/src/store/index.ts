/**
 * predict's store layer: rate profiles and memories of recently seen members as atomic one-key
 * operations any store runs (memory, Redis, Cluster).
 * @module
 */
export * from './types.ts';
export { PROFILE_MAX_KEEP, PROFILE_MAX_TIMEFRAME, PROFILE_MAX_YOUNG_HOURS, PROFILE_MINUTE_MS } from './profile.ts';
export { SEEN_MAX_KEEP, SEEN_MAX_WIDTH, type SeenAddOptions, type SeenAddResult } from './seen.ts';
export { PROFILE_UPDATE, SEEN_ADD, profileUpdate, seenAdd } from './operations.ts';
