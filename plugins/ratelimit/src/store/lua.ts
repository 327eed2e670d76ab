/**
 * The Redis side of the rate limiter: four Lua scripts, each on one key (`numkeys = 1`, so any
 * Cluster node can run it without hash tags), mirroring `algorithm.ts` step for step, and the
 * encoding of their arguments and replies. Arithmetic stays on integers below 2^53, exact in Lua's doubles; numbers are written
 * with `%d` because Lua's `tostring` switches to exponent notation past 14 digits. Rings are read
 * with `cjson.decode` (C, one call per ring) and rewritten from their old text, so a decision formats
 * at most two numbers per window whatever its slots.
 *
 * The clock is Redis' `TIME`, one clock for every daemon of a pool; an explicit `now` argument (only
 * sent by a store built with `testClock`) replaces it.
 * @module
 */
import { replyText } from 'themis-milter';
import type { RateAdminChange, RateInspection, RateRequest, RateReservation, RateResult, RateWindow, RateWindowState } from './types.ts';
import { RATE_ADMIN_TTL_MS, formatRateLimits, parseRateLimits, sameRateWindows } from './algorithm.ts';

/**
 * Helpers every script starts with. Keep in step with `algorithm.ts`. Every call of a script runs
 * this chunk again, so it stays short: a few locals and four small functions.
 */
const PRELUDE = `
local floor, fmt, find, sub, rep = math.floor, string.format, string.find, string.sub, string.rep
local decode = cjson.decode

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return t[1] * 1000 + floor(t[2] / 1000)
end

-- The overrides of '!limits' ("W:L,W:L"), or nil for none.
local function overrides(text)
  if not text then return nil end
  local o = {}
  for w, l in string.gmatch(text, '(%d+):(%d+)') do o[tonumber(w)] = tonumber(l) end
  return o
end

-- One window from its ring "E,c(E-N),...,c(E)" (nil: none; unreadable: none). Count j (epoch
-- E - N + j, j = 0..N) is t[2 + s + j] for j <= N - s, else 0: the ring is read s epochs after its
-- latest. used: their sum; first: the first j counting something (-1: none).
local function view(text, W, N, limit, now)
  local g = math.ceil(W / N)
  local E = floor(now / g)
  local used, first, t, s = 0, -1, nil, N + 1
  if text then
    local ok, r = pcall(decode, '[' .. text .. ']')
    if ok and type(r) == 'table' and #r == N + 2 and type(r[1]) == 'number' then
      local e = r[1]
      -- The clock stepped back: keep the latest epoch until it catches up.
      if e > E then E = e end
      t, s = r, E - e
      for j = 0, N - s do
        local c = r[2 + s + j]
        if c > 0 then
          used = used + c
          if first < 0 then first = j end
        end
      end
    end
  end
  return { text = text, N = N, g = g, E = E, t = t, s = s, used = used, first = first, limit = limit }
end

local function state(out, v, now)
  local remaining = v.limit - v.used
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if v.first >= 0 then reset = (v.E + v.first + 1) * v.g - now end
  local k = #out
  out[k + 1] = v.used
  out[k + 2] = v.limit
  out[k + 3] = remaining
  out[k + 4] = reset
end
`;

/**
 * KEYS: the subject. ARGV: now ('' = TIME), cost, jailMs, label ('' = none), window count, then per
 * window windowMs, slots, limit. Reply: outcome (0 allowed, 1 denied, 2 jailed, 3 blocked, 4
 * bypassed), failing, retryAfterMs, window count, then per window used, limit, remaining, resetMs,
 * epoch.
 *
 * One HMGET reads the flags, the label and every ring; one HSET writes what changed; then PEXPIRE (or
 * PERSIST). A ring is rewritten from its old text, not reformatted: the same slot gets its new count,
 * or the kept counts are shifted left and zeros appended.
 */
export const RATE_LIMIT_LUA = `${PRELUDE}
local key = KEYS[1]
local now = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local jailMs = tonumber(ARGV[3])
local label = ARGV[4]
local n = tonumber(ARGV[5])
local names = { '!block', '!bypass', '!jail', '!limits', 'v' }
for i = 1, n do names[5 + i] = 'w' .. ARGV[3 + 3 * i] .. '/' .. ARGV[4 + 3 * i] end
local f = redis.call('HMGET', key, unpack(names))
if f[1] then return { 3, -1, 0, 0 } end
if f[2] then return { 4, -1, 0, 0 } end
local o = overrides(f[4])
local views = {}
for i = 1, n do
  local W = tonumber(ARGV[3 + 3 * i])
  views[i] = view(f[5 + i], W, tonumber(ARGV[4 + 3 * i]), o and o[W] or tonumber(ARGV[5 + 3 * i]), now)
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
  if ttl > 0 then redis.call('PEXPIRE', key, fmt('%d', ttl)) end
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
        -- need >= 1 and need <= used: found among the counted slots.
        local need = v.used + cost - v.limit
        local freed, t, b = 0, v.t, 2 + v.s
        for j = v.first, v.N - v.s do
          freed = freed + t[b + j]
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
      if label ~= '' and not f[5] then
        redis.call('HSET', key, '!jail', fmt('%d', now + jailMs), 'v', label)
      else
        redis.call('HSET', key, '!jail', fmt('%d', now + jailMs))
      end
      expire(now + jailMs)
      if retry >= 0 and jailMs > retry then retry = jailMs end
    end
  elseif cost > 0 then
    local fields = {}
    for i = 1, n do
      local v = views[i]
      local N, t, s = v.N, v.t, v.s
      local text
      if t and s == 0 then
        -- Same epoch: only the last count changes.
        local c = t[N + 2] + cost
        t[N + 2] = c
        text = string.match(v.text, '^(.*,)') .. fmt('%d', c)
      elseif t and s <= N then
        -- s epochs later: drop the epoch and the s oldest counts, append s - 1 zeros and the cost.
        local p = 0
        for _ = 0, s do p = find(v.text, ',', p + 1, true) end
        text = fmt('%d', v.E) .. ',' .. sub(v.text, p + 1) .. rep(',0', s - 1) .. ',' .. fmt('%d', cost)
      else
        text = fmt('%d', v.E) .. rep(',0', N) .. ',' .. fmt('%d', cost)
      end
      v.used = v.used + cost
      if v.first < 0 then v.first = N end
      fields[2 * i - 1] = names[5 + i]
      fields[2 * i] = text
    end
    if label ~= '' and not f[5] then
      fields[2 * n + 1] = 'v'
      fields[2 * n + 2] = label
    end
    redis.call('HSET', key, unpack(fields))
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

/**
 * KEYS: the subject. ARGV: cost, window count, then per window windowMs, slots, epoch. A ring gives
 * back the cost (not below 0) only while it still counts the reserved epoch e: E − N ≤ e ≤ E, E its
 * latest epoch. Once the slot rolled over, the units have left the window anyway.
 */
export const RATE_REFUND_LUA = `${PRELUDE}
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local names = {}
for i = 1, n do names[i] = 'w' .. ARGV[3 * i] .. '/' .. ARGV[3 * i + 1] end
local vals = redis.call('HMGET', key, unpack(names))
local fields = {}
for i = 1, n do
  local N, e = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local text = vals[i]
  if text then
    local ok, r = pcall(decode, '[' .. text .. ']')
    if ok and type(r) == 'table' and #r == N + 2 and type(r[1]) == 'number' and r[1] - N <= e and e <= r[1] then
      local k = 2 + e - (r[1] - N)
      local c = r[k] - cost
      if c < 0 then c = 0 end
      r[k] = c
      local parts = {}
      for j = 1, N + 2 do parts[j] = fmt('%d', r[j]) end
      fields[#fields + 1] = names[i]
      fields[#fields + 1] = table.concat(parts, ',')
    end
  end
end
if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
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
local names = { '!block', '!bypass', '!jail', '!limits', 'v' }
for i = 1, n do names[5 + i] = 'w' .. ARGV[3 * i] .. '/' .. ARGV[3 * i + 1] end
local f = redis.call('HMGET', key, unpack(names))
local o = overrides(f[4])
local jailed = (tonumber(f[3] or '0') or 0) - now
if jailed < 0 then jailed = 0 end
local function flag(x) if x then return 1 end return 0 end
-- A nil inside a reply table would cut it short: absent strings are sent as '' with a presence flag.
local out = { redis.call('EXISTS', key), flag(f[5]), f[5] or '', jailed, flag(f[1]), flag(f[2]), f[4] or '', n }
for i = 1, n do
  local W = tonumber(ARGV[3 * i])
  state(out, view(f[5 + i], W, tonumber(ARGV[3 * i + 1]), o and o[W] or tonumber(ARGV[3 * i + 2]), now), now)
end
return out
`;

/**
 * KEYS: the subject. ARGV: now ('' = TIME), reset (0/1), unjail (0/1), block, bypass (1 set, 0
 * delete, '' leave), limits mode (1 set, 0 delete, '' leave), limits text, label ('' = none), default
 * TTL ms, jailMs (0 = none).
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
local jailMs = tonumber(ARGV[10] or '0') or 0
if jailMs > 0 then
  local current = tonumber(redis.call('HGET', key, '!jail') or '0') or 0
  local untilMs = now + jailMs
  if current > untilMs then untilMs = current end
  redis.call('HSET', key, '!jail', string.format('%d', untilMs))
end
if ARGV[4] == '1' then redis.call('HSET', key, '!block', '1') elseif ARGV[4] == '0' then redis.call('HDEL', key, '!block') end
if ARGV[5] == '1' then redis.call('HSET', key, '!bypass', '1') elseif ARGV[5] == '0' then redis.call('HDEL', key, '!bypass') end
if ARGV[6] == '1' then redis.call('HSET', key, '!limits', ARGV[7]) elseif ARGV[6] == '0' then redis.call('HDEL', key, '!limits') end
if ARGV[8] ~= '' then redis.call('HSETNX', key, 'v', ARGV[8]) end
if redis.call('EXISTS', key) == 0 then return 0 end
local f = redis.call('HMGET', key, '!block', '!bypass', '!limits', '!jail')
if f[1] or f[2] or f[3] then
  redis.call('PERSIST', key)
else
  local pttl = redis.call('PTTL', key)
  local jailed = (tonumber(f[4] or '0') or 0) - now
  if pttl == -1 then
    local ttl = tonumber(ARGV[9])
    if jailed > ttl then ttl = jailed end
    redis.call('PEXPIRE', key, string.format('%d', ttl))
  elseif jailed > pttl then
    redis.call('PEXPIRE', key, string.format('%d', jailed))
  end
end
return 1
`;

const clockArg = (now: number | undefined) => (now === undefined ? '' : String(Math.floor(now)));
const windowArgs = (windows: readonly RateWindow[], third: (w: RateWindow, i: number) => number) => windows.flatMap((w, i) => [String(w.windowMs), String(w.slots), String(third(w, i))]);

/** The windows' part of a decision's ARGV (count, then length, slots, limit of each), made once per unchanged windows array: a policy's windows are the same array for every message. */
const limitArgs = new WeakMap<readonly RateWindow[], { values: number[]; args: string[] }>();

/** ARGV of {@link RATE_LIMIT_LUA} (`now` only when the store honours it). */
export function rateLimitArgs(r: RateRequest, now: number | undefined): string[] {
  let known = limitArgs.get(r.windows);
  if (known === undefined || !sameRateWindows(r.windows, known.values)) {
    known = { values: r.windows.flatMap((w) => [w.windowMs, w.slots, w.limit]), args: [String(r.windows.length), ...windowArgs(r.windows, (w) => w.limit)] };
    limitArgs.set(r.windows, known);
  }
  return [clockArg(now), String(r.cost), String(r.jailMs ?? 0), r.label ?? '', ...known.args];
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
  return ['', change.reset ? '1' : '0', change.unjail ? '1' : '0', flag(change.block), flag(change.bypass), limitsMode, limits ?? '', change.label ?? '', String(RATE_ADMIN_TTL_MS), String(change.jailMs ?? 0)];
}

const OUTCOMES = ['allowed', 'denied', 'jailed', 'blocked', 'bypassed'] as const;

function malformed(what: string, reply: unknown): Error {
  return new Error(`unexpected reply of the ${what} script: ${JSON.stringify(reply)}`);
}

/** The {@link RateResult} of a {@link RATE_LIMIT_LUA} reply (integers, as ioredis decodes them). */
export function parseRateLimitReply(r: RateRequest, reply: unknown): RateResult {
  if (!Array.isArray(reply) || reply.length < 4) throw malformed('rate-limit', reply);
  const outcome = OUTCOMES[Number(reply[0])];
  const n = Number(reply[3]);
  if (outcome === undefined || reply.length !== 4 + n * 5) throw malformed('rate-limit', reply);
  const windows: RateWindowState[] = new Array(n);
  const epochs: number[] = new Array(n);
  for (let i = 0, k = 4; i < n; i++, k += 5) {
    windows[i] = { used: Number(reply[k]), limit: Number(reply[k + 1]), remaining: Number(reply[k + 2]), resetMs: Number(reply[k + 3]) };
    epochs[i] = Number(reply[k + 4]);
  }
  const result: RateResult = { outcome, failing: Number(reply[1]), retryAfterMs: Number(reply[2]), windows };
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
  const limitsText = replyText(reply[6]);
  return {
    label: Number(reply[1]) === 1 ? replyText(reply[2]) : undefined,
    windows,
    jailedForMs: Number(reply[3]),
    blocked: Number(reply[4]) === 1,
    bypass: Number(reply[5]) === 1,
    limits: limitsText === '' ? undefined : parseRateLimits(limitsText),
    exists: Number(reply[0]) === 1,
  };
}
