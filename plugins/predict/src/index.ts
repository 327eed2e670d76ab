/**
 * themis-plugin-predict: learns each subject's normal sending rate (a SASL login by default) over
 * several timeframes, online from live traffic and shared through the store, and acts when the
 * current rate leaves it — the way a stolen mailbox password shows, well under any fixed limit.
 * @module
 */
import { createHash } from 'node:crypto';
import { definePlugin, fillTemplate, resolveReply, type AppliedPolicy, type HookContext, type ProfileRequest, type Verdict } from 'themis';
import { subjectKey, subjectValues } from 'themis-plugin-ratelimit';
import type { z } from 'zod';
import { decide, explain, type BoundSettings, type TimeframeDecision } from './estimate.ts';
import { predictField, predictOptions, type PredictOptions, type PredictPolicy } from './schema.ts';
import { predictCommand } from './commands.ts';

export { decide, estimate, explain, median, mad, type BoundSettings, type LearnedTimeframe, type TimeframeDecision } from './estimate.ts';
export { predictField, predictOptions, DEFAULT_TIMEFRAMES, type PredictPolicy, type PredictOptions } from './schema.ts';

/** What the plugin leaves in the message note (`ctx.message.notes.of('predict')`). */
export interface PredictNote {
  /** The subject (`alice@example.com`; `a|b` for a composite). */
  subject: string;
  /** Whether a policy found it over its bound. */
  over: boolean;
  /** Whether that was in shadow mode (decided and logged only). */
  shadow: boolean;
  /** The policy that decided (the first over, else the first). */
  policy: string;
  /** Per timeframe: the count now and the bound (null while learning). */
  timeframes: { minutes: number; count: number; bound: number | null; center: number; spread: number }[];
}

const REPLY = { code: 451, enhanced: '4.7.1', text: 'Unusual sending rate for {subject}: try again later' };

/** The store key of a subject's profile: the subject's kind, what is counted, the timeframes and a hash of the value. */
export function profileKey(prefix: string, c: PredictPolicy, value: string): string {
  const digest = createHash('sha256').update(value).digest('base64url').slice(0, 22);
  const counted = c.count === 'recipients' && c.maxPerMessage > 0 ? `recipients${c.maxPerMessage}` : c.count;
  return `${prefix}${c.spec.name}:${counted}:${c.timeframes.join('-')}:${digest}`;
}

/** The store request that learns from (or, with amount 0 and inspect, reads) a subject's profile. */
export function profileRequest(o: PredictOptions, c: PredictPolicy, value: string, amount: number, now: number | undefined, inspect = false): ProfileRequest {
  return { key: profileKey(o.keyPrefix, c, value), amount, timeframes: c.timeframes, span: o.span, keep: o.keep, clipK: o.clipK, clipAfter: c.minHistory, ttlMs: o.retentionDays * 86_400_000, now, inspect };
}

/** The bound settings of a policy for one timeframe. */
export function boundSettings(c: PredictPolicy, minutes: number): BoundSettings {
  return { estimator: c.estimator, k: c.k, factor: c.factor, floor: c.floors[minutes], minHistory: c.minHistory, prior: c.prior };
}

export default definePlugin<PredictPolicy, PredictOptions>({
  name: 'predict',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'predict', schema: predictField as unknown as z.ZodType<PredictPolicy> },
  options: predictOptions as unknown as z.ZodType<PredictOptions>,
  // Before ratelimit (50): a tempfail here and ratelimit's leaky accounting gives back what it counted.
  priority: 55,
  modifies: ['headers'],
  observes: ['connect', 'mailFrom', 'rcptTo'],
  commands: { predict: predictCommand },
  setup({ store, options, metrics, log }) {
    const decisions = metrics.counter({ name: 'decisions_total', help: 'Predict decisions per policy: learning, normal, over, over_shadow', labelNames: ['policy', 'outcome'] });
    const storeErrors = metrics.counter({ name: 'store_errors_total', help: 'Messages the store could not learn from (the message passes)' });
    const clock = options.now;

    const run = async (ctx: HookContext<PredictPolicy>): Promise<Verdict | undefined> => {
      const message = ctx.message!;
      const recipients = message.recipients.filter((r) => r.accepted).map((r) => r.address);
      if (recipients.length === 0) return undefined;
      const facts = { sender: message.sender?.address, auth: ctx.session.auth, clientIp: ctx.session.client?.address || undefined, recipients };
      // One profile update per distinct (subject, count, timeframes): policies that share it learn once.
      const asked: { policy: AppliedPolicy<PredictPolicy>; value: string; index: number }[] = [];
      const requests: ProfileRequest[] = [];
      const byKey = new Map<string, number>();
      for (const policy of ctx.policies) {
        const c = policy.config;
        const [subject] = subjectValues(c.spec, facts, 'message');
        if (!subject) continue;
        const amount = c.count === 'messages' ? 1 : c.maxPerMessage > 0 ? Math.min(recipients.length, c.maxPerMessage) : recipients.length;
        const req = profileRequest(options, c, subject.value, amount, clock?.());
        let index = byKey.get(req.key);
        if (index === undefined) {
          byKey.set(req.key, (index = requests.length));
          requests.push(req);
        }
        asked.push({ policy, value: subject.value, index });
      }
      if (requests.length === 0) return undefined;
      let results;
      try {
        results = await store.profileUpdate(requests);
      } catch (err) {
        storeErrors.inc();
        log.warn({ code: (err as { code?: string }).code, err: (err as Error).message }, 'predict: the store did not answer; the message passes unjudged');
        return undefined;
      }

      let note: PredictNote | undefined;
      let act: { policy: AppliedPolicy<PredictPolicy>; value: string; worst: TimeframeDecision; all: TimeframeDecision[] } | undefined;
      const lines: string[] = [];
      for (const a of asked) {
        const c = a.policy.config;
        const all = results[a.index].timeframes.map((t) => decide(t, boundSettings(c, t.minutes)));
        const over = all.filter((d) => d.over);
        const learning = all.every((d) => d.bound === null);
        // The timeframe furthest over its bound explains the decision; else the closest to it.
        const ratio = (d: TimeframeDecision) => (d.bound === null ? -1 : d.count / d.bound);
        const worst = all.reduce((w, d) => (ratio(d) > ratio(w) ? d : w), all[0]);
        const unit = c.count;
        const outcome = over.length > 0 ? (c.shadow ? 'over_shadow' : 'over') : learning ? 'learning' : 'normal';
        decisions.inc({ policy: a.policy.name, outcome });
        const words = `${a.value}: ${explain(worst, unit)}`;
        if (over.length > 0) {
          lines.push(`${a.policy.name}: ${words}${c.shadow ? ' (shadow: no action)' : ` → ${c.action}`}`);
          ctx.log.info({ policy: a.policy.name, subject: c.spec.name, shadow: c.shadow, action: c.action, timeframes: over.map((d) => ({ minutes: d.minutes, count: d.count, bound: d.bound })) }, `predict: ${a.policy.name} over the learned rate${c.shadow ? ' (shadow)' : ''}`);
        }
        const entry: PredictNote = { subject: a.value, over: over.length > 0, shadow: over.length > 0 && c.shadow, policy: a.policy.name, timeframes: all.map((d) => ({ minutes: d.minutes, count: d.count, bound: d.bound, center: d.center, spread: d.spread })) };
        // The note tells the most serious decision: an acting policy over a shadow one over a quiet one.
        if (!note || (entry.over && (!note.over || (note.shadow && !entry.shadow)))) note = entry;
        if (over.length > 0 && !c.shadow && !act) act = { policy: a.policy, value: a.value, worst, all };
      }
      if (note) message.notes.set(note);
      if (!act) return lines.length > 0 ? { action: 'continue', reason: lines.join('; ') } : undefined;

      const c = act.policy.config;
      const values = { subject: act.value, minutes: act.worst.minutes, count: act.worst.count, bound: Math.round(act.worst.bound ?? 0), policy: act.policy.name };
      const reason = lines.join('; ');
      switch (c.action) {
        case 'tag':
          message.addHeader(c.header, fillTemplate(`over; policy={policy}; ${act.all.filter((d) => d.over).map((d) => `${d.minutes}m=${d.count}/${Math.round(d.bound!)}`).join('; ')}`, values));
          return { action: 'continue', reason };
        case 'hold':
          return { action: 'quarantine', reason };
        case 'jail': {
          // The subject goes to ratelimit's penalty block: refused there until it ends, whatever this plugin learns meanwhile.
          const policy = c.jail.policy ?? act.policy.name;
          try {
            await store.rateAdmin(subjectKey(policy, c.spec, act.value), { jailMs: c.jail.minutes * 60_000, label: act.value });
          } catch (err) {
            storeErrors.inc();
            log.warn({ code: (err as { code?: string }).code, err: (err as Error).message }, 'predict: could not jail the subject in the store; this message is still refused');
          }
          return { action: 'tempfail', reason: `${reason} (jailed ${c.jail.minutes} min in ratelimit policy ${policy})`, reply: resolveReply(c.reply, REPLY, values) };
        }
        default:
          return { action: 'tempfail', reason, reply: resolveReply(c.reply, REPLY, values) };
      }
    };

    return { endOfMessage: run };
  },
});
