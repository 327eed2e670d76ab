/**
 * The `ratelimit` policy field: windows, subject, cost, accounting, action, reply, penalty block,
 * stage, per-subject overrides. Written the way administrators think ("100 per minute and 1000 per
 * hour, per SASL login"), checked strictly, and normalized once at load.
 * @module
 */
import { z } from 'zod';
import { replyConfigSchema, type ReplyConfig } from 'themis-milter';
import { parseSubject, type SubjectSpec } from './subjects.ts';

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `'90s'`, `'1m'`, `'1h'`, `'1d'`, `'500ms'` (or a number of ms) into ms; undefined when malformed. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNITS[m[2]];
  return ms > 0 ? ms : undefined;
}

/** Formats ms the way it was most likely written (`3600000` → `1h`). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a duration such as '30s', '1m', '1h' or '1d' (or ms > 0), found ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** Default number of slots per window: the window is counted in 12 slots, so it may under-admit by ≤ 1/12 of its length's traffic. */
export const DEFAULT_SLOTS = 12;

const window = z.strictObject({
  limit: z.number().int().min(0),
  per: duration,
  slots: z.number().int().min(1).max(120).optional(),
});

/** `'100/1m'` or `'100/1m,1000/1h'`: the shorthand of the original's `JailSpec` (`N:S;N:S`), in words. */
const shorthand = z.string().transform((text, ctx) => {
  const out: { limit: number; per: number }[] = [];
  for (const part of text.split(/[,;]/).map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*(?:\/|per|:)\s*(.+)$/.exec(part);
    const per = m ? parseDuration(/^\d+$/.test(m[2]) ? `${m[2]}s` : m[2]) : undefined;
    if (!m || per === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected 'LIMIT/DURATION' such as '100/1m' (several separated by commas), found ${JSON.stringify(part)}` });
      return z.NEVER;
    }
    out.push({ limit: Number(m[1]), per });
  }
  if (out.length === 0) {
    ctx.addIssue({ code: 'custom', message: "expected at least one window such as '100/1m'" });
    return z.NEVER;
  }
  return out;
});

const windowList = z.array(window).min(1).max(8);

/** What a user writes for `windows`: the shorthand, or the list of windows. */
export type WindowsInput = string | z.input<typeof windowList>;

/**
 * A string is the shorthand, anything else the list: chosen by type so that errors point inside the
 * value (a union's would not). `z.custom` accepts any value (the transform checks it) and only gives
 * the configuration its input type.
 */
const windows = z.custom<WindowsInput>().transform((value, ctx) => {
  const r = typeof value === 'string' ? shorthand.safeParse(value) : windowList.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  for (const issue of r.error.issues) ctx.addIssue({ ...issue, code: 'custom', path: issue.path, input: 'input' in issue ? issue.input : value } as never);
  return z.NEVER;
});

const subject = z.union([z.string(), z.array(z.string()).min(1)]).transform((v, ctx) => {
  try {
    return parseSubject(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const reply = replyConfigSchema;

const override = z.strictObject({
  bypass: z.boolean().optional(),
  block: z.boolean().optional(),
  windows: windows.optional(),
});

/** The `ratelimit` field as written in a policy. */
export const ratelimitField = z
  .strictObject({
    /** Limits: `'100/1m,1000/1h'` or `[{ limit: 100, per: '1m' }, …]`. All must have room; all are counted. */
    windows,
    /** What is counted (default `sender+`). */
    by: subject.default(parseSubject('sender+')),
    /** `message` (1 per message, default) or `recipient` (accepted, de-duplicated recipients). */
    cost: z.enum(['message', 'recipient']).default('message'),
    /** `leaky` (default): only mail finally accepted counts. `strict`: every attempt counts. */
    accounting: z.enum(['leaky', 'strict']).default('leaky'),
    /** When over: `block` (refuse, default), `hold` (Postfix hold queue), `monitor` (log and count only). */
    action: z.enum(['block', 'hold', 'monitor']).default('block'),
    /** The refusal: default `450 4.7.1` and a text with `{wait}`, `{limit}`, `{window}`, `{policy}`, `{subject}`. */
    reply: reply.default({}),
    /** The refusal of a subject an administrator blocked (default `550 5.7.1 Account manually blocked, contact your administrator`). */
    blockedReply: reply.default({}),
    /** Penalty block: once over, the subject stays refused this long (`'15m'`). */
    jail: duration.optional(),
    /** `endOfMessage` (default: the recipient count is final) or `rcptTo` (each recipient decided as it comes). */
    stage: z.enum(['endOfMessage', 'rcptTo']).default('endOfMessage'),
    /** With `action: 'monitor'`, whether a hit stops the ratelimit of later policies (default false). */
    monitorStops: z.boolean().default(false),
    /** Per-subject overrides, by subject value (`alice@example.com`, `example.com`, `192.0.2.0/24`). */
    overrides: z.record(z.string(), override).default({}),
    /** Add an `X-Themis-RateLimit` header with the usage to accepted mail (debugging). */
    headers: z.boolean().default(false),
    /** When the store fails or is too slow: `accept` (default: fail open) or `tempfail`. */
    onStoreError: z.enum(['accept', 'tempfail']).default('accept'),
  })
  .transform((c, ctx) => {
    const norm = (list: { limit: number; per: number; slots?: number }[]) => list.map((w) => ({ limit: w.limit, windowMs: w.per, slots: w.slots ?? DEFAULT_SLOTS }));
    const seen = new Set<string>();
    for (const w of norm(c.windows)) {
      const id = `${w.windowMs}/${w.slots}`;
      if (seen.has(id)) ctx.addIssue({ code: 'custom', path: ['windows'], message: `two windows of ${formatDuration(w.windowMs)}: merge them (the smaller limit wins anyway)` });
      seen.add(id);
    }
    const overrides: Record<string, { bypass: boolean; block: boolean; windows: ResolvedWindow[] | undefined }> = {};
    for (const [value, o] of Object.entries(c.overrides)) overrides[value.toLowerCase()] = { bypass: o.bypass ?? false, block: o.block ?? false, windows: o.windows ? norm(o.windows) : undefined };
    // jail is always present in the result (undefined: no penalty block), as RatelimitPolicy says.
    return { ...c, jail: c.jail, windows: norm(c.windows), overrides };
  });

/** A window, normalized. */
export interface ResolvedWindow {
  /** Most units in any interval of `windowMs`. */
  limit: number;
  /** The window's length, ms. */
  windowMs: number;
  /** Slots it is counted in. */
  slots: number;
}

/** The `ratelimit` field after validation. */
export interface RatelimitPolicy {
  windows: ResolvedWindow[];
  by: SubjectSpec;
  cost: 'message' | 'recipient';
  accounting: 'leaky' | 'strict';
  action: 'block' | 'hold' | 'monitor';
  reply: ReplyConfig;
  blockedReply: ReplyConfig;
  jail: number | undefined;
  stage: 'endOfMessage' | 'rcptTo';
  monitorStops: boolean;
  overrides: Record<string, { bypass: boolean; block: boolean; windows: ResolvedWindow[] | undefined }>;
  headers: boolean;
  onStoreError: 'accept' | 'tempfail';
}
