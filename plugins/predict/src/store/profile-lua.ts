/**
 * The Redis side of the rate profiles ({@link profileUpdate}): one Lua script on one key
 * (`numkeys = 1`, so any Cluster node runs it without hash tags), mirroring `profile.ts` step for step,
 * and the encoding of its arguments and of its reply.
 *
 * Doubles (mean, variance, the learned counts once clipped) are written with `%.17g`, which reads back
 * as the same double, and sent back as such text (a Lua number in a reply would be cut to an integer);
 * integers (the ring, buckets, n) with `%d`, since Lua's `tostring` switches to exponent notation past
 * 14 digits. The history is kept as text and only appended to and cut, never reformatted.
 *
 * The clock is Redis' `TIME`; an explicit `now` argument (sent only by a store built with `testClock`)
 * replaces it.
 * @module
 */
import { replyText } from 'themis-milter';
import { parseProfileHistory, profileTtl } from './profile.ts';
import type { ProfileRequest, ProfileResult, ProfileTimeframe, ProfileTraitResult } from './types.ts';

/**
 * KEYS: the subject. ARGV: now ('' = TIME), amount, span, keep, clipK, clipAfter, ttlMs, inspect
 * (1/0), timeframe count, then the timeframes (ascending); then, only when the request has traits,
 * their count and per trait its name, value, max, cap and young hours. Reply: per timeframe { minutes,
 * count, n, mean, variance, history } — the last three as text (`%.17g`, history `h1,h2,…`); then per
 * trait { name, total, distinct, count, hour, size, now, first, youngValues, youngHours } (integers,
 * before this call learned; now: the call's hour).
 *
 * One HMGET reads the ring and every timeframe's statistics; unless inspecting, one HSET writes them
 * all back and PEXPIRE sets the expiry.
 */
export const PROFILE_UPDATE_LUA = `
local floor, fmt, find, sub, match = math.floor, string.format, string.find, string.sub, string.match
local huge = math.huge
local key = KEYS[1]
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = t[1] * 1000 + floor(t[2] / 1000)
end
local M = floor(now / 60000)
local amount = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local clipK = tonumber(ARGV[5])
local clipAfter = tonumber(ARGV[6])
local inspect = ARGV[8] == '1'
local nt = tonumber(ARGV[9])
local tfs, names = {}, { 'r' }
for i = 1, nt do
  tfs[i] = tonumber(ARGV[9 + i])
  names[i + 1] = 'f' .. ARGV[9 + i]
end
local W = tfs[nt]
-- Traits (only when sent): count, then name, value, max, cap, young each; their fields after the timeframes'.
local ntr = tonumber(ARGV[10 + nt] or '0')
local traits = {}
for j = 1, ntr do
  local a = 10 + nt + 5 * (j - 1)
  traits[j] = { name = ARGV[a + 1], value = ARGV[a + 2], max = tonumber(ARGV[a + 3]), cap = tonumber(ARGV[a + 4]), young = tonumber(ARGV[a + 5]) }
  names[nt + 1 + j] = 't' .. ARGV[a + 1]
end
local vals = redis.call('HMGET', key, unpack(names))

-- A stored number: finite, else nil (unreadable).
local function num(s)
  local v = tonumber(s)
  if v and v == v and v > -huge and v < huge then return v end
  return nil
end

-- 1. The ring as stored: counts of minutes start .. last (old[2 + m - start]); unreadable: none.
local old, start, last = nil, 0, 0
if vals[1] then
  local ok, r = pcall(cjson.decode, '[' .. vals[1] .. ']')
  if ok and type(r) == 'table' and #r >= 2 then
    local good = true
    for j = 1, #r do
      if type(r[j]) ~= 'number' then
        good = false
        break
      end
    end
    if good then old, start, last = r, r[1], r[1] + #r - 2 end
  end
end
local E = M
if old and last > E then E = last end

-- 2. Each timeframe learns the bucket that closed, from the ring as stored.
local alphaSpan = 2 / (span + 1)
local stats = {}
for i = 1, nt do
  local T = tfs[i]
  local B = floor(M / T)
  local s = nil
  local text = vals[i + 1]
  if text then
    local b, n, mean, var, rest = match(text, '^([^,]*),([^,]*),([^,]*),([^,]*)(.*)$')
    if b then
      b, n, mean, var = num(b), num(n), num(mean), num(var)
      if b and n and mean and var and b == floor(b) and n == floor(n) then
        local hist = sub(rest, 2)
        local hn = 0
        if hist ~= '' then
          local _, commas = string.gsub(hist, ',', ',')
          hn = commas + 1
        end
        s = { bucket = b, n = n, mean = mean, var = var, hist = hist, hn = hn }
      end
    end
  end
  if not s then s = { bucket = B, n = 0, mean = 0, var = 0, hist = '', hn = 0 } end
  if B > s.bucket then
    local x = 0
    if old then
      local lo, hi = s.bucket * T, s.bucket * T + T - 1
      if lo < start then lo = start end
      if hi > last then hi = last end
      for m = lo, hi do x = x + old[2 + m - start] end
    end
    if x > 0 then
      if clipK > 0 and s.n >= clipAfter then
        local cap = s.mean + clipK * math.sqrt(s.var)
        if cap < s.mean then cap = s.mean end
        if x > cap then x = cap end
      end
      s.n = s.n + 1
      if s.n == 1 then
        s.mean = x
        s.var = 0
      else
        local alpha = alphaSpan
        if alpha < 1 / s.n then alpha = 1 / s.n end
        local diff = x - s.mean
        local incr = alpha * diff
        s.mean = s.mean + incr
        s.var = (1 - alpha) * (s.var + diff * incr)
      end
      local xs = fmt('%.17g', x)
      if s.hn == 0 then s.hist = xs else s.hist = s.hist .. ',' .. xs end
      s.hn = s.hn + 1
    end
    s.bucket = B
  end
  if s.hn > keep then
    local p = 0
    for _ = 1, s.hn - keep do p = find(s.hist, ',', p + 1, true) end
    s.hist = sub(s.hist, p + 1)
    s.hn = keep
  end
  stats[i] = s
end

-- 1 (cont.). The ring moved on to [E - W + 1, E]; 3. the amount added to minute M (or the oldest).
local base = E - W + 1
local ring = {}
for j = 1, W do
  local m = base + j - 1
  if old and m >= start and m <= last then ring[j] = old[2 + m - start] else ring[j] = 0 end
end
local P = M
if P < base then P = base end
ring[1 + P - base] = ring[1 + P - base] + amount

-- 4. Sliding counts: the last T minutes up to P, the timeframes ascending.
local out = {}
local acc, j = 0, 0
for i = 1, nt do
  local T = tfs[i]
  while j < T and P - j >= base do
    acc = acc + ring[1 + P - j - base]
    j = j + 1
  end
  local s = stats[i]
  out[i] = { T, acc, s.n, fmt('%.17g', s.mean), fmt('%.17g', s.var), s.hist }
end

-- 5. Each trait, at the hour of now (profile.ts's traitCompute, step for step: integers only).
local H = floor(now / 3600000)
local traitTexts = {}
for j = 1, ntr do
  local t = traits[j]
  local total, distinct, entries = 0, 0, {}
  local text = vals[nt + 1 + j]
  if text then
    local tot, dis, rest = match(text, '^(%d+),(%d+)(.*)$')
    local good = tot ~= nil and #tot <= 15 and #dis <= 15
    local list = {}
    if good and rest ~= '' then
      if sub(rest, 1, 1) ~= ';' then
        good = false
      else
        local pos = 2
        while true do
          local e = find(rest, ';', pos, true)
          local part
          if e then part = sub(rest, pos, e - 1) else part = sub(rest, pos) end
          -- value,count,hour,first; an entry stored before first hours were kept has none: first 0, old.
          local v, c, h, f = match(part, '^([^,;]+),(%d+),(%d+),(%d+)$')
          if not v then
            v, c, h = match(part, '^([^,;]+),(%d+),(%d+)$')
            f = '0'
          end
          if not v or #c > 15 or #h > 15 or #f > 15 then
            good = false
            break
          end
          list[#list + 1] = { v = v, c = tonumber(c), h = tonumber(h), f = tonumber(f) }
          if not e then break end
          pos = e + 1
        end
      end
    end
    if good then total, distinct, entries = tonumber(tot), tonumber(dis), list end
  end
  local at = nil
  for i = 1, #entries do
    if entries[i].v == t.value then
      at = i
      break
    end
  end
  local count, hour, first = 0, 0, 0
  if at then count, hour, first = entries[at].c, entries[at].h, entries[at].f end
  local youngValues, youngHours = 0, 0
  if t.young > 0 then
    for i = 1, #entries do
      local e = entries[i]
      if i ~= at and e.f > 0 and H - e.f < t.young then
        youngValues = youngValues + 1
        youngHours = youngHours + e.c
      end
    end
  end
  out[nt + j] = { t.name, total, distinct, count, hour, #entries, H, first, youngValues, youngHours }
  local own
  if at then
    own = entries[at]
    if own.h < H then
      own.c = own.c + 1
      own.h = H
      total = total + 1
    end
  else
    own = { v = t.value, c = 1, h = H, f = H }
    entries[#entries + 1] = own
    total = total + 1
    distinct = distinct + 1
  end
  while #entries > t.max do
    local worst = nil
    for i = 1, #entries do
      local e = entries[i]
      if e ~= own and (worst == nil or e.c < entries[worst].c or (e.c == entries[worst].c and e.h < entries[worst].h)) then worst = i end
    end
    table.remove(entries, worst)
  end
  if total > t.cap then
    total = floor((total + 1) / 2)
    distinct = floor((distinct + 1) / 2)
    for i = 1, #entries do entries[i].c = floor((entries[i].c + 1) / 2) end
  end
  local parts = { fmt('%d', total) .. ',' .. fmt('%d', distinct) }
  for i = 1, #entries do
    local e = entries[i]
    parts[i + 1] = e.v .. ',' .. fmt('%d', e.c) .. ',' .. fmt('%d', e.h) .. ',' .. fmt('%d', e.f)
  end
  traitTexts[j] = table.concat(parts, ';')
end

-- 6. Unless inspecting: the ring, every timeframe and trait written back, and the expiry.
if not inspect then
  local parts = { fmt('%d', base) }
  for k = 1, W do
    local c = ring[k]
    if c == 0 then parts[k + 1] = '0' else parts[k + 1] = fmt('%d', c) end
  end
  local fields = { 'r', table.concat(parts, ',') }
  for i = 1, nt do
    local s = stats[i]
    local v = fmt('%d', s.bucket) .. ',' .. fmt('%d', s.n) .. ',' .. fmt('%.17g', s.mean) .. ',' .. fmt('%.17g', s.var)
    if s.hn > 0 then v = v .. ',' .. s.hist end
    fields[2 * i + 1] = names[i + 1]
    fields[2 * i + 2] = v
  end
  for j = 1, ntr do
    fields[2 * (nt + j) + 1] = names[nt + 1 + j]
    fields[2 * (nt + j) + 2] = traitTexts[j]
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, ARGV[7])
end
return out
`;

/** ARGV of {@link PROFILE_UPDATE_LUA} for a validated request (`now` only when the store honours it). */
export function profileUpdateArgs(r: ProfileRequest, now: number | undefined): string[] {
  const args = [now === undefined ? '' : String(Math.floor(now)), String(r.amount), String(r.span), String(r.keep), String(r.clipK), String(r.clipAfter), String(profileTtl(r)), r.inspect ? '1' : '0', String(r.timeframes.length)];
  for (const t of r.timeframes) args.push(String(t));
  // Traits only when asked: without them the call is exactly what it was before they existed.
  if (r.traits !== undefined) {
    args.push(String(r.traits.length));
    for (const t of r.traits) args.push(t.name, t.value, String(t.max), String(t.cap), String(t.young ?? 0));
  }
  return args;
}

/** The {@link ProfileResult} of a {@link PROFILE_UPDATE_LUA} reply. */
export function parseProfileReply(r: ProfileRequest, reply: unknown): ProfileResult {
  const nt = r.timeframes.length;
  if (!Array.isArray(reply) || reply.length !== nt + (r.traits?.length ?? 0)) throw new Error(`unexpected reply of the profile script: ${JSON.stringify(reply)}`);
  const timeframes: ProfileTimeframe[] = reply.slice(0, nt).map((t: unknown) => {
    if (!Array.isArray(t) || t.length !== 6) throw new Error(`unexpected reply of the profile script: ${JSON.stringify(reply)}`);
    return { minutes: Number(t[0]), count: Number(t[1]), n: Number(t[2]), mean: Number(replyText(t[3])), variance: Number(replyText(t[4])), history: parseProfileHistory(replyText(t[5])) };
  });
  if (r.traits === undefined) return { timeframes };
  const traits: ProfileTraitResult[] = reply.slice(nt).map((t: unknown) => {
    if (!Array.isArray(t) || t.length !== 10) throw new Error(`unexpected reply of the profile script: ${JSON.stringify(reply)}`);
    return { name: replyText(t[0]), total: Number(t[1]), distinct: Number(t[2]), count: Number(t[3]), hour: Number(t[4]), size: Number(t[5]), now: Number(t[6]), first: Number(t[7]), youngValues: Number(t[8]), youngHours: Number(t[9]) };
  });
  return { timeframes, traits };
}
