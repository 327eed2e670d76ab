/**
 * Per-subject online rate profiles ({@link profileUpdate}), in TypeScript: the in-memory twin of
 * the profile operation, and the reference the Redis store's Lua script (`profile-lua.ts`) mirrors
 * step for step. Both must compute identically, to the last bit of every double: the arithmetic is
 * the same IEEE operations in the same order (`+ − × ÷` and `sqrt` are correctly rounded in both), and
 * every stored double is written so it reads back exactly (`String(x)` here, `%.17g` in Lua).
 *
 * **Storage.** One hash per subject . `M = ⌊now / 60 000⌋` is the current minute, `W` the longest timeframe.
 * - `r`, the minute ring: `"start,c0,c1,…,c(W−1)"`, the counts of minutes start … start + W − 1.
 * - `f<T>` per timeframe T: `"bucket,n,mean,variance,h1,h2,…"`: the open bucket (`⌊minute / T⌋` of
 *   the latest call), the number of active buckets learned, their EW mean and variance, and the last
 *   `keep` learned counts, oldest first.
 * A field that cannot be read (not written by this code) is taken as absent and rewritten.
 *
 * **One call** (see {@link profileCompute}): each timeframe whose bucket has closed since the last call
 * learns the closed bucket's count from the ring as stored (before minutes leave it: the bucket may
 * start before M − W + 1), when it is active (> 0; empty buckets, and the buckets between the closed
 * one and the current one, are not learned); the ring is moved on to cover [M − W + 1, M]; the amount is
 * added to minute M; each timeframe's count is the sum of its last T minutes.
 *
 * **Clock behind.** A call whose minute M is before the ring's latest minute L (another host's clock a
 * little behind) rewrites no history: the ring keeps covering [L − W + 1, L]; the amount goes to
 * minute M if the ring still holds it, else to its oldest minute; counts are taken over the T minutes
 * ending at that minute; a timeframe whose bucket would go back changes nothing.
 * @module
 */
import { invalidAtomicArgument, parseStoredList } from 'themis-milter';
import { PROFILE_MAX_TRAITS, type ProfileRequest, type ProfileResult, type ProfileTimeframe, type ProfileTrait, type ProfileTraitResult } from './types.ts';

/** Length of a bucket's unit, ms: timeframes are counted in whole minutes. */
export const PROFILE_MINUTE_MS = 60_000;
/** Longest timeframe, minutes (one day): the ring holds that many counts. */
export const PROFILE_MAX_TIMEFRAME = 1440;
/** Most learned counts kept per timeframe. */
export const PROFILE_MAX_KEEP = 200;
/** Latest `now` accepted, ms since the epoch (the end of JavaScript's date range). */
const MAX_TIME = 8.64e15;

/** A profile's hash: field → value. */
export type ProfileHash = ReadonlyMap<string, string>;

const invalid = (reason: string) => invalidAtomicArgument('PREDICT.PROFILE', reason);
const isNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

/**
 * Checks a request (`at`: its index in the batch, for the message). `amount` a safe integer ≥ 0;
 * `timeframes` non-empty, ascending, distinct integers 1..{@link PROFILE_MAX_TIMEFRAME}; `span` ≥ 1;
 * `keep` an integer 1..{@link PROFILE_MAX_KEEP}; `clipK` ≥ 0; `clipAfter` an integer ≥ 0; `ttlMs` > 0
 * (rounded up, at most 2^53 − 1); `now`, when given, a time 0..8.64e15 ms; `inspect` a boolean.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateProfileRequest(r: ProfileRequest, at = 0): void {
  const where = `requests[${at}]`;
  if (typeof r !== 'object' || r === null) throw invalid(`${where} is not an object`);
  if (typeof r.key !== 'string') throw invalid(`${where}.key must be a string`);
  if (!Number.isSafeInteger(r.amount) || r.amount < 0) throw invalid(`${where}.amount must be an integer ≥ 0 (got ${String(r.amount)})`);
  const tf = r.timeframes;
  if (!Array.isArray(tf) || tf.length === 0) throw invalid(`${where}.timeframes must be a non-empty array`);
  for (let i = 0; i < tf.length; i++) {
    const t: unknown = tf[i];
    if (!Number.isInteger(t) || (t as number) < 1 || (t as number) > PROFILE_MAX_TIMEFRAME) throw invalid(`${where}.timeframes[${i}] must be an integer from 1 to ${PROFILE_MAX_TIMEFRAME} minutes (got ${String(t)})`);
    if (i > 0 && (t as number) <= tf[i - 1]) throw invalid(`${where}.timeframes must be ascending and distinct (got ${tf.join(',')})`);
  }
  if (!isNumber(r.span) || r.span < 1) throw invalid(`${where}.span must be a number ≥ 1 (got ${String(r.span)})`);
  if (!Number.isInteger(r.keep) || r.keep < 1 || r.keep > PROFILE_MAX_KEEP) throw invalid(`${where}.keep must be an integer from 1 to ${PROFILE_MAX_KEEP} (got ${String(r.keep)})`);
  if (!isNumber(r.clipK) || r.clipK < 0) throw invalid(`${where}.clipK must be a number ≥ 0 (got ${String(r.clipK)})`);
  if (!Number.isSafeInteger(r.clipAfter) || r.clipAfter < 0) throw invalid(`${where}.clipAfter must be an integer ≥ 0 (got ${String(r.clipAfter)})`);
  if (!isNumber(r.ttlMs) || r.ttlMs <= 0 || Math.ceil(r.ttlMs) > Number.MAX_SAFE_INTEGER) throw invalid(`${where}.ttlMs must be a number of ms > 0 (got ${String(r.ttlMs)})`);
  if (r.now !== undefined && !(isNumber(r.now) && r.now >= 0 && r.now <= MAX_TIME)) throw invalid(`${where}.now must be a time ≥ 0, ms (got ${String(r.now)})`);
  if (r.inspect !== undefined && typeof r.inspect !== 'boolean') throw invalid(`${where}.inspect must be a boolean`);
  if (r.traits !== undefined) {
    if (!Array.isArray(r.traits) || r.traits.length > PROFILE_MAX_TRAITS) throw invalid(`${where}.traits must be an array of at most ${PROFILE_MAX_TRAITS} traits`);
    const names = new Set<string>();
    r.traits.forEach((t: ProfileTrait, i) => {
      const w = `${where}.traits[${i}]`;
      if (typeof t !== 'object' || t === null) throw invalid(`${w} is not an object`);
      if (typeof t.name !== 'string' || !TRAIT_NAME.test(t.name) || names.has(t.name)) throw invalid(`${w}.name must be 1 to 8 lower-case letters, distinct (got ${String(t.name)})`);
      names.add(t.name);
      if (typeof t.value !== 'string' || !TRAIT_VALUE.test(t.value)) throw invalid(`${w}.value must be 1 to 64 printable ASCII characters without space, comma or semicolon`);
      if (!Number.isInteger(t.max) || t.max < 1 || t.max > 64) throw invalid(`${w}.max must be an integer from 1 to 64 (got ${String(t.max)})`);
      if (!Number.isInteger(t.cap) || t.cap < 2 || t.cap > 1_000_000) throw invalid(`${w}.cap must be an integer from 2 to 1000000 (got ${String(t.cap)})`);
      if (t.young !== undefined && (!Number.isInteger(t.young) || t.young < 0 || t.young > PROFILE_MAX_YOUNG_HOURS)) throw invalid(`${w}.young must be an integer from 0 to ${PROFILE_MAX_YOUNG_HOURS} hours (got ${String(t.young)})`);
    });
  }
}

const TRAIT_NAME = /^[a-z]{1,8}$/;
/** Longest `young` window of a trait, hours (a year). */
export const PROFILE_MAX_YOUNG_HOURS = 8760;
const TRAIT_VALUE = /^[\x21-\x2b\x2d-\x3a\x3c-\x7e]{1,64}$/;

/** The field of a trait. */
export const traitField = (name: string): string => `t${name}`;

/** Length of a trait's time unit, ms: counts are of active hours. */
export const TRAIT_HOUR_MS = 3_600_000;

/** One value of a trait as stored. */
interface TraitEntry {
  value: string;
  count: number;
  hour: number;
  /** The hour the value entered the map (0: unknown — stored before first hours were kept — so old). */
  first: number;
}

const TRAIT_HEAD = /^(\d{1,15}),(\d{1,15})(.*)$/s;
const TRAIT_ENTRY = /^;([^,;]+),(\d{1,15}),(\d{1,15})(?:,(\d{1,15}))?$/s;

/**
 * A stored trait, `"total,distinct;value,count,hour,first;…"`, or undefined when absent or unreadable
 * (the script reads it the same way: the head, then every `;`-separated entry). An entry written before
 * first hours were kept, `value,count,hour`, reads with first hour 0: an old value.
 */
export function parseTrait(text: string | undefined): { total: number; distinct: number; entries: TraitEntry[] } | undefined {
  if (text === undefined) return undefined;
  const m = TRAIT_HEAD.exec(text);
  if (!m) return undefined;
  const entries: TraitEntry[] = [];
  const rest = m[3];
  if (rest !== '') {
    if (rest[0] !== ';') return undefined;
    for (const part of rest.slice(1).split(';')) {
      const e = TRAIT_ENTRY.exec(`;${part}`);
      if (!e) return undefined;
      entries.push({ value: e[1], count: Number(e[2]), hour: Number(e[3]), first: e[4] === undefined ? 0 : Number(e[4]) });
    }
  }
  return { total: Number(m[1]), distinct: Number(m[2]), entries };
}

/**
 * One trait learned at hour H (the script mirrors it): the value found (first match) or appended; a
 * known value counts once more when its last hour is before H (a clock behind learns nothing); a new
 * one enters with 1 and adds one to `distinct`; both add one to the total. Beyond `max` values, the
 * least counted other than this one goes (then the oldest hour, then the first in the list). Past
 * `cap`, the total, `distinct` and every count are halved, rounded up (`⌊(x + 1) / 2⌋`: a value never
 * drops to 0 there). Integers only: the script computes the same.
 */
export function traitCompute(text: string | undefined, t: ProfileTrait, H: number): { result: ProfileTraitResult; text: string } {
  const stored = parseTrait(text) ?? { total: 0, distinct: 0, entries: [] };
  let { total, distinct } = stored;
  const entries = stored.entries;
  let at = -1;
  for (let i = 0; i < entries.length; i++) {
    if (entries[i].value === t.value) {
      at = i;
      break;
    }
  }
  // The values young at H (entered within `young` hours), this one left out: a subject showing many new values at once.
  let youngValues = 0;
  let youngHours = 0;
  const young = t.young ?? 0;
  if (young > 0) {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (i !== at && e.first > 0 && H - e.first < young) {
        youngValues += 1;
        youngHours += e.count;
      }
    }
  }
  const result: ProfileTraitResult = { name: t.name, total, distinct, count: at >= 0 ? entries[at].count : 0, hour: at >= 0 ? entries[at].hour : 0, size: entries.length, now: H, first: at >= 0 ? entries[at].first : 0, youngValues, youngHours };
  let own: TraitEntry;
  if (at >= 0) {
    own = entries[at];
    if (own.hour < H) {
      own.count += 1;
      own.hour = H;
      total += 1;
    }
  } else {
    own = { value: t.value, count: 1, hour: H, first: H };
    entries.push(own);
    total += 1;
    distinct += 1;
  }
  while (entries.length > t.max) {
    let worst = -1;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e === own) continue;
      if (worst < 0 || e.count < entries[worst].count || (e.count === entries[worst].count && e.hour < entries[worst].hour)) worst = i;
    }
    entries.splice(worst, 1);
  }
  if (total > t.cap) {
    total = Math.floor((total + 1) / 2);
    distinct = Math.floor((distinct + 1) / 2);
    for (const e of entries) e.count = Math.floor((e.count + 1) / 2);
  }
  let out = `${total},${distinct}`;
  for (const e of entries) out += `;${e.value},${e.count},${e.hour},${e.first}`;
  return { result, text: out };
}

/** A request's expiry, ms: `ttlMs` rounded up (validated). */
export const profileTtl = (r: ProfileRequest): number => Math.ceil(r.ttlMs);

/** The field of a timeframe's statistics. */
export const profileField = (minutes: number): string => `f${minutes}`;

/** The field of the minute ring. */
export const PROFILE_RING = 'r';

/**
 * A stored number, or undefined when unreadable: what Lua's `tonumber` reads and is finite (an empty
 * or blank text is no number, though `Number` says 0).
 */
function num(text: string): number | undefined {
  if (/^\s*$/.test(text)) return undefined;
  const v = Number(text);
  return Number.isFinite(v) ? v : undefined;
}

/** A stored ring, `[start, c0, …]`, or undefined when absent or unreadable (read as the script's `cjson.decode('[' .. text .. ']')`: at least two elements, all numbers). */
function parseRing(text: string | undefined): number[] | undefined {
  const ring = parseStoredList(text);
  if (ring === undefined || ring.length < 2) return undefined;
  for (const x of ring) if (typeof x !== 'number') return undefined;
  return ring as number[];
}

/** One timeframe's statistics as stored; the history stays text (`h1,h2,…`, '' for none), `hn` values. */
interface Stats {
  bucket: number;
  n: number;
  mean: number;
  variance: number;
  hist: string;
  hn: number;
}

const STATS = /^([^,]*),([^,]*),([^,]*),([^,]*)(.*)$/s;

/** A stored `f<T>`, or undefined when absent or unreadable (bucket and n must be integers). */
function parseStats(text: string | undefined): Stats | undefined {
  if (text === undefined) return undefined;
  const m = STATS.exec(text);
  if (!m) return undefined;
  const bucket = num(m[1]);
  const n = num(m[2]);
  const mean = num(m[3]);
  const variance = num(m[4]);
  if (bucket === undefined || n === undefined || mean === undefined || variance === undefined || bucket !== Math.floor(bucket) || n !== Math.floor(n)) return undefined;
  const hist = m[5].slice(1);
  let hn = 0;
  if (hist !== '') {
    hn = 1;
    for (let i = hist.indexOf(','); i >= 0; i = hist.indexOf(',', i + 1)) hn++;
  }
  return { bucket, n, mean, variance, hist, hn };
}

/** A history's text as numbers. */
export function parseProfileHistory(text: string): number[] {
  return text === '' ? [] : text.split(',').map(Number);
}

/** What one call computes: the result, and the fields to write (none to write with `inspect`, though they are computed). */
export interface ProfileComputation {
  result: ProfileResult;
  /** Field, value: the ring, then every requested timeframe's statistics. */
  fields: [field: string, value: string][];
}

/**
 * One request at `now` (ms) on the subject's hash (undefined: no such subject), which is not changed:
 * the store writes `fields` and sets the expiry unless the request only inspects. The request must
 * have been validated.
 */
export function profileCompute(hash: ProfileHash | undefined, r: ProfileRequest, now: number): ProfileComputation {
  const M = Math.floor(now / PROFILE_MINUTE_MS);
  const tfs = r.timeframes;
  const nt = tfs.length;
  const W = tfs[nt - 1];

  // 1. The ring as stored: counts of minutes start … last.
  const old = parseRing(hash?.get(PROFILE_RING));
  const start = old ? old[0] : 0;
  const last = old ? start + old.length - 2 : 0;
  let E = M;
  if (old && last > E) E = last;

  // 2. Each timeframe learns the bucket that closed, from the ring as stored.
  const fields: [string, string][] = [];
  const stats: Stats[] = [];
  const alphaSpan = 2 / (r.span + 1);
  for (let i = 0; i < nt; i++) {
    const T = tfs[i];
    const B = Math.floor(M / T);
    const s: Stats = parseStats(hash?.get(profileField(T))) ?? { bucket: B, n: 0, mean: 0, variance: 0, hist: '', hn: 0 };
    if (B > s.bucket) {
      let x = 0;
      if (old) {
        let lo = s.bucket * T;
        let hi = s.bucket * T + T - 1;
        if (lo < start) lo = start;
        if (hi > last) hi = last;
        for (let m = lo; m <= hi; m++) x += old[1 + m - start];
      }
      if (x > 0) {
        if (r.clipK > 0 && s.n >= r.clipAfter) {
          let cap = s.mean + r.clipK * Math.sqrt(s.variance);
          if (cap < s.mean) cap = s.mean;
          if (x > cap) x = cap;
        }
        s.n = s.n + 1;
        if (s.n === 1) {
          s.mean = x;
          s.variance = 0;
        } else {
          let alpha = alphaSpan;
          if (alpha < 1 / s.n) alpha = 1 / s.n;
          const diff = x - s.mean;
          const incr = alpha * diff;
          s.mean = s.mean + incr;
          s.variance = (1 - alpha) * (s.variance + diff * incr);
        }
        const xs = String(x);
        s.hist = s.hn === 0 ? xs : `${s.hist},${xs}`;
        s.hn++;
      }
      s.bucket = B;
    }
    if (s.hn > r.keep) {
      let p = -1;
      for (let k = 0; k < s.hn - r.keep; k++) p = s.hist.indexOf(',', p + 1);
      s.hist = s.hist.slice(p + 1);
      s.hn = r.keep;
    }
    stats.push(s);
  }

  // 1 (cont.). The ring moved on to [E − W + 1, E]; 3. the amount added to minute M (or the oldest).
  const base = E - W + 1;
  const ring = new Array<number>(W);
  for (let j = 0; j < W; j++) {
    const m = base + j;
    ring[j] = old && m >= start && m <= last ? old[1 + m - start] : 0;
  }
  const P = M < base ? base : M;
  ring[P - base] += r.amount;

  // 4. Sliding counts: the last T minutes up to P, the timeframes ascending.
  const out: ProfileTimeframe[] = new Array(nt);
  let acc = 0;
  let j = 0;
  for (let i = 0; i < nt; i++) {
    const T = tfs[i];
    while (j < T && P - j >= base) {
      acc += ring[P - j - base];
      j++;
    }
    const s = stats[i];
    out[i] = { minutes: T, count: acc, n: s.n, mean: s.mean, variance: s.variance, history: parseProfileHistory(s.hist) };
    fields.push([profileField(T), `${s.bucket},${s.n},${s.mean},${s.variance}${s.hn > 0 ? `,${s.hist}` : ''}`]);
  }
  fields.unshift([PROFILE_RING, `${base},${ring.join(',')}`]);
  if (r.traits === undefined) return { result: { timeframes: out }, fields };

  // 5. Each trait, at the hour of now (its own field; the clock behind does not move it back).
  const H = Math.floor(now / TRAIT_HOUR_MS);
  const traits: ProfileTraitResult[] = [];
  for (const t of r.traits) {
    const c = traitCompute(hash?.get(traitField(t.name)), t, H);
    traits.push(c.result);
    fields.push([traitField(t.name), c.text]);
  }
  return { result: { timeframes: out, traits }, fields };
}
