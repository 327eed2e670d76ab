/**
 * Bounded memories of recently seen members ({@link seenAdd}), in TypeScript: the in-memory twin,
 * and the reference its script ({@link SEEN_ADD_LUA}) mirrors.
 *
 * **Storage.** One string per key: the members, all of the same width, concatenated from the least
 * to the most recently seen. A member is found only at a multiple of the width, so a match that
 * straddles two members does not count. A stored text whose length is not a multiple of the width
 * (written with another width, or by something else) is taken as empty and rewritten.
 *
 * **One call.** Each member in turn: when found, it is taken out ("known", at the depth of the members
 * after it: the distinct members seen since), otherwise it is "new"; it is then appended (most recent).
 * Finally the oldest members beyond `keep` are dropped. A member twice in one call is new the first time
 * and known the second, at depth 0 when nothing came between.
 * @module
 */
import { invalidAtomicArgument, replyText } from 'themis-milter';

/** Most members a memory keeps. */
export const SEEN_MAX_KEEP = 10_000;
/** Widest member, characters. */
export const SEEN_MAX_WIDTH = 64;

/** Options of {@link seenAdd}. */
export interface SeenAddOptions {
  /** How many of the most recently seen members the memory keeps (an integer 1..10,000). */
  keep: number;
  /** The key's expiry, ms (> 0, rounded up), set again by every call that is not an inspection. */
  ttlMs: number;
  /** Tell what is new, but change nothing (nor the expiry). */
  inspect?: boolean;
}

/** What {@link seenAdd} tells. */
export interface SeenAddResult {
  /** Per member, in order: true when the memory did not hold it (its depth is -1). */
  fresh: boolean[];
  /**
   * Per member, in order: how many distinct members were seen more recently than it (0: it was the
   * last one seen), or -1 when the memory did not hold it. A policy reads "not written to among the last
   * N distinct recipients" from it, with one memory for every depth.
   */
  depth: number[];
  /** Members the memory holds after the call. */
  size: number;
}

const invalid = (reason: string) => invalidAtomicArgument('PREDICT.SEEN', reason);
const MEMBER = /^[\x21-\x7e]+$/;

/**
 * Checks a call: members printable ASCII without spaces (so their width is the same in bytes and
 * characters), all of one width 1..{@link SEEN_MAX_WIDTH}; `keep` an integer 1..{@link SEEN_MAX_KEEP};
 * `ttlMs` > 0 (at most 2^53 − 1 once rounded up). Returns the width (0 for no members).
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateSeenAdd(members: readonly string[], options: SeenAddOptions): number {
  if (!Array.isArray(members)) throw invalid('members must be an array of strings');
  const o = options as Partial<SeenAddOptions> | undefined;
  if (typeof o !== 'object' || o === null) throw invalid('options must be an object');
  if (!Number.isInteger(o.keep) || o.keep! < 1 || o.keep! > SEEN_MAX_KEEP) throw invalid(`keep must be an integer from 1 to ${SEEN_MAX_KEEP} (got ${String(o.keep)})`);
  if (typeof o.ttlMs !== 'number' || !Number.isFinite(o.ttlMs) || o.ttlMs <= 0 || Math.ceil(o.ttlMs) > Number.MAX_SAFE_INTEGER) throw invalid(`ttlMs must be a number of ms > 0 (got ${String(o.ttlMs)})`);
  if (o.inspect !== undefined && typeof o.inspect !== 'boolean') throw invalid('inspect must be a boolean');
  let width = 0;
  for (let i = 0; i < members.length; i++) {
    const m: unknown = members[i];
    if (typeof m !== 'string' || !MEMBER.test(m) || m.length > SEEN_MAX_WIDTH) throw invalid(`members[${i}] must be 1 to ${SEEN_MAX_WIDTH} printable ASCII characters without spaces`);
    if (i === 0) width = m.length;
    else if (m.length !== width) throw invalid(`members[${i}] is ${m.length} characters wide; members[0] is ${width}: every member must have the same width`);
  }
  return width;
}

/** One call on the stored text (undefined: no such key): the new text and what the call tells. The call must have been validated. */
export function seenCompute(stored: string | undefined, members: readonly string[], keep: number, width: number): { text: string; result: SeenAddResult } {
  let s = stored !== undefined && width > 0 && stored.length % width === 0 ? stored : '';
  const depth: number[] = new Array(members.length);
  for (let i = 0; i < members.length; i++) {
    const m = members[i];
    let at = s.indexOf(m);
    while (at >= 0 && at % width !== 0) at = s.indexOf(m, at + 1);
    if (at >= 0) s = s.slice(0, at) + s.slice(at + width);
    // After the removal, the members from `at` on are those seen more recently.
    depth[i] = at < 0 ? -1 : (s.length - at) / width;
    s += m;
  }
  if (s.length > keep * width) s = s.slice(s.length - keep * width);
  return { text: s, result: { fresh: depth.map((d) => d < 0), depth, size: width > 0 ? s.length / width : 0 } };
}

/**
 * {@link seenCompute} in Lua, one key: ARGV = width, keep, TTL ms, inspect (1/0), then the members.
 * Returns the depths (comma-separated, -1 for new: the fresh flags are read from them) and the size.
 * Lua's `string.find(…, true)` is a plain byte search, as `indexOf` is on ASCII.
 */
export const SEEN_ADD_LUA = `local k = KEYS[1]
local w = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local s = redis.call('GET', k)
if not s or #s % w ~= 0 then s = '' end
local depths = {}
for i = 5, #ARGV do
  local m = ARGV[i]
  local at = string.find(s, m, 1, true)
  while at and (at - 1) % w ~= 0 do at = string.find(s, m, at + 1, true) end
  if at then
    s = string.sub(s, 1, at - 1) .. string.sub(s, at + w)
    depths[#depths + 1] = tostring((#s - at + 1) / w)
  else
    depths[#depths + 1] = '-1'
  end
  s = s .. m
end
if #s > keep * w then s = string.sub(s, #s - keep * w + 1) end
if ARGV[4] ~= '1' then redis.call('SET', k, s, 'PX', ARGV[3]) end
return {table.concat(depths, ','), #s / w}`;

/** The script's reply as a result. */
export function parseSeenReply(reply: unknown): SeenAddResult {
  if (!Array.isArray(reply) || reply.length !== 2) throw new Error(`unexpected reply of the seen script: ${JSON.stringify(reply)}`);
  const text = replyText(reply[0]);
  const depth = text === '' ? [] : text.split(',').map(Number);
  return { fresh: depth.map((d) => d < 0), depth, size: Number(reply[1]) };
}
