/**
 * Dispatch: the milter application the kernel serves. Negotiates only the stages, actions and macros
 * the plugins need; runs each stage's hooks in priority order, each under its deadline and with its
 * onError verdict; checks and merges their verdicts into the answer; and closes each message's
 * decision trace for the log, `onDecision` and the `decision` hooks.
 *
 * This is the hot path (every event of every message) and it stays in one class on purpose: the
 * chain stage → runTaps → invoke → record → apply is monomorphic method calls on one object that
 * holds everything they need. Splitting verdict checks, deadlines or failure handling into other
 * modules would mean passing that state around or binding closures per call, for no gain in
 * clarity. The per-connection state it works on is session-state.ts's, the timing layout
 * hook-metrics.ts's.
 * @module
 */
import { hostname } from 'node:os';
import { AsyncSeriesHook } from 'tapable';
import type { Counter } from 'prom-client';
import { Action, CodedError, Decisions, POSTFIX_DEFAULT_MACROS, Protocol, SENDMAIL_DEFAULT_MACROS, formatSmtpReply, type Decision, type EnvelopeEvent, type HeaderEvent, type MacroListStage, type MessageModifier, type MilterApplication, type MilterSession, type Stage } from '../milter/index.ts';
import { ThemisError } from './errors.ts';
import { HeaderListEditor } from './final-headers.ts';
import { STAGE_INDEX } from './hook-metrics.ts';
import type { KernelLogger, KernelOptions } from './kernel.ts';
import { pickWinner, type TraceEntry } from './merge.ts';
import type { LoadedPlugin } from './plugin-setup.ts';
import { STAGE_HOOKS, type DecisionTrace, type FinalMessage, type HookContext, type StageHookName, type Verdict, type VerdictAction } from './plugin.ts';
import type { PolicyMatcher } from './policy.ts';
import { stateOf, type ConnectionState, type MessageState } from './session-state.ts';


const NO_TAPS: LoadedPlugin[] = [];

/** Runs a kernel's set-up plugins for the MTA: {@link application} is what the milter engine serves. */
export class Dispatcher {
  /** The milter application to serve with `createMilterServer`. */
  readonly application: MilterApplication;
  private readonly plugins: LoadedPlugin[];
  /** tapable hooks: the registry that orders taps (highest priority first, then load order). */
  private readonly hooks = new Map<StageHookName, AsyncSeriesHook<[never]>>();
  /** The taps of each stage in run order, read once from the tapable registry. */
  private readonly taps = new Map<StageHookName, LoadedPlugin[]>();
  private readonly log: KernelLogger;
  private readonly hookTimeout: number;
  private readonly mta: 'postfix' | 'sendmail';
  /** Some plugin reports authentication results: one Authentication-Results header, forged ones removed. */
  private readonly authenticating: boolean;
  private readonly onDecision: ((t: DecisionTrace) => void) | undefined;
  private readonly onPluginMistake: ((error: ThemisError) => void) | undefined;
  private readonly matcher: PolicyMatcher;
  private readonly hookErrors: Counter<'plugin' | 'hook' | 'kind'>;
  /** Plugins with a `decision` hook: the kernel builds every message's trace for them. */
  private readonly observers: LoadedPlugin[];

  constructor(plugins: LoadedPlugin[], options: KernelOptions, matcher: PolicyMatcher, log: KernelLogger, hookErrors: Counter<'plugin' | 'hook' | 'kind'>) {
    this.plugins = plugins;
    this.log = log;
    this.hookTimeout = options.hookTimeout ?? 10_000;
    this.mta = options.mta ?? 'postfix';
    this.authenticating = plugins.some((p) => p.def.authenticates === true && p.modifies.has('headers'));
    this.onDecision = options.onDecision;
    this.onPluginMistake = options.onPluginMistake;
    this.matcher = matcher;
    this.hookErrors = hookErrors;
    this.observers = plugins.filter((p) => typeof p.hooks.decision === 'function');
    for (const stage of STAGE_HOOKS) {
      const taps = plugins.filter((p) => typeof p.hooks[stage] === 'function');
      if (taps.length === 0) continue;
      const hook = new AsyncSeriesHook<[never]>(['call'], stage);
      // tapable orders taps by ascending stage: negate the priority so the highest runs first.
      // The kernel calls the taps itself (see stage()), so that each gets its own deadline, its
      // onError verdict and its trace entry, and so that synchronous hooks cost no promise.
      for (const p of taps) hook.tap({ name: p.name, stage: -p.priority }, () => undefined);
      this.hooks.set(stage, hook);
      const byName = new Map(taps.map((p) => [p.name, p]));
      this.taps.set(stage, hook.taps.map((t) => byName.get(t.name)!));
    }
    this.application = this.buildApplication();
  }

  /** Plugins per stage in the order they run, with their priority (what `themis plugins` prints). */
  describe(): { stage: StageHookName; plugins: { name: string; priority: number }[] }[] {
    return [...this.hooks.entries()].map(([stage, hook]) => ({ stage, plugins: hook.taps.map((t) => ({ name: t.name, priority: -(t.stage ?? 0) })) }));
  }

  // -------------------------------------------------------------------------------------------
  // Milter application

  private buildApplication(): MilterApplication {
    let actions = Action.QUARANTINE;
    const macros: Partial<Record<MacroListStage, string[]>> = {};
    // A list the milter sends replaces the MTA's own: extend the defaults of the MTA in front.
    const defaults = this.mta === 'sendmail' ? SENDMAIL_DEFAULT_MACROS : POSTFIX_DEFAULT_MACROS;
    for (const p of this.plugins) {
      if (p.modifies.has('headers')) actions |= Action.ADDHDRS | Action.CHGHDRS;
      if (p.modifies.has('sender')) actions |= Action.CHGFROM;
      if (p.modifies.has('recipients')) actions |= Action.ADDRCPT | Action.ADDRCPT_PAR | Action.DELRCPT;
      if (p.modifies.has('body')) actions |= Action.CHGBODY;
      for (const [stage, list] of Object.entries(p.def.macros ?? {}) as [MacroListStage, readonly string[]][]) {
        const merged = (macros[stage] ??= [...defaults[stage]]);
        for (const m of list) if (!merged.includes(m)) merged.push(m);
      }
    }
    // Sendmail 8.14–8.18 reads a milter's end-of-message list only when it also sent one for end of
    // headers, and sends nothing at end of message when only the end-of-headers list was sent
    // (milter.c, milter_data): ask for both, the end-of-headers one never empty (an empty list is not
    // sent at all).
    if (this.mta === 'sendmail' && (macros.endOfHeaders || macros.endOfMessage)) {
      macros.endOfMessage ??= [...defaults.endOfMessage];
      macros.endOfHeaders ??= [...defaults.endOfHeaders];
      if (macros.endOfHeaders.length === 0) macros.endOfHeaders.push('i');
    }
    const stages: Stage[] = [];
    const noReply: (Stage & StageHookName)[] = [];
    const observed = new Set<string>(this.plugins.flatMap((p) => p.def.observes ?? []));
    // Authentication-Results arriving from outside with our authserv-id are removed at end of
    // message (PluginDefinition.authenticates): the kernel needs to see the headers for that.
    if (this.authenticating) observed.add('header');
    // Policies that match on client, sender or recipients need those events, answered or not. So do
    // hooks: every hook's context promises the client, HELO name, sender and recipients, whichever
    // stage it taps (a plugin tapping only rcptTo reads ctx.session.client). Observed, they cost the MTA
    // one packet each that it does not wait for.
    if (this.matcher.needsEnvelope || this.hooks.size > 0) for (const st of ['connect', 'helo', 'mailFrom', 'rcptTo']) observed.add(st);
    // A bypass policy is answered as soon as it matches: MAIL and RCPT then need replies.
    const answered = new Set<string>(this.matcher.hasBypass ? ['mailFrom', 'rcptTo'] : []);
    // Stages whose every tap only listens (PluginDefinition.listens): their hooks run, but nothing
    // they return can refuse, so the MTA need not wait — behind Postfix a MAIL answered for a
    // listener cost a round trip and the listener's own work per message.
    const listening = new Set<StageHookName>();
    for (const s of ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body'] as const) {
      const taps = this.taps.get(s);
      if (taps && !answered.has(s) && taps.every((p) => p.def.listens?.includes(s))) listening.add(s);
      if ((this.hooks.has(s) || answered.has(s)) && !listening.has(s)) stages.push(s);
      else if ((observed.has(s) || listening.has(s)) && !answered.has(s)) {
        stages.push(s);
        noReply.push(s);
      }
    }
    const app: MilterApplication = {
      // answerData: Postfix must get an answered DATA, Sendmail over TCP is slowed by one (ThemisConfig.mta).
      // headerLeadingSpace: a plugin needs header values byte for byte (PluginDefinition.exactHeaders).
      negotiation: { stages, noReply, actions, macros, answerData: this.mta !== 'sendmail', headerLeadingSpace: this.plugins.some((p) => p.def.exactHeaders === true) },
      endOfMessage: (s, m) => this.endOfMessage(s, m),
      abort: (s) => this.abortMessage(stateOf(s), 'aborted'),
      close: (s) => this.close(s),
    };
    if (this.hooks.has('connect')) app.connect = (s, e) => this.stage(s, 'connect', e);
    if (this.hooks.has('helo')) app.helo = (s, e) => this.stage(s, 'helo', e);
    if (this.hooks.has('mailFrom') || answered.has('mailFrom')) app.mailFrom = (s, e) => this.stage(s, 'mailFrom', e);
    if (this.hooks.has('rcptTo') || answered.has('rcptTo')) app.rcptTo = (s, e) => this.stage(s, 'rcptTo', e);
    if (this.hooks.has('data')) app.data = (s) => this.stage(s, 'data', undefined);
    if (this.hooks.has('header')) app.header = (s, e) => this.stage(s, 'header', e);
    if (this.hooks.has('endOfHeaders')) app.endOfHeaders = (s) => this.stage(s, 'endOfHeaders', undefined);
    if (this.hooks.has('body')) app.body = (s, c) => this.stage(s, 'body', c);
    // Observed-only stages: record what the MTA streams, answer nothing (negotiated as no-reply).
    // Listened stages also run their hooks.
    for (const stage of noReply) {
      (app as Record<string, unknown>)[stage] = listening.has(stage)
        ? (s: MilterSession, e: unknown) => this.listen(s, stage, e)
        : (s: MilterSession, e: unknown) => void stateOf(s).sync(s, stage, e, this.matcher);
    }
    return app;
  }

  /**
   * A no-reply stage whose taps only listen: runs them in order like {@link stage} and records
   * their entries in the trace, but no verdict is applied — the MTA was told it gets no answer.
   * A verdict other than `continue` (or a hook failure) is logged and otherwise ignored.
   */
  private listen(s: MilterSession, stage: StageHookName, event: unknown): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, stage, event, this.matcher);
    if (state.matched.bypass) return Decisions.continue;
    return this.runTaps(state, stage, event, 0, this.entriesOf(state), undefined, true);
  }

  /** The end of a listened stage: nothing applies; a verdict other than `continue` is logged. */
  private ignoreListenerVerdicts(stage: StageHookName, entries: readonly TraceEntry[], from: number): Decision {
    for (let k = from; k < entries.length; k++) {
      const e = entries[k];
      if (e.action === 'continue') continue;
      const err = new ThemisError('THEMIS_ERR_HOOK_LISTENER_VERDICT', { plugin: e.plugin, hook: stage, action: e.action });
      this.log.warn({ code: err.code, plugin: e.plugin, hook: stage, action: e.action }, err.message);
      this.onPluginMistake?.(err);
    }
    return Decisions.continue;
  }


  /**
   * Runs one stage's hooks in order and turns the merged verdict into the milter answer. Stays
   * synchronous while every hook answers synchronously: the engine then answers without a microtask.
   */
  private stage(s: MilterSession, stage: StageHookName, event: unknown): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, stage, event, this.matcher);
    const bypass = state.matched.bypass;
    if (bypass) return this.bypass(state, stage, bypass.name);
    return this.runTaps(state, stage, event, 0, this.entriesOf(state));
  }

  /** A `type: 'bypass'` policy matched: accept at once, without asking the plugins. */
  private bypass(state: ConnectionState, stage: StageHookName, policy: string): Decision {
    const entry: TraceEntry = { stage, plugin: `policy:${policy}`, priority: Number.MAX_SAFE_INTEGER, action: 'accept', reason: `bypass policy ${policy} matched`, ms: 0 };
    this.entriesOf(state).push(entry);
    return this.apply(state, stage, entry, undefined);
  }

  private entriesOf(state: ConnectionState): TraceEntry[] {
    return state.message?.trace ?? state.trace;
  }

  /** Runs the stage's taps from `first` on; `listening`: the stage is not answered, no verdict applies. */
  private runTaps(state: ConnectionState, stage: StageHookName, event: unknown, first: number, entries: TraceEntry[], from = entries.length, listening = false): Decision | Promise<Decision> {
    const taps = this.taps.get(stage) ?? NO_TAPS;
    for (let i = first; i < taps.length; i++) {
      const pending = this.invoke(taps[i], stage, state, event, entries);
      if (pending !== undefined) return pending.then(() => this.runTaps(state, stage, event, i + 1, entries, from, listening));
    }
    if (listening) return this.ignoreListenerVerdicts(stage, entries, from);
    const winnerIndex = pickWinner(entries, from);
    if (winnerIndex < 0) return Decisions.continue;
    return this.apply(state, stage, entries[winnerIndex], event);
  }

  private apply(state: ConnectionState, stage: StageHookName, winner: TraceEntry, event: unknown): Decision {
    const message = state.message;
    switch (winner.action) {
      case 'continue':
        return Decisions.continue;
      case 'quarantine':
        // Held at end of message (the only stage where every MTA honours it).
        if (message) message.quarantine ??= winner;
        else state.quarantine ??= winner;
        return Decisions.continue;
      case 'accept':
        // At a message stage (RCPT included) accept ends filtering for the whole message: the MTA
        // sends nothing more for it, so its trace is closed here.
        if (message) this.finishMessage(state, 'accepted', stage, winner);
        return Decisions.accept;
      case 'reject':
      case 'tempfail': {
        const decision: Decision = winner.reply ? { action: winner.action, reply: winner.reply } : winner.action === 'reject' ? Decisions.reject : Decisions.tempfail;
        if (stage === 'rcptTo') {
          const rcpt = message?.recipients.at(-1);
          if (rcpt) rcpt.accepted = false;
          winner.recipient = (event as EnvelopeEvent).address;
          return decision;
        }
        if (message) {
          this.finishMessage(state, winner.action === 'reject' ? 'rejected' : 'tempfailed', stage, winner);
          this.runAbortHooks(state);
        } else this.logConnectionDecision(state, stage, winner);
        return decision;
      }
      case 'discard':
        if (!message) {
          // Discard is meaningless for a connection: refuse it instead, and say why in the log.
          this.log.warn({ plugin: winner.plugin, stage }, 'discard at connection level is not possible; rejecting');
          this.logConnectionDecision(state, stage, winner);
          return Decisions.reject;
        }
        this.finishMessage(state, 'discarded', stage, winner);
        this.runAbortHooks(state);
        return Decisions.discard;
    }
  }

  private endOfMessage(s: MilterSession, modifier: MessageModifier): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, 'endOfMessage', undefined, this.matcher);
    if (state.matched.bypass) return this.bypass(state, 'endOfMessage', state.matched.bypass.name);
    if (!this.taps.has('endOfMessage')) return this.finalize(state, modifier);
    const entries = this.entriesOf(state);
    const from = entries.length;
    const ran = this.runAll(state, 'endOfMessage', undefined, 0, entries);
    if (ran) return ran.then(() => this.endOfMessageVerdict(state, modifier, entries, from));
    return this.endOfMessageVerdict(state, modifier, entries, from);
  }

  /** Runs a stage's taps from `first` on, recording their verdicts; a promise only while a hook is pending. */
  private runAll(state: ConnectionState, stage: StageHookName, event: unknown, first: number, entries: TraceEntry[]): Promise<void> | undefined {
    const taps = this.taps.get(stage) ?? NO_TAPS;
    for (let i = first; i < taps.length; i++) {
      const pending = this.invoke(taps[i], stage, state, event, entries);
      if (pending !== undefined) return pending.then(() => this.runAll(state, stage, event, i + 1, entries));
    }
    return undefined;
  }

  /**
   * The end-of-message verdict: a refusal ends the message here; anything else (`continue`,
   * `accept`, `quarantine`) goes on to {@link finalize} and delivery. An `accept` is not applied as at
   * earlier stages, where it ends the message at once: here the modifications must still be sent.
   */
  private endOfMessageVerdict(state: ConnectionState, modifier: MessageModifier, entries: TraceEntry[], from: number): Decision | Promise<Decision> {
    const w = pickWinner(entries, from);
    if (w >= 0 && entries[w].action !== 'accept') {
      const d = this.apply(state, 'endOfMessage', entries[w], undefined);
      if (d.action !== 'continue') return d;
    }
    return this.finalize(state, modifier);
  }

  /**
   * The accepted message's `finalize` hooks (StageHooks.finalize), with the headers as they will be
   * delivered; then delivery. Their refusal still refuses the message.
   */
  private finalize(state: ConnectionState, modifier: MessageModifier): Decision | Promise<Decision> {
    const message = state.message;
    if (!message || !this.taps.has('finalize')) return this.deliver(state, modifier);
    const entries = message.trace;
    const from = entries.length;
    const view = new FinalMessageView(this, state, message);
    const after = (): Decision => {
      const w = pickWinner(entries, from);
      if (w >= 0 && entries[w].action !== 'accept') {
        const d = this.apply(state, 'finalize', entries[w], undefined);
        if (d.action !== 'continue') return d;
      }
      return this.deliver(state, modifier);
    };
    const ran = this.runAll(state, 'finalize', view, 0, entries);
    return ran ? ran.then(after) : after();
  }

  /**
   * Every header modification of the message, in the order {@link deliver} sends them, applied to
   * `modifier`: the kernel's Authentication-Results work first, then each plugin's requests.
   */
  private applyModifications(state: ConnectionState, message: MessageState, modifier: MessageModifier, report: boolean): void {
    if (this.authenticating) this.writeAuthenticationResults(state, message, modifier, report);
    for (const mod of message.modifications) {
      try {
        mod.apply(modifier);
      } catch (err) {
        if (!report) continue;
        const e = new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: mod.plugin, reason: `could not be sent: ${(err as Error).message}` }, { cause: err });
        this.log.error({ code: e.code, plugin: mod.plugin, err }, e.message);
        // The harness fails the plugin's test where the daemon only logs (createTestKernel's pluginMistakes).
        this.onPluginMistake?.(e);
      }
    }
  }

  /** The headers as the MTA will deliver them, for {@link FinalMessage.headers}. */
  finalHeaders(state: ConnectionState, message: MessageState): HeaderEvent[] {
    const negotiated = state.milter.negotiated;
    const editor = new HeaderListEditor(message.headers, negotiated !== undefined && (negotiated.reply.protocol & Protocol.HDR_LEADSPC) !== 0);
    this.applyModifications(state, message, editor, false);
    return editor.headers;
  }

  /** The authserv-id of the message's Authentication-Results header. */
  authservIdOf(state: ConnectionState, message: MessageState): string {
    return message.authservId ?? state.milter.macros.get('j') ?? hostname();
  }

  /** The message is accepted: send the modifications and the hold, close the trace. */
  private deliver(state: ConnectionState, modifier: MessageModifier): Decision {
    const message = state.message;
    if (!message) return Decisions.accept;
    this.applyModifications(state, message, modifier, true);
    const hold = message.quarantine ?? state.quarantine;
    if (hold) {
      try {
        modifier.quarantine(hold.reason ?? `quarantined by ${hold.plugin}`);
      } catch (err) {
        const e = new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: hold.plugin, reason: `quarantine could not be sent: ${(err as Error).message}` }, { cause: err });
        this.log.error({ code: e.code, plugin: hold.plugin, err }, e.message);
        this.onPluginMistake?.(e);
      }
    }
    this.finishMessage(state, hold ? 'quarantined' : 'accepted', 'endOfMessage', hold ?? message.trace[pickWinner(message.trace)]);
    return Decisions.accept;
  }

  /**
   * Removes the Authentication-Results headers that claim our authserv-id (RFC 8601 §5: a receiver
   * must not trust, and should delete, results it did not add), then writes the plugins' results in
   * one header at the top. Deletions go first and from the last occurrence up, so that each index
   * still names the header it was counted for, whatever the MTA does with the ones before it.
   */
  private writeAuthenticationResults(state: ConnectionState, message: MessageState, modifier: MessageModifier, report: boolean): void {
    const id = this.authservIdOf(state, message);
    const ours = id.toLowerCase();
    try {
      let occurrence = 0;
      const forged: number[] = [];
      for (const h of message.headers) {
        if (h.name.toLowerCase() !== 'authentication-results') continue;
        occurrence++;
        // authserv-id [CFWS version] ";" …: the first token, comments and version aside.
        const claimed = h.value.replace(/\([^)]*\)/g, ' ').trim().split(/[\s;]/, 1)[0]?.toLowerCase();
        if (claimed === ours) forged.push(occurrence);
      }
      for (let i = forged.length - 1; i >= 0; i--) modifier.deleteHeader('Authentication-Results', forged[i]);
      if (forged.length > 0 && report) this.log.info({ queueId: message.queueId, removed: forged.length, authservId: id }, 'removed Authentication-Results claiming our authserv-id');
      if (message.authResults.length > 0) {
        const value = message.authResults.length === 1 ? `${id}; ${message.authResults[0]}` : `${id};\n\t${message.authResults.join(';\n\t')}`;
        modifier.insertHeader(0, 'Authentication-Results', value);
      }
    } catch (err) {
      if (!report) return;
      const e = new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: 'kernel', reason: `Authentication-Results could not be written: ${(err as Error).message}` }, { cause: err });
      this.log.error({ code: e.code, err }, e.message);
      this.onPluginMistake?.(e);
    }
  }

  private abortMessage(state: ConnectionState, outcome: 'aborted'): void {
    if (!state.message) return;
    this.finishMessage(state, outcome, undefined, undefined);
    this.runAbortHooks(state);
  }

  private runAbortHooks(state: ConnectionState): void {
    const message = state.lastMessage;
    for (const p of this.plugins) {
      const fn = p.hooks.abort;
      if (!fn) continue;
      try {
        const r = fn.call(p.hooks, state.context(p, message ?? null));
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).catch((err: unknown) => this.hookFailed(p, 'abort', err, 'error'));
      } catch (err) {
        this.hookFailed(p, 'abort', err, 'error');
      }
    }
  }

  private close(s: MilterSession): void {
    const state = stateOf(s);
    if (state.message) this.abortMessage(state, 'aborted');
    for (const p of this.plugins) {
      const fn = p.hooks.close;
      if (!fn) continue;
      try {
        const r = fn.call(p.hooks, state.context(p, null));
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).catch((err: unknown) => this.hookFailed(p, 'close', err, 'error'));
      } catch (err) {
        this.hookFailed(p, 'close', err, 'error');
      }
    }
  }

  private finishMessage(state: ConnectionState, outcome: DecisionTrace['outcome'], stage: StageHookName | undefined, winner: TraceEntry | undefined): void {
    const message = state.message;
    if (!message) return;
    state.lastMessage = message;
    state.message = undefined;
    const logging = this.log.isLevelEnabled ? this.log.isLevelEnabled('info') : true;
    if (!logging && !this.onDecision && this.observers.length === 0) return;
    const trace: DecisionTrace = { session: state.id, queueId: message.queueId, policies: state.matched.policies.map((x) => x.name), outcome, stage, winner, entries: state.trace.length > 0 ? [...state.trace, ...message.trace] : message.trace };
    // One line per message; addresses stay out of info-level logs.
    if (logging) this.log.info({ session: trace.session, queueId: trace.queueId, outcome, stage, winner: winner && { plugin: winner.plugin, action: winner.action, reason: winner.reason }, trace: trace.entries.map((e) => ({ stage: e.stage, plugin: e.plugin, action: e.action, reason: e.reason, error: e.error, ms: Math.round(e.ms * 1000) / 1000 })) }, 'decision');
    this.onDecision?.(trace);
    this.observe(state, message, trace);
  }

  private logConnectionDecision(state: ConnectionState, stage: StageHookName, winner: TraceEntry): void {
    const trace: DecisionTrace = { session: state.id, queueId: undefined, policies: state.matched.policies.map((x) => x.name), outcome: winner.action === 'reject' || winner.action === 'discard' ? 'rejected' : 'tempfailed', stage, winner, entries: [...state.trace] };
    this.log.info({ session: trace.session, outcome: trace.outcome, stage, winner: { plugin: winner.plugin, action: winner.action, reason: winner.reason } }, 'decision');
    this.onDecision?.(trace);
    this.observe(state, null, trace);
  }

  /** Hands a trace to the plugins' `decision` hooks; one that throws is logged and counted, never raised. */
  private observe(state: ConnectionState, message: MessageState | null, trace: DecisionTrace): void {
    for (const p of this.observers) {
      try {
        p.hooks.decision!.call(p.hooks, state.context(p, message), trace);
      } catch (err) {
        this.hookFailed(p, 'decision', err, 'error');
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Isolation

  /**
   * Calls one plugin's hook and records its verdict (or its onError verdict) in `entries`. Returns
   * undefined when the hook answered synchronously, else a promise that settles once it is recorded
   * (never rejects: failures and missed deadlines become the plugin's onError verdict).
   */
  private invoke(p: LoadedPlugin, stage: StageHookName, state: ConnectionState, event: unknown, entries: TraceEntry[]): Promise<void> | undefined {
    const fn = p.hooks[stage] as (ctx: HookContext<unknown>, event: unknown) => unknown;
    const started = performance.now();
    let result: unknown;
    try {
      result = fn.call(p.hooks, state.context(p), event);
    } catch (err) {
      this.record(p, stage, entries, started, undefined, err);
      return undefined;
    }
    if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
      return this.withDeadline(p, stage, result as Promise<unknown>).then(
        (value) => this.record(p, stage, entries, started, value, undefined),
        (err: unknown) => this.record(p, stage, entries, started, undefined, err ?? new Error('rejected without a reason')),
      );
    }
    this.record(p, stage, entries, started, result, undefined);
    return undefined;
  }

  private record(p: LoadedPlugin, stage: StageHookName, entries: TraceEntry[], started: number, result: unknown, failure: unknown): void {
    let verdict: Verdict | undefined;
    let error: string | undefined;
    if (failure === undefined) {
      try {
        verdict = checkVerdict(p, stage, result);
      } catch (err) {
        failure = err;
        this.onPluginMistake?.(err as ThemisError);
      }
    }
    if (verdict?.reply !== undefined && (verdict.action === 'reject' || verdict.action === 'tempfail')) {
      // Checked here, where the plugin and hook are known, with the engine's own check (what Postfix
      // and Sendmail accept): a reply the MTA would refuse is logged and dropped, the action stands.
      try {
        formatSmtpReply(verdict.reply, verdict.action === 'reject' ? 5 : 4);
      } catch (err) {
        const e = new ThemisError('THEMIS_ERR_HOOK_BAD_REPLY', { plugin: p.name, hook: stage, action: verdict.action, reason: err instanceof CodedError ? String(err.details.reason ?? err.message) : String(err) }, { cause: err });
        p.log.error({ code: e.code, hook: stage, cause: err instanceof CodedError ? err.code : undefined }, e.message);
        this.onPluginMistake?.(e);
        error = e.code;
        verdict = { ...verdict, reply: undefined };
      }
    }
    if (failure !== undefined) {
      const kind = failure instanceof ThemisError && failure.code === 'THEMIS_ERR_HOOK_TIMEOUT' ? 'timeout' : 'error';
      error = failure instanceof ThemisError ? failure.code : 'THEMIS_ERR_HOOK_FAILED';
      this.hookFailed(p, stage, failure, kind);
      verdict = { action: p.onError, reason: `${p.name} ${kind === 'timeout' ? 'timed out' : 'failed'} in ${stage}` };
    }
    const ms = performance.now() - started;
    const t = STAGE_INDEX[stage] * 2;
    p.timing[t] += ms / 1000;
    p.timing[t + 1]++;
    const entry: TraceEntry = { stage, plugin: p.name, priority: p.priority, action: verdict?.action ?? 'continue', ms };
    if (verdict?.reason !== undefined) entry.reason = verdict.reason;
    if (verdict?.detail !== undefined) entry.detail = verdict.detail;
    if (verdict?.reply !== undefined) entry.reply = verdict.reply;
    if (error !== undefined) entry.error = error;
    entries.push(entry);
  }

  private withDeadline(p: LoadedPlugin, hook: string, promise: Promise<unknown>): Promise<unknown> {
    if (this.hookTimeout <= 0) return promise;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new ThemisError('THEMIS_ERR_HOOK_TIMEOUT', { plugin: p.name, hook, ms: this.hookTimeout, fallback: p.onError })), this.hookTimeout);
      promise.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  /** Counts a failed hook call (or HTTP route) and logs it with its code; never throws. */
  hookFailed(p: LoadedPlugin, hook: string, err: unknown, kind: 'error' | 'timeout'): void {
    this.hookErrors.inc({ plugin: p.name, hook, kind });
    const e = err instanceof ThemisError ? err : new ThemisError('THEMIS_ERR_HOOK_FAILED', { plugin: p.name, hook, reason: err instanceof Error ? err.message : String(err), fallback: p.onError }, { cause: err });
    // A coded error (a plugin's own, `ctx.error`, or a store's) keeps its code in the log line as `cause`.
    const cause = err instanceof CodedError && err !== e ? { cause: err.code as string } : {};
    p.log.error({ code: e.code, hook, ...cause, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, e.message);
  }
}

const VERDICT_ACTIONS: ReadonlySet<string> = new Set<VerdictAction>(['continue', 'accept', 'reject', 'tempfail', 'discard', 'quarantine']);

function checkVerdict(p: LoadedPlugin, hook: string, result: unknown): Verdict | undefined {
  if (result === undefined || result === null) return undefined;
  const v = result as Verdict;
  if (typeof v !== 'object' || !VERDICT_ACTIONS.has(v.action)) throw new ThemisError('THEMIS_ERR_HOOK_BAD_VERDICT', { plugin: p.name, hook, reason: `expected { action: ${[...VERDICT_ACTIONS].join(' | ')}, reason }, got ${JSON.stringify(result)}` });
  return v;
}

/** {@link FinalMessage} for one message's `finalize` hooks: the headers are worked out on each read. */
class FinalMessageView implements FinalMessage {
  private readonly dispatcher: Dispatcher;
  private readonly state: ConnectionState;
  private readonly message: MessageState;

  constructor(dispatcher: Dispatcher, state: ConnectionState, message: MessageState) {
    this.dispatcher = dispatcher;
    this.state = state;
    this.message = message;
  }

  get headers(): readonly HeaderEvent[] {
    return this.dispatcher.finalHeaders(this.state, this.message);
  }

  get authenticationResults(): readonly string[] {
    return this.message.authResults;
  }

  get authservId(): string {
    return this.dispatcher.authservIdOf(this.state, this.message);
  }
}
