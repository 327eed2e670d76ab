/**
 * themis-plugin-predict: learns each subject's normal sending rate (a SASL login by default) over
 * several timeframes, online from live traffic and shared through the store, and acts when the
 * current rate leaves it — the way a stolen mailbox password shows, well under any fixed limit.
 * @module
 */
import { createHash } from 'node:crypto';
import { definePlugin, fillTemplate, resolveReply, type AppliedPolicy, type HookContext, type Verdict } from 'themis-milter';
import { profileUpdate, seenAdd, type ProfileRequest } from './store/index.ts';
import { subjectValues, type RatelimitApi } from 'themis-plugin-ratelimit';
import { boundWords, decide, explain, type BoundSettings, type TimeframeDecision } from './estimate.ts';
import { predictField, predictOptions, type PredictOptions, type PredictPolicy } from './schema.ts';
import { predictCommand } from './commands.ts';
import { clientNetwork, displayName, extraTraitsOf, mailClient, messageTraits, replyToDomain, scoreSignals, tlsFingerprint, withSignals, WeekSlots, TLS_MACROS, type ExtraTraits, type SignalVerdict, type TraitValue } from './signals.ts';

export * from './store/index.ts';
export { boundWords, decide, estimate, explain, median, mad, type BoundSettings, type LearnedTimeframe, type TimeframeDecision } from './estimate.ts';
export { predictField, predictOptions, DEFAULT_TIMEFRAMES, type PredictPolicy, type PredictOptions, type Prior } from './schema.ts';
export { addressDomains, clientNetwork, decodeWords, displayName, extraTraitsOf, hoursSurprise, mailClient, messageTraits, replyToDomain, scoreSignals, tlsFingerprint, traitSurprise, withSignals, WeekSlots, CLIENT_TRAIT, DISPLAY_NAME_TRAIT, HOURS_TRAIT, IN_HOURS_SHARE, NETWORK_TRAIT, REPLY_TO_TRAIT, TLS_TRAIT, TLS_MACROS, MAX_CLIENTS, MAX_DISPLAY_NAMES, MAX_HOURS, MAX_NETWORKS, MAX_REPLY_TO, MAX_TLS, OWNER_SHARE, TRAIT_CAP, type ExtraTraits, type ShownTraits, type SignalSettings, type SignalVerdict, type TraitValue } from './signals.ts';

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
  /** What that policy counts, in words: `recipients`, `messages` or `new recipients`. */
  unit: string;
  /** Per timeframe: the count now and the bound (null while learning). */
  timeframes: { minutes: number; count: number; bound: number | null; center: number; spread: number }[];
  /**
   * With the policy's `signals`: how unusual the message was (surprise, nats), what the bounds above
   * were divided by, and the signals that moved, in words.
   */
  signals?: { surprise: number; divisor: number; moved: string[] };
}

/** An optional trait no policy of the message scores: never learned, never said. */
const UNREAD: TraitValue = { id: '-', label: '-' };

const REPLY = { code: 451, enhanced: '4.7.1', text: 'Unusual sending rate for {subject}: try again later' };

const digestOf = (value: string, length: number) => createHash('sha256').update(value).digest('base64url').slice(0, length);

/** The store key of a subject's profile: the subject's kind, what is counted, the timeframes and a hash of the value. */
export function profileKey(prefix: string, c: PredictPolicy, value: string): string {
  let counted: string = c.count;
  if (c.count !== 'messages' && c.maxPerMessage > 0) counted += c.maxPerMessage;
  // Policies that count new recipients with other internal domains count other amounts: other profiles.
  if (countsNew(c) && c.internalDomains.length > 0) counted += `~${digestOf([...c.internalDomains].sort().join(','), 6)}`;
  return `${prefix}${c.spec.name}:${counted}:${c.timeframes.join('-')}:${digestOf(value, 22)}`;
}

/** Whether a policy counts new recipients (outside its internal domains, or inside them): it needs the subject's recipient memory. */
export function countsNew(c: Pick<PredictPolicy, 'count'>): boolean {
  return c.count === 'newRecipients' || c.count === 'newInternalRecipients';
}

/**
 * The store key of a subject's recipient memory (`count: 'newRecipients'` or `'newInternalRecipients'`): one per subject, shared
 * by every policy that learns the same kind of subject.
 */
export function recipientMemoryKey(prefix: string, c: PredictPolicy, value: string): string {
  return `${prefix}seen:${c.spec.name}:${digestOf(value, 22)}`;
}

/** Width of a remembered recipient: 8 base64url characters of its SHA-256 (48 bits; never the address). */
export const RECIPIENT_HASH_WIDTH = 8;

/** What a recipient is remembered as: a 48-bit hash of the lower-cased address. */
export function recipientHash(address: string): string {
  return digestOf(address.toLowerCase(), RECIPIENT_HASH_WIDTH);
}

/** Whether a recipient's domain is one of `domains` or under one. */
export function isInternal(address: string, domains: readonly string[]): boolean {
  if (domains.length === 0) return false;
  const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
  return domains.some((d) => domain === d || domain.endsWith(`.${d}`));
}

/**
 * What one message adds to a policy's profile: 1 for `messages`; the recipients, or for
 * `newRecipients` those the subject's memory did not know (`depth[j]` -1 for `recipients[j]`) or knew only
 * deeper than `knownWithin`, outside `internalDomains`, for `newInternalRecipients` those inside them;
 * capped at `maxPerMessage` when it is set.
 */
export function messageAmount(c: PredictPolicy, recipients: readonly string[], depth: readonly number[] | undefined): number {
  if (c.count === 'messages') return 1;
  let counted = recipients.length;
  if (countsNew(c)) {
    // New recipients outside the internal domains, or (newInternalRecipients) inside them; with
    // knownWithin, also those the memory holds deeper than the last knownWithin distinct ones.
    const inside = c.count === 'newInternalRecipients';
    const within = c.knownWithin ?? Infinity;
    counted = 0;
    if (depth) for (let j = 0; j < recipients.length; j++) if ((depth[j] < 0 || depth[j] >= within) && isInternal(recipients[j], c.internalDomains) === inside) counted++;
  }
  return c.maxPerMessage > 0 ? Math.min(counted, c.maxPerMessage) : counted;
}

/** The words of a count in the trace: `recipients`, `messages`, `new recipients`. */
export const COUNT_WORDS: Readonly<Record<PredictPolicy['count'], string>> = { recipients: 'recipients', messages: 'messages', newRecipients: 'new recipients', newInternalRecipients: 'new internal recipients' };

/** The store request that learns from (or, with amount 0 and inspect, reads) a subject's profile. */
export function profileRequest(o: PredictOptions, c: PredictPolicy, value: string, amount: number, now: number | undefined, inspect = false): ProfileRequest {
  return { key: profileKey(o.keyPrefix, c, value), amount, timeframes: c.timeframes, span: o.span, keep: o.keep, clipK: o.clipK, clipAfter: c.minHistory, ttlMs: o.retentionDays * 86_400_000, now, inspect };
}

/** The bound settings of a policy for one timeframe. */
export function boundSettings(c: PredictPolicy, minutes: number): BoundSettings {
  return { estimator: c.estimator, k: c.k, factor: c.factor, floor: c.floors[minutes], minHistory: c.minHistory, prior: c.prior };
}

/** The plugin's error codes (its part of the one error registry, and of docs/errors.md). */
export const PREDICT_ERRORS = {
  THEMIS_PREDICT_STORE_FAILED: 'predict: the store did not answer ({reason}); the message passes unjudged',
  THEMIS_PREDICT_JAIL_FAILED: 'predict: could not jail the subject in the store ({reason}); this message is still refused',
} as const;

/** A code of the predict plugin. */
export type PredictErrorCode = keyof typeof PREDICT_ERRORS;

export default definePlugin({
  name: 'predict',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'predict', schema: predictField },
  options: predictOptions,
  // The jail action puts subjects in ratelimit's penalty block, through ratelimit's API.
  optionalDependencies: { ratelimit: '^1.0.0' },
  // Before ratelimit (50): a tempfail here and ratelimit's leaky accounting gives back what it counted.
  priority: 55,
  modifies: ['headers'],
  // The headers: the mail client (User-Agent / X-Mailer) of the signals.
  observes: ['connect', 'mailFrom', 'rcptTo', 'header'],
  // The TLS signal: {auth_type} at MAIL, the TLS macros at HELO (Postfix and Sendmail send them by default; asked anyway, so a site's narrower list keeps them).
  macros: { helo: [...TLS_MACROS.helo], mailFrom: [...TLS_MACROS.mailFrom] },
  commands: { predict: predictCommand },
  errors: PREDICT_ERRORS,
  setup({ store, options, metrics, log, error, use }) {
    const ratelimit = use<RatelimitApi>('ratelimit', { optional: true });
    const decisions = metrics.counter({ name: 'decisions_total', help: 'Predict decisions per policy: learning, normal, over, over_shadow', labelNames: ['policy', 'outcome'] });
    const storeErrors = metrics.counter({ name: 'store_errors_total', help: 'Messages the store could not learn from (the message passes)' });
    const clock = options.now;
    // The slot of the week of the `hours` signal, in the site's zone.
    const weekSlots = new WeekSlots(options.timeZone);

    const run = async (ctx: HookContext<PredictPolicy>): Promise<Verdict | undefined> => {
      const message = ctx.message!;
      const recipients = message.recipients.filter((r) => r.accepted).map((r) => r.address);
      if (recipients.length === 0) return undefined;
      const facts = { sender: message.sender?.address, auth: ctx.session.auth, clientIp: ctx.session.client?.address || undefined, recipients };
      const subjects = ctx.policies.map((policy) => subjectValues(policy.config.spec, facts, 'message')[0]?.value);

      // New recipients first: one memory per subject, told every recipient once per message.
      const memoryKeys = ctx.policies.map((policy, i) => (countsNew(policy.config) && subjects[i] !== undefined ? recipientMemoryKey(options.keyPrefix, policy.config, subjects[i]) : undefined));
      const memories = new Map<string, Promise<number[]>>();
      let hashes: string[] | undefined;
      for (const key of memoryKeys) {
        if (key === undefined || memories.has(key)) continue;
        hashes ??= recipients.map(recipientHash);
        memories.set(key, seenAdd(store, key, hashes, { keep: options.recipientMemory, ttlMs: options.retentionDays * 86_400_000 }).then((r) => r.depth));
      }
      const depths = new Map<string, number[]>();
      try {
        // Promise.all observes every call, so a second failure is not an unhandled rejection.
        const answers = await Promise.all(memories.values());
        let i = 0;
        for (const key of memories.keys()) depths.set(key, answers[i++]);
      } catch (err) {
        storeErrors.inc();
        const e = error('THEMIS_PREDICT_STORE_FAILED', { reason: (err as Error).message }, { cause: err });
        log.warn({ code: e.code, cause: (err as { code?: string }).code, err: (err as Error).message }, e.message);
        return undefined;
      }

      // One profile update per distinct (subject, count, timeframes): policies that share it learn once.
      const asked: { policy: AppliedPolicy<PredictPolicy>; value: string; index: number }[] = [];
      const requests: ProfileRequest[] = [];
      const byKey = new Map<string, number>();
      for (let i = 0; i < ctx.policies.length; i++) {
        const policy = ctx.policies[i];
        const c = policy.config;
        const value = subjects[i];
        if (value === undefined) continue;
        const memoryKey = memoryKeys[i];
        const amount = messageAmount(c, recipients, memoryKey === undefined ? undefined : depths.get(memoryKey));
        const req = profileRequest(options, c, value, amount, clock?.());
        let index = byKey.get(req.key);
        if (index === undefined) {
          byKey.set(req.key, (index = requests.length));
          requests.push(req);
        }
        asked.push({ policy, value, index });
      }
      if (requests.length === 0) return undefined;

      // Signals: the traits ride on one profile request per subject (the first policy with signals):
      // the same store call, the same round trip. Policies with signals on the same subject share them.
      const traitOf = new Map<string, number>();
      const extras = new Map<number, ExtraTraits>();
      let shown: { network: string; client: TraitValue; replyTo: TraitValue; displayName: TraitValue; tls: TraitValue; hours: TraitValue } | undefined;
      // The optional traits are read (a parse and a hash each) only when a policy of this message scores them.
      const scores = (trait: 'replyTo' | 'displayName' | 'tls' | 'hours') => asked.some((a) => a.policy.config.signals?.[trait] === true);
      for (const a of asked) {
        const c = a.policy.config;
        if (!c.signals) continue;
        shown ??= {
          network: clientNetwork(ctx.session.client?.address),
          client: mailClient(message.headers),
          replyTo: scores('replyTo') ? replyToDomain(message.headers, message.sender?.address.split('@')[1]) : UNREAD,
          displayName: scores('displayName') ? displayName(message.headers) : UNREAD,
          tls: scores('tls') ? tlsFingerprint(ctx.session.macros) : UNREAD,
          hours: scores('hours') ? weekSlots.of(clock?.() ?? Date.now()) : UNREAD,
        };
        const subjectKey = `${c.spec.name}\0${a.value}`;
        let carrier = traitOf.get(subjectKey);
        if (carrier === undefined) traitOf.set(subjectKey, (carrier = a.index));
        // The optional traits any policy on the subject scores ride on the carrier, learned once.
        extras.set(carrier, { ...extras.get(carrier), ...extraTraitsOf(c.signals, shown) });
      }
      for (const [carrier, extra] of extras) {
        // (A profile key holds the subject's kind and value: no other subject's traits can be on it already.)
        if (requests[carrier].traits === undefined) requests[carrier] = { ...requests[carrier], traits: messageTraits(shown!.network, shown!.client, extra, options.youngHours) };
      }
      let results;
      try {
        results = await profileUpdate(store, requests);
      } catch (err) {
        storeErrors.inc();
        const e = error('THEMIS_PREDICT_STORE_FAILED', { reason: (err as Error).message }, { cause: err });
        log.warn({ code: e.code, cause: (err as { code?: string }).code, err: (err as Error).message }, e.message);
        return undefined;
      }

      let note: PredictNote | undefined;
      let act: { policy: AppliedPolicy<PredictPolicy>; value: string; worst: TimeframeDecision; all: TimeframeDecision[] } | undefined;
      const lines: string[] = [];
      for (const a of asked) {
        const c = a.policy.config;
        let signals: SignalVerdict | undefined;
        if (c.signals && shown) {
          const carrier = traitOf.get(`${c.spec.name}\0${a.value}`);
          signals = scoreSignals(c.signals, carrier === undefined ? undefined : results[carrier].traits, { network: shown.network, client: shown.client.label, address: ctx.session.client?.address, replyTo: shown.replyTo.label, displayName: shown.displayName.label, tls: shown.tls.label, hours: shown.hours.label }, options.youngHours);
        }
        const all = results[a.index].timeframes.map((t) => withSignals(decide(t, boundSettings(c, t.minutes)), signals?.divisor ?? 1));
        const over = all.filter((d) => d.over);
        const learning = all.every((d) => d.bound === null);
        // The timeframe furthest over its bound explains the decision; else the closest to it.
        const ratio = (d: TimeframeDecision) => (d.bound === null ? -1 : d.count / d.bound);
        const worst = all.reduce((w, d) => (ratio(d) > ratio(w) ? d : w), all[0]);
        const unit = COUNT_WORDS[c.count];
        const outcome = over.length > 0 ? (c.shadow ? 'over_shadow' : 'over') : learning ? 'learning' : 'normal';
        decisions.inc({ policy: a.policy.name, outcome });
        const moved = signals && signals.divisor > 1 ? ` (bounds ÷ ${Math.round(signals.divisor * 10) / 10}: ${signals.moved.join(', ')})` : '';
        const words = `${a.value}: ${explain(worst, unit)}${moved}`;
        if (over.length > 0) {
          lines.push(`${a.policy.name}: ${words}${c.shadow ? ' (shadow: no action)' : ` → ${c.action}`}`);
          ctx.log.info({ policy: a.policy.name, subject: c.spec.name, shadow: c.shadow, action: c.action, timeframes: over.map((d) => ({ minutes: d.minutes, count: d.count, bound: d.bound })), ...(signals && signals.divisor > 1 ? { signals } : {}) }, `predict: ${a.policy.name} over the learned rate${c.shadow ? ' (shadow)' : ''}${moved}`);
        }
        const entry: PredictNote = { subject: a.value, over: over.length > 0, shadow: over.length > 0 && c.shadow, policy: a.policy.name, unit, timeframes: all.map((d) => ({ minutes: d.minutes, count: d.count, bound: d.bound, center: d.center, spread: d.spread })), ...(signals ? { signals } : {}) };
        // The note tells the most serious decision: an acting policy over a shadow one over a quiet one.
        if (!note || (entry.over && (!note.over || (note.shadow && !entry.shadow)))) note = entry;
        if (over.length > 0 && !c.shadow && !act) act = { policy: a.policy, value: a.value, worst, all };
      }
      if (note) message.notes.set(note);
      if (!act) return lines.length > 0 ? { action: 'continue', reason: lines.join('; ') } : undefined;

      const c = act.policy.config;
      const values = { subject: act.value, minutes: act.worst.minutes, count: act.worst.count, bound: boundWords(act.worst.bound ?? 0), policy: act.policy.name };
      const reason = lines.join('; ');
      switch (c.action) {
        case 'tag':
          message.addHeader(c.header, fillTemplate(`over; policy={policy}; ${act.all.filter((d) => d.over).map((d) => `${d.minutes}m=${d.count}/${boundWords(d.bound!)}`).join('; ')}`, values));
          return { action: 'continue', reason };
        case 'hold':
          // The hold shows the reason (Sendmail's mailq -qQ cuts a long one): short and plain; the trace keeps the lines.
          return { action: 'quarantine', reason: fillTemplate('{policy}: {subject} over its learned rate ({count} in {minutes} min, bound {bound})', values), detail: reason };
        case 'jail': {
          // The subject goes to ratelimit's penalty block: refused there until it ends, whatever this plugin learns meanwhile.
          const policy = c.jail.policy ?? act.policy.name;
          try {
            if (!ratelimit) throw new Error('the ratelimit plugin is not loaded: load it to jail subjects');
            await ratelimit.jail({ policy, subject: c.spec, value: act.value, ms: c.jail.minutes * 60_000, label: act.value });
          } catch (err) {
            storeErrors.inc();
            const e = error('THEMIS_PREDICT_JAIL_FAILED', { reason: (err as Error).message }, { cause: err });
            log.warn({ code: e.code, cause: (err as { code?: string }).code, err: (err as Error).message }, e.message);
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
