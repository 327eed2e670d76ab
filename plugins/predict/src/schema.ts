/**
 * The `predict` policy field and the plugin options.
 * @module
 */
import { z } from 'zod';
import { NetworkList, parseNetwork, replyConfigSchema } from 'themis-milter';
import { parseSubject, type SubjectSpec } from 'themis-plugin-ratelimit';
import { PROFILE_MAX_YOUNG_HOURS } from './store/profile.ts';

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
    /**
     * What is counted: `recipients` (default), `messages`, or `newRecipients`: the recipients the subject
     * has not written to lately (not among the last `recipientMemory` distinct recipients it wrote to,
     * a plugin option) outside `internalDomains`. A stolen account spams addresses its owner never wrote
     * to; its owner mostly writes to the same people. `npm run eval:predict` measures this as the strongest
     * signal. `newInternalRecipients`: the new recipients *inside* `internalDomains`, on their own (spear
     * phishing of colleagues), with the same recipient memory; it needs `internalDomains`.
     */
    count: z.enum(['recipients', 'messages', 'newRecipients', 'newInternalRecipients']).default('recipients'),
    /**
     * Recipients counted per message at most (0: no cap; default 10 for `recipients`, none for
     * `newRecipients`). One message to a whole team is what real users do; many messages is what a
     * stolen account does: the cap keeps the first from looking like the second. New recipients need no
     * cap: a team is people the subject writes to.
     */
    maxPerMessage: z.number().int().min(0).optional(),
    /**
     * For `newRecipients` and `newInternalRecipients`: a recipient counts as known only when it is
     * among the subject's last `knownWithin` distinct recipients (default: the whole memory,
     * `recipientMemory`). A small number (20–50) counts the correspondents the owner has not written to
     * lately: a thief who mails the whole address book reaches them all, the owner mostly writes to the
     * same few. Policies with different values share the one memory of the subject.
     */
    knownWithin: z.number().int().min(1).max(10_000).optional(),
    /**
     * For `newRecipients`: domains whose recipients never count as new (each domain and its
     * subdomains, e.g. `['example.com']`): your own users are colleagues, not what a stolen account
     * spams (default none). For `newInternalRecipients`: the only domains whose new recipients count.
     */
    internalDomains: z.array(z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i, 'expected a domain, e.g. example.com').transform((d) => d.toLowerCase())).default([]),
    /** Window lengths, minutes (default [1, 5, 10]). The learned profile is shared by every policy with the same `by`, `count` and timeframes. */
    timeframes: timeframes.default(DEFAULT_TIMEFRAMES),
    /** `ewma` (EW mean and deviation; the default: fewer false positives in `npm run eval:predict`) or `robust` (median and MAD of the last active buckets). */
    estimator: z.enum(['robust', 'ewma']).default('ewma'),
    /** Deviations above the learned center (default 5). */
    k: z.number().positive().default(5),
    /** Multiplies every bound: above 1 for lenience, below 1 for strictness (default 1). */
    factor: z.number().positive().default(1),
    /**
     * Counts at or below which the plugin never acts, per timeframe. Default for recipients and
     * messages: 1 min: 15, 5 min: 30, 10 min: 50, 60 min: 90, others 10 per minute, at most 150; for new
     * recipients: 1 min: 10, 5 min: 15, 10 min: 25, 60 min: 60, others 6 per minute, at most 100.
     */
    floor: perTimeframe.optional(),
    /** Active buckets a timeframe needs before the plugin acts on it (default 10). */
    minHistory: z.number().int().min(1).default(10),
    /**
     * What a subject with little history is assumed to send per active bucket, blended in as `weight`
     * pseudo-buckets (default mean 2, sd 4, weight 5; for `newRecipients` mean 1, sd 1, weight 5: a
     * user writes to somebody new now and then, rarely to many at once). Keys left out keep the default.
     */
    prior: z.strictObject({ mean: z.number().min(0).optional(), sd: z.number().min(0).optional(), weight: z.number().min(0).optional() }).optional(),
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
    /**
     * Signals beyond the rate (off when left out): the subject's client networks and mail clients are
     * learned in its profile (the same store call), and a message unusual in them has every bound of
     * this policy divided by exp(sensitivity × (surprise − tolerance)), surprise in nats (README).
     */
    signals: z
      .strictObject({
        /** Score the client network (/24, /64) (default true). */
        network: z.boolean().default(true),
        /** Score the mail client (`User-Agent`/`X-Mailer` without versions) (default true). */
        client: z.boolean().default(true),
        /** Score the `Reply-To` domain when outside the `From` domain (`same`, `none` otherwise) (default true: measured free of false positives, plugin README). */
        replyTo: z.boolean().default(true),
        /** Score the `From` display name (normalised, hashed), as part of the device with the mail client (default true). */
        displayName: z.boolean().default(true),
        /** Score the SASL mechanism, TLS version and cipher and whether a client certificate was shown (default false). Counted with the mail client and the display name as one device: the larger of them. */
        tls: z.boolean().default(false),
        /** Score the slot of the week (weekday or weekend, three-hour slot, in the plugin's `timeZone`) against the subject's own hours (default false). */
        hours: z.boolean().default(false),
        /** How strongly surprise lowers the bounds: the log of the divisor per nat beyond the tolerance (default 2.5, measured with `npm run eval:predict`). */
        sensitivity: z.number().min(0).default(2.5),
        /** Nats of surprise a message shows for free (default 3.5, measured: a trip's new network with the usual client, for a login on one or two networks, is 2.5–3.5). */
        tolerance: z.number().min(0).default(3.5),
        /** Active hours a trait must have learned before it is scored (default 10). */
        learning: z.number().int().min(1).default(10),
        /**
         * Your own relays (webmail, a submission proxy: `['198.51.100.0/24']`): a message from there is
         * never scored on its network — the relay is every user's, not the login's own (default none).
         */
        trustedNetworks: z.array(z.string()).default([]),
      })
      .optional(),
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
    const fresh = c.count === 'newRecipients' || c.count === 'newInternalRecipients';
    for (const t of c.timeframes) {
      const given = typeof c.floor === 'number' ? c.floor : c.floor?.[String(t)];
      floors[t] = given ?? (fresh ? (NEW_RECIPIENT_FLOORS[t] ?? Math.min(100, 6 * t)) : (DEFAULT_FLOORS[t] ?? Math.min(150, 10 * t)));
    }
    if (c.knownWithin !== undefined && !fresh) ctx.issues.push({ code: 'custom', input: c.knownWithin, path: ['knownWithin'], message: "knownWithin applies to count: 'newRecipients' or 'newInternalRecipients' only" });
    if (c.internalDomains.length > 0 && !fresh) ctx.issues.push({ code: 'custom', input: c.internalDomains, path: ['internalDomains'], message: "internalDomains applies to count: 'newRecipients' or 'newInternalRecipients' only" });
    if (c.count === 'newInternalRecipients' && c.internalDomains.length === 0) ctx.issues.push({ code: 'custom', input: c.internalDomains, path: ['internalDomains'], message: "count: 'newInternalRecipients' counts new recipients in internalDomains: expected at least one domain, e.g. ['example.com']" });
    const maxPerMessage = c.maxPerMessage ?? (c.count === 'recipients' ? 10 : 0);
    const given = Object.fromEntries(Object.entries(c.prior ?? {}).filter(([, v]) => v !== undefined));
    const prior: Prior = { ...(fresh ? NEW_RECIPIENT_PRIOR : DEFAULT_PRIOR), ...given };
    if (c.floor !== undefined && typeof c.floor !== 'number') {
      for (const key of Object.keys(c.floor)) if (!c.timeframes.includes(Number(key))) ctx.issues.push({ code: 'custom', input: c.floor, path: ['floor', key], message: `no timeframe of ${key} minutes (timeframes: ${c.timeframes.join(', ')})` });
    }
    let signals: (NonNullable<typeof c.signals> & { trusted: NetworkList }) | undefined;
    if (c.signals) {
      const trusted = new NetworkList();
      c.signals.trustedNetworks.forEach((text, i) => {
        const n = parseNetwork(text);
        if (n === undefined || n instanceof Error) ctx.issues.push({ code: 'custom', input: text, path: ['signals', 'trustedNetworks', i], message: n instanceof Error ? n.message : `${JSON.stringify(text)} is not an IP address or network` });
        else trusted.add(n);
      });
      signals = { ...c.signals, trusted };
    }
    return { ...c, maxPerMessage, prior, spec, floors, signals };
  });

/** Default floors, measured with `npm run eval:predict` (bench/predict/README.md). */
const DEFAULT_FLOORS: Readonly<Record<number, number>> = { 1: 15, 5: 30, 10: 50, 60: 90 };
/** Default floors of `newRecipients`, measured the same way. */
const NEW_RECIPIENT_FLOORS: Readonly<Record<number, number>> = { 1: 10, 5: 15, 10: 25, 60: 60 };

/** The prior: what a subject with little history is assumed to do (see the `prior` field). */
export interface Prior {
  /** The assumed mean count per active bucket. */
  mean: number;
  /** The assumed standard deviation. */
  sd: number;
  /** How many buckets of history it counts as. */
  weight: number;
}
const DEFAULT_PRIOR: Readonly<Prior> = { mean: 2, sd: 4, weight: 5 };
/** For new recipients: measured with `npm run eval:predict` (a larger sd kept quiet senders' bounds needlessly high). */
const NEW_RECIPIENT_PRIOR: Readonly<Prior> = { mean: 1, sd: 1, weight: 5 };

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
  /**
   * How many distinct recipients a subject's memory keeps for `count: 'newRecipients'` (default 1,000;
   * at most 10,000): the most recently written to. Each takes 8 bytes in the store (a 48-bit hash, not
   * the address).
   */
  recipientMemory: z.number().int().min(10).max(10_000).default(1000),
  /**
   * A subject's profile and recipient memory are forgotten after this many days without mail (default 30;
   * at most 3,650): the expiry of every key the plugin writes, so the bound of how many it keeps.
   */
  retentionDays: z.number().positive().max(3650, 'expected at most 3650 days: every profile expires after retentionDays without mail').default(30),
  /**
   * The time zone of the `hours` signal (IANA, `Europe/Paris`; default the process's own): the slots of
   * the week a subject's habits are learned in. Every server of a pool should use the same one.
   */
  timeZone: z
    .string()
    .refine((zone) => {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: zone });
        return true;
      } catch {
        return false;
      }
    }, 'expected an IANA time zone, e.g. Europe/Paris or UTC')
    .optional(),
  /**
   * Hours a network, mail client, display name, Reply-To or SASL/TLS fingerprint a subject shows for the
   * first time stays new (default 6, measured with `npm run eval:predict`: 24 caught one more takeover in
   * 696 and flagged 2–9 more sender-days per seed; 0: only within the hour it appeared).
   * While new, it scores as it did when it first appeared, against the subject's settled habits, and
   * every other value that appeared within these hours adds its own surprise: a thief who stays on one
   * network for a working day, or rotates through several, is judged as at its first message.
   * Every server of a pool should use the same value.
   */
  youngHours: z.number().int().min(0).max(PROFILE_MAX_YOUNG_HOURS).default(6),
  /** Store key prefix (default `predict:`). */
  keyPrefix: z.string().min(1).default('predict:'),
  /** The clock, ms since 1970 (simulations and tests; needs a store with `testClock`). */
  now: z.custom<() => number>((v) => typeof v === 'function', 'expected a function returning ms since 1970').optional(),
});

/** The plugin options, validated. */
export type PredictOptions = z.output<typeof predictOptions>;
