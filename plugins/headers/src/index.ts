/**
 * themis-plugin-headers: declarative header rules. A policy's `headers` field lists rules; each tests
 * headers, the envelope and other plugins' notes, and when it applies, adds, inserts, changes, deletes
 * or sets headers and may give a verdict. Regexes are RE2 (linear time) and matching has a per-message
 * time budget; every value written is sanitised, RFC 2047-encoded when not ASCII, folded, and added at
 * most once per message.
 * @module
 */
import { SEVERITY, definePlugin, resolveReply, type HookContext, type PluginMessage, type Verdict } from 'themis-milter';
import { decodeWords, encodeWords, fold, sanitise, unfold } from './encoding.ts';
import { describeCondition, headersField, headersOptions, type Action, type Captures, type Condition, type HeadersOptions, type HeadersPolicy, type Rule, type RuleVerdictAction } from './schema.ts';
import { noteText, notePath, renderTemplate, rfc5322Date, type Template } from './template.ts';

export { decodeWords, encodeWords, fold, sanitise, unfold } from './encoding.ts';
export { headersField, headersOptions, type HeadersPolicy, type HeadersOptions, type Rule, type Condition, type Action, type ConditionInput, type HeadersInput } from './schema.ts';
export { PLACEHOLDERS } from './template.ts';

/** What the plugin leaves in the message notes (`ctx.message.notes.of('headers')`), for other plugins. */
export interface HeadersNote {
  /** Rules that applied, as `policy/rule`, in order. */
  readonly applied: string[];
  /** The verdict the rules gave, if any. */
  verdict: RuleVerdictAction | undefined;
}

/** The plugin's error codes (its part of the one error registry, and of docs/errors.md). */
export const HEADERS_ERRORS = {
  THEMIS_HEADERS_BUDGET: 'header matching ran past its time budget ({spentMs} ms of {budgetMs} ms); the remaining {skipped} rule(s) were skipped',
  THEMIS_HEADERS_WORD_CUT: 'header {header} had a word longer than a line can hold; it was cut to stay under 998 characters',
} as const;

/** A code of the headers plugin. */
export type HeadersErrorCode = keyof typeof HEADERS_ERRORS;

const DEFAULT_REPLIES = {
  reject: { code: 550, enhanced: '5.7.1', text: 'Message refused by policy {policy}' },
  tempfail: { code: 451, enhanced: '4.7.1', text: 'Message deferred by policy {policy}' },
};

/** Per-message working state (kept in the plugin's note, beside its public fields). */
class MessageWork implements HeadersNote {
  readonly applied: string[] = [];
  verdict: RuleVerdictAction | undefined;
  /** Headers this plugin added (`lowercase name\0value`): a header is added once per message. */
  readonly added = new Set<string>();
  /** Occurrences changed or deleted (`name#index`, `name#*` for all) → the rule that did it. */
  readonly touched = new Map<string, string>();
  /** Matching time spent on this message, in ms. */
  spentMs = 0;
  budgetLogged = false;
  /** The message's headers by lowercase name: raw (unfolded) values and, on demand, decoded ones. */
  index: Map<string, { raw: string[]; decoded: (string | undefined)[] }> | undefined;
}

/** What a condition found: whether it holds, the captures of its regex, and the trace words. */
interface Finding {
  ok: boolean;
  captures: Captures | undefined;
  what: string[];
}

export default definePlugin({
  name: 'headers',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'headers', schema: headersField },
  options: headersOptions,
  // Runs after the plugins that decide at end of message (spf 40, ratelimit 50), so rules can read
  // their notes; its end-of-headers rules still run before all of them decide.
  priority: -10,
  modifies: ['headers'],
  observes: ['connect', 'helo', 'mailFrom', 'rcptTo', 'header'],
  errors: HEADERS_ERRORS,
  setup({ options, metrics, log, error }) {
    const applied = metrics.counter({ name: 'rules_applied_total', help: 'Header rules that applied, per policy and rule', labelNames: ['policy', 'rule'] });
    const actionsDone = metrics.counter({ name: 'actions_total', help: 'Header changes requested, per kind (add, insert, change, delete, set) and outcome (done, duplicate, conflict, absent)', labelNames: ['action', 'outcome'] });
    const budgetExceeded = metrics.counter({ name: 'budget_exceeded_total', help: 'Messages whose matching ran past matchBudgetMs (their remaining rules were skipped)' });

    const workOf = (message: PluginMessage): MessageWork => {
      let w = message.notes.get<MessageWork>();
      if (!(w instanceof MessageWork)) message.notes.set((w = new MessageWork()));
      return w;
    };

    const headerIndex = (message: PluginMessage, w: MessageWork) => {
      if (w.index) return w.index;
      const index = new Map<string, { raw: string[]; decoded: (string | undefined)[] }>();
      for (const h of message.headers) {
        const key = h.name.toLowerCase();
        let e = index.get(key);
        if (!e) index.set(key, (e = { raw: [], decoded: [] }));
        e.raw.push(unfold(h.value));
      }
      return (w.index = index);
    };

    const limit = (v: string) => (v.length > options.maxValueLength ? v.slice(0, options.maxValueLength) : v);

    const noteValue = (ctx: HookContext<HeadersPolicy>, plugin: string, path: readonly string[]): unknown => {
      const note = ctx.message?.notes.of(plugin) ?? ctx.session.notes.of(plugin);
      return notePath(note, path);
    };

    const envelopeValues = (ctx: HookContext<HeadersPolicy>, field: string): string[] => {
      const s = ctx.session;
      const m = ctx.message;
      const one = (v: string | undefined) => (v === undefined ? [] : [v]);
      switch (field) {
        case 'sender':
          return one(m?.sender?.address);
        case 'recipient':
          return (m?.recipients ?? []).filter((r) => r.accepted).map((r) => r.address);
        case 'helo':
          return one(s.helo);
        case 'auth':
          return one(s.auth);
        case 'clientIp':
          return one(s.client?.address || undefined);
        case 'clientName':
          return one(s.client?.hostname);
        default:
          return one(s.mta);
      }
    };

    const evaluate = (c: Condition, ctx: HookContext<HeadersPolicy>, w: MessageWork): Finding => {
      switch (c.kind) {
        case 'all': {
          const what: string[] = [];
          let captures: Captures | undefined;
          for (const x of c.of) {
            const f = evaluate(x, ctx, w);
            if (!f.ok) return { ok: false, captures: undefined, what: [] };
            captures ??= f.captures;
            what.push(...f.what);
          }
          return { ok: true, captures, what };
        }
        case 'any': {
          for (const x of c.of) {
            const f = evaluate(x, ctx, w);
            if (f.ok) return f;
          }
          return { ok: false, captures: undefined, what: [] };
        }
        case 'not': {
          const f = evaluate(c.of, ctx, w);
          return { ok: !f.ok, captures: undefined, what: f.ok ? [] : [describeCondition(c)] };
        }
        case 'header': {
          const e = headerIndex(ctx.message!, w).get(c.key);
          const count = e?.raw.length ?? 0;
          if (c.test.presence) return { ok: (count > 0) === c.test.wanted, captures: undefined, what: [`${c.name} ${c.test.describe}`] };
          if (!e || count === 0) return { ok: false, captures: undefined, what: [] };
          const valueAt = (i: number) => {
            if (!c.decode) return limit(e.raw[i].trim());
            return limit((e.decoded[i] ??= decodeWords(e.raw[i]).trim()));
          };
          const one = (i: number): Finding => {
            const v = valueAt(i);
            const r = c.test.test(v);
            return r === false ? { ok: false, captures: undefined, what: [] } : { ok: true, captures: r === true ? undefined : r, what: [`${c.name}#${i + 1} ${JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v)} ${c.test.describe}`] };
          };
          const occ = c.occurrence;
          if (occ === 'first') return one(0);
          if (occ === 'last') return one(count - 1);
          if (typeof occ === 'number') {
            const i = occ > 0 ? occ - 1 : count + occ;
            return i >= 0 && i < count ? one(i) : { ok: false, captures: undefined, what: [] };
          }
          let first: Finding | undefined;
          for (let i = 0; i < count; i++) {
            const f = one(i);
            if (occ === 'any' && f.ok) return f;
            if (occ === 'every' && !f.ok) return f;
            first ??= f;
          }
          return occ === 'every' ? { ok: true, captures: first?.captures, what: [`every ${c.name} (${count}) ${c.test.describe}`] } : { ok: false, captures: undefined, what: [] };
        }
        case 'envelope': {
          const values = envelopeValues(ctx, c.field);
          if (c.test.presence) return { ok: (values.length > 0) === c.test.wanted, captures: undefined, what: [`${c.field} ${c.test.describe}`] };
          if (values.length === 0) return { ok: false, captures: undefined, what: [] };
          let captures: Captures | undefined;
          for (const v of values) {
            const r = c.test.test(limit(v));
            if (r !== false && c.occurrence === 'any') return { ok: true, captures: r === true ? undefined : r, what: [`${c.field} ${JSON.stringify(v)} ${c.test.describe}`] };
            if (r === false && c.occurrence === 'every') return { ok: false, captures: undefined, what: [] };
            if (r !== false && r !== true) captures ??= r;
          }
          return c.occurrence === 'every' ? { ok: true, captures, what: [`every ${c.field} ${c.test.describe}`] } : { ok: false, captures: undefined, what: [] };
        }
        case 'note': {
          const raw = noteValue(ctx, c.plugin, c.path);
          const label = `${c.plugin}.${c.path.join('.')}`;
          if (c.test.presence) return { ok: (raw !== undefined && raw !== null) === c.test.wanted, captures: undefined, what: [`${label} ${c.test.describe}`] };
          const v = noteText(raw);
          if (v === undefined) return { ok: false, captures: undefined, what: [] };
          const r = c.test.test(limit(v));
          return r === false ? { ok: false, captures: undefined, what: [] } : { ok: true, captures: r === true ? undefined : r, what: [`${label} ${JSON.stringify(v)} ${c.test.describe}`] };
        }
      }
    };

    /** Renders a template into a header value that cannot inject, is 7-bit, and is folded. */
    const headerValue = (name: string, t: Template, lookup: (name: string, path: readonly string[]) => string | undefined, policy: string, rule: string): string => {
      const { value, truncated } = fold(name, encodeWords(sanitise(renderTemplate(t, lookup))));
      if (truncated) {
        const e = error('THEMIS_HEADERS_WORD_CUT', { header: name });
        log.warn({ code: e.code, policy, rule, header: name }, e.message);
      }
      return value;
    };

    /** The answers to a rule's placeholders. */
    const lookupFor = (ctx: HookContext<HeadersPolicy>, w: MessageWork, policy: string, rule: string, captures: Captures | undefined, current: () => string) => {
      const now = new Date();
      return (name: string, path: readonly string[]): string | undefined => {
        const s = ctx.session;
        const m = ctx.message!;
        switch (name) {
          case 'policy':
            return policy;
          case 'rule':
            return rule;
          case 'client.ip':
            return s.client?.address;
          case 'client.name':
            return s.client?.hostname;
          case 'helo':
            return s.helo;
          case 'sender':
            return m.sender?.address;
          case 'sender.domain': {
            const a = m.sender?.address ?? '';
            return a.includes('@') ? a.slice(a.lastIndexOf('@') + 1) : '';
          }
          case 'sender.local': {
            const a = m.sender?.address ?? '';
            return a.includes('@') ? a.slice(0, a.lastIndexOf('@')) : a;
          }
          case 'recipient':
            return m.recipients.find((r) => r.accepted)?.address;
          case 'recipients':
            return m.recipients.filter((r) => r.accepted).map((r) => r.address).join(', ');
          case 'recipients.count':
            return String(m.recipients.filter((r) => r.accepted).length);
          case 'auth':
            return s.auth;
          case 'mta':
            return s.mta;
          case 'queueId':
            return m.queueId;
          case 'now':
            return rfc5322Date(now);
          case 'now.iso':
            return now.toISOString();
          case 'now.unix':
            return String(Math.floor(now.getTime() / 1000));
          case 'value':
            return current();
        }
        if (path[0] === 'match') {
          const key = path.slice(1).join('.');
          const v = /^\d+$/.test(key) ? captures?.groups[Number(key)] : captures?.named[key];
          return v ?? undefined;
        }
        if (path[0] === 'header') {
          const e = headerIndex(m, w).get(path.slice(1).join('.').toLowerCase());
          return e && e.raw.length > 0 ? (e.decoded[0] ??= decodeWords(e.raw[0]).trim()) : undefined;
        }
        return noteText(noteValue(ctx, path[0], path.slice(1)));
      };
    };

    /** Requests one action's changes; returns what the trace says about it. */
    const perform = (ctx: HookContext<HeadersPolicy>, w: MessageWork, a: Action, by: string, policy: string, rule: string, captures: Captures | undefined): string => {
      const message = ctx.message!;
      const e = headerIndex(message, w).get(a.name.toLowerCase());
      const raws = e?.raw ?? [];
      const count = raws.length;
      const outcome = (o: 'done' | 'duplicate' | 'conflict' | 'absent', text: string) => {
        actionsDone.inc({ action: a.kind, outcome: o });
        return text;
      };
      const key = (i: number | '*') => `${a.name.toLowerCase()}#${i}`;
      /** The rule that already changed this occurrence, or (for `*`) any occurrence of the header. */
      const conflict = (i: number | '*'): string | undefined => {
        if (i !== '*') return w.touched.get(key(i)) ?? w.touched.get(key('*'));
        for (const [k, other] of w.touched) if (k.startsWith(a.name.toLowerCase() + '#')) return other;
        return undefined;
      };
      switch (a.kind) {
        case 'add':
        case 'insert': {
          const v = headerValue(a.name, a.value, lookupFor(ctx, w, policy, rule, captures, () => ''), policy, rule);
          const id = `${a.name.toLowerCase()}\0${unfold(v)}`;
          if (w.added.has(id) || raws.some((r) => r.trim() === unfold(v))) return outcome('duplicate', `${a.name} already present with that value, not added again`);
          w.added.add(id);
          if (a.kind === 'add') message.addHeader(a.name, v);
          else message.insertHeader(a.index, a.name, v);
          return outcome('done', `${a.kind === 'add' ? 'added' : `inserted at ${a.index}`} ${a.name}: ${JSON.stringify(unfold(v))}`);
        }
        case 'change': {
          const i = a.occurrence > 0 ? a.occurrence : count + a.occurrence + 1;
          if (i < 1 || i > count) return outcome('absent', `${a.name}#${a.occurrence} absent, not changed`);
          const other = conflict(i);
          if (other !== undefined) return outcome('conflict', `${a.name}#${i} already changed by ${other}`);
          const v = headerValue(a.name, a.value, lookupFor(ctx, w, policy, rule, captures, () => raws[i - 1].trim()), policy, rule);
          w.touched.set(key(i), by);
          message.changeHeader(a.name, i, v);
          return outcome('done', `changed ${a.name}#${i} to ${JSON.stringify(unfold(v))}`);
        }
        case 'delete': {
          if (count === 0) return outcome('absent', `${a.name} absent, nothing deleted`);
          if (a.occurrence === 'all') {
            const other = conflict('*');
            if (other !== undefined) return outcome('conflict', `${a.name} already changed by ${other}`);
            w.touched.set(key('*'), by);
            // From the last to the first: each deletion leaves the earlier indexes where they were.
            for (let i = count; i >= 1; i--) message.deleteHeader(a.name, i);
            return outcome('done', `deleted ${count} ${a.name}`);
          }
          const i = a.occurrence > 0 ? a.occurrence : count + a.occurrence + 1;
          if (i < 1 || i > count) return outcome('absent', `${a.name}#${a.occurrence} absent, nothing deleted`);
          const other = conflict(i);
          if (other !== undefined) return outcome('conflict', `${a.name}#${i} already changed by ${other}`);
          w.touched.set(key(i), by);
          message.deleteHeader(a.name, i);
          return outcome('done', `deleted ${a.name}#${i}`);
        }
        case 'set': {
          const other = conflict('*');
          if (other !== undefined) return outcome('conflict', `${a.name} already changed by ${other}`);
          const v = headerValue(a.name, a.value, lookupFor(ctx, w, policy, rule, captures, () => raws[0]?.trim() ?? ''), policy, rule);
          if (count === 1 && raws[0].trim() === unfold(v)) return outcome('duplicate', `${a.name} already ${JSON.stringify(unfold(v))}`);
          w.touched.set(key('*'), by);
          if (count === 0) {
            w.added.add(`${a.name.toLowerCase()}\0${unfold(v)}`);
            message.addHeader(a.name, v);
          } else {
            message.changeHeader(a.name, 1, v);
            for (let i = count; i >= 2; i--) message.deleteHeader(a.name, i);
          }
          return outcome('done', `set ${a.name} to ${JSON.stringify(unfold(v))}${count > 1 ? ` (${count - 1} more deleted)` : ''}`);
        }
      }
    };

    const run = (ctx: HookContext<HeadersPolicy>, stage: Rule['at']): Verdict | undefined => {
      const message = ctx.message;
      if (!message || ctx.policies.length === 0) return undefined;
      const w = workOf(message);
      const lines: string[] = [];
      let verdict: { action: RuleVerdictAction; reason: string; reply: Verdict['reply'] } | undefined;
      let skipped = 0;
      for (const policy of ctx.policies) {
        let matched = false;
        for (const rule of policy.config.rules) {
          if (rule.at !== stage) continue;
          if (w.spentMs > options.matchBudgetMs) {
            skipped++;
            continue;
          }
          const started = performance.now();
          const finding: Finding = rule.when ? evaluate(rule.when, ctx, w) : { ok: true, captures: undefined, what: ['always'] };
          w.spentMs += performance.now() - started;
          if (!finding.ok) continue;
          matched = true;
          const by = `${policy.name}/${rule.name}`;
          w.applied.push(by);
          applied.inc({ policy: policy.name, rule: rule.name });
          const done = rule.actions.map((a) => perform(ctx, w, a, by, policy.name, rule.name, finding.captures));
          let line = `${by}: ${finding.what.join(' and ')}${done.length > 0 ? ` → ${done.join('; ')}` : ''}`;
          if (rule.verdict) {
            const v = rule.verdict;
            line += ` → ${v.action}`;
            if (!verdict || SEVERITY[v.action] > SEVERITY[verdict.action]) {
              const lookup = lookupFor(ctx, w, policy.name, rule.name, finding.captures, () => '');
              const reason = v.reason ? sanitise(renderTemplate(v.reason, lookup)) : `header rule ${by}`;
              let reply: Verdict['reply'];
              if (v.action === 'reject' || v.action === 'tempfail') {
                const text = v.replyText ? sanitise(renderTemplate(v.replyText, lookup)) : undefined;
                reply = resolveReply({ ...v.reply, text }, DEFAULT_REPLIES[v.action], { policy: policy.name, rule: rule.name });
              }
              verdict = { action: v.action, reason, reply };
            }
          }
          lines.push(line);
          if (rule.stop) break;
        }
        const only = policy.config.onlyHeaders;
        if (stage === 'endOfHeaders' && (only === true || (only === 'matched' && matched)) && message.skipPolicy(policy.name)) lines.push(`${policy.name}: onlyHeaders, its other plugins skip this message`);
      }
      if (skipped > 0) {
        lines.push(`match budget of ${options.matchBudgetMs} ms spent: ${skipped} rule${skipped === 1 ? '' : 's'} skipped`);
        if (!w.budgetLogged) {
          w.budgetLogged = true;
          budgetExceeded.inc();
          const e = error('THEMIS_HEADERS_BUDGET', { spentMs: Math.round(w.spentMs), budgetMs: options.matchBudgetMs, skipped });
          ctx.log.warn({ code: e.code, ...e.details, queueId: message.queueId }, e.message);
        }
      }
      if (verdict) {
        w.verdict = verdict.action;
        // The reason stays the configured text: it is what a hold shows (Sendmail's mailq -qQ cuts a long
        // one). The rules that led to it go to the trace as detail.
        return { action: verdict.action, reason: verdict.reason, detail: lines.join('; '), ...(verdict.reply ? { reply: verdict.reply } : {}) };
      }
      return lines.length > 0 ? { action: 'continue', reason: lines.join('; ') } : undefined;
    };

    return {
      endOfHeaders: (ctx) => run(ctx, 'endOfHeaders'),
      endOfMessage: (ctx) => run(ctx, 'endOfMessage'),
    };
  },
});
