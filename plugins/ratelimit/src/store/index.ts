/**
 * The rate limiter's store layer: multi-window decisions, refunds, inspection and administration as
 * atomic one-key operations any store runs (memory, Redis, Cluster).
 * @module
 */
export * from './types.ts';
export { RATE_ADMIN_TTL_MS, RATE_MAX_SLOTS, rateSlotWidth } from './algorithm.ts';
export { RATE_ADMIN, RATE_DECIDE, RATE_INSPECT, RATE_REFUND, rateAdmin, rateInspect, rateLimit, rateRefund } from './operations.ts';
