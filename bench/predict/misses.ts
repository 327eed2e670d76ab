/**
 * `node bench/predict/misses.ts RESULT.json [--only id,id]`: what the takeovers a configuration missed
 * looked like, from `npm run eval:predict -- --json RESULT.json`. Per configuration and attack kind, the
 * missed incidents counted by how their attacker connected (the victim's own network and client, one new
 * network, a rotation), whether the mail client, the display name and the Reply-To changed, and their
 * size — so the next signal is chosen for the takeovers that are missed, not for those already caught.
 * @module
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Attacker {
  victimNetwork: boolean;
  nets: number[];
  client: number;
  name: number;
  replyTo: boolean;
}
interface Compromise {
  id: number;
  kind: string;
  messages: number;
  recipients: number;
  start: number;
  end: number;
}
interface Result {
  compromises: Compromise[];
  attackers?: (Attacker | null)[];
  configurations: { id: string; evaluation: { perCompromise: { id: number; kind: string; ttd: number | null }[] } }[];
}

const { values, positionals } = parseArgs({ options: { only: { type: 'string' } }, allowPositionals: true });
if (positionals.length !== 1) {
  console.error('usage: node bench/predict/misses.ts RESULT.json [--only id,id]');
  process.exit(2);
}
const result = JSON.parse(readFileSync(positionals[0], 'utf8')) as Result;
const only = values.only?.split(',');
const byId = new Map(result.compromises.map((c) => [c.id, c]));
const NAMES = ['usual', 'short', 'bare', 'changed'];

for (const config of result.configurations) {
  if (only && !only.includes(config.id)) continue;
  console.log(`\n${config.id}: missed takeovers`);
  const kinds = new Map<string, { id: number }[]>();
  for (const p of config.evaluation.perCompromise) if (p.ttd === null) kinds.set(p.kind, [...(kinds.get(p.kind) ?? []), p]);
  for (const [kind, missed] of kinds) {
    const tally = new Map<string, number>();
    const sizes: string[] = [];
    for (const m of missed) {
      const a = result.attackers?.[m.id];
      const c = byId.get(m.id)!;
      const how = a ? (a.victimNetwork ? 'victim network' : a.nets.length > 1 ? `rotating ${a.nets.length}` : 'new network') : '?';
      const key = `${how}; name ${a ? NAMES[a.name] : '?'}; ${a?.replyTo ? 'Reply-To' : 'no Reply-To'}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
      sizes.push(`${c.messages}m/${c.recipients}r/${Math.round((c.end - c.start) / 60_000)}min`);
    }
    console.log(`  ${kind}: ${missed.length} missed`);
    for (const [key, n] of [...tally].sort((x, y) => y[1] - x[1])) console.log(`    ${String(n).padStart(3)}  ${key}`);
    console.log(`    sizes: ${sizes.join(' ')}`);
  }
}
