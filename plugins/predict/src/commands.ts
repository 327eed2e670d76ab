/**
 * `themis predict show|reset <subject>`: a subject's learned profile per timeframe (count now,
 * learned normal, bound), and forgetting it — run against the configured store, like `themis limits`.
 * @module
 */
import { parseArgs } from 'node:util';
import type { PluginCommand } from 'themis-milter';
import { decide, explain } from './estimate.ts';
import { profileUpdate } from './store/index.ts';
import { messageTraits, CLIENT_TRAIT, DISPLAY_NAME_TRAIT, HOURS_TRAIT, NETWORK_TRAIT, REPLY_TO_TRAIT, TLS_TRAIT } from './signals.ts';

/** The traits' names in `show`. */
const TRAIT_WORDS: Readonly<Record<string, string>> = { [NETWORK_TRAIT]: 'networks', [CLIENT_TRAIT]: 'mail clients', [REPLY_TO_TRAIT]: 'Reply-To settings', [DISPLAY_NAME_TRAIT]: 'display names', [TLS_TRAIT]: 'SASL/TLS fingerprints', [HOURS_TRAIT]: 'slots of the week' };
import type { PredictOptions, PredictPolicy } from './schema.ts';

const USAGE = `Usage: themis predict show <subject> [--policy NAME] [--json]
       themis predict reset <subject> [--policy NAME] [--yes]

show   the learned profile of a subject (a SASL login, a sender… as the policy's \`by\` says; a composite
       as value|value) per timeframe: the count in the last T minutes, the learned normal and the bound.
reset  forgets the profile: the subject learns again from scratch (asks first unless --yes).
--policy limits it to one policy with a \`predict\` field (default: every one).
Global: --config PATH, --redis-url URL, --redis-password PW.
`;

/** The `themis predict` command. */
export const predictCommand: PluginCommand<PredictPolicy, PredictOptions> = {
  summary: 'a subject’s learned rate profile per timeframe (show), or forget it (reset)',
  async run(args, ctx) {
    let parsed;
    try {
      parsed = parseArgs({ args, options: { policy: { type: 'string' }, json: { type: 'boolean' }, yes: { type: 'boolean', short: 'y' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    } catch (err) {
      ctx.err(`themis predict: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    const { values, positionals } = parsed;
    if (values.help) {
      ctx.out(USAGE);
      return 0;
    }
    const [sub, subject] = positionals;
    if ((sub !== 'show' && sub !== 'reset') || !subject || positionals.length > 2) {
      ctx.err(USAGE);
      return 2;
    }
    const policies = ctx.policies.filter((p) => values.policy === undefined || p.name === values.policy);
    if (policies.length === 0) {
      ctx.err(`themis predict: ${values.policy ? `no policy ${values.policy} with a predict field` : 'no policy has a predict field'} in ${ctx.configFile ?? 'the configuration'}\n`);
      return 1;
    }
    const { profileKey, profileRequest, boundSettings, recipientMemoryKey, RECIPIENT_HASH_WIDTH, COUNT_WORDS, countsNew } = await import('./index.ts');
    const value = subject.toLowerCase();
    if (sub === 'reset') {
      if (!values.yes) {
        ctx.err(`themis predict reset: this forgets what was learned of ${value} in ${policies.map((p) => p.name).join(', ')}; run again with --yes\n`);
        return 1;
      }
      let removed = 0;
      const keys = new Set<string>();
      for (const p of policies) {
        keys.add(profileKey(ctx.options.keyPrefix, p.config, value));
        if (countsNew(p.config)) keys.add(recipientMemoryKey(ctx.options.keyPrefix, p.config, value));
      }
      for (const key of keys) if (await ctx.store.delete(key)) removed++;
      ctx.out(`${value}: ${removed > 0 ? `profile forgotten (${removed} key${removed === 1 ? '' : 's'})` : 'nothing was learned'}\n`);
      return 0;
    }
    const report = [];
    for (const p of policies) {
      // With signals, the traits are read too (a value no message shows: only the summary counts).
      const inspect = profileRequest(ctx.options, p.config, value, 0, ctx.options.now?.(), true);
      const s = p.config.signals;
      if (s) inspect.traits = messageTraits('-', { id: '-' }, { ...(s.replyTo ? { replyTo: { id: '-' } } : {}), ...(s.displayName ? { displayName: { id: '-' } } : {}), ...(s.tls ? { tls: { id: '-' } } : {}), ...(s.hours ? { hours: { id: '-' } } : {}) }, ctx.options.youngHours);
      const [result] = await profileUpdate(ctx.store, [inspect]);
      // `young`: values that appeared within youngHours, still judged as new (not for the slots of the week, which are never new).
      const traits = result.traits?.map((t) => ({ trait: TRAIT_WORDS[t.name] ?? t.name, kept: t.size, activeHours: t.total, newValues: t.distinct, ...(t.name === HOURS_TRAIT ? {} : { young: t.youngValues }) }));
      const timeframes = result.timeframes.map((t) => ({ ...decide(t, boundSettings(p.config, t.minutes)), history: t.history }));
      // How many recipients the subject's memory holds (new recipients only).
      const memory = countsNew(p.config) ? ((await ctx.store.get(recipientMemoryKey(ctx.options.keyPrefix, p.config, value)))?.length ?? 0) / RECIPIENT_HASH_WIDTH : undefined;
      report.push({ policy: p.name, subject: value, by: p.config.spec.name, count: p.config.count, estimator: p.config.estimator, action: p.config.shadow ? `${p.config.action} (shadow)` : p.config.action, ...(memory === undefined ? {} : { rememberedRecipients: memory }), ...(traits ? { signals: traits } : {}), timeframes });
    }
    if (values.json) {
      ctx.out(`${JSON.stringify(report, null, 2)}\n`);
      return 0;
    }
    for (const r of report) {
      const memory = r.rememberedRecipients === undefined ? '' : `, ${r.rememberedRecipients} recipients remembered`;
      ctx.out(`${r.subject} in policy ${r.policy} (by ${r.by}, ${COUNT_WORDS[r.count]}, ${r.estimator}, action ${r.action}${memory}):\n`);
      for (const t of r.timeframes) ctx.out(`  ${String(t.minutes).padStart(4)} min: ${explain(t, COUNT_WORDS[r.count])}${t.over ? '  — OVER' : ''}\n`);
      for (const t of r.signals ?? []) ctx.out(`  ${t.trait}: ${t.kept} known, ${t.newValues} new in ${t.activeHours} active hours (decayed)${t.young ? `; ${t.young} appeared in the last ${ctx.options.youngHours} h, still new` : ''}\n`);
    }
    return 0;
  },
};
