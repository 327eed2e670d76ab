/**
 * What the kernel knows about one milter connection and its current message: the envelope and
 * headers so far, the policies they match, the decision trace, pending modifications and held
 * verdicts. It hands each plugin its view of them (plugin-views.ts).
 * @module
 */
import type { EnvelopeEvent, HeaderEvent, MessageModifier, MilterSession } from '../milter/index.ts';
import type { TraceEntry } from './merge.ts';
import type { LoadedPlugin } from './plugin-setup.ts';
import { HookContextView, MessageView, sessionView } from './plugin-views.ts';
import type { AppliedPolicy, HookContext, PluginMessage, PluginSession, RecipientState, StageHookName } from './plugin.ts';
import type { MatchResult, PolicyMatcher } from './policy.ts';

/** A modification a plugin asked for, sent to the MTA at end of message if the message is accepted. */
export interface PendingModification {
  plugin: string;
  apply(m: MessageModifier): void;
}

/** One message on a connection, from MAIL (or its first event) to its verdict or abort. */
export class MessageState {
  sender: EnvelopeEvent | undefined;
  readonly recipients: RecipientState[] = [];
  readonly headers: HeaderEvent[] = [];
  queueId: string | undefined;
  readonly notes = new Map<string, unknown>();
  readonly trace: TraceEntry[] = [];
  readonly modifications: PendingModification[] = [];
  /** Authentication results the plugins reported (`addAuthenticationResult`), for the one header. */
  readonly authResults: string[] = [];
  /** The authserv-id a reporting plugin named, if any (the first one). */
  authservId: string | undefined;
  quarantine: TraceEntry | undefined;
  /** Policies taken out of this message by a plugin (`skipPolicy`): policy name → the plugin that did. */
  skipped: Map<string, string> | undefined;
}

const NO_MATCH: MatchResult = { policies: [], bypass: undefined };

/** One connection: kept on the engine's session (`MilterSession.state`), found with {@link stateOf}. */
export class ConnectionState {
  readonly id: number;
  milter!: MilterSession;
  message: MessageState | undefined;
  lastMessage: MessageState | undefined;
  readonly trace: TraceEntry[] = [];
  readonly notes = new Map<string, unknown>();
  quarantine: TraceEntry | undefined;

  constructor(id: number) {
    this.id = id;
  }

  /** The policies that apply to what is known so far (re-matched when the facts change). */
  matched: MatchResult = NO_MATCH;
  /** Bumped at every re-match, so per-plugin policy lists know when to rebuild. */
  matchVersion = 0;

  /** Brings the kernel's view in line with the engine's before a stage's hooks run. */
  sync(s: MilterSession, stage: StageHookName, event: unknown, matcher: PolicyMatcher): void {
    this.milter = s;
    if (stage === 'helo' && this.trace.length > 0) this.forgetHelo();
    this.syncMessage(s, stage, event);
    // Facts change at connect, MAIL (sender, SASL login) and each RCPT; no re-match per header.
    if (stage === 'connect' || stage === 'mailFrom' || stage === 'rcptTo' || this.matchVersion === 0 || (stage === 'endOfMessage' && this.matchedFor !== this.message)) this.rematch(matcher);
  }

  private matchedFor: MessageState | undefined;

  /**
   * A new HELO/EHLO starts the SMTP session over (RFC 5321 §4.1.4): the trace entries of the previous
   * one's hooks go. Without this, a client that says EHLO before each of the hundreds of messages an
   * MTA sends on one milter connection grows the connection's trace, and every message's copy of it,
   * for the connection's whole life.
   */
  private forgetHelo(): void {
    let k = 0;
    for (const e of this.trace) if (e.stage !== 'helo') this.trace[k++] = e;
    this.trace.length = k;
  }

  private rematch(matcher: PolicyMatcher): void {
    const s = this.milter;
    const m = this.message;
    const client = s.client;
    this.matched = matcher.match({
      clientIp: client && (client.family === '4' || client.family === '6') ? client.address : undefined,
      sender: m?.sender?.address,
      auth: s.macros.get('{auth_authen}') || undefined,
      recipients: m ? m.recipients.filter((r) => r.accepted).map((r) => r.address) : [],
      mta: s.macros.get('j'),
    });
    this.matchedFor = m;
    this.matchVersion++;
  }

  private syncMessage(s: MilterSession, stage: StageHookName, event: unknown): void {
    if (stage === 'mailFrom') {
      this.message = new MessageState();
      this.message.sender = event as EnvelopeEvent;
    } else if (stage !== 'connect' && stage !== 'helo' && this.message === undefined && s.inMessage) {
      // MAIL was not negotiated (no plugin taps it): the message starts with its first event.
      this.message = new MessageState();
      this.message.sender = s.sender;
    }
    const m = this.message;
    if (!m) return;
    if (stage === 'rcptTo') {
      const e = event as EnvelopeEvent;
      m.recipients.push({ address: e.address, raw: e.raw, args: e.args, accepted: true });
    } else if (stage === 'header') m.headers.push(event as HeaderEvent);
    // Postfix knows the queue id from the first accepted RCPT on, Sendmail from MAIL; look it up a few
    // times per message, not per header.
    if (m.queueId === undefined && (stage === 'mailFrom' || stage === 'rcptTo' || stage === 'data' || stage === 'endOfHeaders' || stage === 'endOfMessage')) m.queueId = s.macros.get('i');
  }

  private readonly contexts: (HookContextView | undefined)[] = [];
  private readonly sessionViews: (PluginSession | undefined)[] = [];

  /**
   * The context a plugin's hook receives: one object per plugin and connection, whose `message`
   * follows the current message. `message` given (an ended message, or null for none) builds a
   * one-off context, for abort and close hooks.
   */
  context(p: LoadedPlugin, message?: MessageState | null): HookContext<unknown> {
    if (message !== undefined) return { session: this.sessionOf(p), message: message ? this.messageView(p, message) : undefined, policies: this.policiesFor(p), log: p.log };
    return (this.contexts[p.order] ??= new HookContextView(this, p));
  }

  private readonly applied: { version: number; message: MessageState | undefined; list: AppliedPolicy<unknown>[] }[] = [];

  /** The matched policies that carry this plugin's field, in evaluation order, less those another plugin skipped. */
  policiesFor(p: LoadedPlugin): readonly AppliedPolicy<unknown>[] {
    const cached = this.applied[p.order];
    if (cached && cached.version === this.matchVersion && cached.message === this.message) return cached.list;
    const skipped = this.message?.skipped;
    const list: AppliedPolicy<unknown>[] = [];
    for (const policy of this.matched.policies) {
      const a = p.policies.get(policy.name);
      if (a === undefined) continue;
      const by = skipped?.get(policy.name);
      if (by === undefined || by === p.name) list.push(a);
    }
    this.applied[p.order] = { version: this.matchVersion, message: this.message, list };
    return list;
  }

  /** Takes a matched policy out of the current message for every plugin but `by`. */
  skipPolicy(by: string, m: MessageState, name: string): boolean {
    if (m !== this.message || !this.matched.policies.some((x) => x.name === name)) return false;
    (m.skipped ??= new Map()).set(name, by);
    // The cached per-plugin lists are stale: a new version makes them rebuild.
    this.matchVersion++;
    return true;
  }

  /** The plugin's view of this connection: made once per plugin and connection. */
  sessionOf(p: LoadedPlugin): PluginSession {
    return (this.sessionViews[p.order] ??= sessionView(this.id, this.milter, this.notes, p));
  }

  /** The plugin's view of a message on this connection. */
  messageView(p: LoadedPlugin, m: MessageState): PluginMessage {
    return new MessageView(this, p, m);
  }
}

/** The kernel's state of an engine session, made on the session's first event. */
export function stateOf(s: MilterSession): ConnectionState {
  let state = s.state as ConnectionState | undefined;
  if (!(state instanceof ConnectionState)) {
    state = new ConnectionState(s.id);
    state.milter = s;
    s.state = state;
  }
  return state;
}
