/**
 * The multi-window rate-limit algorithm, in TypeScript: the in-memory twin of the rate limiter's
 * atomic operations (`operations.ts`), and the reference their Lua scripts (`lua.ts`) mirror line for line. Both must decide
 * identically; the property tests run the same sequences against both.
 *
 * **Storage.** One hash per subject. A window of `windowMs` W counted in `slots` N is one field
 * `w<W>/<N>`, its ring: `"<E>,<c(E−N)>,…,<c(E)>"`, the latest epoch written E and the counts of the
 * N + 1 epochs E − N..E, oldest first, in decimal. The slot width is g = ⌈W / N⌉ ms and
 * `epoch = ⌊now / g⌋`. Read at a later epoch, the ring is shifted: counts of epochs before the
 * current one minus N have left. Fields are named by the window's length and slots rather than by its
 * position, so reordering a policy's windows or adding one never mixes counters. Administrator flags
 * live in the same hash: `!block`, `!bypass`, `!limits` (`"W:L,W:L"`), `!jail` (epoch ms), and `v`,
 * the label. A value that is not a ring of N + 1 counts is ignored (as absent), and replaced by the
 * next count.
 *
 * **Guarantee.** A window counts the slots of epochs `[E − N, E]` (E the current epoch): every unit
 * admitted in the last N·g ≥ W ms, the oldest slot whole. So **no interval of length W ever holds
 * more than the limit** (with a fixed limit, and a clock that does not run backwards). The price is
 * under-admission: a request is denied only when the units admitted in the last (N + 1)·g ms, plus
 * its cost, exceed the limit — (N + 1)·g < W + g + N, so at most one slot (and under N ms of rounding)
 * beyond the window.
 * @module
 */
import { invalidAtomicArgument, parseStoredList } from 'themis-milter';
import type { RateAdminChange, RateInspection, RateRequest, RateReservation, RateResult, RateWindow, RateWindowState } from './types.ts';

/** Most slots one window may have: a decision reads and writes every slot, inside one Redis script that blocks the server while it runs. */
export const RATE_MAX_SLOTS = 1000;

/**
 * Expiry an administrator's change gives a subject that has no flag left and no expiry yet, ms (one
 * day, or the remaining penalty block when longer): long enough to show in listings, and the next
 * counted request sets the ring's own expiry anyway.
 */
export const RATE_ADMIN_TTL_MS = 86_400_000;

/** Width of one slot of a window, ms: ⌈windowMs / slots⌉, an integer so memory and Redis compute the same epochs; N slots then cover at least the window. */
export function rateSlotWidth(window: RateWindow): number {
  return Math.ceil(window.windowMs / window.slots);
}

/** A subject's hash: field → value. */
export type RateHash = Map<string, string>;

/** What the store must do to the subject's expiry after an operation. */
export type RateExpiry =
  | {
      /** Leave the expiry as it is (nothing was written, or the change keeps it). */
      action: 'keep';
    }
  | {
      /** Expire the subject after `ms`. */
      action: 'expire';
      /** ms (> 0). */
      ms: number;
    }
  | {
      /** Never expire: an administrator's flag or override lasts until changed. */
      action: 'persist';
    };

const BLOCK = '!block';
const BYPASS = '!bypass';
const LIMITS = '!limits';
const JAIL = '!jail';
const LABEL = 'v';

const invalid = (reason: string) => invalidAtomicArgument('RATELIMIT', reason);
const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/**
 * Window arrays found valid, with the values they had then (windowMs, slots, limit of each): a policy
 * passes the same array with every decision, so it is checked once, and again only if it changed.
 */
const validWindows = new WeakMap<readonly RateWindow[], number[]>();

/** Whether `windows` still holds the values of `values` (windowMs, slots, limit of each). */
export function sameRateWindows(windows: readonly RateWindow[], values: readonly number[]): boolean {
  if (windows.length * 3 !== values.length) return false;
  for (let i = 0, k = 0; i < windows.length; i++, k += 3) {
    const w = windows[i];
    if (w.windowMs !== values[k] || w.slots !== values[k + 1] || w.limit !== values[k + 2]) return false;
  }
  return true;
}

/**
 * Checks windows: `windowMs` a positive integer, `slots` an integer in 1..{@link RATE_MAX_SLOTS},
 * `limit` an integer ≥ 0, no two windows of the same length and slots (they would share counters).
 * `atLeastOne` for decisions: a decision without a window would count nowhere. An array found valid
 * before and unchanged since is not checked again.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRateWindows(windows: readonly RateWindow[], atLeastOne: boolean): void {
  if (!Array.isArray(windows)) throw invalid('windows must be an array');
  if (windows.length === 0) {
    if (atLeastOne) throw invalid('at least one window is needed');
    return;
  }
  const known = validWindows.get(windows);
  if (known !== undefined && sameRateWindows(windows, known)) return;
  const seen = new Set<string>();
  for (const w of windows) {
    if (!isCount(w?.windowMs) || w.windowMs === 0) throw invalid(`windowMs must be a positive integer (got ${String(w?.windowMs)})`);
    if (!isCount(w.slots) || w.slots < 1 || w.slots > RATE_MAX_SLOTS) throw invalid(`slots must be an integer from 1 to ${RATE_MAX_SLOTS} (got ${String(w.slots)})`);
    if (!isCount(w.limit)) throw invalid(`limit must be an integer ≥ 0 (got ${String(w.limit)})`);
    const id = `${w.windowMs}/${w.slots}`;
    if (seen.has(id)) throw invalid(`two windows of ${w.windowMs} ms in ${w.slots} slots`);
    seen.add(id);
  }
  validWindows.set(windows, windows.flatMap((w) => [w.windowMs, w.slots, w.limit]));
}

/**
 * Checks a decision request (key, integer cost ≥ 0, windows, jail ≥ 0, label, `now` when given).
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRateRequest(r: RateRequest): void {
  if (typeof r?.key !== 'string') throw invalid('key must be a string');
  if (!isCount(r.cost)) throw invalid(`cost must be an integer ≥ 0 (got ${String(r.cost)})`);
  validateRateWindows(r.windows, true);
  if (r.jailMs !== undefined && !isCount(r.jailMs)) throw invalid(`jailMs must be an integer ≥ 0 (got ${String(r.jailMs)})`);
  if (r.label !== undefined && typeof r.label !== 'string') throw invalid('label must be a string');
  if (r.now !== undefined && !(Number.isFinite(r.now) && r.now >= 0)) throw invalid(`now must be a time ≥ 0 (got ${String(r.now)})`);
}

/**
 * Checks a reservation (as {@link validateRateRequest}, plus one integer epoch per window).
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRateReservation(r: RateReservation): void {
  if (typeof r?.key !== 'string') throw invalid('key must be a string');
  if (!isCount(r.cost)) throw invalid(`cost must be an integer ≥ 0 (got ${String(r.cost)})`);
  validateRateWindows(r.windows, false);
  if (!Array.isArray(r.epochs) || r.epochs.length !== r.windows.length || !r.epochs.every((e) => Number.isSafeInteger(e))) throw invalid('epochs must hold one integer per window');
}

/**
 * Checks an administrator's change: booleans, limits by window length (positive integer ms → integer
 * ≥ 0) or null, a string label.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRateAdminChange(change: RateAdminChange): void {
  for (const k of ['reset', 'unjail', 'block', 'bypass'] as const) if (change[k] !== undefined && typeof change[k] !== 'boolean') throw invalid(`${k} must be a boolean`);
  if (change.label !== undefined && typeof change.label !== 'string') throw invalid('label must be a string');
  if (change.jailMs !== undefined && (!isCount(change.jailMs) || change.jailMs > 8.64e15)) throw invalid(`jailMs must be an integer ≥ 0 (got ${String(change.jailMs)})`);
  if (change.limits !== undefined && change.limits !== null) {
    if (typeof change.limits !== 'object') throw invalid('limits must be an object or null');
    for (const [w, l] of Object.entries(change.limits)) {
      if (!/^[1-9]\d*$/.test(w) || !Number.isSafeInteger(Number(w))) throw invalid(`limits: ${w} is not a window length in ms`);
      if (!isCount(l)) throw invalid(`limits: ${w}: the limit must be an integer ≥ 0 (got ${String(l)})`);
    }
  }
}

/** `!limits` as stored: `"W:L,W:L"` by increasing W, or undefined for none (an empty override is no override). */
export function formatRateLimits(limits: Record<number, number>): string | undefined {
  const entries = Object.entries(limits).map(([w, l]) => [Number(w), l] as const);
  if (entries.length === 0) return undefined;
  return entries
    .sort((a, b) => a[0] - b[0])
    .map(([w, l]) => `${w}:${l}`)
    .join(',');
}

/** The overrides of a stored `!limits` (window length ms → limit); unreadable pairs are ignored, as the Lua script's pattern does. */
export function parseRateLimits(text: string | undefined): Record<number, number> | undefined {
  if (text === undefined) return undefined;
  const out: Record<number, number> = {};
  for (const m of text.matchAll(/(\d+):(\d+)/g)) out[Number(m[1])] = Number(m[2]);
  return out;
}

/** One window as read from the hash. */
interface View {
  window: RateWindow;
  /** Its field, `w<W>/<N>`. */
  field: string;
  /** Slot width, ms. */
  g: number;
  /** The current epoch: the clock's, or the ring's when later (the clock stepped back). */
  e: number;
  /** Units per epoch `e − N + j`, j = 0..N (oldest first). */
  counts: number[];
  used: number;
  /** The effective limit. */
  limit: number;
}

/** The field of a window's ring. */
const rateRingField = (w: RateWindow): string => `w${w.windowMs}/${w.slots}`;

/**
 * A stored ring of `slots` N: [E, c(E − N), …, c(E)], or undefined when absent or unreadable (read as
 * the Lua scripts' `cjson.decode('[' .. text .. ']')` with N + 2 elements, the first a number).
 */
function parseRing(text: string | undefined, slots: number): number[] | undefined {
  const ring = parseStoredList(text);
  return ring !== undefined && ring.length === slots + 2 && typeof ring[0] === 'number' ? (ring as number[]) : undefined;
}


function view(hash: RateHash | undefined, w: RateWindow, overrides: Record<number, number> | undefined, now: number): View {
  const n = w.slots;
  const g = rateSlotWidth(w);
  const field = rateRingField(w);
  let e = Math.floor(now / g);
  const ring = parseRing(hash?.get(field), n);
  // Epochs the ring is read after its latest: that many of its oldest counts have left.
  let shift = n + 1;
  if (ring) {
    // A ring from the future means the clock stepped back: the window keeps its latest epoch until
    // the clock catches up, so what was counted stays counted (never more admitted than promised).
    if (ring[0] > e) e = ring[0];
    shift = e - ring[0];
  }
  const counts: number[] = [];
  let used = 0;
  for (let j = 0; j <= n; j++) {
    const c = ring && j <= n - shift ? ring[1 + shift + j] : 0;
    counts.push(c);
    if (c > 0) used += c;
  }
  return { window: w, field, g, e, counts, used, limit: overrides?.[w.windowMs] ?? w.limit };
}

/** When the slot of `counts[j]` leaves the counted span: epoch k = e − N + j leaves at (k + N + 1)·g. */
const leaves = (v: View, j: number, now: number) => (v.e + j + 1) * v.g - now;

function stateOf(v: View, now: number): RateWindowState {
  const j = v.counts.findIndex((c) => c > 0);
  return { used: v.used, limit: v.limit, remaining: Math.max(0, v.limit - v.used), resetMs: j < 0 ? 0 : leaves(v, j, now) };
}

/** Time until enough of the oldest slots leave for `need` units to fit, ms. */
function retryOf(v: View, need: number, now: number): number {
  let freed = 0;
  for (let j = 0; j < v.counts.length; j++) {
    freed += v.counts[j];
    if (freed >= need) return leaves(v, j, now);
  }
  // Unreachable: need ≤ used whenever the cost fits the limit.
  return -1;
}

/** A hash's expiry after a write: never while an override is set, else the longest ring or the penalty block. */
function expiryAfterWrite(hash: RateHash, views: View[], now: number): RateExpiry {
  if (hash.has(BLOCK) || hash.has(BYPASS) || hash.has(LIMITS)) return { action: 'persist' };
  let ms = 0;
  for (const v of views) ms = Math.max(ms, (v.window.slots + 1) * v.g);
  ms = Math.max(ms, Number(hash.get(JAIL) ?? 0) - now);
  return ms > 0 ? { action: 'expire', ms } : { action: 'keep' };
}

/**
 * Decides one request at `now` (integer ms) on the subject's hash, writing into `hash` what an
 * allowed request (or a denial with a penalty block) counts. Order: `!block` → blocked, `!bypass` →
 * bypassed, `!jail` in the future → jailed, then every window: all have room → allowed (cost added
 * to each window's current slot), else denied and nothing written but the penalty block.
 * `retryAfterMs` of a denial is the latest of the failing windows' (the request fits only once all
 * have room; -1 when the cost exceeds a limit); with a penalty block, at least `jailMs`. A request of
 * cost 0 writes nothing, not even a penalty block.
 */
export function rateDecide(hash: RateHash, request: RateRequest, now: number): { result: RateResult; expiry: RateExpiry } {
  const keep: RateExpiry = { action: 'keep' };
  if (hash.has(BLOCK)) return { result: { outcome: 'blocked', failing: -1, retryAfterMs: 0, windows: [] }, expiry: keep };
  if (hash.has(BYPASS)) return { result: { outcome: 'bypassed', failing: -1, retryAfterMs: 0, windows: [] }, expiry: keep };
  const overrides = parseRateLimits(hash.get(LIMITS));
  const views = request.windows.map((w) => view(hash, w, overrides, now));
  const cost = request.cost;
  const jail = Number(hash.get(JAIL) ?? 0) || 0;
  if (jail > now) return { result: { outcome: 'jailed', failing: -1, retryAfterMs: jail - now, windows: views.map((v) => stateOf(v, now)) }, expiry: keep };

  let failing = -1;
  let retry = 0;
  views.forEach((v, i) => {
    if (v.used + cost <= v.limit) return;
    if (failing < 0) failing = i;
    if (cost > v.limit) retry = -1;
    else if (retry >= 0) retry = Math.max(retry, retryOf(v, v.used + cost - v.limit, now));
  });
  const label = request.label ?? '';
  if (failing >= 0) {
    let expiry: RateExpiry = keep;
    const jailMs = request.jailMs ?? 0;
    if (cost > 0 && jailMs > 0) {
      hash.set(JAIL, String(now + jailMs));
      if (label !== '' && !hash.has(LABEL)) hash.set(LABEL, label);
      expiry = expiryAfterWrite(hash, views, now);
      if (retry >= 0) retry = Math.max(retry, jailMs);
    }
    return { result: { outcome: 'denied', failing, retryAfterMs: retry, windows: views.map((v) => stateOf(v, now)) }, expiry };
  }
  if (cost === 0) return { result: { outcome: 'allowed', failing: -1, retryAfterMs: 0, windows: views.map((v) => stateOf(v, now)) }, expiry: keep };

  for (const v of views) {
    v.counts[v.window.slots] += cost;
    v.used += cost;
    hash.set(v.field, `${v.e},${v.counts.join(',')}`);
  }
  if (label !== '' && !hash.has(LABEL)) hash.set(LABEL, label);
  const reservation: RateReservation = { key: request.key, cost, windows: request.windows, epochs: views.map((v) => v.e) };
  return { result: { outcome: 'allowed', failing: -1, retryAfterMs: 0, windows: views.map((v) => stateOf(v, now)), reservation }, expiry: expiryAfterWrite(hash, views, now) };
}

/**
 * Undoes a reservation in `hash`: each window's ring loses `cost` (not below 0) at the reserved epoch
 * e if it still holds it (E − N ≤ e ≤ E, E the ring's latest epoch): once rolled over, the units have
 * left the window anyway. The expiry is kept.
 */
export function rateRefundHash(hash: RateHash, reservation: RateReservation): void {
  reservation.windows.forEach((w, i) => {
    const epoch = reservation.epochs[i];
    const field = rateRingField(w);
    const ring = parseRing(hash.get(field), w.slots);
    if (!ring || epoch < ring[0] - w.slots || epoch > ring[0]) return;
    const k = 1 + epoch - (ring[0] - w.slots);
    ring[k] = Math.max(0, ring[k] - reservation.cost);
    hash.set(field, ring.join(','));
  });
}

/** A subject's state at `now` without changing anything (`hash` undefined: no such subject). */
export function rateInspectHash(hash: RateHash | undefined, windows: readonly RateWindow[], now: number): RateInspection {
  const limits = parseRateLimits(hash?.get(LIMITS));
  const jail = Number(hash?.get(JAIL) ?? 0) || 0;
  return {
    label: hash?.get(LABEL),
    windows: windows.map((w) => stateOf(view(hash, w, limits, now), now)),
    jailedForMs: Math.max(0, jail - now),
    blocked: hash?.has(BLOCK) ?? false,
    bypass: hash?.has(BYPASS) ?? false,
    limits,
    exists: hash !== undefined && hash.size > 0,
  };
}

/**
 * Applies an administrator's change to `hash` at `now`: `reset` deletes every slot and the penalty
 * block, `unjail` the penalty block; flags are set or deleted; the label is set only if none is.
 * Then the expiry: none while a flag or override remains (`persist`); else a subject without one
 * (`pttl` < 0, as Redis' PTTL -1) gets {@link RATE_ADMIN_TTL_MS} or the remaining penalty block when
 * longer; one with an expiry keeps it. An empty hash is the store's to delete.
 */
export function rateAdminHash(hash: RateHash, change: RateAdminChange, now: number, pttl: number): RateExpiry {
  if (change.reset) {
    for (const f of [...hash.keys()]) if (f.startsWith('w')) hash.delete(f);
    hash.delete(JAIL);
  }
  if (change.unjail) hash.delete(JAIL);
  if (change.jailMs !== undefined && change.jailMs > 0) hash.set(JAIL, String(Math.max(Number(hash.get(JAIL) ?? 0) || 0, now + change.jailMs)));
  if (change.block === true) hash.set(BLOCK, '1');
  else if (change.block === false) hash.delete(BLOCK);
  if (change.bypass === true) hash.set(BYPASS, '1');
  else if (change.bypass === false) hash.delete(BYPASS);
  if (change.limits !== undefined) {
    const text = change.limits === null ? undefined : formatRateLimits(change.limits);
    if (text === undefined) hash.delete(LIMITS);
    else hash.set(LIMITS, text);
  }
  if (change.label !== undefined && change.label !== '' && !hash.has(LABEL)) hash.set(LABEL, change.label);
  if (hash.size === 0) return { action: 'keep' };
  if (hash.has(BLOCK) || hash.has(BYPASS) || hash.has(LIMITS)) return { action: 'persist' };
  const jailed = (Number(hash.get(JAIL) ?? 0) || 0) - now;
  // A key that would expire before its penalty block ends lives until then.
  if (pttl >= 0) return jailed > pttl ? { action: 'expire', ms: jailed } : { action: 'keep' };
  return { action: 'expire', ms: Math.max(RATE_ADMIN_TTL_MS, jailed) };
}
