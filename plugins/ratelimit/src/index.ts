/**
 * The ratelimit plugin: per-policy, multi-window limits on what a message's sender, login, domain,
 * client network or recipients send, decided atomically in the store — one round trip per message
 * for every subject of every matching policy — with leaky or strict accounting, block / hold /
 * monitor actions, penalty blocks, per-subject overrides and the `themis limits` admin command.
 * @module
 */
import { z } from 'zod';
import { definePlugin, fillTemplate, pluginErrors, resolveReply, type AppliedPolicy, type HookContext, type Verdict } from 'themis-milter';
import { rateAdmin, rateLimit, rateRefund, type RateRequest, type RateResult, type RateReservation } from './store/index.ts';
import { limitsCommand } from './commands.ts';
import { formatDuration, ratelimitField, type RatelimitPolicy, type ResolvedWindow } from './schema.ts';
import { subjectKey, subjectValues, type SubjectFacts, type SubjectSpec, type SubjectValue } from './subjects.ts';

export { parseDuration, formatDuration, ratelimitField, DEFAULT_SLOTS, type RatelimitPolicy, type ResolvedWindow, type WindowsInput } from './schema.ts';
export * from './store/index.ts';
export { parseSubject, subjectValues, subjectKey, networkOf, NULL_SENDER, type SubjectSpec, type SubjectFacts, type SubjectValue } from './subjects.ts';

/** Plugin-level options. */
export const ratelimitOptions = z.strictObject({
  /**
   * How long a decision may wait for the store before `onStoreError` applies, ms (default 75: a
   * healthy Redis answers in well under a millisecond, and Postfix must never wait on a sick one).
   */
  storeTimeout: z.number().int().positive().default(75),
});

/** Plugin-level options, validated. */
export type RatelimitOptions = z.infer<typeof ratelimitOptions>;

/** Why a message or recipient is refused. */
interface Refusal {
  verdict: Verdict;
  policy: string;
  /** What the note tells other plugins. */
  detail: RatelimitRefusal;
}

/** A refusal as other plugins read it in the note (`ratelimit.refused`). */
export interface RatelimitRefusal {
  /** The policy that refused. */
  policy: string;
  /** The subject kind (`sender`, `clientIp`, `saslUser+senderDomain`…). */
  by: string;
  /** The subject's value (`a@example.org`). */
  subject: string;
  /** `denied` (over a window), `jailed` (penalty block) or `blocked` (by an administrator or the configuration). */
  outcome: 'denied' | 'jailed' | 'blocked';
  /** The window that refused, as configured (`3/1h`); empty for `blocked`. */
  limit: string;
  /** How long until the subject may send again, ms; -1 when an administrator must lift it. */
  retryAfterMs: number;
}

/**
 * The message note (`ctx.message.notes.of('ratelimit')`). Other plugins read the usage fields, set at
 * end of message from the window closest to its limit among the policies that allowed the message:
 * e.g. the headers plugin's `{ratelimit.remaining}` or `{ note: 'ratelimit.remaining', lt: 10 }`.
 */
export interface RatelimitNote {
  /** The policy of that window. */
  policy?: string;
  /** Its length (`1h`, `1d`). */
  window?: string;
  /** Its limit. */
  limit?: number;
  /** Used in it, this message included. */
  used?: number;
  /** Left in it. */
  remaining?: number;
  /** The first refusal of this message (at RCPT or end of message), if any. */
  refused?: RatelimitRefusal;
}

/** Reservations of the current message, kept for a leaky refund; public usage fields for other plugins. */
interface MessageNote extends RatelimitNote {
  reservations: RateReservation[];
  /** RCPT-stage policies that already counted the message (cost `message`). */
  counted: Set<string>;
  /** A hold decided at RCPT, applied at end of message. */
  hold?: Verdict;
}

const DEFAULT_REPLY = { code: 450, enhanced: '4.7.1', text: 'Rate limit exceeded ({limit} per {window}): try again in {wait} seconds' };
const BLOCKED_REPLY = { code: 550, enhanced: '5.7.1', text: 'Account manually blocked, contact your administrator' };
const TOO_BIG_REPLY = { code: 550, enhanced: '5.7.1', text: 'Message exceeds the rate limit on its own ({cost} > {limit} per {window})' };
const STORE_FAILED_REPLY = { code: 451, enhanced: '4.3.0', text: 'Temporary rate-limit failure, try again later' };

/** Fills `{wait}`, `{limit}`, `{window}`, `{policy}`, `{subject}`, `{cost}` in a reply text (the kernel's `fillTemplate`). */
export const renderReply = fillTemplate;

/** The plugin's error codes (its part of the one error registry, and of docs/errors.md). */
export const RATELIMIT_ERRORS = {
  THEMIS_RATELIMIT_STORE_TIMEOUT: 'the store did not answer the rate-limit request within {ms} ms (storeTimeout)',
  THEMIS_RATELIMIT_STORE_FAILED: 'rate-limit store failed ({reason}); applying onStoreError',
  THEMIS_RATELIMIT_REFUND_FAILED: 'rate-limit refund failed ({reason}); the message stays counted',
} as const;

/** A code of the ratelimit plugin. */
export type RatelimitErrorCode = keyof typeof RATELIMIT_ERRORS;

/**
 * What the ratelimit plugin offers the plugins that depend on it (`dependencies: { ratelimit: '^1.0.0' }`,
 * then `use<RatelimitApi>('ratelimit')` in their setup). Import it as a type only.
 */
export interface RatelimitApi {
  /**
   * Puts a subject in a policy's penalty block: refused by that policy for `ms`, whatever is counted
   * meanwhile (a longer block already set stands). `subject` is how the policy counts (`by`, see
   * {@link parseSubject}) and `value` the subject's value (`alice@example.org`); `label` is what
   * `themis limits` shows for it.
   */
  jail(request: { policy: string; subject: SubjectSpec; value: string; ms: number; label?: string }): Promise<void>;
}

const ratelimitError = pluginErrors('ratelimit', RATELIMIT_ERRORS);

/** The code a failed store call carries (a store's `THEMIS_ERR_STORE_*`, or the plugin's timeout), if any. */
const codeOf = (err: unknown): string | undefined => (err as { code?: string } | undefined)?.code;

function refusalOf(action: 'reject' | 'tempfail' | 'quarantine', r: { code: number; enhanced: string; text: string }, reason: string): Verdict {
  if (action === 'quarantine') return { action, reason };
  return { action: r.code >= 500 ? 'reject' : 'tempfail', reply: r, reason };
}

export default definePlugin({
  name: 'ratelimit',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'ratelimit', schema: ratelimitField },
  options: ratelimitOptions,
  priority: 50,
  modifies: ['headers'],
  // The envelope is read at end of message: the MTA streams it without waiting for answers.
  observes: ['connect', 'mailFrom', 'rcptTo'],
  commands: { limits: limitsCommand },
  // `themis policy add|set` flags, as the original Themis's tmscli had them (README, "themis policy").
  policyFlags: {
    ratelimit: { type: 'string', valueName: 'WINDOWS', help: 'the ratelimit field: windows such as 100/1m,1000/1h', apply: (f, v) => void (f.windows = v) },
    'jail-by': { type: 'string', valueName: 'SUBJECT', help: 'ratelimit subject (sender+, saslUser, clientIp, …)', apply: (f, v) => void (f.by = v) },
    'jail-action': { type: 'string', valueName: 'A', help: 'block, hold or monitor', apply: (f, v) => void (f.action = v) },
    jail: { type: 'string', valueName: 'DURATION', help: 'penalty block after a refusal (e.g. 10m)', apply: (f, v) => void (f.jail = v) },
    'count-rcpt': { type: 'boolean', help: 'count recipients, not messages', apply: (f) => void (f.cost = 'recipient') },
    reply: { type: 'string', valueName: 'TEXT', help: "the refusal's text", apply: (f, v) => void (f.reply = { ...((f.reply as object | undefined) ?? {}), text: v }) },
  },
  errors: RATELIMIT_ERRORS,
  setup({ store, metrics, log, options, error, expose }) {
    const api: RatelimitApi = {
      async jail({ policy, subject, value, ms, label }) {
        await rateAdmin(store, subjectKey(policy, subject, value), { jailMs: ms, label: label ?? value });
      },
    };
    expose(api);
    const decisions = metrics.counter({ name: 'decisions_total', help: 'Rate-limit decisions per policy and outcome (allowed, denied, jailed, blocked, bypassed, monitored)', labelNames: ['policy', 'outcome'] });
    const storeErrors = metrics.counter({ name: 'store_errors_total', help: 'Decisions the store could not make in time (onStoreError applied)', labelNames: ['policy'] });
    const refunds = metrics.counter({ name: 'refunds_total', help: 'Reservations given back (leaky accounting: the message was not accepted after all)' });
    let lastStoreLog = 0;

    const noteOf = (ctx: HookContext<RatelimitPolicy>): MessageNote => {
      const notes = ctx.message!.notes;
      let note = notes.get<MessageNote>();
      if (!note) notes.set((note = { reservations: [], counted: new Set() }));
      return note;
    };

    const factsOf = (ctx: HookContext<RatelimitPolicy>, recipients: readonly string[]): SubjectFacts => ({
      sender: ctx.message?.sender?.address,
      auth: ctx.session.auth,
      clientIp: ctx.session.client?.address || undefined,
      recipients,
    });

    const refund = async (reservations: RateReservation[]) => {
      if (reservations.length === 0) return;
      const list = reservations.splice(0);
      try {
        await rateRefund(store, list);
        refunds.inc(list.length);
      } catch (err) {
        // A refund that fails errs on the safe side: the message counts, as with strict accounting.
        const e = error('THEMIS_RATELIMIT_REFUND_FAILED', { reason: (err as Error).message }, { cause: err });
        log.warn({ code: e.code, cause: codeOf(err), err: (err as Error).message }, e.message);
      }
    };

    /**
     * Decides for the given policies in one store round trip. Returns the refusal (if any), the
     * reservations made, and the per-policy allowed results (for headers).
     */
    const decide = async (ctx: HookContext<RatelimitPolicy>, policies: readonly AppliedPolicy<RatelimitPolicy>[], recipients: readonly string[], costFor: (p: AppliedPolicy<RatelimitPolicy>, s: SubjectValue) => number) => {
      const facts = factsOf(ctx, recipients);
      const asked: { policy: AppliedPolicy<RatelimitPolicy>; subject: SubjectValue; windows: ResolvedWindow[]; index: number }[] = [];
      const requests: RateRequest[] = [];
      let refusal: Refusal | undefined;
      for (const policy of policies) {
        const c = policy.config;
        for (const subject of subjectValues(c.by, facts, c.cost)) {
          const o = c.overrides[subject.value];
          if (o?.bypass) {
            decisions.inc({ policy: policy.name, outcome: 'bypassed' });
            continue;
          }
          if (o?.block) {
            decisions.inc({ policy: policy.name, outcome: 'blocked' });
            refusal ??= { policy: policy.name, verdict: refusalOf('reject', resolveReply(c.blockedReply, BLOCKED_REPLY, { policy: policy.name, subject: subject.value }), `${policy.name}: ${c.by.name} blocked by the configuration`), detail: { policy: policy.name, by: c.by.name, subject: subject.value, outcome: 'blocked', limit: '', retryAfterMs: -1 } };
            continue;
          }
          const windows = o?.windows ?? c.windows;
          asked.push({ policy, subject, windows, index: requests.length });
          requests.push({ key: subjectKey(policy.name, c.by, subject.value), cost: costFor(policy, subject), windows, jailMs: c.jail, label: `${policy.name} ${c.by.name} ${subject.value}` });
        }
      }
      const reservations: RateReservation[] = [];
      const allowed = new Map<string, { result: RateResult; windows: ResolvedWindow[] }>();
      if (requests.length === 0 || refusal) return { refusal, reservations, allowed, storeFailed: false };
      let results: RateResult[];
      try {
        results = await withTimeout(rateLimit(store, requests), options.storeTimeout);
      } catch (err) {
        const now = Date.now();
        for (const p of new Set(asked.map((a) => a.policy.name))) storeErrors.inc({ policy: p });
        if (now - lastStoreLog > 10_000) {
          lastStoreLog = now;
          const e = error('THEMIS_RATELIMIT_STORE_FAILED', { reason: (err as Error).message }, { cause: err });
          log.warn({ code: e.code, cause: codeOf(err), err: (err as Error).message }, e.message);
        }
        const strict = asked.some((a) => a.policy.config.onStoreError === 'tempfail');
        return { refusal: strict ? { policy: asked[0].policy.name, verdict: { action: 'tempfail', reply: STORE_FAILED_REPLY, reason: 'rate-limit store unavailable' } as Verdict } : undefined, reservations, allowed, storeFailed: true };
      }
      let stopped = false;
      for (const a of asked) {
        const r = results[a.index];
        const c = a.policy.config;
        if (stopped) {
          if (r.reservation) await refund([r.reservation]);
          continue;
        }
        if (r.reservation) reservations.push(r.reservation);
        if (r.outcome === 'allowed') {
          decisions.inc({ policy: a.policy.name, outcome: 'allowed' });
          const prev = allowed.get(a.policy.name);
          if (!prev || minRemaining(r) < minRemaining(prev.result)) allowed.set(a.policy.name, { result: r, windows: a.windows });
          continue;
        }
        if (r.outcome === 'bypassed') {
          decisions.inc({ policy: a.policy.name, outcome: 'bypassed' });
          continue;
        }
        const w = r.failing >= 0 ? a.windows[r.failing] : a.windows[0];
        const values = { policy: a.policy.name, subject: a.subject.value, limit: r.windows[r.failing]?.limit ?? w.limit, window: formatDuration(w.windowMs), wait: Math.max(1, Math.ceil(r.retryAfterMs / 1000)), cost: a.subject.cost };
        if (r.outcome === 'blocked') {
          decisions.inc({ policy: a.policy.name, outcome: 'blocked' });
          refusal ??= { policy: a.policy.name, verdict: refusalOf('reject', resolveReply(c.blockedReply, BLOCKED_REPLY, values), `${a.policy.name}: ${c.by.name} blocked by an administrator`), detail: { policy: a.policy.name, by: c.by.name, subject: a.subject.value, outcome: 'blocked', limit: '', retryAfterMs: -1 } };
          continue;
        }
        const reason = r.outcome === 'jailed' ? `${a.policy.name}: ${c.by.name} in a penalty block for ${values.wait}s` : r.retryAfterMs < 0 ? `${a.policy.name}: ${c.by.name} cost ${a.subject.cost} exceeds ${values.limit}/${values.window} on its own` : `${a.policy.name}: ${c.by.name} over ${values.limit}/${values.window}; retry in ${values.wait}s`;
        if (c.action === 'monitor') {
          decisions.inc({ policy: a.policy.name, outcome: 'monitored' });
          ctx.log.info({ policy: a.policy.name, subject: c.by.name, outcome: r.outcome, retryAfterMs: r.retryAfterMs }, `rate limit exceeded (monitor only): ${reason}`);
          if (c.monitorStops) stopped = true;
          continue;
        }
        decisions.inc({ policy: a.policy.name, outcome: r.outcome });
        const text = r.retryAfterMs < 0 && r.outcome === 'denied' ? resolveReply({}, TOO_BIG_REPLY, values) : resolveReply(c.reply, DEFAULT_REPLY, values);
        refusal ??= { policy: a.policy.name, verdict: refusalOf(c.action === 'hold' ? 'quarantine' : 'reject', text, reason), detail: { policy: a.policy.name, by: c.by.name, subject: a.subject.value, outcome: r.outcome, limit: `${values.limit}/${values.window}`, retryAfterMs: Math.max(0, r.retryAfterMs) } };
      }
      if (refusal) noteOf(ctx).refused ??= refusal.detail;
      return { refusal, reservations, allowed, storeFailed: false };
    };

    const leaky = (policies: readonly AppliedPolicy<RatelimitPolicy>[]) => policies.every((p) => p.config.accounting === 'leaky');

    return {
      async rcptTo(ctx, rcpt) {
        const policies = ctx.policies.filter((p) => p.config.stage === 'rcptTo');
        if (policies.length === 0) return undefined;
        const note = noteOf(ctx);
        const out = await decide(ctx, policies, [rcpt.address], (p, s) => {
          if (p.config.by.parts[0].kind === 'recipient' || p.config.by.parts[0].kind === 'recipientDomain') return 1;
          if (p.config.cost === 'recipient') return 1;
          // Cost `message`: the first recipient counts the message, the others only check.
          return note.counted.has(p.name) ? 0 : (s.cost > 0 ? 1 : 0);
        });
        if (out.refusal?.verdict.action === 'quarantine') {
          note.hold ??= out.refusal.verdict;
          note.reservations.push(...out.reservations);
          for (const p of policies) note.counted.add(p.name);
          return undefined;
        }
        if (out.refusal) {
          // Only this recipient is refused: what other subjects reserved for it is given back (leaky).
          if (leaky(policies)) await refund(out.reservations);
          return out.refusal.verdict;
        }
        note.reservations.push(...out.reservations);
        for (const p of policies) note.counted.add(p.name);
        return undefined;
      },

      async endOfMessage(ctx) {
        const message = ctx.message!;
        const note = noteOf(ctx);
        const policies = ctx.policies.filter((p) => p.config.stage === 'endOfMessage');
        const recipients = message.recipients.filter((r) => r.accepted).map((r) => r.address);
        const out = policies.length > 0 ? await decide(ctx, policies, recipients, (_p, s) => s.cost) : undefined;
        note.reservations.push(...(out?.reservations ?? []));
        const hold = out?.refusal?.verdict.action === 'quarantine' ? out.refusal.verdict : note.hold;
        const refused = out?.refusal && out.refusal.verdict.action !== 'quarantine' ? out.refusal.verdict : undefined;
        if (refused || hold) {
          // Refused or held: not accepted after all, so leaky accounting gives everything back now
          // (refund() empties the list, so the abort hook that follows a refusal finds nothing to repeat).
          if (leaky(ctx.policies)) await refund(note.reservations);
          else note.reservations.length = 0;
          return refused ?? hold;
        }
        if (out) {
          let tightest = Infinity;
          for (const [policy, { result, windows }] of out.allowed) {
            result.windows.forEach((w, i) => {
              if (w.remaining >= tightest) return;
              tightest = w.remaining;
              Object.assign(note, { policy, window: formatDuration(windows[i].windowMs), limit: w.limit, used: w.used, remaining: w.remaining });
            });
          }
          for (const [policy, { result, windows }] of out.allowed) {
            if (!policies.find((p) => p.name === policy)?.config.headers) continue;
            const i = result.windows.reduce((best, w, j) => (w.remaining < result.windows[best].remaining ? j : best), 0);
            const w = result.windows[i];
            message.addHeader('X-Themis-RateLimit', `policy=${policy}; window=${formatDuration(windows[i].windowMs)}; limit=${w.limit}; used=${w.used}; remaining=${w.remaining}; reset=${Math.ceil(w.resetMs / 1000)}s`);
          }
        }
        return undefined;
      },

      async abort(ctx) {
        // The message was abandoned or refused (by any plugin): leaky accounting gives back what it reserved.
        const note = ctx.message?.notes.get<MessageNote>();
        if (!note || note.reservations.length === 0) return;
        if (leaky(ctx.policies)) await refund(note.reservations);
        else note.reservations.length = 0;
      },
    };
  },
});

function minRemaining(r: RateResult): number {
  return r.windows.reduce((m, w) => Math.min(m, w.remaining), Infinity);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(ratelimitError('THEMIS_RATELIMIT_STORE_TIMEOUT', { ms })), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e as Error);
      },
    );
  });
}
