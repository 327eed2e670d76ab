/**
 * SPF checks per second through checkSpf + createResolver against the loopback test DNS server
 * (test/helpers/dns.ts), with a cold cache (cache disabled: every check goes to DNS) and a warm
 * one (one priming check, then all from cache). The zone has a realistic record: two includes and
 * an mx mechanism, so a cold check costs 5 queries.
 *
 * Usage: node bench/spf.ts [--checks N] [--concurrency C]
 * @module
 */
import { checkSpf } from '../plugins/spf/src/check.ts';
import { createResolver } from '../src/dns/index.ts';
import { startDnsServer } from '../test/helpers/dns.ts';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const checks = arg('checks', 2000);
const concurrency = arg('concurrency', 20);

const dns = await startDnsServer({
  'example.org': { TXT: ['v=spf1 include:_spf1.example.org include:_spf2.example.org mx -all'], MX: [{ exchange: 'mx.example.org', priority: 10 }] },
  '_spf1.example.org': { TXT: ['v=spf1 ip4:198.51.100.0/24 -all'] },
  '_spf2.example.org': { TXT: ['v=spf1 ip6:2001:db8::/32 -all'] },
  'mx.example.org': { A: ['203.0.113.25'] },
});

async function run(label: string, cache: boolean): Promise<{ label: string; perSec: number; queries: number; p50: number; p99: number }> {
  // Cold: a fresh cacheless resolver per check, else concurrent checks would share in-flight
  // queries and the cold row would measure that de-duplication instead of DNS round trips.
  const shared = createResolver({ servers: [dns.address], timeoutMs: 1000, tries: 2 });
  const resolverFor = () => (cache ? shared : createResolver({ servers: [dns.address], timeoutMs: 1000, tries: 2, cache: false }));
  // The mx mechanism matches: every check walks both includes first, the most work a pass costs.
  const input = { ip: '203.0.113.25', sender: 'user@example.org', helo: 'mx.example.org' };
  if (cache) await checkSpf(input, { resolver: shared });
  const q0 = dns.queries();
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < checks) {
        const t = performance.now();
        const r = await checkSpf(input, { resolver: resolverFor() });
        latencies.push(performance.now() - t);
        if (r.result !== 'pass') throw new Error(`unexpected ${r.result}: ${r.receivedSpf}`);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))];
  return { label, perSec: checks / seconds, queries: dns.queries() - q0, p50: pct(50), p99: pct(99) };
}

const rows = [await run('cold (no cache)', false), await run('warm (cached)', true)];
await dns.close();

console.log(`${checks} checks, concurrency ${concurrency}, node ${process.version}`);
console.log('cache            checks/s   DNS queries   p50 ms   p99 ms');
for (const r of rows) {
  console.log(`${r.label.padEnd(16)} ${r.perSec.toFixed(0).padStart(8)}   ${String(r.queries).padStart(11)}   ${r.p50.toFixed(2).padStart(6)}   ${r.p99.toFixed(2).padStart(6)}`);
}
