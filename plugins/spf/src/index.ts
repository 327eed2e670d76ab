/**
 * The spf plugin: RFC 7208 SPF (mailauth, strict mode) of the MAIL FROM identity — and of the HELO
 * identity for the null sender, or always — with a per-policy matrix from result to action,
 * separately for MAIL FROM and HELO and for authenticated clients, skip lists for relays and
 * forwarders, and exactly one `Received-SPF:` and/or `Authentication-Results:` header per message
 * however many policies enable SPF.
 * @module
 */
import { z } from 'zod';
import { NetworkList, definePlugin, fillTemplate, parseNetwork, replyConfigSchema, resolveReply, type AppliedPolicy, type HookContext, type Verdict } from 'themis-milter';
import { checkSpf, type SpfCheckResult, type SpfResultName, type SpfResolver } from './check.ts';
import { createResolver } from 'themis-milter/dns';

export { checkSpf, type SpfCheckInput, type SpfCheckOptions, type SpfCheckResult, type SpfResultName, type SpfResolver } from './check.ts';
/** The shared resolver, re-exported from `themis-milter/dns` for existing callers. */
export { createResolver } from 'themis-milter/dns';

/** The seven RFC 7208 results. */
export const SPF_RESULTS: readonly SpfResultName[] = ['pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror'];

/**
 * What a result leads to: `ignore` (the headers only), `tag` (also the tag header), `hold`
 * (Postfix's hold queue), `tempfail` or `reject` (refused at end of message with the reply).
 */
export type SpfAction = 'ignore' | 'tag' | 'hold' | 'tempfail' | 'reject';

const action = z.enum(['ignore', 'tag', 'hold', 'tempfail', 'reject']);
const matrix = z.strictObject(Object.fromEntries(SPF_RESULTS.map((r) => [r, action.optional()])) as Record<SpfResultName, z.ZodOptional<typeof action>>);
const reply = replyConfigSchema;

/** Defaults: only `fail` of unauthenticated mail acts, and it tags (forwarders break SPF for good mail). */
export const DEFAULT_MATRIX: Readonly<Record<SpfResultName, SpfAction>> = { pass: 'ignore', fail: 'tag', softfail: 'ignore', neutral: 'ignore', none: 'ignore', permerror: 'ignore', temperror: 'ignore' };

/** The `spf` policy field. */
export const spfField = z.strictObject({
  /** Result → action for the MAIL FROM identity of unauthenticated clients (merged over {@link DEFAULT_MATRIX}). */
  mailFrom: matrix.default({}),
  /** Result → action for the HELO identity (checked for the null sender, or always with `checkHelo: 'always'`). Default: all `ignore`. */
  helo: matrix.default({}),
  /** Result → action for authenticated clients, when they are checked at all (`skip.authenticated: false`). Default: all `ignore`. */
  authenticated: matrix.default({}),
  /** `null-sender` (default: the HELO identity is what RFC 7208 checks for bounces), `always`, or `never`. */
  checkHelo: z.enum(['null-sender', 'always', 'never']).default('null-sender'),
  /** Refusal for `reject` (default `550 5.7.23 SPF {result} for {domain}`); placeholders `{result}`, `{domain}`, `{ip}`, `{explanation}`. */
  reply: reply.default({}),
  /** Refusal for `tempfail` (default `451 4.7.24 SPF check of {domain} failed temporarily`). */
  tempReply: reply.default({}),
  /** Who is not checked: authenticated clients (default true), relay or forwarder networks and addresses, senders (`@domain`, `user@domain`). */
  skip: z.strictObject({ authenticated: z.boolean().default(true), clients: z.array(z.string()).default([]), senders: z.array(z.string()).default([]) }).default({ authenticated: true, clients: [], senders: [] }),
  /** The tag header for `tag` (default `X-Themis-SPF: {result}`). */
  tag: z.strictObject({ name: z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, 'expected a header name').default('X-Themis-SPF'), value: z.string().default('{result}') }).default({ name: 'X-Themis-SPF', value: '{result}' }),
  /** Which headers to add (default: `Received-SPF` only). */
  headers: z.strictObject({ receivedSpf: z.boolean().default(true), authenticationResults: z.boolean().default(false) }).default({ receivedSpf: true, authenticationResults: false }),
});

/** The `spf` field after validation. */
export type SpfPolicy = z.infer<typeof spfField>;

/** Plugin-level options. */
export const spfOptions = z.strictObject({
  /** DNS servers (`'192.0.2.53'`, `'127.0.0.1:5353'`, `'[2001:db8::53]:53'`); default: the system's. */
  dnsServers: z.array(z.string().min(1)).optional(),
  /** Per-query DNS timeout, ms (default 2,000). */
  dnsTimeout: z.number().int().positive().default(2_000),
  /** Deadline of one whole SPF evaluation, ms (default 5,000): past it, the result is `temperror`. */
  deadline: z.number().int().positive().default(5_000),
  /** Cached DNS answers (honouring their TTLs), at most this many (default 10,000; 0 disables the cache). */
  cacheEntries: z.number().int().min(0).default(10_000),
  /** The authserv-id of `Authentication-Results` and the receiver of `Received-SPF` (default: the MTA's `{j}`, else `localhost`). */
  authservId: z.string().min(1).optional(),
});

/** Plugin-level options, validated. */
export type SpfOptions = z.infer<typeof spfOptions>;

/** RFC 7372: 5.7.23 SPF validation failed, 4.7.24 SPF validation error. */
const REJECT_REPLY = { code: 550, enhanced: '5.7.23', text: 'SPF {result} for {domain}' };
const TEMP_REPLY = { code: 451, enhanced: '4.7.24', text: 'SPF check of {domain} failed temporarily' };

const SEVERITY: Record<SpfAction, number> = { ignore: 0, tag: 1, hold: 2, tempfail: 3, reject: 4 };

/**
 * The message note (`ctx.message.notes.of('spf')`). Other plugins read the plain fields, set when a
 * check completes, e.g. the headers plugin's `{spf.result}` or `{ note: 'spf.result', equals: 'fail' }`.
 */
export interface SpfNote {
  /** The result that decides: of MAIL FROM, or of HELO for a bounce. */
  result?: SpfCheckResult['result'];
  /** The domain whose record was evaluated. */
  domain?: string;
  /** `mailfrom` or `helo`. */
  identity?: SpfCheckResult['identity'];
  /** The term that decided, when known. */
  mechanism?: string;
  /** The HELO identity's result, when it was checked as well (`checkHelo: 'always'`). */
  heloResult?: SpfCheckResult['result'];
  /** The checks in flight (the plugin's own use). */
  mailFrom?: Promise<SpfCheckResult>;
  helo?: Promise<SpfCheckResult>;
}
type Note = SpfNote;

/** Compiled skip lists of one policy, built once per configuration. */
function skipper(config: SpfPolicy) {
  const nets = new NetworkList();
  for (const c of config.skip.clients) {
    const network = parseNetwork(c);
    if (network !== undefined && !(network instanceof Error)) nets.add(network);
  }
  const senders = config.skip.senders.map((s) => s.toLowerCase());
  return (ip: string | undefined, sender: string, authenticated: boolean) => {
    if (authenticated && config.skip.authenticated) return 'authenticated';
    if (ip && nets.has(ip)) return 'listed client';
    const s = sender.toLowerCase();
    if (senders.some((x) => (x.startsWith('@') ? s.endsWith(x) : s === x))) return 'listed sender';
    return undefined;
  };
}

export default definePlugin({
  name: 'spf',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'spf', schema: spfField },
  options: spfOptions,
  priority: 40,
  modifies: ['headers'],
  // Its Authentication-Results go into the kernel's one header per message.
  authenticates: true,
  observes: ['connect', 'helo'],
  // The MAIL hook only starts the DNS work; the verdict comes at end of message. Postfix need not wait.
  listens: ['mailFrom'],
  setup({ options, metrics, log }) {
    const resolver: SpfResolver = createResolver({ servers: options.dnsServers, timeoutMs: options.dnsTimeout, cache: options.cacheEntries > 0 ? { maxEntries: options.cacheEntries } : false });
    const results = metrics.counter({ name: 'results_total', help: 'SPF results, by identity and result', labelNames: ['identity', 'result'] });
    const actions = metrics.counter({ name: 'actions_total', help: 'Actions taken on SPF results, by policy and action', labelNames: ['policy', 'action'] });
    const skips = new WeakMap<SpfPolicy, ReturnType<typeof skipper>>();
    const skipOf = (p: SpfPolicy) => {
      let s = skips.get(p);
      if (!s) skips.set(p, (s = skipper(p)));
      return s;
    };

    const run = (ctx: HookContext<SpfPolicy>, identity: 'mailfrom' | 'helo'): Promise<SpfCheckResult> => {
      const ip = ctx.session.client?.address ?? '';
      const receiver = options.authservId ?? ctx.session.mta ?? 'localhost';
      return checkSpf({ ip, sender: ctx.message?.sender?.address ?? '', helo: ctx.session.helo ?? '' }, { resolver, timeoutMs: options.deadline, receiver, identity }).then((r) => {
        results.inc({ identity, result: r.result });
        return r;
      });
    };

    /** The policies that want a check of this message (skip lists applied), with why the others do not. */
    const applicable = (ctx: HookContext<SpfPolicy>) => {
      const ip = ctx.session.client?.address;
      const sender = ctx.message?.sender?.address ?? '';
      return ctx.policies.filter((p) => skipOf(p.config)(ip, sender, ctx.session.auth !== undefined) === undefined);
    };

    const start = (ctx: HookContext<SpfPolicy>, policies: readonly AppliedPolicy<SpfPolicy>[], note: Note) => {
      // A local submission has no client IP: there is nothing to check.
      if (!ctx.session.client?.address || policies.length === 0) return;
      const nullSender = (ctx.message?.sender?.address ?? '') === '';
      // For a bounce the HELO identity is the only one RFC 7208 defines.
      if (nullSender && policies.every((p) => p.config.checkHelo === 'never')) return;
      note.mailFrom ??= run(ctx, nullSender ? 'helo' : 'mailfrom').then((r) => {
        Object.assign(note, { result: r.result, domain: r.domain, identity: r.identity, mechanism: r.mechanism });
        return r;
      });
      if (!nullSender && policies.some((p) => p.config.checkHelo === 'always') && ctx.session.helo) {
        note.helo ??= run(ctx, 'helo').then((r) => {
          note.heloResult = r.result;
          return r;
        });
      }
    };

    return {
      mailFrom(ctx) {
        // Start the DNS work as soon as the envelope is known; the verdict waits for end of message,
        // when the policies that apply (destination included) are final.
        const note: Note = {};
        ctx.message!.notes.set(note);
        start(ctx, applicable(ctx), note);
        return undefined;
      },

      async endOfMessage(ctx) {
        const message = ctx.message!;
        const note = message.notes.get<Note>() ?? {};
        const policies = applicable(ctx);
        if (policies.length === 0) return undefined;
        start(ctx, policies, note);
        if (!note.mailFrom) return undefined;
        const nullSender = (message.sender?.address ?? '') === '';
        const main = await note.mailFrom;
        const helo = note.helo ? await note.helo : undefined;
        const authenticated = ctx.session.auth !== undefined;

        let worst: { action: SpfAction; policy: string; check: SpfCheckResult } = { action: 'ignore', policy: '', check: main };
        for (const p of policies) {
          const c = p.config;
          const table = authenticated ? c.authenticated : nullSender ? { ...DEFAULT_MATRIX, ...c.helo } : { ...DEFAULT_MATRIX, ...c.mailFrom };
          const candidates: [SpfAction, SpfCheckResult][] = [[table[main.result] ?? 'ignore', main]];
          if (helo) candidates.push([c.helo[helo.result] ?? 'ignore', helo]);
          for (const [a, check] of candidates) if (SEVERITY[a] > SEVERITY[worst.action]) worst = { action: a, policy: p.name, check };
        }

        // One header of each kind per message, whatever the number of policies.
        const wantReceived = policies.some((p) => p.config.headers.receivedSpf);
        const wantAr = policies.some((p) => p.config.headers.authenticationResults);
        // Received-SPF carries the identity that decides (MAIL FROM, or HELO for a bounce); a HELO
        // check done as well shows in Authentication-Results, which holds several results by design.
        if (wantReceived) message.insertHeader(0, 'Received-SPF', main.receivedSpf);
        // Authentication-Results is the kernel's: one header with every plugin's results (dkim, dmarc…).
        if (wantAr) for (const r of [main, ...(helo ? [helo] : [])]) message.addAuthenticationResult(r.authResult, { authservId: options.authservId });

        if (worst.action === 'ignore') return undefined;
        actions.inc({ policy: worst.policy, action: worst.action });
        const policy = policies.find((p) => p.name === worst.policy)!.config;
        const values = { result: worst.check.result, domain: worst.check.domain, ip: ctx.session.client?.address ?? '', explanation: worst.check.explanation ?? '' };
        const reason = `${worst.policy}: SPF ${worst.check.result} for ${worst.check.domain} (${worst.check.identity})`;
        if (worst.action === 'tag') {
          message.addHeader(policy.tag.name, fillTemplate(policy.tag.value, values));
          return undefined;
        }
        if (worst.action === 'hold') return { action: 'quarantine', reason } satisfies Verdict;
        if (worst.action === 'tempfail') {
          return { action: 'tempfail', reason, reply: resolveReply(policy.tempReply, TEMP_REPLY, values) };
        }
        log.debug({ policy: worst.policy, result: worst.check.result }, 'SPF refusal');
        return { action: 'reject', reason, reply: resolveReply(policy.reply, REJECT_REPLY, values) };
      },
    };
  },
});
