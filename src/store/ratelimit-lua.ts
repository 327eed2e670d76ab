/**
 * The Redis side of the rate limiter: four Lua scripts, each on one key (`numkeys = 1`, so any
 * Cluster node can run it without hash tags), mirroring `ratelimit.ts` step for step, and the
 * encoding of their arguments and replies. Arithmetic stays on integers below 2^53, exact in Lua's
 * doubles; numbers are written with `%d` because Lua's `tostring` switches to exponent notation past
 * 14 digits.
 *
 * The clock is Redis' `TIME`, one clock for every daemon of a pool; an explicit `now` argument (only
 * sent by a store built with `testClock`) replaces it.
 * @module
 */
import type { RateAdminChange, RateInspection, RateRequest, RateReservation, RateResult, RateWindow, RateWindowState } from './store.ts';
import { RATE_ADMIN_TTL_MS, formatRateLimits, parseRateLimits } from './ratelimit.ts';

/** Helpers every script starts with. Keep in step with `ratelimit.ts`. */
const PRELUDE = `
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function overrides(text)
  local o = {}
  if text then
    for w, l in string.gmatch(text, '(%d+):(%d+)') do o[tonumber(w)] = tonumber(l) end
  end
  return o
end

local function parse(value)
  if not value then return nil end
  local e, c = string.match(value, '^(%-?%d+):(%d+)$')
  if not e then return nil end
  return tonumber(e), tonumber(c)
end

-- One window: W and N are kept as the caller's strings, because the field names are built from them.
local function view(key, ws, ns, limit, now, o)
  local W, N = tonumber(ws), tonumber(ns)
  local g = math.ceil(W / N)
  local names = {}
  for s = 0, N do names[s + 1] = 'w' .. ws .. '/' .. ns .. ':' .. s end
  local vals = redis.call('HMGET', key, unpack(names))
  local E = math.floor(now / g)
  local es, cs = {}, {}
  for s = 0, N do
    local e, c = parse(vals[s + 1])
    if e then
      es[s] = e
      cs[s] = c
      -- The clock stepped back: keep the latest epoch until it catches up.
      if e > E then E = e end
    end
  end
  local counts, used = {}, 0
  for j = 0, N do
    local k = E - N + j
    local s = k % (N + 1)
    local c = 0
    if es[s] == k then c = cs[s] end
    counts[j] = c
    used = used + c
  end
  return { ws = ws, ns = ns, N = N, g = g, E = E, counts = counts, used = used, limit = o[W] or limit }
end

local function resetMs(v, now)
  for j = 0, v.N do
    if v.counts[j] > 0 then return (v.E + j + 1) * v.g - now end
  end
  return 0
end

local function state(out, v, now)
  local remaining = v.limit - v.used
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = v.used
  out[#out + 1] = v.limit
  out[#out + 1] = remaining
  out[#out + 1] = resetMs(v, now)
end
`;

/**
 * KEYS: the subject. ARGV: now ('' = TIME), cost, jailMs, label ('' = none), window count, then per
 * window windowMs, slots, limit. Reply: outcome (0 allowed, 1 denied, 2 jailed, 3 blocked, 4
 * bypassed), failing, retryAfterMs, window count, then per window used, limit, remaining, resetMs,
 * epoch.
 */
export const RATE_LIMIT_LUA = `${PRELUDE}
local key = KEYS[1]
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local jailMs = tonumber(ARGV[3])
local label = ARGV[4]
local n = tonumber(ARGV[5])
local f = redis.call('HMGET', key, '!block', '!bypass', '!jail', '!limits')
if f[1] then return { 3, -1, 0, 0 } end
if f[2] then return { 4, -1, 0, 0 } end
local o = overrides(f[4])
local views = {}
for i = 1, n do
  local b = 5 + (i - 1) * 3
  views[i] = view(key, ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), now, o)
end

local function expire(jail)
  if f[4] then
    redis.call('PERSIST', key)
    return
  end
  local ttl = 0
  for i = 1, n do
    local span = (views[i].N + 1) * views[i].g
    if span > ttl then ttl = span end
  end
  if jail - now > ttl then ttl = jail - now end
  if ttl > 0 then redis.call('PEXPIRE', key, string.format('%d', ttl)) end
end

local outcome, failing, retry = 0, -1, 0
local jail = tonumber(f[3] or '0') or 0
if jail > now then
  outcome = 2
  retry = jail - now
else
  for i = 1, n do
    local v = views[i]
    if v.used + cost > v.limit then
      if failing < 0 then failing = i - 1 end
      if cost > v.limit then
        retry = -1
      elseif retry >= 0 then
        local need = v.used + cost - v.limit
        local freed = 0
        for j = 0, v.N do
          freed = freed + v.counts[j]
          if freed >= need then
            local r = (v.E + j + 1) * v.g - now
            if r > retry then retry = r end
            break
          end
        end
      end
    end
  end
  if failing >= 0 then
    outcome = 1
    if cost > 0 and jailMs > 0 then
      redis.call('HSET', key, '!jail', string.format('%d', now + jailMs))
      if label ~= '' then redis.call('HSETNX', key, 'v', label) end
      expire(now + jailMs)
      if retry >= 0 and jailMs > retry then retry = jailMs end
    end
  elseif cost > 0 then
    local fields = {}
    for i = 1, n do
      local v = views[i]
      v.counts[v.N] = v.counts[v.N] + cost
      v.used = v.used + cost
      fields[#fields + 1] = 'w' .. v.ws .. '/' .. v.ns .. ':' .. (v.E % (v.N + 1))
      fields[#fields + 1] = string.format('%d:%d', v.E, v.counts[v.N])
    end
    redis.call('HSET', key, unpack(fields))
    if label ~= '' then redis.call('HSETNX', key, 'v', label) end
    expire(jail)
  end
end
local out = { outcome, failing, retry, n }
for i = 1, n do
  state(out, views[i], now)
  out[#out + 1] = views[i].E
end
return out
`;

/** KEYS: the subject. ARGV: cost, window count, then per window windowMs, slots, epoch. */
export const RATE_REFUND_LUA = `${PRELUDE}
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
for i = 1, n do
  local b = 2 + (i - 1) * 3
  local ws, ns, epoch = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local field = 'w' .. ws .. '/' .. ns .. ':' .. (epoch % (tonumber(ns) + 1))
  local e, c = parse(redis.call('HGET', key, field))
  -- Only the slot the cost went into: once it rolled over, the units have left the window anyway.
  if e == epoch then
    c = c - cost
    if c < 0 then c = 0 end
    redis.call('HSET', key, field, string.format('%d:%d', epoch, c))
  end
end
return 0
`;

/**
 * Read-only. KEYS: the subject. ARGV: now ('' = TIME), window count, then per window windowMs, slots,
 * limit. Reply: exists, has label, label, jailedForMs, blocked, bypass, `!limits` ('' = none), window
 * count, then per window used, limit, remaining, resetMs.
 */
export const RATE_INSPECT_LUA = `${PRELUDE}
local key = KEYS[1]
local now = clock(ARGV[1])
local n = tonumber(ARGV[2])
local f = redis.call('HMGET', key, '!block', '!bypass', '!jail', '!limits', 'v')
local o = overrides(f[4])
local jailed = (tonumber(f[3] or '0') or 0) - now
if jailed < 0 then jailed = 0 end
local function flag(x) if x then return 1 end return 0 end
-- A nil inside a reply table would cut it short: absent strings are sent as '' with a presence flag.
local out = { redis.call('EXISTS', key), flag(f[5]), f[5] or '', jailed, flag(f[1]), flag(f[2]), f[4] or '', n }
for i = 1, n do
  local b = 2 + (i - 1) * 3
  state(out, view(key, ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), now, o), now)
end
return out
`;

/**
 * KEYS: the subject. ARGV: now ('' = TIME), reset (0/1), unjail (0/1), block, bypass (1 set, 0
 * delete, '' leave), limits mode (1 set, 0 delete, '' leave), limits text, label ('' = none), default
 * TTL ms.
 */
export const RATE_ADMIN_LUA = `${PRELUDE}
local key = KEYS[1]
local now = clock(ARGV[1])
if ARGV[2] == '1' then
  local del = { '!jail' }
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 1) == 'w' then del[#del + 1] = field end
    -- HDEL in chunks: unpack is bounded by Lua's C stack.
    if #del >= 500 then
      redis.call('HDEL', key, unpack(del))
      del = {}
    end
  end
  if #del > 0 then redis.call('HDEL', key, unpack(del)) end
end
if ARGV[3] == '1' then redis.call('HDEL', key, '!jail') end
if ARGV[4] == '1' then redis.call('HSET', key, '!block', '1') elseif ARGV[4] == '0' then redis.call('HDEL', key, '!block') end
if ARGV[5] == '1' then redis.call('HSET', key, '!bypass', '1') elseif ARGV[5] == '0' then redis.call('HDEL', key, '!bypass') end
if ARGV[6] == '1' then redis.call('HSET', key, '!limits', ARGV[7]) elseif ARGV[6] == '0' then redis.call('HDEL', key, '!limits') end
if ARGV[8] ~= '' then redis.call('HSETNX', key, 'v', ARGV[8]) end
if redis.call('EXISTS', key) == 0 then return 0 end
local f = redis.call('HMGET', key, '!block', '!bypass', '!limits', '!jail')
if f[1] or f[2] or f[3] then
  redis.call('PERSIST', key)
elseif redis.call('PTTL', key) == -1 then
  local ttl = tonumber(ARGV[9])
  local jailed = (tonumber(f[4] or '0') or 0) - now
  if jailed > ttl then ttl = jailed end
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
return 1
`;

/** The ioredis commands the scripts are defined as (one key each). */
export interface RateScripts {
  /** {@link RATE_LIMIT_LUA}. */
  themisRateLimit(key: string, ...args: (string | number)[]): Promise<unknown>;
  /** {@link RATE_REFUND_LUA}. */
  themisRateRefund(key: string, ...args: (string | number)[]): Promise<unknown>;
  /** {@link RATE_INSPECT_LUA}. */
  themisRateInspect(key: string, ...args: (string | number)[]): Promise<unknown>;
  /** {@link RATE_ADMIN_LUA}. */
  themisRateAdmin(key: string, ...args: (string | number)[]): Promise<unknown>;
}

/** The scripts by command name, for `defineCommand`. */
export const RATE_SCRIPTS: Record<keyof RateScripts, string> = {
  themisRateLimit: RATE_LIMIT_LUA,
  themisRateRefund: RATE_REFUND_LUA,
  themisRateInspect: RATE_INSPECT_LUA,
  themisRateAdmin: RATE_ADMIN_LUA,
};

const clockArg = (now: number | undefined) => (now === undefined ? '' : String(Math.floor(now)));
const windowArgs = (windows: readonly RateWindow[], third: (w: RateWindow, i: number) => number) => windows.flatMap((w, i) => [String(w.windowMs), String(w.slots), String(third(w, i))]);

/** ARGV of {@link RATE_LIMIT_LUA} (`now` only when the store honours it). */
export function rateLimitArgs(r: RateRequest, now: number | undefined): string[] {
  return [clockArg(now), String(r.cost), String(r.jailMs ?? 0), r.label ?? '', String(r.windows.length), ...windowArgs(r.windows, (w) => w.limit)];
}

/** ARGV of {@link RATE_REFUND_LUA}. */
export function rateRefundArgs(r: RateReservation): string[] {
  return [String(r.cost), String(r.windows.length), ...windowArgs(r.windows, (_, i) => r.epochs[i])];
}

/** ARGV of {@link RATE_INSPECT_LUA}. */
export function rateInspectArgs(windows: readonly RateWindow[], now: number | undefined): string[] {
  return [clockArg(now), String(windows.length), ...windowArgs(windows, (w) => w.limit)];
}

/** ARGV of {@link RATE_ADMIN_LUA}. */
export function rateAdminArgs(change: RateAdminChange): string[] {
  const flag = (b: boolean | undefined) => (b === undefined ? '' : b ? '1' : '0');
  const limits = change.limits === undefined ? undefined : change.limits === null ? undefined : formatRateLimits(change.limits);
  const limitsMode = change.limits === undefined ? '' : limits === undefined ? '0' : '1';
  return ['', change.reset ? '1' : '0', change.unjail ? '1' : '0', flag(change.block), flag(change.bypass), limitsMode, limits ?? '', change.label ?? '', String(RATE_ADMIN_TTL_MS)];
}

const OUTCOMES = ['allowed', 'denied', 'jailed', 'blocked', 'bypassed'] as const;

function malformed(what: string, reply: unknown): Error {
  return new Error(`unexpected reply of the ${what} script: ${JSON.stringify(reply)}`);
}

/** The {@link RateResult} of a {@link RATE_LIMIT_LUA} reply. */
export function parseRateLimitReply(r: RateRequest, reply: unknown): RateResult {
  if (!Array.isArray(reply) || reply.length < 4) throw malformed('rate-limit', reply);
  const [code, failing, retryAfterMs, n] = reply.slice(0, 4).map(Number);
  const outcome = OUTCOMES[code];
  if (outcome === undefined || reply.length !== 4 + n * 5) throw malformed('rate-limit', reply);
  const windows: RateWindowState[] = [];
  const epochs: number[] = [];
  for (let i = 0; i < n; i++) {
    const [used, limit, remaining, resetMs, epoch] = reply.slice(4 + i * 5, 9 + i * 5).map(Number);
    windows.push({ used, limit, remaining, resetMs });
    epochs.push(epoch);
  }
  const result: RateResult = { outcome, failing, retryAfterMs, windows };
  if (outcome === 'allowed' && r.cost > 0) result.reservation = { key: r.key, cost: r.cost, windows: r.windows, epochs };
  return result;
}

/** The {@link RateInspection} of a {@link RATE_INSPECT_LUA} reply. */
export function parseRateInspectReply(reply: unknown): RateInspection {
  if (!Array.isArray(reply) || reply.length < 8) throw malformed('rate-inspect', reply);
  const n = Number(reply[7]);
  if (reply.length !== 8 + n * 4) throw malformed('rate-inspect', reply);
  const windows: RateWindowState[] = [];
  for (let i = 0; i < n; i++) {
    const [used, limit, remaining, resetMs] = reply.slice(8 + i * 4, 12 + i * 4).map(Number);
    windows.push({ used, limit, remaining, resetMs });
  }
  const limitsText = String(reply[6]);
  return {
    label: Number(reply[1]) === 1 ? String(reply[2]) : undefined,
    windows,
    jailedForMs: Number(reply[3]),
    blocked: Number(reply[4]) === 1,
    bypass: Number(reply[5]) === 1,
    limits: limitsText === '' ? undefined : parseRateLimits(limitsText),
    exists: Number(reply[0]) === 1,
  };
}
