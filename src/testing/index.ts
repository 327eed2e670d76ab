/**
 * `themis/testing`: drive the real kernel without a socket. Plugin authors write
 * `const t = await createTestKernel({ plugins, policies })`, then `await t.message({ … })`, and read
 * the verdict per stage, the modifications and the decision trace. The kernel code is the one that
 * runs in production; only the MTA is simulated — in the order Postfix sends events, asking only for
 * the stages the plugins tap, with Postfix's macros (or Sendmail's: `mta: 'sendmail'`) — and the store
 * is in memory.
 *
 * For a plugin's store work: `atomicOperationContract(op, { scenarios })` proves an atomic operation's
 * in-memory twin equal to its Lua script on a real redis-server and a real Cluster, `storeContract`
 * is the suite every store implementation passes, and `startRedis`/`startRedisCluster` run throwaway
 * servers on loopback.
 * @module
 */
export { useTestClock, type TestClock } from './clock.ts';
export { atomicOperationContract, freshStores, storeContract, prng, type AtomicContractOptions } from './store-contract.ts';
export { startRedis, startRedisCluster, redisAvailable, redisCliAvailable, eventually, freePort, type RedisServer, type RedisClusterServers, type StartRedisOptions } from './redis.ts';
import {
  CodedError,
  MacroStore,
  createMessageModifier,
  decodeModification,
  mergeBody,
  negotiate,
  Protocol,
  STAGE_BITS,
  type ConnectEvent,
  type Decision,
  type EnvelopeEvent,
  type HandlerResult,
  type HeaderEvent,
  type MilterSession,
  type Modification,
  type Negotiated,
  type Stage,
} from '../milter/index.ts';
import { silentLogger } from '../milter/logger.ts';
import type { ThemisError } from '../kernel/errors.ts';
import { Kernel, type DecisionTrace, type KernelOptions, type PluginEntry, type PolicyInput } from '../kernel/kernel.ts';
import type { PluginDefinition } from '../kernel/plugin.ts';
import type { PolicyOf } from '../config.ts';
import { canonicalMacro, postfixMacros, type MacroFacts } from './postfix-macros.ts';
import { macroNames, sendmailMacros, sendmailMessageId } from './sendmail-macros.ts';
import type { MacroListStage } from '../milter/index.ts';

/**
 * The problems a refused configuration or policy set carries, each with its own code and details:
 * the aggregate's (`THEMIS_ERR_POLICIES_INVALID`) problems, or the error itself when it is one problem.
 * A test asserts "this field is refused" with it, whatever else is wrong:
 * `problemsOf(err).some((p) => p.code === 'THEMIS_ERR_POLICY_FIELD' && p.details.path === 'max')`.
 */
export function problemsOf(err: unknown): CodedError<string>[] {
  if (!(err instanceof CodedError)) return [];
  if (err.cause instanceof AggregateError) return err.cause.errors.filter((e): e is CodedError<string> => e instanceof CodedError);
  return [err];
}

/** A plugin as the harness takes it: a definition, or an entry with options and priority. */
export type TestPlugin = PluginDefinition<any, any, any, any, any> | PluginEntry;

/** The client side of a test connection. */
export interface TestClient {
  /** Client IP address (default 192.0.2.1). */
  address?: string;
  /** Client host name as the MTA reports it (default `[address]`). */
  hostname?: string;
  /** Address family (default from the address). */
  family?: '4' | '6' | 'L' | 'U';
  /** Client port (default 40000). */
  port?: number;
  /**
   * Macro values the MTA has for this connection only, over the kernel-wide `macros`: what differs from
   * one SMTP session to the next — TLS (`{tls_version}`, `{cipher}`, `{cipher_bits}`, `{cert_subject}`,
   * `{cert_issuer}`), the SASL mechanism (`{auth_type}`, which otherwise says PLAIN for a login). Each
   * still reaches the plugins only at the stages whose list names it.
   */
  macros?: Record<string, string>;
}

/** One message to drive through the kernel. */
export interface TestMessage {
  /** Envelope sender (`''` for the null sender). */
  from: string;
  /** Recipients. */
  rcpt: string[];
  /** Headers in order, as pairs or as an object. */
  headers?: [string, string][] | Record<string, string>;
  /** Body text (CRLF line ends are added when missing). */
  body?: string | Buffer;
  /** SASL login: `{auth_authen}` at MAIL, as the MTA sends it for authenticated clients (with `{auth_type}` PLAIN). */
  auth?: string;
  /** ESMTP parameters of MAIL FROM. */
  fromArgs?: string[];
  /** Queue id the MTA reports as `i` (default a generated one): from the first accepted RCPT on behind Postfix, from MAIL on behind Sendmail. */
  queueId?: string;
}

/** A message for {@link TestKernel.message}: one message on a connection of its own. */
export interface TestConnectionMessage extends TestMessage {
  /** The client (default 192.0.2.1). */
  client?: TestClient;
  /** HELO name (default client.example). */
  helo?: string;
}

/** What the MTA was told at one stage. */
export interface StageOutcome {
  /** The stage. */
  stage: Stage;
  /** The milter decision (`continue` when the plugins had no objection). */
  action: Decision['action'];
  /** The SMTP reply, for custom reject/tempfail answers. */
  reply?: { code: number; enhanced?: string; text?: string | readonly string[] };
  /** The recipient, at `rcptTo`. */
  recipient?: string;
}

/** The result of one test message. */
export interface TestResult {
  /** Every stage the MTA asked about, in order, with the answer. */
  stages: StageOutcome[];
  /** The deciding answer: the first answer that ended the message, or the end-of-message answer. */
  decision: StageOutcome;
  /** The answer per recipient, in order. */
  recipients: { address: string; action: Decision['action']; reply?: StageOutcome['reply'] }[];
  /**
   * Modifications sent at end of message, in order. A header's `value` reads the same whether or not
   * SMFIP_HDR_LEADSPC was negotiated (a plugin with `exactHeaders` asks for it): the one space the
   * engine adds for the MTA is left out, so a test's expectation does not depend on the other plugins.
   */
  modifications: Modification[];
  /** The message's decision trace (every plugin's verdict, and the winner). */
  trace: DecisionTrace | undefined;
}

/** Options of {@link createTestKernel}. */
export interface TestKernelOptions<TPlugins extends readonly TestPlugin[] = readonly TestPlugin[]> extends Partial<Omit<KernelOptions, 'plugins' | 'policies'>> {
  /** Plugins: definitions, or entries with options and priority. */
  plugins: TPlugins;
  /** Policies, their fields typed by the plugins' schemas as in `defineConfig` ({@link PolicyOf}). */
  policies?: readonly PolicyOf<TPlugins>[];
  /**
   * The MTA the harness plays, and the kernel's negotiation is shaped for ({@link KernelOptions.mta}):
   * `'postfix'` (default) or `'sendmail'`. Behind Sendmail (see sendmail-macros.ts):
   * - the stock lists are Sendmail's `confMILTER_MACROS_*` (cf/m4/cfhead.m4): CONNECT
   *   `j _ {daemon_name} {if_name} {if_addr}`, HELO the TLS ones, MAIL
   *   `i {auth_type} {auth_authen} {auth_ssf} {auth_author} {mail_mailer} {mail_host} {mail_addr}`, RCPT
   *   `{rcpt_mailer} {rcpt_host} {rcpt_addr}`, end of message `{msg_id}`, none at DATA and EOH;
   * - the queue id `i` is known from MAIL on (Postfix: from the first accepted RCPT on);
   * - a list the plugins ask for in `macros` replaces that stage's list, as behind Postfix — except
   *   at end of message, where Sendmail 8.14–8.18 use the filter's list only when it also asked for
   *   an end-of-headers list (milter.c); with an end-of-headers list alone no macro comes at the end;
   * - an unresolved client is `{client_name}` `[address]` and `_` `[address]` (Postfix: `unknown`);
   * - DATA is left unanswered unless a plugin taps it. Header values arrive as behind Postfix (one
   *   space after the colon eaten, folded lines joined by LF), Sendmail's own headers not among them.
   */
  mta?: 'postfix' | 'sendmail';
  /**
   * Values the simulated MTA has for macros, like `j` (default `{ j: 'mx.test.example' }`). As the
   * MTA does, each stage sends only the macros of its list — the MTA's lists ({@link macroLists}), or
   * what the plugins asked for in their `macros` — so a value here reaches the plugins only at the
   * stages whose list names it. The harness derives the others it can (client, SASL login, sender,
   * recipient, queue id, Sendmail's `{msg_id}`); see postfix-macros.ts and sendmail-macros.ts.
   */
  macros?: Record<string, string>;
  /**
   * The MTA's own macro list per stage, where the test's MTA is not configured stock: Postfix's
   * `milter_*_macros`, Sendmail's `confMILTER_MACROS_*` (a string as the .mc writes it, `j, _, {if_name}`,
   * or names). Stages not given keep the MTA's defaults; a list a plugin asks for still replaces it.
   */
  macroLists?: Partial<Record<MacroListStage, string | readonly string[]>>;
  /**
   * What a plugin mistake does — a verdict the kernel refuses (`THEMIS_ERR_HOOK_BAD_VERDICT`), a reply
   * the MTA would refuse (`THEMIS_ERR_HOOK_BAD_REPLY`), a verdict on a stage that is not answered
   * (`THEMIS_ERR_HOOK_LISTENER_VERDICT`). `'throw'` (default): the connection or message that made it
   * rejects with that coded error, so a test fails where the daemon would only log it. `'allow'`: the
   * harness behaves as the daemon does (logs, falls back), for tests of that fallback.
   */
  pluginMistakes?: 'throw' | 'allow';
}

/** A connection on which several messages can be sent. */
export interface TestConnection {
  /** What the CONNECT and HELO stages answered (empty when no plugin taps them). */
  readonly opening: StageOutcome[];
  /** Sends one message on this connection. */
  message(m: TestMessage): Promise<TestResult>;
  /** Ends the connection (runs close hooks). */
  close(): Promise<void>;
}

/** The harness. */
export interface TestKernel {
  /** The kernel under test. */
  readonly kernel: Kernel;
  /** Every decision trace so far. */
  readonly traces: DecisionTrace[];
  /** Opens a connection (CONNECT, HELO). */
  connect(client?: TestClient, helo?: string): Promise<TestConnection>;
  /** One message on a connection of its own. */
  message(m: TestConnectionMessage): Promise<TestResult>;
  /** Runs shutdown hooks and closes the store. */
  close(): Promise<void>;
}

/** What the MTA offers: Postfix 3 and Sendmail 8.14+ alike (milter version 6, every action and protocol bit). */
const POSTFIX_OFFER = { version: 6, actions: 0x1ff, protocol: 0x1fffff };
let nextId = 1;
let nextQueueId = 1;

/** Builds a kernel from plugins and policies, with the in-memory store, and returns the harness. */
export async function createTestKernel<const TPlugins extends readonly TestPlugin[]>(options: TestKernelOptions<TPlugins>): Promise<TestKernel> {
  const traces: DecisionTrace[] = [];
  const entries = options.plugins.map((p) => ('plugin' in p && typeof (p as PluginEntry).plugin === 'object' ? (p as PluginEntry) : { plugin: p as PluginDefinition<any, any> }));
  const mistakes: ThemisError[] = [];
  const kernel = await Kernel.create({
    ...options,
    plugins: entries,
    policies: options.policies ?? [],
    onDecision: (t) => {
      traces.push(t);
      options.onDecision?.(t);
    },
    onPluginMistake: (e) => {
      mistakes.push(e);
      options.onPluginMistake?.(e);
    },
  });
  /** Fails the connection or message that made a plugin mistake with its coded error (unless allowed). */
  const failOnMistake = () => {
    if (options.pluginMistakes === 'allow' || mistakes.length === 0) return;
    const first = mistakes[0];
    mistakes.length = 0;
    throw first;
  };
  await kernel.ready();
  const app = kernel.application;
  const wishes = typeof app.negotiation === 'function' ? app.negotiation(POSTFIX_OFFER) : (app.negotiation ?? {});
  const negotiated = negotiate(POSTFIX_OFFER, { ...wishes, stages: wishes.stages ?? [] });
  const configured = new Map(Object.entries(options.macros ?? { j: 'mx.test.example' }).map(([k, v]) => [canonicalMacro(k), v]));
  const sendmail = options.mta === 'sendmail';
  const lists = Object.fromEntries(Object.entries(options.macroLists ?? {}).map(([stage, list]) => [stage, macroNames(list!)])) as Partial<Record<MacroListStage, string[]>>;
  /** The MTA's MACRO packet for a stage, looked up from what it knows at that point. */
  const sendMacros = (s: FakeSession, stage: MacroListStage | 'header' | 'body', facts: Omit<MacroFacts, 'configured' | 'client'> = {}) => {
    if (sendmail) {
      // Sendmail sends no macros with a header or a body chunk, and no packet for an empty list.
      if (stage === 'header' || stage === 'body') return;
      const pairs = sendmailMacros(s.negotiated, stage, { configured: s.configured ?? configured, client: s.mtaClient, ...facts }, lists);
      if (pairs) s.macros.set(STAGE_BITS[stage].command, pairs);
      return;
    }
    const list = stage === 'header' ? 'endOfHeaders' : stage === 'body' ? 'endOfMessage' : stage;
    s.macros.set(STAGE_BITS[stage].command, postfixMacros(s.negotiated, list, { configured: s.configured ?? configured, client: s.mtaClient, ...facts }, lists));
  };

  const connect = async (client: TestClient = {}, helo = 'client.example'): Promise<TestConnection> => {
    const s = new FakeSession(negotiated);
    if (client.macros) s.configured = new Map([...configured, ...Object.entries(client.macros).map(([k, v]) => [canonicalMacro(k), v] as [string, string])]);
    const opening: StageOutcome[] = [];
    const address = client.address ?? '192.0.2.1';
    const family = client.family ?? (address.includes(':') ? '6' : '4');
    s.mtaClient = { hostname: client.hostname ?? `[${address}]`, family, port: family === 'U' ? undefined : (client.port ?? 40000), address: family === 'U' ? undefined : address };
    // As the engine: the session learns the client, the HELO name and the sender from their events,
    // which the MTA does not send when no plugin needs them (NOCONNECT, NOHELO, NOMAIL).
    if (s.negotiated.stages.has('connect')) s.client = s.mtaClient;
    sendMacros(s, 'connect');
    s.macros.enterStage(STAGE_BITS.connect.command);
    let refused = await step(s, opening, 'connect', (app.connect && (() => app.connect!(s, s.mtaClient!))) || undefined);
    if (!refused) {
      if (s.negotiated.stages.has('helo')) s.helo = helo;
      sendMacros(s, 'helo');
      s.macros.enterStage(STAGE_BITS.helo.command);
      refused = await step(s, opening, 'helo', (app.helo && (() => app.helo!(s, { hostname: helo }))) || undefined);
    }
    failOnMistake();
    return {
      opening,
      message: async (m) => {
        if (refused) throw new Error(`the connection was refused at ${opening.at(-1)!.stage}; no message can be sent`);
        const result = await runMessage(s, m);
        failOnMistake();
        return result;
      },
      close: async () => {
        await app.close?.(s);
      },
    };
  };

  const runMessage = async (s: FakeSession, m: TestMessage): Promise<TestResult> => {
    const stages: StageOutcome[] = [];
    const result: TestResult = { stages, decision: { stage: 'endOfMessage', action: 'continue' }, recipients: [], modifications: [], trace: undefined };
    const tracesBefore = traces.length;
    const finish = () => {
      result.trace = traces.slice(tracesBefore).at(-1);
      return result;
    };
    const queueId = m.queueId ?? `TEST${String(nextQueueId++).padStart(6, '0')}`;
    const sender = envelope(m.from, m.fromArgs ?? []);
    // Postfix opens the queue file (and knows `i`) only once a recipient is accepted; Sendmail
    // assigns the queue id at MAIL.
    const known = { sender: m.from, auth: m.auth, ...(sendmail && { queueId }) };
    sendMacros(s, 'mailFrom', known);
    s.macros.enterStage(STAGE_BITS.mailFrom.command);
    s.startMessage(sender);
    const stop = (o: StageOutcome) => {
      result.decision = o;
      s.endMessage();
      return finish();
    };
    if (await step(s, stages, 'mailFrom', app.mailFrom && (() => app.mailFrom!(s, sender)))) return stop(stages.at(-1)!);
    let accepted = 0;
    for (const address of m.rcpt) {
      const rcpt = envelope(address, []);
      // Postfix assigns the queue id when the first recipient is accepted.
      sendMacros(s, 'rcptTo', { ...known, recipient: address, queueId: sendmail || accepted > 0 ? queueId : undefined });
      s.macros.enterStage(STAGE_BITS.rcptTo.command);
      s.recipients.push(rcpt);
      const before = stages.length;
      await step(s, stages, 'rcptTo', app.rcptTo && (() => app.rcptTo!(s, rcpt)), address);
      const o = stages[before] ?? { stage: 'rcptTo' as Stage, action: 'continue' as const, recipient: address };
      result.recipients.push({ address, action: o.action, ...(o.reply ? { reply: o.reply } : {}) });
      if (o.action === 'reject' || o.action === 'tempfail') continue;
      if (o.action !== 'continue') return stop(o);
      accepted++;
    }
    if (accepted === 0) {
      result.decision = stages.filter((x) => x.stage === 'rcptTo').at(-1) ?? { stage: 'rcptTo', action: 'reject' };
      s.endMessage();
      await app.abort?.(s);
      return finish();
    }
    const open = { ...known, queueId };
    sendMacros(s, 'data', open);
    if (await step(s, stages, 'data', app.data && (() => app.data!(s)))) return stop(stages.at(-1)!);
    const headers = Array.isArray(m.headers) ? m.headers : Object.entries(m.headers ?? {});
    for (const [name, value] of headers) {
      sendMacros(s, 'header', open);
      const event = asPostfixSendsIt(name, value, s.negotiated);
      if (await step(s, stages, 'header', app.header && (() => app.header!(s, event)))) return stop(stages.at(-1)!);
    }
    // Sendmail knows {msg_id} once it has read the headers.
    const read = sendmail ? { ...open, msgId: sendmailMessageId(headers, queueId, configured.get('j')) } : open;
    sendMacros(s, 'endOfHeaders', read);
    if (await step(s, stages, 'endOfHeaders', app.endOfHeaders && (() => app.endOfHeaders!(s)))) return stop(stages.at(-1)!);
    const body = typeof m.body === 'string' ? Buffer.from(m.body.replace(/\r?\n/g, '\r\n')) : (m.body ?? Buffer.alloc(0));
    for (let off = 0; off < body.length && app.body; off += 65535) {
      sendMacros(s, 'body', read);
      const chunk = body.subarray(off, Math.min(off + 65535, body.length));
      if (await step(s, stages, 'body', () => app.body!(s, chunk))) return stop(stages.at(-1)!);
    }
    sendMacros(s, 'endOfMessage', read);
    // The engine's own modifier: the same checks as production, then its packets read back.
    const modifier = createMessageModifier(s.negotiated);
    const eom = await answer(app.endOfMessage ? app.endOfMessage(s, modifier) : undefined);
    const packets = modifier.close();
    const o = outcome('endOfMessage', eom);
    stages.push(o);
    result.decision = o;
    result.modifications = mergeBody(packets.map((p) => withoutLeadingSpace(decodeModification(p[4], p.subarray(5)), s.negotiated)));
    s.endMessage();
    // Postfix sends ABORT after every transaction, accepted or not.
    return finish();
  };

  return {
    kernel,
    traces,
    connect,
    message: async (m) => {
      const c = await connect(m.client, m.helo);
      const refusedAt = c.opening.find((o) => o.action !== 'continue');
      if (refusedAt) {
        await c.close();
        return { stages: [...c.opening], decision: refusedAt, recipients: [], modifications: [], trace: traces.at(-1) };
      }
      const r = await c.message(m);
      r.stages.unshift(...c.opening);
      await c.close();
      return r;
    },
    close: () => kernel.shutdown(),
  };
}

async function answer(r: HandlerResult): Promise<Decision> {
  return ((await r) as Decision | undefined) ?? { action: 'continue' };
}

function outcome(stage: Stage, d: Decision, recipient?: string): StageOutcome {
  const o: StageOutcome = { stage, action: d.action };
  if ((d.action === 'reject' || d.action === 'tempfail') && d.reply) o.reply = d.reply;
  if (recipient !== undefined) o.recipient = recipient;
  return o;
}

/** Runs a stage if negotiated; returns true when its answer ended the message or connection. */
async function step(s: FakeSession, into: StageOutcome[], stage: Stage, call: (() => HandlerResult) | undefined, recipient?: string): Promise<boolean> {
  if (!call || !s.negotiated.stages.has(stage)) return false;
  const d = await answer(call());
  into.push(outcome(stage, d, recipient));
  if (d.action === 'continue' || d.action === 'skip') return false;
  if (stage === 'rcptTo' && (d.action === 'reject' || d.action === 'tempfail')) return false;
  return true;
}

/**
 * A header value as written after the colon, turned into what Postfix sends (milter8.c,
 * milter8_header): folded lines joined by LF (Postfix keeps no CR), and the one space after the colon
 * eaten — only a space, not a tab — unless the filter asked for SMFIP_HDR_LEADSPC. Sendmail sends the
 * same (collect.c keeps LF line ends, milter.c milter_headers skips one leading space).
 */
/** A header modification as it reads without HDR_LEADSPC: the space the engine added for the MTA left out. */
function withoutLeadingSpace(m: Modification, negotiated: Negotiated): Modification {
  if ((negotiated.reply.protocol & Protocol.HDR_LEADSPC) === 0) return m;
  if ((m.type === 'addHeader' || m.type === 'insertHeader' || m.type === 'changeHeader') && m.value.startsWith(' ')) return { ...m, value: m.value.slice(1) };
  return m;
}

function asPostfixSendsIt(name: string, value: string, negotiated: Negotiated): HeaderEvent {
  const v = value.replace(/\r\n/g, '\n');
  const stripped = v.startsWith(' ') ? v.slice(1) : v;
  // With HDR_LEADSPC the engine keeps the verbatim value as `raw` (HeaderView): the same here.
  return (negotiated.reply.protocol & Protocol.HDR_LEADSPC) === 0 ? { name, value: stripped } : { name, value: stripped, raw: v };
}

function envelope(address: string, args: string[]): EnvelopeEvent {
  return { address, raw: `<${address}>`, args };
}

/** The engine's session, simulated: same fields and macro scoping, no socket. */
class FakeSession implements MilterSession {
  readonly id = nextId++;
  readonly peer = 'test';
  readonly negotiated: Negotiated;
  readonly macros = new MacroStore();
  client: ConnectEvent | undefined;
  /** The client as the MTA knows it, whether or not CONNECT was sent (its macros describe it). */
  mtaClient: ConnectEvent | undefined;
  /** This connection's macro values (TestClient.macros over the kernel-wide ones), when it has its own. */
  configured: ReadonlyMap<string, string> | undefined;
  helo: string | undefined;
  sender: EnvelopeEvent | undefined;
  recipients: EnvelopeEvent[] = [];
  inMessage = false;
  state: unknown = undefined;
  readonly log = silentLogger;

  constructor(negotiated: Negotiated) {
    this.negotiated = negotiated;
  }

  startMessage(sender: EnvelopeEvent): void {
    this.inMessage = true;
    this.sender = this.negotiated.stages.has('mailFrom') ? sender : undefined;
    this.recipients = [];
  }

  endMessage(): void {
    // As the engine (and libmilter): ending a message clears no macros; the next MAIL does.
    this.inMessage = false;
  }

  progress(): void {}
}
