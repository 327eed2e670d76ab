/**
 * The dmarc plugin: DMARC (RFC 7489) of each inbound message from the SPF and DKIM results the spf
 * and dkim plugins published for it — the RFC5322.From domain, the policy record at `_dmarc.<domain>`
 * or at its organizational domain (public suffix list), relaxed or strict alignment, `p`, `sp` and
 * `pct` — with a per-policy action for each disposition, skip lists, an optional
 * `Authentication-Results:` header and a note for other plugins; trusted ARC sealers (RFC 8617 §7.2) can
 * override a failing message's disposition to `none` (`trusted_forwarder`).
 * @module
 */
import { z } from 'zod';
import { NetworkList, definePlugin, fillTemplate, parseNetwork, replyConfigSchema, resolveReply, type HookContext, type Verdict } from 'themis-milter';
import { createResolver } from 'themis-milter/dns';
import type { SpfNote } from 'themis-plugin-spf';
import type { DkimNote } from 'themis-plugin-dkim';
import { authorDomain, evaluateDmarc, type DmarcEvaluation, type DmarcPolicyName, type DmarcRecord, type DmarcResultName } from './dmarc.ts';
import { arcOverride, newestSealer, trusts, type DmarcOverride } from './arc.ts';
import { dmarcCommand } from './commands.ts';
import { recordReport } from './report.ts';

export { arcOverride, parseAuthResults, type AuthResultEntry, type DmarcOverride } from './arc.ts';
export { DMARC_RESULTS, aligned, authorDomain, discoverRecord, evaluateDmarc, mailboxDomains, normalizeDomain, organizationalDomain, parseRecord, type DmarcEvaluation, type DmarcInput, type DmarcOptions, type DmarcPolicyName, type DmarcRecord, type DmarcResultName } from './dmarc.ts';

/**
 * What a disposition (or an error result) leads to: `ignore` (the note and headers only), `tag` (also
 * the tag header), `hold` (Postfix's hold queue), `tempfail` or `reject` (refused at end of message with the reply).
 */
export type DmarcAction = 'ignore' | 'tag' | 'hold' | 'tempfail' | 'reject';

/** What the actions are keyed by: the disposition of a failing message, or the error results. */
export type DmarcActionKey = DmarcPolicyName | 'temperror' | 'permerror';

const action = z.enum(['ignore', 'tag', 'hold', 'tempfail', 'reject']);
const headerName = z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, 'expected a header name');

/**
 * Defaults: the published policy is followed — `reject` refused, `quarantine` held, `none` left alone —
 * and the error results are ignored (a DNS failure or a broken From is no reason to refuse mail).
 */
export const DEFAULT_ACTIONS: Readonly<Record<DmarcActionKey, DmarcAction>> = { reject: 'reject', quarantine: 'hold', none: 'ignore', temperror: 'ignore', permerror: 'ignore' };

const DEFAULT_SKIP = { authenticated: true, clients: [] as string[], fromDomains: [] as string[] };
const DEFAULT_TAG = { name: 'X-Themis-DMARC', value: '{result}' };
const DEFAULT_HEADERS = { authenticationResults: false };

/** The `dmarc` policy field. */
export const dmarcField = z.strictObject({
  /** Disposition (or error result) → action, merged over {@link DEFAULT_ACTIONS}: `reject`, `quarantine`, `none` (of a failing message), `temperror`, `permerror`. */
  actions: z
    .strictObject({
      /** A failing message whose domain asks for `p=reject` (default `reject`). */
      reject: action.optional(),
      /** A failing message whose domain asks for `p=quarantine`, or `reject` left out by `pct` (default `hold`). */
      quarantine: action.optional(),
      /** A failing message whose domain asks for `p=none`, or `quarantine` left out by `pct` (default `ignore`). */
      none: action.optional(),
      /** The record or an aligned identifier could not be looked up (default `ignore`). */
      temperror: action.optional(),
      /** Several From headers or From domains (default `ignore`). */
      permerror: action.optional(),
    })
    .default({}),
  /** Refusal for `reject` (default `550 5.7.1 Email rejected per DMARC policy for {domain}`); placeholders `{result}`, `{domain}`, `{policy}`, `{disposition}`. */
  reply: replyConfigSchema.default({}),
  /** Refusal for `tempfail` (default `451 4.7.1 DMARC {result} for {domain}, try again later`). */
  tempReply: replyConfigSchema.default({}),
  /** Who is not checked: authenticated clients (default true), forwarder or relay networks and addresses, From domains (each with its subdomains). */
  skip: z
    .strictObject({
      /** Skip clients that authenticated (SASL), default true. */
      authenticated: z.boolean().default(true),
      /** Client networks and addresses (`192.0.2.0/24`, `2001:db8::1`): trusted forwarders, relays. */
      clients: z.array(z.string()).default([]),
      /** From domains not checked, each with its subdomains (`example.com` covers `mail.example.com`). */
      fromDomains: z.array(z.string().min(1)).default([]),
    })
    .default(DEFAULT_SKIP),
  /** The tag header for `tag` (default `X-Themis-DMARC: {result}`); placeholders as in `reply`. */
  tag: z.strictObject({ /** Header name. */ name: headerName.default('X-Themis-DMARC'), /** Header value template. */ value: z.string().default('{result}') }).default(DEFAULT_TAG),
  /** Which headers to add (default none): `authenticationResults` adds one `Authentication-Results:` with the `dmarc=` result. */
  headers: z.strictObject({ /** Add `Authentication-Results: <authserv-id>; dmarc=…`. */ authenticationResults: z.boolean().default(false) }).default(DEFAULT_HEADERS),
  /**
   * ARC (RFC 8617 §7.2): a failing message whose ARC chain passes (the dkim note's `arc`), last sealed by one of
   * `trustedSealers` (ARC-Seal `d=`, exact names; default none) whose ARC-Authentication-Results show `dmarc=pass`
   * for the From domain or an aligned DKIM or SPF pass, gets the disposition `none` (RFC 7489 `trusted_forwarder`).
   */
  arc: z.strictObject({ /** Sealing domains trusted to vouch for forwarded mail. */ trustedSealers: z.array(z.string().min(1)).default([]) }).default({ trustedSealers: [] }),
});

/** The `dmarc` field after validation. */
export type DmarcPolicy = z.infer<typeof dmarcField>;

/** Plugin-level options. */
export const dmarcOptions = z.strictObject({
  /** DNS servers (`'192.0.2.53'`, `'127.0.0.1:5353'`, `'[2001:db8::53]:53'`); default: the system's. */
  dnsServers: z.array(z.string().min(1)).optional(),
  /** Per-query DNS timeout, ms (default 2,000). */
  dnsTimeout: z.number().int().positive().default(2_000),
  /** Deadline of the record lookups of one message, ms (default 5,000): past it, the result is `temperror`. */
  deadline: z.number().int().positive().default(5_000),
  /** Cached DNS answers (honouring their TTLs), at most this many (default 10,000; 0 disables the cache). */
  cacheEntries: z.number().int().min(0).default(10_000),
  /** The authserv-id of `Authentication-Results` (default: the MTA's `{j}`, else `localhost`). */
  authservId: z.string().min(1).optional(),
  /** The draw in [0, 1) that decides `pct` sampling (default `Math.random`); set it in tests only. */
  random: z.custom<() => number>((v) => typeof v === 'function', 'expected a function returning a number in [0, 1)').optional(),
  /**
   * Aggregate report data (RFC 7489 §7.2) in the shared store, for `themis dmarc report` (default off):
   * `retentionDays` of data kept (default 31; each key expires a day after that), at most `maxRowsPerDay`
   * rows per header-from domain and day (default 10,000; beyond, counted without source IP).
   */
  reports: z
    .strictObject({
      /** Record the data (default false). */
      enabled: z.boolean().default(false),
      /** Days of data kept (default 31). */
      retentionDays: z.number().int().min(1).max(366).default(31),
      /** Most rows (source IP and results) per header-from domain and day (default 10,000). */
      maxRowsPerDay: z.number().int().min(1).max(1_000_000).default(10_000),
    })
    .default({ enabled: false, retentionDays: 31, maxRowsPerDay: 10_000 }),
});

/** Plugin-level options, validated. */
export type DmarcOptionsConfig = z.infer<typeof dmarcOptions>;

/**
 * The message note (`ctx.message.notes.of('dmarc')`), set at end of message once DMARC is evaluated
 * (absent when every applying policy skips the message).
 */
export interface DmarcNote {
  /** `pass`, `fail`, `none` (no From domain, no usable record, or spf or dkim did not check the message), `temperror`, `permerror` (several From headers or domains). */
  result: DmarcResultName;
  /** The RFC5322.From domain (empty when there is none). */
  domain: string;
  /** The policy the record asks for this domain (`p`, or `sp` for a subdomain under its organizational domain's record); `none` without one. */
  policy: DmarcPolicyName;
  /** What applies to this message: `none` for a pass, the policy for a fail — one step lower when `pct` sampling left it out. */
  disposition: DmarcPolicyName;
  /** Whether SPF (its MAIL FROM domain, passing) and DKIM (a passing signature's `d=`) aligned with the From domain. */
  alignment: { spf: boolean; dkim: boolean };
  /** The domain SPF passed for. */
  spfDomain?: string;
  /** The `d=` domains of the passing, aligned signatures. */
  dkimDomains: string[];
  /** The record applied (`domain` says where it was found). */
  record?: DmarcRecord;
  /** The record's `pct`. */
  pct?: number;
  /** Why, for anything but a plain pass or fail (`no DMARC record`, `not sampled (pct=50)`, `DNS: …`). */
  reason?: string;
  /** The RFC 8601 method result: `dmarc=pass (p=reject dis=none) header.from=example.com`. */
  authResult: string;
  /** Set when a trusted ARC sealer overrode a failing message's disposition to `none` (the result stays `fail`, `reason` is `arc`). */
  override?: DmarcOverride;
}

/** The plugin's error codes. */
export const DMARC_ERRORS = {
  THEMIS_DMARC_DEPENDENCY: 'DMARC needs the results of the {plugin} plugin: {reason}',
} as const;

/** A code of the dmarc plugin. */
export type DmarcErrorCode = keyof typeof DMARC_ERRORS;

/** RFC 7489 §10 / RFC 3463: 5.7.1 delivery not authorized; 4.7.1 for the temporary refusal. */
const REJECT_REPLY = { code: 550, enhanced: '5.7.1', text: 'Email rejected per DMARC policy for {domain}' };
const TEMP_REPLY = { code: 451, enhanced: '4.7.1', text: 'DMARC {result} for {domain}, try again later' };

const SEVERITY: Record<DmarcAction, number> = { ignore: 0, tag: 1, hold: 2, tempfail: 3, reject: 4 };

// RFC 8601 §2.2 pvalue: a domain-name may stand as is; anything else is a quoted-string.
const PVALUE_PLAIN = /^[A-Za-z0-9_+/=.-]+$/;
const pvalue = (v: string) => (PVALUE_PLAIN.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);
// eslint-disable-next-line no-control-regex
const comment = (v: string) => v.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ').replace(/[()\\]/g, '\\$&').slice(0, 120);

/** The `dmarc=` resinfo (RFC 8601 §2.7.1, RFC 7489 §11.2), e.g. `dmarc=pass (p=reject dis=none) header.from=example.com`. */
export function authResult(e: DmarcEvaluation, sealer?: string): string {
  const parts = [`dmarc=${e.result}`];
  const arc = e.override && sealer ? ` arc=pass as=${comment(sealer)}` : '';
  if (e.record) parts.push(`(p=${e.policy} dis=${e.disposition}${e.record.pct < 100 ? ` pct=${e.record.pct}` : ''}${arc})`);
  else if (e.reason) parts.push(`(${comment(e.reason)})`);
  if (e.domain) parts.push(`header.from=${pvalue(e.domain)}`);
  return parts.join(' ');
}

/** Compiled skip lists of one policy, built once per configuration. */
function skipper(config: DmarcPolicy) {
  const nets = new NetworkList();
  for (const c of config.skip.clients) {
    const network = parseNetwork(c);
    if (network !== undefined && !(network instanceof Error)) nets.add(network);
  }
  const domains = config.skip.fromDomains.map((d) => d.toLowerCase().replace(/^[@.]/, '').replace(/\.$/, ''));
  return {
    /** Before the From domain is known. */
    client: (ip: string | undefined, authenticated: boolean) => {
      if (authenticated && config.skip.authenticated) return 'authenticated';
      if (ip && nets.has(ip)) return 'listed client';
      return undefined;
    },
    from: (domain: string) => (domain && domains.some((d) => domain === d || domain.endsWith(`.${d}`)) ? 'listed From domain' : undefined),
  };
}

/** The From domain as the skip list and the deadline's result see it: the author domain, parsed as the evaluation parses it (a display name never counts). */
function fromDomainOf(headers: readonly { name: string; value: string }[]): string {
  const author = authorDomain(headers);
  // Several domains (a permerror) are never skipped for the one listed among them.
  return 'result' in author ? '' : author.domain;
}

export default definePlugin({
  name: 'dmarc',
  version: '0.1.0',
  kernel: '^1',
  claims: { field: 'dmarc', schema: dmarcField },
  options: dmarcOptions,
  // After spf (40) and dkim (35) at end of message: their notes are set when this plugin's hook runs.
  priority: 30,
  modifies: ['headers'],
  // Its result joins spf's and dkim's in the kernel's one Authentication-Results header.
  authenticates: true,
  errors: DMARC_ERRORS,
  // The kernel refuses to load dmarc without them (THEMIS_ERR_PLUGIN_DEPENDENCY) and sets them up first.
  dependencies: { spf: '^1.0.0', dkim: '^0.1.0' },
  observes: ['header'],
  commands: { dmarc: dmarcCommand },
  setup({ options, metrics, log, error, store }) {
    const resolver = createResolver({ servers: options.dnsServers, timeoutMs: options.dnsTimeout, cache: options.cacheEntries > 0 ? { maxEntries: options.cacheEntries } : false });
    const results = metrics.counter({ name: 'results_total', help: 'DMARC results, one per message evaluated', labelNames: ['result'] });
    const actions = metrics.counter({ name: 'actions_total', help: 'Actions taken on DMARC results, by policy and action', labelNames: ['policy', 'action'] });
    const skips = new WeakMap<DmarcPolicy, ReturnType<typeof skipper>>();
    const skipOf = (p: DmarcPolicy) => {
      let s = skips.get(p);
      if (!s) skips.set(p, (s = skipper(p)));
      return s;
    };
    // Said once per process, not per message: a policy enables dmarc without spf or dkim.
    const warned = new Set<string>();
    const warnOnce = (plugin: 'spf' | 'dkim', policy: string) => {
      if (warned.has(`${plugin}:${policy}`)) return;
      warned.add(`${plugin}:${policy}`);
      const e = error('THEMIS_DMARC_DEPENDENCY', { plugin, reason: `policy ${policy} enables dmarc, but ${plugin} did not check a message it applies to (no ${plugin} field in the policy, or ${plugin}'s skip lists): DMARC is not evaluated for such messages (result none)` });
      log.warn({ code: e.code, policy, plugin }, e.message);
    };

    /** The policies that evaluate this message (skip lists applied). */
    const applicable = (ctx: HookContext<DmarcPolicy>) => {
      const ip = ctx.session.client?.address;
      const authenticated = ctx.session.auth !== undefined;
      const from = fromDomainOf(ctx.message!.headers);
      return ctx.policies.filter((p) => skipOf(p.config).client(ip, authenticated) === undefined && skipOf(p.config).from(from) === undefined);
    };

    const evaluate = async (ctx: HookContext<DmarcPolicy>, spf: SpfNote | undefined, dkim: DkimNote | undefined): Promise<DmarcEvaluation> => {
      const headers = ctx.message!.headers;
      // spf starts at MAIL and may still be looking up: its promise is the result.
      let spfResult: { result: string; domain?: string } | undefined;
      if (spf?.mailFrom) {
        try {
          const r = await spf.mailFrom;
          spfResult = { result: r.result, domain: r.domain };
        } catch {
          spfResult = { result: 'temperror', domain: spf.domain };
        }
      } else if (spf?.result) spfResult = { result: spf.result, domain: spf.domain };
      const dkimResults = (dkim?.results ?? []).map((r) => ({ domain: r.domain, result: r.result }));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), options.deadline);
        timer.unref?.();
      });
      const run = evaluateDmarc({ headers, ...(spfResult ? { spf: spfResult } : {}), dkim: dkimResults }, { resolver, ...(options.random ? { random: options.random } : {}) });
      const outcome = await Promise.race([run, late]);
      clearTimeout(timer);
      if (outcome !== 'late') return outcome;
      return { result: 'temperror', domain: fromDomainOf(headers), policy: 'none', disposition: 'none', alignment: { spf: false, dkim: false }, dkimDomains: [], reason: 'deadline exceeded' };
    };

    return {
      async endOfMessage(ctx) {
        const message = ctx.message!;
        const policies = applicable(ctx);
        if (policies.length === 0) return undefined;
        const spf = message.notes.of<SpfNote>('spf');
        const dkim = message.notes.of<DkimNote>('dkim');
        // Without both results DMARC would fail mail that passes: it is not evaluated (result none).
        // A local submission (no client address) has no SPF to check: nothing to warn about.
        const local = !ctx.session.client?.address;
        const missing = [...(!spf?.mailFrom && !spf?.result ? (['spf'] as const) : []), ...(!dkim?.verified ? (['dkim'] as const) : [])];
        if (!local) for (const plugin of missing) for (const p of policies) warnOnce(plugin, p.name);

        const e: DmarcEvaluation = missing.length
          ? { result: 'none', domain: fromDomainOf(message.headers), policy: 'none', disposition: 'none', alignment: { spf: false, dkim: false }, dkimDomains: [], reason: `${missing.join(' and ')} not checked` }
          : await evaluate(ctx, spf, dkim);
        // A trusted ARC sealer's results (arc.ts): the disposition overridden to none, the result kept.
        const sealer = newestSealer(dkim?.arc);
        const trusting = policies.filter((p) => trusts(p.config.arc.trustedSealers, sealer));
        const published = e.disposition;
        const override = trusting.length ? arcOverride(e, dkim?.arc, trusting.flatMap((p) => p.config.arc.trustedSealers)) : undefined;
        if (override) Object.assign(e, { disposition: 'none', reason: 'arc', override });
        results.inc({ result: e.result });
        const note: DmarcNote = { ...e, authResult: authResult(e, sealer) };
        message.notes.set(note);
        // Aggregate report data (report.ts), in the background: the store never delays nor changes the verdict.
        if (options.reports.enabled) void recordReport(store, options.reports, e, ctx.session.client?.address, spf, dkim, log);

        // Into the kernel's one Authentication-Results per message, after spf's and dkim's results.
        if (policies.some((p) => p.config.headers.authenticationResults)) message.addAuthenticationResult(note.authResult, { authservId: options.authservId });

        const key: DmarcActionKey | undefined = e.result === 'fail' ? published : e.result === 'temperror' || e.result === 'permerror' ? e.result : undefined;
        if (!key) return undefined;
        // The override applies to the policies that trust the sealer; the others act on the published disposition.
        let worst: { action: DmarcAction; policy: string; key: DmarcActionKey } = { action: 'ignore', policy: '', key };
        for (const p of policies) {
          const k: DmarcActionKey = override && trusting.includes(p) ? 'none' : key;
          const a = { ...DEFAULT_ACTIONS, ...p.config.actions }[k] ?? 'ignore';
          if (SEVERITY[a] > SEVERITY[worst.action]) worst = { action: a, policy: p.name, key: k };
        }
        if (worst.action === 'ignore') return undefined;
        actions.inc({ policy: worst.policy, action: worst.action });
        const policy = policies.find((p) => p.name === worst.policy)!.config;
        const disposition = e.result === 'fail' ? (worst.key as DmarcPolicyName) : e.disposition;
        const values = { result: e.result, domain: e.domain, policy: e.policy, disposition };
        const reason = `${worst.policy}: DMARC ${e.result}${e.domain ? ` for ${e.domain}` : ''}${e.result === 'fail' ? ` (p=${e.policy} dis=${disposition})` : ''}`;
        const detail = `${note.authResult}${e.reason ? `; ${e.reason}` : ''}; spf=${e.spfDomain ?? 'none'} dkim=${(dkim?.domains ?? []).join(',') || 'none'}`;
        if (worst.action === 'tag') {
          message.addHeader(policy.tag.name, fillTemplate(policy.tag.value, values));
          return undefined;
        }
        if (worst.action === 'hold') return { action: 'quarantine', reason, detail } satisfies Verdict;
        if (worst.action === 'tempfail') return { action: 'tempfail', reason, detail, reply: resolveReply(policy.tempReply, TEMP_REPLY, values) };
        log.debug({ policy: worst.policy, result: e.result, domain: e.domain }, 'DMARC refusal');
        return { action: 'reject', reason, detail, reply: resolveReply(policy.reply, REJECT_REPLY, values) };
      },
    };
  },
});
