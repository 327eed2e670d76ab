/**
 * The rate limiter's requests and results: what `rateLimit`, `rateRefund`, `rateInspect` and
 * `rateAdmin` take and give.
 * @module
 */
/** One window of a rate limit: at most `limit` units in any `windowMs` interval. */
export interface RateWindow {
  /** Length of the window, ms (> 0). */
  windowMs: number;
  /**
   * Slots of the ring the window is counted in (N, 1..1000). Usage is kept per slot of
   * g = ⌈windowMs / N⌉ ms, and a decision counts the current slot and the N before it, the oldest
   * whole: every unit admitted in the last N·g ≥ `windowMs` ms. So the limit is never exceeded in any
   * interval of `windowMs`; in exchange a request is denied only when the units admitted in the last
   * (N + 1)·g ms plus its cost exceed the limit — under-admission of at most one slot's traffic (and
   * under N ms of rounding when N does not divide `windowMs`).
   */
  slots: number;
  /** Most units admitted in any interval of `windowMs` (≥ 0; 0 always denies). */
  limit: number;
}

/** One subject's rate-limit decision. */
export interface RateRequest {
  /** The subject's key (namespaced by the caller, prefixed by the store). Callers hash addresses out of it. */
  key: string;
  /** Units to add when every window has room (integer ≥ 0; 0 only checks). */
  cost: number;
  /** The windows, all checked and all counted together: all or nothing. */
  windows: readonly RateWindow[];
  /** On a denial, keep the subject denied this long (a penalty block), ms. */
  jailMs?: number;
  /** Stored once with the subject (not in the key name) so admin tools can show who it is. */
  label?: string;
  /** The clock, ms since the epoch: honoured only by stores created with `testClock: true`; otherwise the store's own clock (Redis: `TIME`). */
  now?: number;
}

/** Usage of one window after a decision. */
export interface RateWindowState {
  /** Units counted in the window (including this decision's cost when allowed). */
  used: number;
  /** The effective limit (an administrator's per-subject override, or the request's). */
  limit: number;
  /** `max(0, limit - used)`. */
  remaining: number;
  /** Time until the oldest counted unit leaves the window, ms (0 when empty). */
  resetMs: number;
}

/** What a {@link rateRefund} needs to undo an allowed decision exactly. */
export interface RateReservation {
  /** The subject's key. */
  key: string;
  /** Units that were added. */
  cost: number;
  /** The windows as they were requested. */
  windows: readonly RateWindow[];
  /** For each window, the slot epoch the cost went into. */
  epochs: readonly number[];
}

/** The outcome of one {@link RateRequest}. */
export interface RateResult {
  /**
   * `allowed` (counted), `denied` (a window is full: nothing counted), `jailed` (still in a penalty
   * block), `blocked` (an administrator blocked the subject), `bypassed` (an administrator exempted it:
   * nothing counted).
   */
  outcome: 'allowed' | 'denied' | 'jailed' | 'blocked' | 'bypassed';
  /** Index of the window that denied, else -1. */
  failing: number;
  /**
   * When a denied or jailed subject may try again, ms; -1 when the cost exceeds the limit (never). 0
   * otherwise. For a denial: the time until every full window has room for this cost (if nothing else
   * is counted meanwhile), and at least the penalty block when one was set.
   */
  retryAfterMs: number;
  /** Every window's usage after the decision (empty for blocked and bypassed). */
  windows: RateWindowState[];
  /** Present when allowed with a cost > 0: hand it to {@link rateRefund} to undo. */
  reservation?: RateReservation;
}

/** A subject's state, for admin tools. */
export interface RateInspection {
  /** The label stored with it. */
  label: string | undefined;
  /** Usage per window (as with a cost-0 request). */
  windows: RateWindowState[];
  /** Remaining penalty block, ms (0 when not jailed). */
  jailedForMs: number;
  /** Blocked by an administrator. */
  blocked: boolean;
  /** Exempted by an administrator. */
  bypass: boolean;
  /** Per-subject limit overrides by window length (ms → limit). */
  limits: Record<number, number> | undefined;
  /** False when the store has nothing for this key. */
  exists: boolean;
}

/** An administrator's change to a subject. Fields left out are left as they are. */
export interface RateAdminChange {
  /** Forget the usage and the penalty block (flags and overrides stay). */
  reset?: boolean;
  /** End the penalty block only. */
  unjail?: boolean;
  /**
   * Put the subject in a penalty block for this many ms from now (a longer block already running is
   * kept): how another plugin (predict) hands a subject to the rate limiter. Applied after `unjail`.
   */
  jailMs?: number;
  /** Block (true) or unblock (false) the subject until changed again. */
  block?: boolean;
  /** Exempt the subject (true) or not (false). */
  bypass?: boolean;
  /** Per-subject limits by window length (ms → limit); null removes them. */
  limits?: Record<number, number> | null;
  /** Label to store if none is. */
  label?: string;
}

