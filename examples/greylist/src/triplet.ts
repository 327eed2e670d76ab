/**
 * The greylisting state machine as one atomic store operation: one round trip per recipient batch,
 * whatever the triplet's state, on the memory store and on Redis (standalone, Sentinel, Cluster)
 * alike. The Lua script and its in-memory twin compute the same thing; `test/triplet.test.ts` proves
 * it against a real redis-server and a real Cluster with `atomicOperationContract`.
 *
 * A triplet's key holds a hash: `first` (ms, the first attempt of the current round), `n` (attempts
 * in this round) and, once a retry passed, `passed` (ms). The key's TTL is the state's lifetime:
 * `retryWindow` from the first attempt while the triplet waits, `expiry` from its last use once it
 * passed.
 * @module
 */
import { createHash } from 'node:crypto';
import { defineAtomicOperation, invalidAtomicArgument } from 'themis-milter';

/**
 * What one check found:
 * - `new`: first seen now (or seen too long ago without passing: started over); greylisted.
 * - `early`: seen before, the delay has not passed yet; greylisted.
 * - `passed`: retried after the delay and within the retry window; accepted from now on.
 * - `known`: passed before; accepted, and kept for another `expiry`.
 */
export type TripletStateName = 'new' | 'early' | 'passed' | 'known';

/** The result of one check. */
export interface TripletState {
  /** The triplet's state after this attempt. */
  state: TripletStateName;
  /** ms since the first attempt of this round (0 for `new`). */
  ageMs: number;
  /** ms until a retry passes: 0 for `passed` and `known`. */
  waitMs: number;
  /** Attempts in this round, this one included. */
  attempts: number;
}

/** The arguments of one check: the policy's durations, in ms. */
export interface TripletCheck {
  /** How long a new triplet must wait before a retry passes. */
  delayMs: number;
  /** How long after the first attempt a retry still counts (longer than the delay). */
  retryWindowMs: number;
  /** How long a passed triplet stays known after its last use. */
  expiryMs: number;
}

/** The state names in the order the script numbers them. */
const STATES: readonly TripletStateName[] = ['new', 'early', 'passed', 'known'];

/** Lua's `tonumber` on a stored field, as far as this operation's own writes go (decimal integers). */
function storedNumber(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** The operation's name, in errors and logs. */
const NAME = 'GREYLIST.TRIPLET';

/**
 * One attempt of a triplet: reads its state, moves it on, sets its TTL and answers — all in one
 * script run, so two daemons retrying the same triplet at once see one consistent history.
 */
export const TRIPLET = defineAtomicOperation({
  name: NAME,
  type: 'hash',
  // ARGV: now (ms, empty in production: Redis' own clock, one clock for a pool), delay, retry window, expiry.
  lua: `local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local delay, window, expiry = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local first = tonumber(redis.call('HGET', KEYS[1], 'first'))
if first then
  local age = now - first
  if redis.call('HEXISTS', KEYS[1], 'passed') == 1 then
    local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
    redis.call('PEXPIRE', KEYS[1], expiry)
    return {3, age, 0, n}
  end
  if age < delay then
    return {1, age, delay - age, redis.call('HINCRBY', KEYS[1], 'n', 1)}
  end
  if age <= window then
    local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
    redis.call('HSET', KEYS[1], 'passed', string.format('%d', now))
    redis.call('PEXPIRE', KEYS[1], expiry)
    return {2, age, 0, n}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'first', string.format('%d', now), 'n', 1)
redis.call('PEXPIRE', KEYS[1], window)
return {0, 0, delay, 1}`,
  validate(a: TripletCheck) {
    for (const k of ['delayMs', 'retryWindowMs', 'expiryMs'] as const) {
      if (!Number.isSafeInteger(a?.[k]) || a[k] <= 0) throw invalidAtomicArgument(NAME, `${k} must be an integer > 0 (got ${String(a?.[k])})`);
    }
    if (a.retryWindowMs <= a.delayMs) throw invalidAtomicArgument(NAME, `retryWindowMs (${a.retryWindowMs}) must be longer than delayMs (${a.delayMs})`);
  },
  encode: (a, now) => [now === undefined ? '' : Math.floor(now), a.delayMs, a.retryWindowMs, a.expiryMs],
  decode(reply): TripletState {
    if (!Array.isArray(reply) || reply.length !== 4 || !reply.every((x) => typeof x === 'number') || STATES[reply[0]] === undefined) {
      throw new Error(`${NAME}: unexpected reply ${JSON.stringify(reply)}`);
    }
    const [state, ageMs, waitMs, attempts] = reply as number[];
    return { state: STATES[state], ageMs, waitMs, attempts };
  },
  memory(key, a, now): TripletState {
    const first = storedNumber(key.fields.get('first'));
    if (first !== undefined) {
      const age = now - first;
      const bump = () => {
        const n = (storedNumber(key.fields.get('n')) ?? 0) + 1;
        key.fields.set('n', String(n));
        return n;
      };
      if (key.fields.has('passed')) {
        const n = bump();
        key.pexpire(a.expiryMs);
        return { state: 'known', ageMs: age, waitMs: 0, attempts: n };
      }
      if (age < a.delayMs) return { state: 'early', ageMs: age, waitMs: a.delayMs - age, attempts: bump() };
      if (age <= a.retryWindowMs) {
        const n = bump();
        key.fields.set('passed', String(now));
        key.pexpire(a.expiryMs);
        return { state: 'passed', ageMs: age, waitMs: 0, attempts: n };
      }
    }
    key.del();
    key.fields.set('first', String(now));
    key.fields.set('n', '1');
    key.pexpire(a.retryWindowMs);
    return { state: 'new', ageMs: 0, waitMs: a.delayMs, attempts: 1 };
  },
});

/**
 * The triplet's store key, `greylist:<policy>:<hash>`: the policy (each policy greylists on its own),
 * then a SHA-256 of the client network, the lower-cased sender (empty for a bounce) and the
 * lower-cased recipient — so that no address is readable in the store, and the key's length is fixed.
 */
export function tripletKey(policy: string, network: string, sender: string, recipient: string): string {
  const digest = createHash('sha256').update(`${network}\0${sender.toLowerCase()}\0${recipient.toLowerCase()}`).digest('hex');
  return `greylist:${policy}:${digest.slice(0, 32)}`;
}
