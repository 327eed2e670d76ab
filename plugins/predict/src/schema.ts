/**
 * The `predict` policy field and the plugin options.
 * @module
 */
import { z } from 'zod';
import { replyConfigSchema } from 'themis';
import { parseSubject, type SubjectSpec } from 'themis-plugin-ratelimit';

/** Timeframes by default: 1, 5 and 10 minutes, as the original intended. */
export const DEFAULT_TIMEFRAMES = [1, 5, 10];

const timeframes = z
  .array(z.number().int().min(1).max(1440))
  .min(1)
  .max(8)
  .refine((a) => a.every((x, i) => i === 0 || x > a[i - 1]), 'expected ascending, distinct minutes, e.g. [1, 5, 10]');

/** A number per timeframe: one for all, or by minutes (`{ 1: 20, 5: 40, 10: 60 }`). */
const perTimeframe = z.union([z.number().min(0), z.record(z.string().regex(/^\d+$/, 'expected minutes'), z.number().min(0))]);

/** The `predict` field of a policy, as written. */
export const predictField = z
  .strictObject({
    /** What is learned: a ratelimit subject with one value per message (default `saslUser`). */
    by: z.union([z.string(), z.array(z.string())]).default('saslUser'),
    /** What is counted: recipients (default) or messages. */
    count: z.enum(['recipients', 'messages']).default('recipients'),
    /**
     * Recipients counted per message at most (0: no cap). One message to a whole team is what real
     * users do; many messages is what a stolen account does: the cap keeps the first from looking like
     * the second.
     */
    maxPerMessage: z.number().int().min(0).default(10),
    /** Window lengths, minutes (default [1, 5, 10]). The learned profile is shared by every policy with the same `by`, `count` and timeframes. */
    timeframes: timeframes.default(DEFAULT_TIMEFRAMES),
    /** `ewma` (EW mean and deviation; the default: fewer false positives in `npm run eval:predict`) or `robust` (median and MAD of the last active buckets). */
    estimator: z.enum(['robust', 'ewma']).default('ewma'),
    /** Deviations above the learned center (default 5). */
    k: z.number().positive().default(5),
    /** Multiplies every bound: above 1 for lenience, below 1 for strictness (default 1). */
    factor: z.number().positive().default(1),
    /** Counts at or below which the plugin never acts, per timeframe (default 1 min: 15, 5 min: 30, 10 min: 50, 60 min: 90; others 10 per minute, at most 150). */
    floor: perTimeframe.optional(),
    /** Active buckets a timeframe needs before the plugin acts on it (default 10). */
    minHistory: z.number().int().min(1).default(10),
    /** What a subject with little history is assumed to send per active bucket (default mean 2, sd 4, weighted as 5 buckets). */
    prior: z.strictObject({ mean: z.number().min(0).default(2), sd: z.number().min(0).default(4), weight: z.number().min(0).default(5) }).default({ mean: 2, sd: 4, weight: 5 }),
    /** `tag` (header and note), `tempfail`, `hold` (quarantine) or `jail` (ratelimit's penalty block for `jailFor`, and tempfail). */
    action: z.enum(['tag', 'tempfail', 'hold', 'jail']).default('tag'),
    /** For `jail`: the ratelimit policy whose penalty block takes the subject (default: this policy) and for how long, minutes (default 30). */
    jail: z.strictObject({ policy: z.string().optional(), minutes: z.number().positive().default(30) }).default({ minutes: 30 }),
    /** Decide and log, never act (no header, no verdict): for rollout. */
    shadow: z.boolean().default(false),
    /** The header `tag` adds (default `X-Themis-Predict`). */
    header: z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, 'expected a header name').default('X-Themis-Predict'),
    /** The reply of `tempfail` and `jail`; `{subject}`, `{minutes}`, `{count}`, `{bound}` are filled in. */
    reply: replyConfigSchema.optional(),
  })
  .transform((c, ctx) => {
    let spec: SubjectSpec;
    try {
      spec = parseSubject(c.by);
    } catch (err) {
      ctx.issues.push({ code: 'custom', input: c.by, path: ['by'], message: (err as Error).message });
      return z.NEVER;
    }
    if (spec.parts.some((p) => p.kind === 'recipient' || p.kind === 'recipientDomain' || p.kind === 'policy')) {
      ctx.issues.push({ code: 'custom', input: c.by, path: ['by'], message: 'predict learns one subject per message: recipient, recipientDomain and policy are not available' });
      return z.NEVER;
    }
    const floors: Record<number, number> = {};
    for (const t of c.timeframes) {
      const given = typeof c.floor === 'number' ? c.floor : c.floor?.[String(t)];
      floors[t] = given ?? DEFAULT_FLOORS[t] ?? Math.min(150, 10 * t);
    }
    if (c.floor !== undefined && typeof c.floor !== 'number') {
      for (const key of Object.keys(c.floor)) if (!c.timeframes.includes(Number(key))) ctx.issues.push({ code: 'custom', input: c.floor, path: ['floor', key], message: `no timeframe of ${key} minutes (timeframes: ${c.timeframes.join(', ')})` });
    }
    return { ...c, spec, floors };
  });

/** Default floors, measured with `npm run eval:predict` (bench/predict/README.md). */
const DEFAULT_FLOORS: Readonly<Record<number, number>> = { 1: 15, 5: 30, 10: 50, 60: 90 };

/** The `predict` field, validated. */
export type PredictPolicy = z.output<typeof predictField>;

/** The plugin options. */
export const predictOptions = z.strictObject({
  /** EWMA span in active buckets (default 30: the last 30 active buckets weigh most). */
  span: z.number().int().min(1).default(30),
  /** Active-bucket counts kept per timeframe for the median and MAD (default 30). */
  keep: z.number().int().min(5).max(200).default(30),
  /** Learning is clipped at center + clipK·deviation once a profile has minHistory buckets, so a burst does not teach that bursts are normal (default 6; 0 = off). */
  clipK: z.number().min(0).default(6),
  /** A subject's profile is forgotten after this many days without mail (default 30). */
  retentionDays: z.number().positive().default(30),
  /** Store key prefix (default `predict:`). */
  keyPrefix: z.string().min(1).default('predict:'),
  /** The clock, ms since 1970 (simulations and tests; needs a store with `testClock`). */
  now: z.custom<() => number>((v) => typeof v === 'function', 'expected a function returning ms since 1970').optional(),
});

/** The plugin options, validated. */
export type PredictOptions = z.output<typeof predictOptions>;
