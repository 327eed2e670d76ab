/**
 * The rate limiter on the store: four atomic one-key operations (decide, refund, inspect, admin),
 * each a Lua script (`lua.ts`) and its in-memory twin (`algorithm.ts`), and the functions the plugin,
 * its commands and other plugins call. A message's decisions for all its subjects go to the store in
 * one {@link Store.atomic} batch: one network round trip.
 * @module
 */
import { defineAtomicOperation, type AtomicHashKey, type Store } from 'themis-milter';
import {
  rateAdminHash,
  rateDecide,
  rateInspectHash,
  rateRefundHash,
  validateRateAdminChange,
  validateRateRequest,
  validateRateReservation,
  validateRateWindows,
  type RateExpiry,
} from './algorithm.ts';
import {
  RATE_ADMIN_LUA,
  RATE_INSPECT_LUA,
  RATE_LIMIT_LUA,
  RATE_REFUND_LUA,
  parseRateInspectReply,
  parseRateLimitReply,
  rateAdminArgs,
  rateInspectArgs,
  rateLimitArgs,
  rateRefundArgs,
} from './lua.ts';
import type { RateAdminChange, RateInspection, RateRequest, RateReservation, RateResult, RateWindow } from './types.ts';

/** Applies what an algorithm step says of the subject's expiry, as the script does with PEXPIRE/PERSIST. */
function applyExpiry(key: AtomicHashKey, expiry: RateExpiry): void {
  if (expiry.action === 'persist') key.persist();
  else if (expiry.action === 'expire') key.pexpire(expiry.ms);
}

/** One subject's decision ({@link rateDecide}). */
export const RATE_DECIDE = defineAtomicOperation({
  name: 'RATELIMIT.DECIDE',
  type: 'hash',
  lua: RATE_LIMIT_LUA,
  validate: (r: RateRequest) => validateRateRequest(r),
  encode: (r, now) => rateLimitArgs(r, now),
  decode: (reply, r): RateResult => parseRateLimitReply(r, reply),
  memory(key, r, now) {
    const { result, expiry } = rateDecide(key.fields, r, now);
    applyExpiry(key, expiry);
    return result;
  },
});

/** Undoes one allowed decision ({@link rateRefundHash}); the expiry is kept. */
export const RATE_REFUND = defineAtomicOperation({
  name: 'RATELIMIT.REFUND',
  type: 'hash',
  lua: RATE_REFUND_LUA,
  validate: (r: RateReservation) => validateRateReservation(r),
  encode: (r) => rateRefundArgs(r),
  decode: () => undefined,
  memory(key, r) {
    // A subject that expired meanwhile is not brought back: an absent key stays empty, so deleted.
    if (key.exists) rateRefundHash(key.fields, r);
  },
});

/** What {@link RATE_INSPECT} takes. */
interface InspectArgs {
  windows: readonly RateWindow[];
}

/** A subject's usage and flags, counting nothing ({@link rateInspectHash}). */
export const RATE_INSPECT = defineAtomicOperation({
  name: 'RATELIMIT.INSPECT',
  type: 'hash',
  lua: RATE_INSPECT_LUA,
  validate: (a: InspectArgs) => validateRateWindows(a.windows, false),
  encode: (a, now) => rateInspectArgs(a.windows, now),
  decode: (reply): RateInspection => parseRateInspectReply(reply),
  memory: (key, a, now) => rateInspectHash(key.exists ? key.fields : undefined, a.windows, now),
});

/** An administrator's change ({@link rateAdminHash}), always on the store's own clock. */
export const RATE_ADMIN = defineAtomicOperation({
  name: 'RATELIMIT.ADMIN',
  type: 'hash',
  lua: RATE_ADMIN_LUA,
  validate: (c: RateAdminChange) => validateRateAdminChange(c),
  encode: (c) => rateAdminArgs(c),
  decode: () => undefined,
  memory(key, c) {
    applyExpiry(key, rateAdminHash(key.fields, c, Date.now(), key.pttl()));
  },
});

/**
 * Rate-limit decisions for several subjects in one round trip (one script call per subject on its
 * one key). Each subject is decided on its own (all windows or none); callers that need all subjects
 * or none refund the allowed ones when another was denied.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` for an invalid request (nothing is sent), and the
 * store's connection errors.
 */
export async function rateLimit(store: Store, requests: readonly RateRequest[]): Promise<RateResult[]> {
  // The store validates every request (RATE_DECIDE.validate) before anything is sent; `?.` lets a
  // request that is not an object reach that check.
  return store.atomic(
    RATE_DECIDE,
    requests.map((r) => ({ key: r?.key, args: r, now: r?.now })),
  );
}

/** Undoes allowed decisions exactly (a slot that has rolled over since is left alone), in one round trip. */
export async function rateRefund(store: Store, reservations: readonly RateReservation[]): Promise<void> {
  for (const r of reservations) validateRateReservation(r);
  const todo = reservations.filter((r) => r.cost > 0 && r.windows.length > 0);
  if (todo.length > 0) await store.atomic(RATE_REFUND, todo.map((r) => ({ key: r.key, args: r })));
}

/** A subject's usage and flags, counting nothing (`now` honoured by a store built with `testClock`). */
export async function rateInspect(store: Store, key: string, windows: readonly RateWindow[], now?: number): Promise<RateInspection> {
  const [result] = await store.atomic(RATE_INSPECT, [{ key, args: { windows }, now }]);
  return result;
}

/**
 * Applies an administrator's change to a subject (flags persist until changed; usage expires as
 * usual). Afterwards a subject with a flag or override never expires; one without keeps its expiry, or
 * gets `RATE_ADMIN_TTL_MS` (one day, or the remaining penalty block) when it had none.
 */
export async function rateAdmin(store: Store, key: string, change: RateAdminChange): Promise<void> {
  await store.atomic(RATE_ADMIN, [{ key, args: change }]);
}
