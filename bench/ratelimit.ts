/**
 * The ratelimit case of `npm run bench`: rate-limit decisions against a real local Redis, as the
 * ratelimit plugin makes them for one message — 2 subjects (sender, client /24) × 2 windows (1 m,
 * 1 h) in one `rateLimit` call — with 1 and 50 decisions in flight. It reports decisions per second
 * and p50/p99 latency, and counts what reaches Redis through a counting TCP proxy and `INFO
 * commandstats`: one network round trip (one client write) and two script calls per decision.
 *
 * Usage: node bench/ratelimit.ts [--quick] [--json PATH]. Exit 0 when every check passed or was
 * skipped (no redis-server), 1 otherwise.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { RedisStore } from '../src/store/index.ts';
import { rateLimit, type RateRequest } from '../plugins/ratelimit/src/store/index.ts';
import { redisAvailable, startRedis } from '../test/helpers/redis.ts';
import { countingProxy } from './counting-proxy.ts';

const quick = process.argv.includes('--quick');
const jsonAt = process.argv.indexOf('--json');
const jsonPath = jsonAt > 0 ? process.argv[jsonAt + 1] : undefined;
const DECISIONS = quick ? 4_000 : 40_000;
const TARGET_PER_S = 20_000;

/** A process's CPU time (user + system) in seconds, from /proc. */
function cpuOf(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<number> {
  if (!redisAvailable()) {
    console.log('ratelimit bench: SKIP (redis-server not installed)');
    return 0;
  }
  // The tests' throwaway redis-server: loopback, a random port, a temporary directory, no persistence.
  const redis = await startRedis();
  const port = redis.port;
  const cli = (...args: string[]) => execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  try {
    const proxy = await countingProxy(port);
    const store = new RedisStore({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeout: 5_000 });
    await store.connect();
    const windows = [
      { windowMs: 60_000, slots: 12, limit: 1_000_000_000 },
      { windowMs: 3_600_000, slots: 12, limit: 1_000_000_000 },
    ];
    const requestsFor = (i: number): RateRequest[] => [
      { key: `rl:bench:sender:${i % 500}`, cost: 1, windows },
      { key: `rl:bench:clientIp/24/64:${i % 50}`, cost: 1, windows },
    ];
    // Warm-up: scripts loaded, connections and JIT warm.
    for (let i = 0; i < 2_000; i++) await rateLimit(store, requestsFor(i));

    // One round trip per decision: count client writes and script calls over sequential decisions.
    const M = 1_000;
    cli('CONFIG', 'RESETSTAT');
    proxy.reset();
    for (let i = 0; i < M; i++) await rateLimit(store, requestsFor(i));
    const writesPerDecision = proxy.writes() / M;
    const stats = cli('INFO', 'commandstats');
    const calls = Object.fromEntries([...stats.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1], Number(m[2])]));
    const scriptCalls = (calls.evalsha ?? 0) + (calls.eval ?? 0);
    // commandstats also counts the commands the scripts run inside Redis; only top-level ones matter here.
    const INSIDE_SCRIPTS = ['time', 'hmget', 'hget', 'hset', 'hsetnx', 'hdel', 'pexpire', 'persist', 'pttl', 'exists', 'hgetall', 'del'];
    const otherCalls = Object.entries(calls).filter(([k]) => !['evalsha', 'eval', 'config', 'info', ...INSIDE_SCRIPTS].includes(k));

    await store.close();
    proxy.close();
    // Throughput is measured on a direct connection: the counting proxy runs in this process and would halve it.
    const direct = new RedisStore({ url: `redis://127.0.0.1:${port}`, commandTimeout: 5_000 });
    await direct.connect();
    for (let i = 0; i < 2_000; i++) await rateLimit(direct, requestsFor(i));
    const rows: { inFlight: number; decisions: number; perSecond: number; p50: number; p99: number; nodeUs: number; redisUs: number }[] = [];
    for (const inFlight of [1, 50]) {
      const latencies: number[] = [];
      let next = 0;
      const redisCpu0 = cpuOf(redis.pid!);
      const nodeCpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (next < DECISIONS) {
            const i = next++;
            const s = performance.now();
            await rateLimit(direct, requestsFor(i));
            latencies.push(performance.now() - s);
          }
        }),
      );
      const elapsed = (performance.now() - t0) / 1000;
      const nodeCpu = process.cpuUsage(nodeCpu0);
      const redisUs = ((cpuOf(redis.pid!) - redisCpu0) / DECISIONS) * 1e6;
      const nodeUs = (nodeCpu.user + nodeCpu.system) / DECISIONS;
      latencies.sort((a, b) => a - b);
      rows.push({ inFlight, decisions: DECISIONS, perSecond: DECISIONS / elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), nodeUs, redisUs });
    }
    await direct.close();

    console.log('\nratelimit: decisions against a local Redis (2 subjects × 2 windows per decision, one rateLimit call)');
    console.log('in flight   decisions/s    p50 ms    p99 ms   node CPU µs/decision   redis CPU µs/decision');
    for (const r of rows) console.log(`${String(r.inFlight).padStart(9)}   ${r.perSecond.toFixed(0).padStart(11)}   ${r.p50.toFixed(3).padStart(7)}   ${r.p99.toFixed(3).padStart(7)}   ${r.nodeUs.toFixed(1).padStart(20)}   ${r.redisUs.toFixed(1).padStart(21)}`);
    console.log(`round trips per decision: ${writesPerDecision.toFixed(3)} client writes; script calls per decision: ${(scriptCalls / M).toFixed(3)}; other commands: ${otherCalls.length ? JSON.stringify(Object.fromEntries(otherCalls)) : 'none'}`);
    const best = rows.find((r) => r.inFlight === 50)!;
    const checks = [
      { name: `ratelimit: ≥ ${TARGET_PER_S} decisions/s per process (50 in flight)`, status: best.perSecond >= TARGET_PER_S ? 'PASS' : 'FAIL', value: Math.round(best.perSecond) },
      { name: 'ratelimit: exactly one network round trip per decision', status: writesPerDecision === 1 && otherCalls.length === 0 ? 'PASS' : 'FAIL', value: writesPerDecision },
      { name: 'ratelimit: one script call per subject (2 per decision)', status: scriptCalls === 2 * M ? 'PASS' : 'FAIL', value: scriptCalls / M },
    ];
    for (const c of checks) console.log(`${c.status}  ${c.name} (${c.value})`);
    if (jsonPath) {
      mkdirSync(dirname(jsonPath), { recursive: true });
      writeFileSync(jsonPath, `${JSON.stringify({ rows, writesPerDecision, scriptCallsPerDecision: scriptCalls / M, otherCalls: Object.fromEntries(otherCalls), checks }, null, 1)}\n`);
    }
    return checks.some((c) => c.status === 'FAIL') ? 1 : 0;
  } finally {
    await redis.stop();
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(`ratelimit bench: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  },
);
