/**
 * Issue 19: is the store's hand-made script batch (`ScriptBatch` in src/store/redis.ts, reached through
 * `RedisStore.scripts`) measurably faster than what the clients offer on their public API? Side by side,
 * against a real local redis-server, interleaved (every round runs every path, the order rotated):
 *
 * - A  the hand-made path, through its public route: `RedisStore#atomic` (an atomic one-key operation
 *      from `defineAtomicOperation`, sent as one `ScriptBatch`, one socket write). `A.pipeline` is
 *      ioredis' public `pipeline()` + `evalsha`, the public-API equivalent of a hand-made batch;
 * - B  ioredis with `enableAutoPipelining: true`, the script as a `defineCommand` (EVALSHA, EVAL after
 *      NOSCRIPT), one call per caller;
 * - C  ioredis as it comes (no auto-pipelining), the same `defineCommand`;
 * - D  the official `redis` client (node-redis), the script as a `defineScript`; it writes every
 *      command issued in one tick in one write.
 *
 * Cases: `sliding` — a self-contained ~40-line sliding-window limiter on one hash (3 HGET, HSET of 3
 * fields, PEXPIRE), of the rate limiter's weight, defined as an atomic operation; every raw path runs
 * the operation's own validate/encode/decode around its call, so all paths do the same work;
 * `increment` — `RedisStore#increment` (the store's generic path: an ioredis `defineCommand` without
 * auto-pipelining, behind `run()`) against the same INCRBY+PEXPIRE script on B, C, D.
 *
 * Loads: 1, 10 and 100 concurrent callers each with one call in flight; `batch20`: one caller issuing
 * 20 calls in the same tick (as the rate limiter does for one message with many subjects) and awaiting
 * them all; `batch20x10`: ten such callers. Latency is per call, or per batch of 20 for the batch loads
 * (what the message waits for). Ratios are taken within each round against the case's reference path
 * (medians of the per-round ratios, with their range: a range that does not straddle 1 is a consistent
 * difference).
 *
 * Usage: node --conditions=themis-source bench/store-pipelining.ts [--quick] [--rounds N] [--json PATH]
 * Writes bench/results/store-pipelining.json by default.
 * @module
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { dirname } from 'node:path';
import { Redis } from 'ioredis';
import { createClient, defineScript } from 'redis';
import { RedisStore, defineAtomicOperation, invalidAtomicArgument, type AtomicArgument } from '../src/store/index.ts';
import { redisAvailable, startRedis, type RedisServer } from '../test/helpers/redis.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const opt = (name: string) => {
  const at = argv.indexOf(name);
  return at >= 0 ? argv[at + 1] : undefined;
};
const ROUNDS = Number(opt('--rounds') ?? (quick ? 5 : 9));
const MEASURE_MS = quick ? 150 : 500;
const WARMUP_MS = quick ? 50 : 200;
const JSON_PATH = opt('--json') ?? new URL('./results/store-pipelining.json', import.meta.url).pathname;
const KEYS = 10_000;

// ---------------------------------------------------------------------------------------------------
// The scripts
// ---------------------------------------------------------------------------------------------------

/**
 * A sliding-window limiter on one hash (the weight of the rate limiter's script): the window id `w`,
 * the current count `c` and the previous window's `p`. ARGV: now (ms), window (ms), limit, cost, ttl
 * (ms). Reply: { allowed (1/0), remaining, retry after (ms) }.
 */
const SLIDING_LUA = `local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local id = math.floor(now / window)
local stored = tonumber(redis.call('HGET', key, 'w'))
local cur = tonumber(redis.call('HGET', key, 'c')) or 0
local prev = tonumber(redis.call('HGET', key, 'p')) or 0
if stored and stored ~= id then
  if stored == id - 1 then
    prev = cur
  else
    prev = 0
  end
  cur = 0
end
local elapsed = (now - id * window) / window
local used = prev * (1 - elapsed) + cur
local allowed = 0
if used + cost <= limit then
  cur = cur + cost
  used = used + cost
  allowed = 1
end
redis.call('HSET', key, 'w', id, 'c', cur, 'p', prev)
redis.call('PEXPIRE', key, ttl)
local retry = 0
if allowed == 0 then
  retry = math.ceil((1 - elapsed) * window)
end
local remaining = math.floor(limit - used)
if remaining < 0 then
  remaining = 0
end
return { allowed, remaining, retry }`;

/** The same script as the store's `themisIncrement` (INCRBY, then PEXPIRE when a TTL is given). */
const INCREMENT_LUA = `local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return v`;

/** A call of the sliding-window operation, and its result. */
interface SlidingArgs {
  now: number;
  windowMs: number;
  limit: number;
  cost: number;
  ttlMs: number;
}
interface SlidingResult {
  allowed: boolean;
  remaining: number;
  retryAfterMs: number;
}

// ---------------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------------

/** One way of making script calls: `one` makes one, `many` makes several issued in the same tick. */
interface Path {
  name: string;
  what: string;
  one(i: number): Promise<unknown>;
  many(first: number, n: number): Promise<unknown>;
  close(): Promise<void>;
}

/** `many` as calls issued in the same tick, awaited together. */
const sameTick =
  (one: (i: number) => Promise<unknown>) =>
  (first: number, n: number): Promise<unknown> => {
    const all = new Array<Promise<unknown>>(n);
    for (let k = 0; k < n; k++) all[k] = one(first + k);
    return Promise.all(all);
  };

/** A pipeline's results, or its first error. */
function pipelineReplies(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new Error('Connection is closed.');
  return results.map(([err, reply]) => {
    if (err) throw err;
    return reply;
  });
}

type ScriptClient = Redis & Record<string, (key: string, ...args: (string | number)[]) => Promise<unknown>>;

async function ioredis(port: number, autoPipelining: boolean, commands: Record<string, string>): Promise<ScriptClient> {
  const client = new Redis({ host: '127.0.0.1', port, enableAutoPipelining: autoPipelining, lazyConnect: true, maxRetriesPerRequest: 0 });
  for (const [name, lua] of Object.entries(commands)) client.defineCommand(name, { numberOfKeys: 1, lua });
  await client.connect();
  return client as ScriptClient;
}

async function nodeRedis(port: number, name: string, lua: string) {
  const client = createClient({
    url: `redis://127.0.0.1:${port}`,
    scripts: {
      [name]: defineScript({
        SCRIPT: lua,
        NUMBER_OF_KEYS: 1,
        parseCommand(parser: { pushKey(k: string): void; push(...a: string[]): void }, key: string, ...args: string[]) {
          parser.pushKey(key);
          parser.push(...args);
        },
        transformReply: undefined as unknown as () => unknown,
      }),
    },
  });
  client.on('error', (err: Error) => console.error(`node-redis: ${err.message}`));
  await client.connect();
  return client as unknown as { close(): Promise<void> } & Record<string, (key: string, ...args: string[]) => Promise<unknown>>;
}

/** A case: its paths, the reference the ratios are against, and a check of one reply. */
interface Case {
  name: string;
  what: string;
  reference: string;
  paths: Path[];
  missing: { name: string; why: string }[];
}

async function slidingCase(port: number): Promise<Case> {
  const keys = Array.from({ length: KEYS }, (_, i) => `bench:sw:${i}`);
  const op = defineAtomicOperation<SlidingArgs, SlidingResult, 'hash'>({
    name: 'BENCH.SLIDING',
    type: 'hash',
    lua: SLIDING_LUA,
    validate(args) {
      if (!(args.cost >= 0)) throw invalidAtomicArgument('BENCH.SLIDING', 'cost must be ≥ 0');
    },
    // The store's clock is Redis' TIME only inside the operation's script; this one takes `now` from the caller.
    encode: (args) => [args.now, args.windowMs, args.limit, args.cost, args.ttlMs],
    decode(reply) {
      if (!Array.isArray(reply) || reply.length !== 3 || Number(reply[0]) !== 1) throw new Error(`sliding: unexpected reply ${JSON.stringify(reply)}`);
      return { allowed: Number(reply[0]) === 1, remaining: Number(reply[1]), retryAfterMs: Number(reply[2]) };
    },
    memory() {
      throw new Error('not used by this bench');
    },
  });
  // A limit no call reaches: every call writes (the common case of a rate limiter).
  const args = (): SlidingArgs => ({ now: Date.now(), windowMs: 60_000, limit: 1_000_000_000, cost: 1, ttlMs: 120_000 });
  const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'themis:' });
  await store.connect(5000);
  const prefixed = keys.map((k) => store.keyPrefix + k);
  // Every raw path does what the store does around the script: validate, encode, decode.
  const call = async (i: number, send: (key: string, argv: readonly AtomicArgument[]) => Promise<unknown>) => {
    const a = args();
    op.validate!(a, 0);
    return op.decode(await send(prefixed[i % KEYS], op.encode(a, undefined)), a);
  };
  const paths: Path[] = [];
  const missing: Case['missing'] = [];

  if (typeof (store as Partial<RedisStore>).atomic === 'function') {
    const one = async (i: number) => (await store.atomic(op, [{ key: keys[i % KEYS], args: args() }]))[0];
    paths.push({
      name: 'A.atomic',
      what: 'RedisStore#atomic (the hand-made ScriptBatch)',
      one,
      many: (first, n) => store.atomic(op, Array.from({ length: n }, (_, k) => ({ key: keys[(first + k) % KEYS], args: args() }))),
      close: () => store.close(),
    });
  } else {
    await store.close();
    missing.push({ name: 'A.atomic', why: 'RedisStore has no atomic(): the hand-made ScriptBatch has no public route in this tree' });
  }

  const plain = await ioredis(port, false, {});
  await plain.script('LOAD', SLIDING_LUA);
  paths.push({
    name: 'A.pipeline',
    what: 'ioredis pipeline() + evalsha (public-API batch)',
    one: (i) => call(i, async (key, argv) => pipelineReplies(await plain.pipeline().evalsha(op.sha, 1, key, ...argv).exec())[0]),
    async many(first, n) {
      const all = Array.from({ length: n }, args);
      all.forEach((a, k) => op.validate!(a, k));
      const p = plain.pipeline();
      for (let k = 0; k < n; k++) p.evalsha(op.sha, 1, prefixed[(first + k) % KEYS], ...op.encode(all[k], undefined));
      return pipelineReplies(await p.exec()).map((reply, k) => op.decode(reply, all[k]));
    },
    close: async () => void (await plain.quit()),
  });

  const auto = await ioredis(port, true, { benchSliding: SLIDING_LUA });
  const autoOne = (i: number) => call(i, (key, argv) => auto.benchSliding(key, ...argv));
  paths.push({ name: 'B.ioredis-auto', what: 'ioredis enableAutoPipelining, defineCommand', one: autoOne, many: sameTick(autoOne), close: async () => void (await auto.quit()) });

  const def = await ioredis(port, false, { benchSliding: SLIDING_LUA });
  const defOne = (i: number) => call(i, (key, argv) => def.benchSliding(key, ...argv));
  paths.push({ name: 'C.ioredis', what: 'ioredis default, defineCommand (EVALSHA per call)', one: defOne, many: sameTick(defOne), close: async () => void (await def.quit()) });

  const nr = await nodeRedis(port, 'benchSliding', SLIDING_LUA);
  const nrOne = (i: number) => call(i, (key, argv) => nr.benchSliding(key, ...argv.map(String)));
  paths.push({ name: 'D.node-redis', what: 'redis (node-redis) defineScript', one: nrOne, many: sameTick(nrOne), close: () => nr.close() });

  return { name: 'sliding', what: 'self-contained sliding-window Lua (3 HGET, HSET 3 fields, PEXPIRE), as an atomic operation', reference: paths[0].name, paths, missing };
}

async function incrementCase(port: number): Promise<Case> {
  const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'themis:' });
  await store.connect(5000);
  const keys = Array.from({ length: KEYS }, (_, i) => `bench:inc:${i}`);
  const prefixed = keys.map((k) => store.keyPrefix + k);
  const TTL = '120000';
  const check = (v: unknown) => {
    if (!(Number(v) >= 1)) throw new Error(`increment: unexpected reply ${JSON.stringify(v)}`);
    return v;
  };
  const paths: Path[] = [];
  const storeOne = async (i: number) => check(await store.increment(keys[i % KEYS], 1, 120_000));
  paths.push({ name: 'A.store', what: 'RedisStore#increment (defineCommand behind run(), no auto-pipelining)', one: storeOne, many: sameTick(storeOne), close: () => store.close() });

  const auto = await ioredis(port, true, { benchIncrement: INCREMENT_LUA });
  const autoOne = async (i: number) => check(await auto.benchIncrement(prefixed[i % KEYS], 1, TTL));
  paths.push({ name: 'B.ioredis-auto', what: 'ioredis enableAutoPipelining, defineCommand', one: autoOne, many: sameTick(autoOne), close: async () => void (await auto.quit()) });

  const def = await ioredis(port, false, { benchIncrement: INCREMENT_LUA });
  const defOne = async (i: number) => check(await def.benchIncrement(prefixed[i % KEYS], 1, TTL));
  paths.push({ name: 'C.ioredis', what: 'ioredis default, defineCommand (EVALSHA per call)', one: defOne, many: sameTick(defOne), close: async () => void (await def.quit()) });

  const nr = await nodeRedis(port, 'benchIncrement', INCREMENT_LUA);
  const nrOne = async (i: number) => check(await nr.benchIncrement(prefixed[i % KEYS], '1', TTL));
  paths.push({ name: 'D.node-redis', what: 'redis (node-redis) defineScript', one: nrOne, many: sameTick(nrOne), close: () => nr.close() });

  return { name: 'increment', what: "RedisStore#increment, the store's generic script path, vs the same INCRBY+PEXPIRE script", reference: 'A.store', paths, missing: [] };
}

// ---------------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------------

interface Load {
  name: string;
  callers: number;
  /** Calls per operation: 1, or n issued in the same tick. */
  batch: number;
}

const LOADS: Load[] = [
  { name: 'c1', callers: 1, batch: 1 },
  { name: 'c10', callers: 10, batch: 1 },
  { name: 'c100', callers: 100, batch: 1 },
  { name: 'batch20', callers: 1, batch: 20 },
  { name: 'batch20x10', callers: 10, batch: 20 },
];

interface Sample {
  callsPerS: number;
  /** µs, per call (per batch for the batch loads). */
  p50: number;
  p99: number;
  ops: number;
  /** CPU time per call, µs: this process (the client: user + system, GC included), and redis-server (INFO cpu). */
  clientCpuUs: number;
  serverCpuUs: number;
}

/** redis-server's CPU time so far, µs (INFO cpu, read on a connection of its own). */
let serverCpu: () => Promise<number> = async () => NaN;

let counter = 0;

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function measure(path: Path, load: Load, ms: number): Promise<Sample> {
  const lat: number[] = [];
  const server0 = await serverCpu();
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + ms;
  const loop = async () => {
    while (performance.now() < end) {
      const first = counter;
      counter += load.batch;
      const t = performance.now();
      await (load.batch === 1 ? path.one(first) : path.many(first, load.batch));
      lat.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: load.callers }, loop));
  const elapsed = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  const server1 = await serverCpu();
  const calls = lat.length * load.batch;
  const sorted = Float64Array.from(lat).sort();
  return {
    callsPerS: (calls * 1000) / elapsed,
    p50: percentile(sorted, 0.5) * 1000,
    p99: percentile(sorted, 0.99) * 1000,
    ops: lat.length,
    clientCpuUs: (cpu.user + cpu.system) / calls,
    serverCpuUs: (server1 - server0) / calls,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

interface Row {
  case: string;
  load: string;
  path: string;
  what: string;
  rounds: Sample[];
  median: { callsPerS: number; p50: number; p99: number; clientCpuUs: number; serverCpuUs: number };
  /** Medians (and ranges) of the per-round ratios path / reference. */
  vsReference: { callsPerS: number; callsPerSRange: [number, number]; p50: number; p99: number; clientCpuUs: number; clientCpuUsRange: [number, number] };
}

async function runCase(c: Case): Promise<Row[]> {
  const rows: Row[] = [];
  for (const load of LOADS) {
    for (const p of c.paths) await measure(p, load, WARMUP_MS);
    const samples = new Map<string, Sample[]>(c.paths.map((p) => [p.name, []]));
    for (let r = 0; r < ROUNDS; r++) {
      // ABAB…: every round runs every path, the order rotated so none always goes first.
      for (let k = 0; k < c.paths.length; k++) {
        const p = c.paths[(k + r) % c.paths.length];
        samples.get(p.name)!.push(await measure(p, load, MEASURE_MS));
      }
    }
    const ref = samples.get(c.reference)!;
    for (const p of c.paths) {
      const s = samples.get(p.name)!;
      const ratio = (f: (x: Sample) => number) => s.map((x, r) => f(x) / f(ref[r]));
      const tput = ratio((x) => x.callsPerS);
      const ccpu = ratio((x) => x.clientCpuUs);
      rows.push({
        case: c.name,
        load: load.name,
        path: p.name,
        what: p.what,
        rounds: s,
        median: { callsPerS: median(s.map((x) => x.callsPerS)), p50: median(s.map((x) => x.p50)), p99: median(s.map((x) => x.p99)), clientCpuUs: median(s.map((x) => x.clientCpuUs)), serverCpuUs: median(s.map((x) => x.serverCpuUs)) },
        vsReference: {
          callsPerS: median(tput),
          callsPerSRange: [Math.min(...tput), Math.max(...tput)],
          p50: median(ratio((x) => x.p50)),
          p99: median(ratio((x) => x.p99)),
          clientCpuUs: median(ccpu),
          clientCpuUsRange: [Math.min(...ccpu), Math.max(...ccpu)],
        },
      });
    }
    const line = c.paths.map((p) => `${p.name} ${Math.round(rows.find((x) => x.load === load.name && x.path === p.name)!.median.callsPerS)}/s`).join(', ');
    console.error(`  ${c.name} ${load.name}: ${line}`);
  }
  return rows;
}

function printTable(c: Case, rows: Row[]): void {
  const f = (n: number, d = 0) => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  console.log(`\n### ${c.name}: ${c.what}\nreference (ratios ×1.00): ${c.reference}`);
  for (const m of c.missing) console.log(`not measured: ${m.name}: ${m.why}`);
  console.log('| load | path | calls/s | ×ref (range over rounds) | p50 µs | ×ref | p99 µs | ×ref | client CPU µs/call | ×ref (range) | server CPU µs/call |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const v = r.vsReference;
    console.log(`| ${r.load} | ${r.path} | ${f(r.median.callsPerS)} | ${f(v.callsPerS, 2)} (${f(v.callsPerSRange[0], 2)}–${f(v.callsPerSRange[1], 2)}) | ${f(r.median.p50)} | ${f(v.p50, 2)} | ${f(r.median.p99)} | ${f(v.p99, 2)} | ${f(r.median.clientCpuUs, 1)} | ${f(v.clientCpuUs, 2)} (${f(v.clientCpuUsRange[0], 2)}–${f(v.clientCpuUsRange[1], 2)}) | ${f(r.median.serverCpuUs, 1)} |`);
  }
}

// ---------------------------------------------------------------------------------------------------

const version = (pkg: string) => (JSON.parse(readFileSync(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')) as { version: string }).version;

async function main(): Promise<number> {
  if (!redisAvailable()) {
    console.error('redis-server is not installed: nothing to measure');
    return 1;
  }
  const server: RedisServer = await startRedis();
  const started = new Date().toISOString();
  const loadBefore = loadavg();
  const cases: Case[] = [];
  const all: Row[] = [];
  try {
    const redisVersion = /redis_version:(\S+)/.exec(await (async () => {
      const c = await ioredis(server.port, false, {});
      try {
        return await c.info('server');
      } finally {
        await c.quit();
      }
    })())?.[1];
    const cpuClient = await ioredis(server.port, false, {});
    serverCpu = async () => {
      const info = await cpuClient.info('cpu');
      const get = (name: string) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1]);
      return (get('used_cpu_user') + get('used_cpu_sys')) * 1e6;
    };
    console.error(`store-pipelining: redis-server ${redisVersion} on port ${server.port}; ioredis ${version('ioredis')}, redis ${version('redis')}; ${ROUNDS} rounds × ${MEASURE_MS} ms per path and load${quick ? ' (quick)' : ''}`);
    for (const make of [slidingCase, incrementCase]) {
      const c = await make(server.port);
      cases.push(c);
      try {
        all.push(...(await runCase(c)));
      } finally {
        await Promise.all(c.paths.map((p) => p.close().catch(() => undefined)));
      }
    }
    await cpuClient.quit();
    for (const c of cases) printTable(c, all.filter((r) => r.case === c.name));
    const loadAfter = loadavg();
    console.log(`\nload average before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}; ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);
    mkdirSync(dirname(JSON_PATH), { recursive: true });
    writeFileSync(
      JSON_PATH,
      `${JSON.stringify(
        {
          started,
          quick,
          rounds: ROUNDS,
          measureMs: MEASURE_MS,
          versions: { node: process.version, ioredis: version('ioredis'), redis: version('redis'), redisServer: redisVersion },
          machine: { cpus: cpus().length, model: cpus()[0]?.model, loadBefore, loadAfter },
          loads: LOADS,
          cases: cases.map((c) => ({ name: c.name, what: c.what, reference: c.reference, missing: c.missing, paths: c.paths.map((p) => ({ name: p.name, what: p.what })) })),
          rows: all,
        },
        null,
        2,
      )}\n`,
    );
    console.log(`written: ${JSON_PATH}`);
    return 0;
  } finally {
    await server.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
