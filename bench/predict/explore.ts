/**
 * `node bench/predict/explore.ts`: the predict plugin's arithmetic over the simulated traffic without the
 * kernel, for trying configurations quickly (about 35 s per configuration for 2,000 senders × 14 days,
 * against 80–100 s through the kernel). It calls the functions the plugin and the in-memory store run —
 * the field's schema, `messageAmount`, `profileRequest`, `profileCompute`, `seenCompute`,
 * `recipientHash`, `decide` — in the plugin's order, on one message at a time, so its flags are the
 * kernel run's (checked: the same figures for `recommended` on seed 1). `npm run eval:predict` stays the measurement of record.
 *
 * Each argument is a configuration: one `predict` field as JSON, or several joined by `+` (one policy
 * each, as the plugin sees two policies on one subject):
 *
 *   node bench/predict/explore.ts --seed 2 '{"count":"newRecipients","internalDomains":["example.com"],"timeframes":[1,5,10,60],"factor":2}+{"timeframes":[1,5,10,60],"factor":2.5}'
 *
 * The traffic holds issue 23's quiet kinds as the evaluation's does; `--new-per-kind 0` leaves them out.
 * @module
 */
import { parseArgs } from 'node:util';
import { decide } from '../../plugins/predict/src/estimate.ts';
import { boundSettings, countsNew, messageAmount, profileRequest, recipientHash, RECIPIENT_HASH_WIDTH } from '../../plugins/predict/src/index.ts';
import { predictField, predictOptions, type PredictPolicy } from '../../plugins/predict/src/schema.ts';
import { profileCompute } from '../../plugins/predict/src/store/profile.ts';
import { seenCompute } from '../../plugins/predict/src/store/seen.ts';
import { buildIndex, evaluate } from './metrics.ts';
import { MINUTE, generateTraffic, recipientAddresses } from './traffic.ts';

const { values, positionals } = parseArgs({ options: { seed: { type: 'string', default: '1' }, senders: { type: 'string', default: '2000' }, days: { type: 'string', default: '14' }, 'new-per-kind': { type: 'string' } }, allowPositionals: true });
if (positionals.length === 0) {
  console.error("usage: node bench/predict/explore.ts [--seed N] [--senders N] [--days N] [--new-per-kind N] 'FIELD-JSON[+FIELD-JSON…]' …");
  process.exit(2);
}
const traffic = generateTraffic({ seed: Number(values.seed), senders: Number(values.senders), days: Number(values.days), ...(values['new-per-kind'] !== undefined ? { newPerKind: Number(values['new-per-kind']) } : {}) });
const ix = buildIndex(traffic, 10 * MINUTE);
const options = predictOptions.parse({});
const recipientsOf = recipientAddresses(traffic);

/** The flags of one configuration: a list of policies on the subject `saslUser`, in order. */
function run(policies: PredictPolicy[]): Uint8Array {
  const flagged = new Uint8Array(traffic.n);
  const profiles = policies.map(() => traffic.senders.map(() => new Map<string, string>()));
  const memories = traffic.senders.map(() => undefined as string | undefined);
  const fresh = policies.some((c) => countsNew(c));
  for (let i = 0; i < traffic.n; i++) {
    const s = traffic.sender[i];
    const recipients = recipientsOf(i);
    let depth: number[] | undefined;
    if (fresh) {
      const seen = seenCompute(memories[s], recipients.map(recipientHash), options.recipientMemory, RECIPIENT_HASH_WIDTH);
      memories[s] = seen.text;
      depth = seen.result.depth;
    }
    for (let p = 0; p < policies.length; p++) {
      const c = policies[p];
      const hash = profiles[p][s];
      const computed = profileCompute(hash, profileRequest(options, c, traffic.logins[s], messageAmount(c, recipients, depth), traffic.t[i]), traffic.t[i]);
      for (const [field, value] of computed.fields) hash.set(field, value);
      for (const t of computed.result.timeframes) if (decide(t, boundSettings(c, t.minutes)).over) flagged[i] = 1;
    }
  }
  return flagged;
}

console.log(`seed ${values.seed}, ${values.senders} senders, ${values.days} days: ${traffic.n.toLocaleString('en')} messages, ${traffic.compromises.length} compromises`);
for (const arg of positionals) {
  const started = performance.now();
  const policies = arg.split('+').map((json) => predictField.parse({ by: 'saslUser', ...JSON.parse(json) }) as PredictPolicy);
  const e = evaluate(ix, run(policies));
  const kinds = Object.entries(e.byKind).map(([k, v]) => `${k} ${v.detected}/${v.total} (${v.medianTtd?.toFixed(2) ?? '—'})`).join(', ');
  console.log(`${arg}\n  detected ${e.detectedPct.toFixed(1)}%, median ${e.medianTtd?.toFixed(2) ?? '—'} min, p95 ${e.p95Ttd?.toFixed(1) ?? '—'}, FP ${e.fpPerDayPct.toFixed(3)}%/day (${e.fpTotal}) | ${kinds} | ${((performance.now() - started) / 1000).toFixed(0)} s`);
}
