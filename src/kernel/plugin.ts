/**
 * The plugin contract: what a plugin author writes against. A plugin is a plain object made by
 * {@link definePlugin}; its `setup` returns hooks named after milter stages, and hooks return
 * verdicts. Everything a hook may touch comes through its {@link HookContext}.
 * @module
 */
import type { z } from 'zod';
import type { Counter, CounterConfiguration, Gauge, GaugeConfiguration, Histogram, HistogramConfiguration } from 'prom-client';
import type { ConnectEvent, EnvelopeEvent, HeaderEvent, MacroListStage, MacroReader, MessageModifier, SmtpReply } from '../milter/index.ts';
import type { Store } from '../store/store.ts';
import type { TraceEntry } from './merge.ts';
import type { PluginError } from './errors.ts';

/** What a verdict asks for. `continue` is "no objection"; the others decide. */
export type VerdictAction = 'continue' | 'accept' | 'reject' | 'tempfail' | 'discard' | 'quarantine';

/** Severity order used to break priority ties: reject > tempfail > discard > quarantine > accept > continue. */
export const SEVERITY: Readonly<Record<VerdictAction, number>> = { reject: 5, tempfail: 4, discard: 3, quarantine: 2, accept: 1, continue: 0 };

/** A hook's answer. `reason` is what the decision trace and the logs show. */
export interface Verdict {
  /** The decision. */
  action: VerdictAction;
  /** A custom SMTP reply for reject/tempfail (`{ code: 550, enhanced: '5.7.1', text: '…' }`). */
  reply?: SmtpReply;
  /**
   * Why, in words an administrator understands. Required for anything but `continue`. Keep it short and
   * plain: it is also what the MTA shows for a quarantine (Sendmail's `mailq -qQ`, Postfix's hold log).
   */
  reason?: string;
  /** More about how the plugin came to it (which rules matched, what it looked up): the trace and the log only, never sent to the MTA. */
  detail?: string;
}

/** What a hook may return: a verdict, nothing (continue), or a promise of either. */
export type HookResult = Verdict | void | undefined | Promise<Verdict | void | undefined>;

/** Notes: per-plugin data attached to a session or a message, readable by other plugins (like Haraka's notes). */
export interface Notes {
  /** This plugin's note, or undefined. */
  get<T = unknown>(): T | undefined;
  /** Another plugin's note, by plugin name. */
  of<T = unknown>(plugin: string): T | undefined;
  /** Sets this plugin's note. */
  set(value: unknown): void;
}

/** A recipient of the current message as the kernel tracks it. */
export interface RecipientState extends EnvelopeEvent {
  /** False once a verdict (of any plugin) refused this recipient. */
  accepted: boolean;
}

/** The SMTP connection as plugins see it. */
export interface PluginSession {
  /** Process-unique connection number. */
  readonly id: number;
  /** The CONNECT event (client host name, family, address, port): known to every hook, whichever stage it taps. */
  readonly client: ConnectEvent | undefined;
  /** The last HELO/EHLO name. */
  readonly helo: string | undefined;
  /** The SASL login (`{auth_authen}`), when the client authenticated. */
  readonly auth: string | undefined;
  /** The MTA's host name (`{j}`), which tells pool members apart. */
  readonly mta: string | undefined;
  /** Every macro the MTA sent, with libmilter scoping. */
  readonly macros: MacroReader;
  /** Notes kept for the whole connection. */
  readonly notes: Notes;
}

/**
 * The message being received, as plugins see it. The modification methods are the engine's (without
 * `quarantine`, which is a verdict): requested during any stage, they are sent at end of message.
 */
export interface PluginMessage extends Omit<MessageModifier, 'quarantine'> {
  /** The envelope sender (after MAIL; `address` is `''` for the null sender). */
  readonly sender: EnvelopeEvent | undefined;
  /** Recipients seen so far, with their state. */
  readonly recipients: readonly RecipientState[];
  /** Headers seen so far (only when some plugin taps `header`). */
  readonly headers: readonly HeaderEvent[];
  /** The MTA's queue id (`i`), once known (Postfix assigns it at the first accepted RCPT). */
  readonly queueId: string | undefined;
  /** Notes kept for this message. */
  readonly notes: Notes;
  /**
   * Takes a policy out of this message for every other plugin: from the next hook call on, their
   * `ctx.policies` no longer list it (the caller still sees it). What another plugin already did for
   * that policy at an earlier stage stands. Returns false when no policy of that name applies.
   * This is how the headers plugin's `onlyHeaders` keeps a policy to its header rules.
   */
  skipPolicy(name: string): boolean;
  /**
   * Reports one mail-authentication result for this message, as an RFC 8601 `resinfo` without the
   * authserv-id: `spf=pass smtp.mailfrom=example.org`, `dkim=pass header.d=example.org header.s=sel`.
   * The kernel writes every plugin's results together in one `Authentication-Results` header at the
   * top of the message, once the message is accepted (in the order the plugins report them). Its
   * authserv-id is the first of: the `authservId` given here by a reporting plugin (its own option),
   * the MTA's `{j}`, the host name. Needs `authenticates: true` and `modifies: ['headers']` in the definition.
   */
  addAuthenticationResult(result: string, options?: { authservId?: string }): void;
}

/** A policy that applies to the current session or message, with this plugin's claimed field. */
export interface AppliedPolicy<TClaim> {
  /** The policy's name. */
  readonly name: string;
  /** The policy's value of the field this plugin claims (validated with its schema). */
  readonly config: TClaim;
}

/** What every hook receives first. */
export interface HookContext<TClaim = unknown> {
  /** The SMTP connection. */
  readonly session: PluginSession;
  /** The current message, from MAIL to its end; undefined at connect/helo. */
  readonly message: PluginMessage | undefined;
  /** Policies that apply here and carry this plugin's field, in policy order. */
  readonly policies: readonly AppliedPolicy<TClaim>[];
  /** This plugin's logger, bound to the connection. */
  readonly log: PluginLogger;
}

/** The logger a plugin gets (a pino child logger). */
export interface PluginLogger {
  /** Detail for debugging; addresses belong here, not at info. */
  debug(fields: object, message?: string): void;
  /** Something an administrator wants to see in normal operation. */
  info(fields: object, message?: string): void;
  /** Something went wrong, the plugin coped. */
  warn(fields: object, message?: string): void;
  /** Something failed. */
  error(fields: object, message?: string): void;
}

/** Stage hooks: named after milter stages, each typed with its event. */
export interface StageHooks<TClaim = unknown> {
  /** SMTP connection: client address, family, port and host name. */
  connect(ctx: HookContext<TClaim>, event: ConnectEvent): HookResult;
  /** HELO/EHLO. */
  helo(ctx: HookContext<TClaim>, event: { hostname: string }): HookResult;
  /** MAIL FROM, with ESMTP args. `{auth_authen}` is known from here on. */
  mailFrom(ctx: HookContext<TClaim>, event: EnvelopeEvent): HookResult;
  /** RCPT TO: a reject or tempfail refuses this recipient only. */
  rcptTo(ctx: HookContext<TClaim>, event: EnvelopeEvent): HookResult;
  /** DATA. */
  data(ctx: HookContext<TClaim>): HookResult;
  /** One header. */
  header(ctx: HookContext<TClaim>, event: HeaderEvent): HookResult;
  /** End of headers. */
  endOfHeaders(ctx: HookContext<TClaim>): HookResult;
  /** A body chunk. Tapping this makes the MTA send the body; nobody else pays for it. */
  body(ctx: HookContext<TClaim>, chunk: Buffer): HookResult;
  /** End of message: the last chance to decide and to modify. */
  endOfMessage(ctx: HookContext<TClaim>): HookResult;
  /**
   * The message is accepted: every plugin's `endOfMessage` has run and none refused it. Runs before
   * the modifications go to the MTA, in priority order, with {@link FinalMessage.headers} the headers
   * as they will be delivered — the place for signers (DKIM, ARC), which must cover what other plugins
   * added or changed. Headers requested here are seen by the next `finalize` hook. A `reject`,
   * `tempfail` or `discard` still refuses the message (a signer that cannot sign); `quarantine` holds it.
   */
  finalize(ctx: HookContext<TClaim>, message: FinalMessage): HookResult;
  /** The message was abandoned (or refused by another plugin): undo what was reserved. */
  abort(ctx: HookContext<TClaim>): void | Promise<void>;
  /** The connection ended. */
  close(ctx: HookContext<TClaim>): void | Promise<void>;
}

/** What a {@link StageHooks.finalize} hook sees of an accepted message. */
export interface FinalMessage {
  /**
   * The header block as the MTA will deliver it, top to bottom: the headers as received with every
   * header modification requested so far applied in order (the kernel's `Authentication-Results` and
   * the removal of forged ones first, then each plugin's, this hook's own included). Read afresh on
   * each access. Values are as in `ctx.message.headers`, with `raw` (the exact text after the colon)
   * when a plugin declared `exactHeaders`; headers the plugins add carry the `raw` the MTA will write.
   */
  readonly headers: readonly HeaderEvent[];
  /** The authentication results reported for the message, in order (what the one Authentication-Results header carries). */
  readonly authenticationResults: readonly string[];
  /** The authserv-id of that header: a reporting plugin's, else the MTA's `{j}`, else the host name. */
  readonly authservId: string;
}

/** A whole message's decision trace: what every plugin said at every stage, and what won. */
export interface DecisionTrace {
  /** The milter connection. */
  session: number;
  /** The MTA's queue id, when known. */
  queueId: string | undefined;
  /** Names of the policies that applied. */
  policies: string[];
  /** `accepted`, `rejected`, `tempfailed`, `discarded`, `quarantined` or `aborted`. */
  outcome: 'accepted' | 'rejected' | 'tempfailed' | 'discarded' | 'quarantined' | 'aborted';
  /** The stage that decided (`endOfMessage` for an accepted message). */
  stage: StageHookName | undefined;
  /** The winning entry, if a plugin decided. */
  winner: TraceEntry | undefined;
  /** Every plugin's verdict, in the order given. */
  entries: TraceEntry[];
}

/** Observer hooks: told what happened, answer nothing. */
export interface ObserverHooks<TClaim = unknown> {
  /**
   * A message ended (delivered, refused, held or abandoned): its whole decision trace. `ctx.message`
   * is the ended message, with its notes; `ctx.session` its connection. Called synchronously once per
   * message: keep it cheap (count in memory, write out in batches).
   */
  decision(ctx: HookContext<TClaim>, trace: DecisionTrace): void;
}

/** Lifecycle hooks. */
export interface LifecycleHooks {
  /** The kernel is about to serve. */
  ready(): void | Promise<void>;
  /** The configuration was reloaded. */
  reload(): void | Promise<void>;
  /** The process is stopping: flush and close. */
  shutdown(): void | Promise<void>;
}

/** The hooks a plugin's `setup` returns: any subset of the closed set. */
export type PluginHooks<TClaim = unknown> = Partial<StageHooks<TClaim> & ObserverHooks<TClaim> & LifecycleHooks>;

/** Names of the stage hooks. */
export type StageHookName = keyof StageHooks;

/** Every stage hook name, in SMTP order. */
export const STAGE_HOOKS: readonly StageHookName[] = ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body', 'endOfMessage', 'finalize', 'abort', 'close'];
/**
 * What a failing hook (one that throws, rejects or misses its deadline) answers in the plugin's place:
 * - `continue`: no objection — the failing plugin is left out and the others decide (fail open);
 * - `accept`: accept — at a message stage, RCPT included, that ends filtering of the whole message
 *   for every plugin, and a higher-priority accept wins over a lower-priority refusal;
 * - `tempfail`: try again later (the default: nothing is lost, the MTA retries);
 * - `reject`: refuse (fail closed).
 */
export type OnErrorVerdict = 'continue' | 'accept' | 'tempfail' | 'reject';

/** Every lifecycle hook name. */
export const LIFECYCLE_HOOKS: readonly (keyof LifecycleHooks)[] = ['ready', 'reload', 'shutdown'];
/** Every observer hook name. */
export const OBSERVER_HOOKS: readonly (keyof ObserverHooks)[] = ['decision'];

/** An HTTP GET a plugin route receives. */
export interface HttpRequest {
  /** The path (`/api/stats`). */
  readonly path: string;
  /** Query parameters (the last value of each). */
  readonly query: Readonly<Record<string, string>>;
}

/** A plugin route's answer. */
export interface HttpResponse {
  /** HTTP status (default 200). */
  readonly status?: number;
  /** Content type (`application/json`, `text/html; charset=utf-8`). */
  readonly type: string;
  /** The body. */
  readonly body: string;
}

/** Answers one GET. Must not throw for bad input: answer 400 with the reason instead. */
export type HttpRouteHandler = (request: HttpRequest) => HttpResponse | Promise<HttpResponse>;

/**
 * HTTP routes on the daemon's status endpoint (the listener of `/status` and `/metrics`, loopback by
 * default, behind its bearer token when one is set). With `--workers`, requests reach one worker.
 */
export interface PluginHttp {
  /** Serves GET requests for one exact path. `/status`, `/metrics` and `/healthz` are the kernel's. */
  get(path: string, handler: HttpRouteHandler): void;
}

/** Creates metrics registered with the kernel, named `themis_plugin_<plugin>_<name>`. */
export interface MetricsFactory {
  /** A counter, e.g. `{ name: 'refused_total', help: '…', labelNames: ['policy'] }`. */
  counter<L extends string = string>(config: Omit<CounterConfiguration<L>, 'registers'>): Counter<L>;
  /** A gauge. */
  gauge<L extends string = string>(config: Omit<GaugeConfiguration<L>, 'registers'>): Gauge<L>;
  /** A histogram; each observation costs more than a counter's increment, so keep it off per-packet paths. */
  histogram<L extends string = string>(config: Omit<HistogramConfiguration<L>, 'registers'>): Histogram<L>;
}

/** What `setup` receives: nothing of the kernel's internals. */
export interface PluginContext<TOptions, TCode extends string = string> {
  /** The plugin's name. */
  readonly name: string;
  /** A pino child logger bound to the plugin. */
  readonly log: PluginLogger;
  /** Metrics scoped to the plugin. */
  readonly metrics: MetricsFactory;
  /** The shared store (in-memory or Redis). */
  readonly store: Store;
  /** The plugin-level options, validated with the plugin's `options` schema. */
  readonly options: TOptions;
  /** HTTP routes on the status endpoint (dashboards, JSON APIs). */
  readonly http: PluginHttp;
  /**
   * Makes a {@link PluginError} of one of the codes the plugin declares in `errors`: its message is that
   * code's template filled from `details`. Throw it, or log it (`log.warn({ code: e.code, ...e.details }, e.message)`).
   * A code the plugin does not declare throws `THEMIS_ERR_PLUGIN_UNDECLARED_ERROR`.
   */
  error(code: TCode, details?: Record<string, unknown>, options?: ErrorOptions): PluginError<TCode>;
  /**
   * Offers an API to the plugins that depend on this one ({@link PluginDefinition.dependencies}): what
   * they get from {@link use}. Call it once, from `setup`. Export the API's type from the plugin's
   * package so that dependents import it as a type only (`import type { RatelimitApi } from …`).
   */
  expose(api: object): void;
  /**
   * The API a plugin this one depends on exposed (it was set up first). Throws
   * `THEMIS_ERR_PLUGIN_DEPENDENCY` for a plugin not named in `dependencies` (or `optionalDependencies`),
   * or one that exposes nothing.
   */
  use<TApi extends object>(plugin: string): TApi;
  /** The API of an optional dependency ({@link PluginDefinition.optionalDependencies}), undefined when it is not loaded. */
  use<TApi extends object>(plugin: string, options: { optional: true }): TApi | undefined;
}

/** Stages a plugin can observe without answering. */
export type ObservableStage = 'connect' | 'helo' | 'mailFrom' | 'rcptTo' | 'data' | 'header' | 'endOfHeaders' | 'body';

/** Modifications a plugin may request; the kernel negotiates the matching actions with the MTA. */
export type ModificationKind = 'headers' | 'sender' | 'recipients' | 'body';

/**
 * A flag a plugin adds to `themis policy add|set`, editing its own policy field
 * ({@link PluginDefinition.policyFlags}). ratelimit's `--ratelimit 100/1m` is one.
 */
export interface PolicyFlag {
  /** `string` takes a value (`--ratelimit 100/1m`); `boolean` takes none (`--count-rcpt`). */
  readonly type: 'string' | 'boolean';
  /** What it sets, for the command's help (`windows of the ratelimit field, such as 100/1m,1000/1h`). */
  readonly help: string;
  /** The value's name in the help (`WINDOWS`); string flags only (default `VALUE`). */
  readonly valueName?: string;
  /**
   * Sets the flag's value on the plugin's field of the policy being edited: `field` is a copy of it
   * (`{}` when the policy has none yet). The whole policy is then validated as a daemon would load it.
   */
  apply(field: Record<string, unknown>, value: string | true): void;
}

/**
 * A plugin. Make one with {@link definePlugin}. `TField` is the name of the policy field it claims
 * (`never` when it claims none; `string` when unknown) and `TClaimInput` what a configuration may write
 * there (the input type of the claim's schema): `defineConfig` types each policy's fields from them.
 */
export interface PluginDefinition<TClaim = unknown, TOptions = unknown, TCode extends string = string, TField extends string = string, TClaimInput = unknown> {
  /** Unique name (`ratelimit`, `greylist`). */
  readonly name: string;
  /** The plugin's own version. */
  readonly version: string;
  /** The kernel versions it supports, as a semver range (`^1`); checked at load. */
  readonly kernel: string;
  /** The policy field this plugin owns and the zod schema of its value. */
  readonly claims?: { readonly field: TField; readonly schema: z.ZodType<TClaim, TClaimInput> };
  /** Zod schema of the plugin-level options. */
  readonly options?: z.ZodType<TOptions>;
  /** Default priority: higher runs earlier and wins verdict merges (default 0). */
  readonly priority?: number;
  /**
   * Plugins this one needs, by name, with a semver range of their `version` (`{ ratelimit: '^1.0.0' }`).
   * Checked at load (`THEMIS_ERR_PLUGIN_DEPENDENCY`: missing, wrong version, or a cycle); each is set up
   * before this one, which reaches its API through `use()`.
   */
  readonly dependencies?: Readonly<Record<string, string>>;
  /**
   * Flags this plugin adds to `themis policy add|set`, by name without the dashes (`{ 'jail-by': … }`):
   * each edits the field this plugin claims. A name that clashes with a core flag or another plugin's
   * is refused when the command starts.
   */
  readonly policyFlags?: Readonly<Record<string, PolicyFlag>>;
  /** Plugins this one uses when they are loaded (same form as {@link dependencies}): checked and set up first when present. */
  readonly optionalDependencies?: Readonly<Record<string, string>>;
  /** Verdict when a hook throws, rejects or misses its deadline (default from the kernel: tempfail). See {@link OnErrorVerdict}. */
  readonly onError?: OnErrorVerdict;
  /** Modifications the plugin may request at end of message. */
  readonly modifies?: readonly ModificationKind[];
  /**
   * Stages whose data the plugin reads (through `ctx.message`, e.g. `recipients` or `headers`) without
   * tapping them. The kernel asks the MTA for them as no-reply stages: it streams them without waiting.
   * A stage nobody taps or observes is not sent at all, so its data stays empty.
   */
  readonly observes?: readonly ObservableStage[];
  /**
   * Stages the plugin taps only to listen: its hook there runs (to start work early, such as a DNS
   * lookup at MAIL) but never decides. When every tap of a stage listens, the kernel asks the MTA for
   * it as a no-reply stage, so Postfix does not wait for the hook. A verdict other than `continue`
   * from such a hook, or its failure, is logged and ignored: decide at a later stage instead.
   */
  readonly listens?: readonly ObservableStage[];
  /**
   * The plugin reports mail-authentication results (SPF, DKIM, DMARC, ARC…) with
   * `ctx.message.addAuthenticationResult()`. The kernel then writes them all in **one**
   * `Authentication-Results` header per message (RFC 8601), and removes the `Authentication-Results`
   * headers that arrive from outside claiming the same authserv-id (forged, or ours from an earlier
   * hop): it observes the headers for that. Needs `modifies: ['headers']`.
   */
  readonly authenticates?: boolean;
  /**
   * The plugin needs header values byte for byte (DKIM and ARC `simple` header canonicalisation): the
   * kernel asks the MTA for SMFIP_HDR_LEADSPC, and each header in `ctx.message.headers` (and in
   * {@link FinalMessage.headers}) then carries `raw`, the exact text after the colon. `value` is the
   * same either way (the one space after the colon removed), so other plugins see no difference.
   */
  readonly exactHeaders?: boolean;
  /** Macros the plugin needs beyond Postfix's defaults, per stage. */
  readonly macros?: Partial<Record<MacroListStage, readonly string[]>>;
  /**
   * Pages for a browser among the routes `setup` serves ({@link PluginHttp.get}), by name
   * (`{ dashboard: '/dashboard' }`). The daemon's start line says where each one is; the kernel checks
   * that every page is a route the plugin serves.
   */
  readonly pages?: Readonly<Record<string, string>>;
  /**
   * The plugin's error codes → message templates (`{name}` placeholders come from the error's details):
   * every code it throws or logs. Each is `THEMIS_<NAME>_<WORD>`, NAME being the plugin's name
   * upper-cased with `_` for anything but letters and digits (`headers` → `THEMIS_HEADERS_BUDGET`,
   * `recipient-allowlist` → `THEMIS_RECIPIENT_ALLOWLIST_…`), and no core or other plugin's code; checked
   * at load (`THEMIS_ERR_PLUGIN_INVALID`). They join the one error registry (`kernel.errors`,
   * {@link errorRegistry}) and the error reference; `ctx.error(code, details)` makes them.
   */
  readonly errors?: Readonly<Record<TCode, string>>;
  /** Builds the hooks; runs once per load (and again on reload). */
  setup(ctx: PluginContext<TOptions, TCode>): PluginHooks<TClaim> | Promise<PluginHooks<TClaim>>;
  /**
   * Commands the plugin adds to the `themis` command line, by name (`limits` → `themis limits …`).
   * They run in the administrator's shell against the configured store, not inside the daemon.
   */
  readonly commands?: Readonly<Record<string, PluginCommand<NoInfer<TClaim>, NoInfer<TOptions>>>>;
}

/** A command a plugin adds to the `themis` command line. */
export interface PluginCommand<TClaim = unknown, TOptions = unknown> {
  /** One line for `themis --help`. */
  readonly summary: string;
  /** Runs it; resolves with the exit code (0 success, 1 failure, 2 usage). */
  run(args: string[], ctx: PluginCommandContext<TClaim, TOptions>): Promise<number>;
}

/** What a plugin command receives. */
export interface PluginCommandContext<TClaim = unknown, TOptions = unknown> {
  /** The configured store (closed by the caller afterwards). */
  readonly store: Store;
  /** Whether the store is shared by the daemons (`redis`) or lives only in this process (`memory`). */
  readonly storeType: 'memory' | 'redis';
  /** Every policy of the configuration that carries the plugin's field, validated, in evaluation order. */
  readonly policies: readonly AppliedPolicy<TClaim>[];
  /** The plugin-level options, validated. */
  readonly options: TOptions;
  /** The configuration file, if any. */
  readonly configFile: string | undefined;
  /**
   * GETs a JSON document from the running daemon's status endpoint (`--http`, `THEMIS_HTTP` or the
   * configuration's `http.listen`), with its bearer token: for commands that show what the daemon
   * serves, such as `themis stats`.
   */
  readStatus(path: string): Promise<unknown>;
  /** Standard output. */
  out(text: string): void;
  /** Standard error. */
  err(text: string): void;
}

/** Every hook name: stage, observer and lifecycle hooks. */
export type HookName = keyof StageHooks | keyof ObserverHooks | keyof LifecycleHooks;

/**
 * Hooks as `setup` may return them: a name that is no hook (`mailFromm`) is typed `never`, so the
 * misspelt hook fails to compile. (A returned object literal escapes TypeScript's excess property
 * check once the function's return type is inferred; this mapped check puts it back.)
 */
export type ExactHooks<THooks> = THooks & { readonly [K in Exclude<keyof THooks, HookName>]: never };

/** What {@link definePlugin} takes: a {@link PluginDefinition} whose `setup` returns only known hooks. */
export type PluginDefinitionInput<TClaim, TOptions, TCode extends string, TField extends string, TClaimInput, THooks extends PluginHooks<TClaim>> = Omit<PluginDefinition<TClaim, TOptions, TCode, TField, TClaimInput>, 'setup'> & {
  /** Builds the hooks; runs once per load (and again on reload). */
  setup(ctx: PluginContext<TOptions, TCode>): ExactHooks<THooks> | Promise<ExactHooks<THooks>>;
};

/**
 * Defines a plugin with full typing. Give no type arguments: they are inferred. The claim and options
 * types flow from the zod schemas into every hook's `ctx.policies[i].config` and into `setup`'s
 * `ctx.options`; the codes of `errors` into `ctx.error` (only a declared code compiles); the claimed
 * field's name and its schema's input type into `defineConfig`, which then types that field of
 * every policy; and the hooks `setup` returns are checked by name (a misspelt hook fails to compile).
 * To check the schemas against declared types, write `schema: field satisfies z.ZodType<Policy>`.
 *
 * Explicit type arguments (`definePlugin<Policy, Options, Code>`) still compile, but whatever is not
 * given falls back to its default: the field's name is then unknown to `defineConfig` (the field is
 * not type-checked there) and hook names are not checked. Give all five
 * (`definePlugin<Policy, Options, Code, 'field', z.input<typeof schema>>`) to keep the first.
 */
export function definePlugin<
  TClaim = unknown,
  TOptions = unknown,
  TCode extends string = string,
  TField extends string = unknown extends TClaim ? never : string,
  TClaimInput = unknown,
  THooks extends PluginHooks<TClaim> = PluginHooks<TClaim>,
>(plugin: PluginDefinitionInput<TClaim, TOptions, TCode, TField, TClaimInput, THooks>): PluginDefinition<TClaim, TOptions, TCode, TField, TClaimInput> {
  return plugin;
}
