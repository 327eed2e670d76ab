/**
 * A small reference detector for the predict evaluation, written independently of the real plugin: a
 * sanity check of the harness and a yardstick. Per sender (SASL login) and timeframe T it keeps the
 * exact recipients of the last T minutes (in memory), and an EWMA of the mean and variance of that
 * count as seen at each of the sender's messages. A message is over when, for some T, the count
 * exceeds `max(floor_T, factor × (mean + k × sd))` once `minHistory` messages were seen; an over
 * message is not learned. It leaves the same note as the real plugin (`{ subject, over, shadow,
 * timeframes }`, under its own name), so the runner reads both alike.
 * @module
 */
import { z } from 'zod';
import { definePlugin } from 'themis-milter';

export const REFERENCE_NAME = 'predict-reference';

const field = z.object({
  timeframes: z.array(z.number().int().positive()).default([1, 5, 10]),
  k: z.number().positive().default(4),
  factor: z.number().positive().default(1),
  floor: z.union([z.number().min(0), z.record(z.string(), z.number().min(0))]).optional(),
  minHistory: z.number().int().min(1).default(10),
  shadow: z.boolean().default(false),
  action: z.enum(['tag', 'tempfail']).default('tag'),
});
type ReferencePolicy = z.output<typeof field>;

const options = z.object({
  /** EWMA span, in messages (alpha = 2 / (span + 1)). */
  span: z.number().positive().default(50),
  now: z.custom<() => number>((v) => typeof v === 'function').optional(),
});
type ReferenceOptions = z.output<typeof options>;

const DEFAULT_FLOORS: Record<number, number> = { 1: 20, 5: 40, 10: 60 };

interface SenderState {
  /** Recent (time, recipients), oldest first, covering the longest timeframe. */
  times: number[];
  counts: number[];
  n: number;
  mean: Float64Array;
  variance: Float64Array;
}

export default definePlugin<ReferencePolicy, ReferenceOptions>({
  name: REFERENCE_NAME,
  version: '0.0.0',
  kernel: '^1',
  claims: { field: 'predict', schema: field as unknown as z.ZodType<ReferencePolicy> },
  options: options as unknown as z.ZodType<ReferenceOptions>,
  modifies: ['headers'],
  observes: ['mailFrom', 'rcptTo'],
  setup({ options: o }) {
    const alpha = 2 / (o.span + 1);
    const senders = new Map<string, SenderState>();
    return {
      endOfMessage(ctx) {
        const policy = ctx.policies[0]?.config;
        const subject = ctx.session.auth;
        const message = ctx.message!;
        if (!policy || !subject) return;
        const amount = message.recipients.filter((r) => r.accepted).length;
        const now = o.now ? o.now() : Date.now();
        const tfs = policy.timeframes;
        let s = senders.get(subject);
        if (!s) senders.set(subject, (s = { times: [], counts: [], n: 0, mean: new Float64Array(tfs.length), variance: new Float64Array(tfs.length) }));
        const longest = tfs.at(-1)! * 60_000;
        let drop = 0;
        while (drop < s.times.length && s.times[drop] <= now - longest) drop++;
        if (drop > 0) {
          s.times.splice(0, drop);
          s.counts.splice(0, drop);
        }
        s.times.push(now);
        s.counts.push(amount);
        const timeframes: { minutes: number; count: number; bound: number | null }[] = [];
        let over = false;
        const current: number[] = [];
        for (let j = 0; j < tfs.length; j++) {
          const from = now - tfs[j] * 60_000;
          let count = 0;
          for (let i = s.times.length - 1; i >= 0 && s.times[i] > from; i--) count += s.counts[i];
          current.push(count);
          const floor = typeof policy.floor === 'number' ? policy.floor : (policy.floor?.[String(tfs[j])] ?? DEFAULT_FLOORS[tfs[j]] ?? 10 * tfs[j]);
          let bound: number | null = null;
          if (s.n >= policy.minHistory) {
            const sd = Math.max(1, Math.sqrt(s.variance[j]));
            bound = Math.max(floor, policy.factor * (s.mean[j] + policy.k * sd));
            if (count > bound) over = true;
          }
          timeframes.push({ minutes: tfs[j], count, bound });
        }
        if (!over) {
          for (let j = 0; j < tfs.length; j++) {
            if (s.n === 0) {
              s.mean[j] = current[j];
              s.variance[j] = 0;
            } else {
              const a = Math.max(alpha, 1 / (s.n + 1));
              const d = current[j] - s.mean[j];
              s.mean[j] += a * d;
              s.variance[j] = (1 - a) * (s.variance[j] + a * d * d);
            }
          }
          s.n++;
        }
        message.notes.set({ subject, over, shadow: over && policy.shadow, timeframes });
        if (!over || policy.shadow) return;
        if (policy.action === 'tempfail') return { action: 'tempfail', reason: `${subject} over the learned rate (reference)` };
        message.addHeader('X-Predict-Reference', 'over');
        return { action: 'continue', reason: `${subject} over the learned rate (reference)` };
      },
    };
  },
});
