/**
 * `npm run soak`: does Themis's memory settle under a long run, and do the store's keys stay bounded?
 *
 * It starts, all on 127.0.0.1 with random ports: a loopback DNS server (SPF records for the senders'
 * domains), a throwaway redis-server, and `themis start --config bench/soak.config.ts` as a user runs it
 * (the five built-in plugins on one policy, Redis store, short windows). It then plays Postfix against
 * it with `bench/load.ts --distinct N`: by default 2,000,000 messages over 20 milter connections from
 * 200,000 distinct senders, recipients and client networks, as fast as Themis answers. Every few seconds
 * it samples the resident memory (VmRSS) of the daemon — of each worker with `--workers N` — and the
 * store's key count (DBSIZE). After the load it keeps sampling until the keys' TTLs have passed.
 *
 * It prints the samples as a table, writes a chart (SVG) and the raw samples (JSON) under
 * bench/results/, and a PASS/FAIL line per check:
 * - memory settles: after the first 10 % of the messages, every sample stays within ±10 % of the
 *   sample taken at 10 % (per process);
 * - and under 250 MB;
 * - keys are bounded: once the TTLs have passed, the key count is back to its base (the monitor's
 *   hourly top-N lists, a fixed handful that lives to the end of its clock hour, are counted apart);
 * - every message was decided, without protocol errors.
 *
 * Usage: npm run soak [-- --quick] [-- --messages N] [-- --senders N] [-- --workers N] [-- --heap-snapshots]
 * Exit status: 0 when every check passed; 1 when one failed or the run could not be done; 2 bad
 * usage; 130 interrupted.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect, killAll, stopChild, track } from './baselines.ts';
import type { LoadResult } from './load.ts';
import { renderChart, type Series } from './soak/chart.ts';
import { Resp } from './soak/resp.ts';
import { formatSmaps, smapsSummary } from './soak/smaps.ts';
import { startDnsServer, type DnsServer, type DnsZone } from '../test/helpers/dns.ts';
import { freePort } from '../test/helpers/process.ts';
import { startRedis, type RedisServer } from '../src/testing/redis.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const LOAD = join(REPO, 'bench', 'load.ts');
const THEMIS_BIN = join(REPO, 'bin', 'themis.js');
const CONFIG = join(REPO, 'bench', 'soak.config.ts');
const RESULTS = join(REPO, 'bench', 'results');
/** The store's key prefix in bench/soak.config.ts. */
const KEY_PREFIX = 'themis-soak:';
/** The monitor's hourly top-N lists: they live to the end of their clock hour + the retention. */
const HOURLY_KEY = /^themis-soak:monitor:top:[^:]+:\d+$/;

/** The message: as `npm run bench` sends it (5 recipients, 10 headers, a 20 KiB body, 10 per session). */
const MESSAGE = { msgsPerConn: 10, rcpts: 5, headers: 10, bodyBytes: 20 * 1024 };

/** The checks' limits. */
const SETTLE_AFTER = 0.1;
const SETTLE_BAND = 0.1;
const CEILING_MB = 250;

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  messages: number;
  senders: number;
  domains: number;
  connections: number;
  workers: number;
  sampleS: number;
  /** Longest wait for the keys to expire after the load, s. */
  ttlWaitS: number;
  heapSnapshots: boolean;
  /** Extra Node options for the daemon (NODE_OPTIONS), e.g. `--max-semi-space-size=16`. */
  nodeOptions: string;
  quick: boolean;
  json: string | undefined;
}

const USAGE = `Usage: npm run soak -- [options]     (or: node --conditions=themis-source bench/soak.ts [options])
  --messages N        messages in total (default 2,000,000; --quick 100,000)
  --senders N         distinct senders, recipients and client networks (default 200,000; --quick 10,000):
                      message n is from sender n mod N, session s from client network s mod N
  --domains N         sender domains, each with an SPF record on the loopback DNS (default 20,000,
                      twice the SPF plugin's cache; --quick 1,000)
  --workers N         themis start --workers N: memory is sampled per worker (default 1: one process)
  --connections N     concurrent milter connections (default 20)
  --sample S          seconds between samples (default 5; --quick 2)
  --ttl-wait S        after the load, wait at most this long for the keys to expire (default 300)
  --heap-snapshots    run the daemon with --heapsnapshot-signal=SIGUSR2 and take a heap snapshot of
                      every Themis process at 10 % of the messages and at the end of the load (into
                      bench/results/soak-heap/; compare them with bench/soak/heapdiff.ts). Each one
                      stops the process for seconds: the memory figures of such a run are not the
                      ones to quote
  --node-options OPTS Node options for the daemon alone (its NODE_OPTIONS), e.g.
                      --node-options=--max-semi-space-size=16 to try a V8 heap setting
  --quick             smoke run: 100,000 messages from 10,000 senders (figures not for the README)
  --json PATH         where to write the samples (default bench/results/soak[-quick][-wN].json)
  --help
`;

function parseOptions(argv: string[]): Options {
  const o: Options = { messages: 0, senders: 0, domains: 0, connections: 20, workers: 1, sampleS: 0, ttlWaitS: 300, heapSnapshots: false, nodeOptions: '', quick: false, json: undefined };
  const int = (a: string, v: string | undefined, min: number): number => {
    const n = Number(v?.replace(/[_,]/g, ''));
    if (v === undefined || !Number.isInteger(n) || n < min) fail(`${a} needs an integer ≥ ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--messages') o.messages = int(a, argv[++i], 1);
    else if (a === '--senders') o.senders = int(a, argv[++i], 1);
    else if (a === '--domains') o.domains = int(a, argv[++i], 1);
    else if (a === '--workers') o.workers = int(a, argv[++i], 1);
    else if (a === '--connections' || a === '-c') o.connections = int(a, argv[++i], 1);
    else if (a === '--sample') o.sampleS = int(a, argv[++i], 1);
    else if (a === '--ttl-wait') o.ttlWaitS = int(a, argv[++i], 0);
    else if (a === '--heap-snapshots') o.heapSnapshots = true;
    else if (a === '--node-options') o.nodeOptions = argv[++i] ?? fail('--node-options needs a value');
    else if (a.startsWith('--node-options=')) o.nodeOptions = a.slice('--node-options='.length);
    else if (a === '--json') o.json = argv[++i] ?? fail('--json needs a path');
    else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else fail(`unknown option ${JSON.stringify(a)}`);
  }
  o.messages ||= o.quick ? 100_000 : 2_000_000;
  o.senders ||= o.quick ? 10_000 : 200_000;
  o.domains ||= Math.min(o.senders, o.quick ? 1_000 : 20_000);
  o.sampleS ||= o.quick ? 2 : 5;
  if (o.senders > 1 << 20) fail('--senders: at most 1,048,576 (the client networks are /24s of 240.0.0.0/4)');
  return o;
}

function fail(message: string): never {
  process.stderr.write(`soak: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Processes: everything started is killed on the way out

let redis: RedisServer | undefined;
let dns: DnsServer | undefined;
process.on('exit', () => {
  killAll();
  // startRedis's own exit hook kills redis-server and removes its folder.
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nsoak: ${sig}: stopping every process it started\n`);
    killAll();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const print = (line = '') => process.stdout.write(line + '\n');

/** VmRSS of a process in kB (NaN when it is gone). */
function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Child processes of `pid` (every thread's children list). */
function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim().split(/\s+/)) if (c) out.add(Number(c));
      } catch {
        // thread gone
      }
    }
  } catch {
    // process gone
  }
  return [...out].sort((a, b) => a - b);
}

interface Themis {
  child: ChildProcess;
  pid: number;
  port: number;
  /** Its status endpoint (/metrics: the V8 heap figures). */
  httpPort: number;
  /** The serving processes: the daemon itself, or its workers. */
  servers: number[];
  /** Log lines (it runs at --log-level warn: every line is a warning or worse). */
  logLines: number;
  tail: string[];
}

async function startThemis(o: Options, redisUrl: string, dnsAddress: string, heapDir: string | undefined): Promise<Themis> {
  const port = await freePort();
  const httpPort = await freePort();
  const args = [THEMIS_BIN, 'start', '--config', CONFIG, '--listen', `inet:${port}@127.0.0.1`, '--http', `inet:${httpPort}@127.0.0.1`, '--redis-url', redisUrl, '--log-level', 'warn'];
  if (o.workers > 1) args.push('--workers', String(o.workers));
  const env: NodeJS.ProcessEnv = { ...process.env, THEMIS_SOAK_DNS: dnsAddress };
  const nodeOptions = [process.env.NODE_OPTIONS ?? '', o.nodeOptions, heapDir ? `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${heapDir}` : ''].filter(Boolean).join(' ');
  if (nodeOptions) env.NODE_OPTIONS = nodeOptions;
  const child = track(spawn(process.execPath, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const t: Themis = { child, pid: child.pid ?? 0, port, httpPort, servers: [], logLines: 0, tail: [] };
  const onOut = (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      t.logLines++;
      t.tail.push(line.length > 300 ? line.slice(0, 300) + '…' : line);
      if (t.tail.length > 10) t.tail.shift();
    }
  };
  child.stdout!.on('data', onOut);
  child.stderr!.on('data', onOut);
  const deadline = Date.now() + 30_000;
  const ready = async () => (await canConnect({ port })) && (o.workers === 1 || childrenOf(t.pid).length >= o.workers);
  while (!(await ready())) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`themis start exited (${child.exitCode ?? child.signalCode}): ${t.tail.join(' | ')}`);
    if (Date.now() > deadline) throw new Error(`themis start did not listen on 127.0.0.1:${port} within 30 s: ${t.tail.join(' | ')}`);
    await sleep(100);
  }
  t.servers = o.workers > 1 ? childrenOf(t.pid) : [t.pid];
  await sleep(1000); // start-up work done
  return t;
}

// ---------------------------------------------------------------------------------------------
// Sampling

interface Sample {
  /** Seconds since the load started (negative: before). */
  t: number;
  phase: 'before' | 'load' | 'after';
  /** Messages decided so far (load.ts progress). */
  decided: number;
  /** VmRSS, MB: the primary first (with --workers), then each serving process. */
  rssMb: number[];
  /** V8 heap in use (prom-client's nodejs_heap_size_used_bytes; with --workers the sum over the workers), MB. */
  heapMb: number;
  /** V8 heap committed (nodejs_heap_size_total_bytes), MB: what the heap holds of the RSS, garbage included. */
  heapTotalMb: number;
  /** Memory outside the V8 heap held by JS objects (nodejs_external_memory_bytes: Buffers…), MB. */
  extMb: number;
  keys: number;
  redisMb: number;
}

/** Sums the values of one metric in a Prometheus text exposition. */
function metric(text: string, name: string): number {
  let sum = NaN;
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) sum = (Number.isNaN(sum) ? 0 : sum) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Reads the daemon's /metrics (NaN figures when it does not answer within 2 s). */
async function heapOf(httpPort: number): Promise<{ heapMb: number; heapTotalMb: number; extMb: number }> {
  try {
    const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await res.text();
    const mb = (x: number) => Math.round(x / 104857.6) / 10;
    return { heapMb: mb(metric(text, 'nodejs_heap_size_used_bytes')), heapTotalMb: mb(metric(text, 'nodejs_heap_size_total_bytes')), extMb: mb(metric(text, 'nodejs_external_memory_bytes')) };
  } catch {
    return { heapMb: NaN, heapTotalMb: NaN, extMb: NaN };
  }
}

function labels(o: Options): string[] {
  return o.workers > 1 ? ['primary', ...Array.from({ length: o.workers }, (_, i) => `worker ${i + 1}`)] : ['themis'];
}

// ---------------------------------------------------------------------------------------------
// Run

interface KeyCensus {
  total: number;
  hourly: string[];
  families: Record<string, number>;
}

/** Every key, by family (the key without the prefix, its numbers and hashes, cut at the second colon). */
async function census(r: Resp): Promise<KeyCensus> {
  const keys = await r.keys();
  const families: Record<string, number> = {};
  const hourly: string[] = [];
  for (const k of keys) {
    if (HOURLY_KEY.test(k)) hourly.push(k);
    const fam = k.startsWith(KEY_PREFIX) ? k.slice(KEY_PREFIX.length).split(':').slice(0, 2).map((p) => (/^[0-9a-f]{8,}$|^\d+$/i.test(p) ? '…' : p)).join(':') : `(other) ${k.split(':')[0]}`;
    families[fam] = (families[fam] ?? 0) + 1;
  }
  return { total: keys.length, hourly: hourly.sort(), families };
}

interface Check {
  name: string;
  pass: boolean;
  detail: string;
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const tag = `soak${o.quick ? '-quick' : ''}${o.workers > 1 ? `-w${o.workers}` : ''}`;
  mkdirSync(RESULTS, { recursive: true });
  const jsonPath = o.json ?? join(RESULTS, `${tag}.json`);
  const svgPath = jsonPath.replace(/\.json$/, '') + '.svg';
  const heapDir = o.heapSnapshots ? join(RESULTS, 'soak-heap') : undefined;
  if (heapDir) mkdirSync(heapDir, { recursive: true });

  print(`soak: ${o.messages.toLocaleString('en')} messages over ${o.connections} connections from ${o.senders.toLocaleString('en')} distinct senders, recipients and client networks (${o.domains.toLocaleString('en')} sender domains); ${MESSAGE.rcpts} recipients, ${MESSAGE.headers} headers, ${MESSAGE.bodyBytes / 1024} KiB body, ${MESSAGE.msgsPerConn} messages per session`);
  print(`      ${o.nodeOptions ? `NODE_OPTIONS='${o.nodeOptions}' ` : ''}themis start --config bench/soak.config.ts${o.workers > 1 ? ` --workers ${o.workers}` : ''} (ratelimit, spf, headers, monitor, predict on one policy; Redis store); a sample every ${o.sampleS} s`);
  print(`box:  ${cpus().length} × ${cpus()[0]?.model ?? '?'}, Linux ${release()}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}, node ${process.version}`);

  // DNS: an SPF record for every sender domain; every client network is in 240.0.0.0/4.
  const zone: DnsZone = {};
  for (let j = 0; j < o.domains; j++) zone[`d${j}.example.test`] = { TXT: ['v=spf1 ip4:240.0.0.0/4 -all'] };
  dns = await startDnsServer(zone, { ttl: 60 });
  redis = await startRedis();
  const resp = await Resp.open(redis.port);
  const themis = await startThemis(o, redis.url, dns.address, heapDir);
  const pids = o.workers > 1 ? [themis.pid, ...themis.servers] : [themis.pid];
  print(`pids: ${labels(o).map((l, i) => `${l} ${pids[i]}`).join(', ')}; redis ${redis.pid} on ${redis.port}; dns ${dns.address}`);

  const samples: Sample[] = [];
  let decided = 0;
  let failedMsgs = 0;
  let loadStart = 0;
  let phase: Sample['phase'] = 'before';
  const take = async (): Promise<Sample> => {
    const info = await resp.info('memory');
    const heap = await heapOf(themis.httpPort);
    const s: Sample = {
      t: loadStart ? Math.round((performance.now() - loadStart) / 100) / 10 : 0,
      phase,
      decided,
      rssMb: pids.map((p) => Math.round(rssKb(p) / 102.4) / 10),
      ...heap,
      keys: await resp.dbsize(),
      redisMb: Math.round(Number(info.get('used_memory') ?? NaN) / 104857.6) / 10,
    };
    samples.push(s);
    return s;
  };
  const base = await take();
  const baseCensus = await census(resp);
  print(`before the load: RSS ${base.rssMb.join(' / ')} MB, ${base.keys} keys`);

  // Heap snapshots: at 10 % and at the end of the load.
  const snapshot = async (what: string) => {
    if (!heapDir) return;
    const before = new Set(readdirSync(heapDir));
    const t0 = Date.now();
    for (const p of pids) process.kill(p, 'SIGUSR2');
    // Wait for one new file per process, its size stable.
    for (;;) {
      await sleep(1000);
      const fresh = readdirSync(heapDir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
      if (fresh.length >= pids.length || Date.now() - t0 > 180_000) {
        print(`heap snapshots (${what}): ${fresh.join(', ')} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
        return;
      }
    }
  };

  // The load.
  phase = 'load';
  loadStart = performance.now();
  const loadArgs = [LOAD, '--port', String(themis.port), '-c', String(o.connections), '-m', String(o.messages), '-k', String(MESSAGE.msgsPerConn), '-r', String(MESSAGE.rcpts), '--headers', String(MESSAGE.headers), '--body-bytes', String(MESSAGE.bodyBytes), '--distinct', String(o.senders), '--domains', String(o.domains), '--progress', '1000', '--timeout', '60', '--json'];
  if (o.workers === 1) loadArgs.push('--milter-pid', String(themis.pid));
  const loadChild = track(spawn(process.execPath, loadArgs, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }));
  let loadOut = '';
  let loadErr = '';
  loadChild.stdout!.on('data', (d: Buffer) => (loadOut += d.toString('utf8')));
  loadChild.stderr!.on('data', (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) {
      const m = /^progress (\d+) (\d+) (\d+)$/.exec(line);
      if (m) {
        decided = Number(m[1]) + Number(m[2]);
        failedMsgs = Number(m[2]);
      } else if (line.trim()) loadErr += line + '\n';
    }
  });
  const loadDone = new Promise<number | null>((r) => loadChild.once('close', (code) => r(code)));
  let finished = false;
  void loadDone.then(() => (finished = true));
  let warmSnap = false;
  let lastPrint = 0;
  while (!finished) {
    await Promise.race([sleep(o.sampleS * 1000), loadDone]);
    if (finished) break;
    const s = await take();
    if (!warmSnap && decided >= o.messages * SETTLE_AFTER) {
      warmSnap = true;
      await snapshot('10 %');
    }
    if (s.t - lastPrint >= 60) {
      lastPrint = s.t;
      process.stderr.write(`soak: ${s.t.toFixed(0)} s, ${decided.toLocaleString('en')} decided, RSS ${s.rssMb.join(' / ')} MB, ${s.keys} keys\n`);
    }
  }
  const loadCode = await loadDone;
  const loadS = (performance.now() - loadStart) / 1000;
  let result: LoadResult | undefined;
  try {
    result = JSON.parse(loadOut) as LoadResult;
    decided = result.messages_total;
  } catch {
    print(`load.ts exited ${loadCode} without a result: ${(loadOut + loadErr).trim().slice(-800)}`);
  }
  const endSample = await take();
  const smaps = pids.map((p) => {
    try {
      return formatSmaps(smapsSummary(p));
    } catch {
      return [];
    }
  });
  await snapshot('end of the load');
  const peakCensus = await census(resp);

  // After the load: wait for the TTLs.
  phase = 'after';
  const waitStart = performance.now();
  let endCensus = peakCensus;
  for (;;) {
    await sleep(o.sampleS * 1000);
    const s = await take();
    if (s.keys <= baseCensus.total + peakCensus.hourly.length + 3) {
      endCensus = await census(resp);
      if (endCensus.total - endCensus.hourly.length <= baseCensus.total - baseCensus.hourly.length) break;
    }
    if ((performance.now() - waitStart) / 1000 > o.ttlWaitS) {
      endCensus = await census(resp);
      break;
    }
  }
  const waitS = (performance.now() - waitStart) / 1000;
  resp.close();
  const themisAlive = themis.child.exitCode === null && themis.child.signalCode === null;
  await stopChild(themis.child, 15_000);
  await redis.stop();
  await dns.close();

  // ---- Output: the table
  const names = labels(o);
  const load = samples.filter((s) => s.phase === 'load');
  const warmIdx = load.findIndex((s) => s.decided >= o.messages * SETTLE_AFTER);
  const warm = warmIdx >= 0 ? load[warmIdx] : undefined;
  print();
  print(`samples (every ${o.sampleS} s; ${samples.length} in all, ${load.length} during the load; every sample is in ${jsonPath.replace(REPO, '')})`);
  const head = `${'t s'.padStart(7)} ${'phase'.padEnd(6)} ${'decided'.padStart(10)} ${'msg/s'.padStart(6)}  ${names.map((n) => `${n} MB`.padStart(13)).join(' ')} ${'vs 10 %'.padStart(8)} ${'heap used/total MB'.padStart(18)} ${'ext MB'.padStart(7)} ${'keys'.padStart(9)} ${'redis MB'.padStart(9)}`;
  print(head);
  // At most ~45 rows: the first, the 10 % one, the end of the load, the last, and evenly spaced others.
  const keep = new Set<number>([0, samples.indexOf(endSample), samples.length - 1]);
  if (warm) keep.add(samples.indexOf(warm));
  const every = Math.max(1, Math.ceil(samples.length / 40));
  for (let i = 0; i < samples.length; i += every) keep.add(i);
  let prev: Sample | undefined;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    if (!keep.has(i)) continue;
    const rate = prev && s.phase === 'load' && s.t > prev.t ? ((s.decided - prev.decided) / (s.t - prev.t)).toFixed(0) : '';
    const serving = o.workers > 1 ? s.rssMb.slice(1) : s.rssMb;
    const vs = warm && s.phase !== 'before' ? serving.map((v, j) => `${v >= (o.workers > 1 ? warm.rssMb.slice(1) : warm.rssMb)[j] ? '+' : ''}${((v / (o.workers > 1 ? warm.rssMb.slice(1) : warm.rssMb)[j] - 1) * 100).toFixed(1)}%`).join('/') : '';
    const mark = s === warm ? ' ← 10 % (reference)' : s === endSample ? ' ← end of load' : '';
    print(`${s.t.toFixed(1).padStart(7)} ${s.phase.padEnd(6)} ${s.decided.toLocaleString('en').padStart(10)} ${rate.padStart(6)}  ${s.rssMb.map((v) => v.toFixed(1).padStart(13)).join(' ')} ${vs.padStart(8)} ${`${s.heapMb.toFixed(1)}/${s.heapTotalMb.toFixed(1)}`.padStart(18)} ${s.extMb.toFixed(1).padStart(7)} ${String(s.keys).padStart(9)} ${s.redisMb.toFixed(1).padStart(9)}${mark}`);
    prev = s;
  }

  // ---- The load's own figures
  print();
  if (result) {
    print(`load: ${result.messages_ok.toLocaleString('en')} ok / ${result.messages_total.toLocaleString('en')} in ${result.duration_s.toFixed(0)} s = ${result.msgs_per_s.toFixed(0)} msg/s; p50 ${result.latency_ms?.p50.toFixed(2)} ms, p99 ${result.latency_ms?.p99.toFixed(2)} ms; sessions ${result.sessions.toLocaleString('en')}; verdicts ${JSON.stringify(result.verdicts)}; modifications ${JSON.stringify(result.modifications)}; protocol errors ${result.protocol_errors}${result.milter_cpu_ms_per_msg !== undefined ? `; themis CPU ${result.milter_cpu_ms_per_msg.toFixed(3)} ms/msg` : ''}`);
    for (const e of result.error_samples) print(`  e.g. ${e}`);
  }
  for (let i = 0; i < pids.length; i++) if (smaps[i].length) print(`${names[i]} at the end of the load (/proc/${pids[i]}/smaps), ${smaps[i].slice(0, 6).join('\n')}`);
  print(`themis: ${themis.logLines} log line(s) at warn or above${themis.tail.length ? `; last: ${themis.tail.slice(-3).join(' | ')}` : ''}`);
  const fam = (c: KeyCensus) => Object.entries(c.families).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toLocaleString('en')}`).join(', ') || 'none';
  print(`keys before the load: ${baseCensus.total} (${fam(baseCensus)})`);
  print(`keys at the end of the load: ${peakCensus.total.toLocaleString('en')} (${fam(peakCensus)})`);
  print(`keys ${waitS.toFixed(0)} s after the load: ${endCensus.total} (${fam(endCensus)})${endCensus.hourly.length ? `; hourly top-N lists: ${endCensus.hourly.map((k) => k.slice(KEY_PREFIX.length)).join(' ')}` : ''}`);

  // ---- Checks
  const checks: Check[] = [];
  const serving = (s: Sample) => (o.workers > 1 ? s.rssMb.slice(1) : s.rssMb);
  const servingNames = o.workers > 1 ? names.slice(1) : names;
  const after = warm ? load.slice(warmIdx).concat([endSample]) : [];
  for (let j = 0; j < servingNames.length; j++) {
    const who = o.workers > 1 ? `${servingNames[j]}: ` : '';
    if (!warm) {
      checks.push({ name: `${who}memory settles`, pass: false, detail: 'no sample after 10 % of the messages' });
      continue;
    }
    const ref = serving(warm)[j];
    const vals = after.map((s) => serving(s)[j]).filter(Number.isFinite);
    const lo = Math.min(...vals);
    const hi = Math.max(...vals);
    const end = serving(endSample)[j];
    checks.push({
      name: `${who}memory settles: RSS after 10 % within ±${SETTLE_BAND * 100} % of its level at 10 %`,
      pass: lo >= ref * (1 - SETTLE_BAND) && hi <= ref * (1 + SETTLE_BAND),
      detail: `at 10 % ${ref.toFixed(1)} MB; after it ${lo.toFixed(1)}–${hi.toFixed(1)} MB (${((lo / ref - 1) * 100).toFixed(1)} % to +${((hi / ref - 1) * 100).toFixed(1)} %); end of the load ${end.toFixed(1)} MB (${end >= ref ? '+' : ''}${((end / ref - 1) * 100).toFixed(1)} %)`,
    });
    checks.push({ name: `${who}memory under ${CEILING_MB} MB after 10 %`, pass: hi < CEILING_MB, detail: `peak ${hi.toFixed(1)} MB` });
  }
  const baseOther = baseCensus.total - baseCensus.hourly.length;
  const endOther = endCensus.total - endCensus.hourly.length;
  const hours = Math.max(1, new Set(peakCensus.hourly.concat(endCensus.hourly).map((k) => k.split(':').pop())).size);
  checks.push({
    name: 'store keys return to their base once the TTLs passed',
    pass: endOther <= baseOther && endCensus.hourly.length <= 3 * hours,
    detail: `base ${baseCensus.total}; peak ${Math.max(...samples.map((s) => s.keys)).toLocaleString('en')}; ${waitS.toFixed(0)} s after the load ${endCensus.total}, of which ${endCensus.hourly.length} hourly top-N list(s) of the monitor (${hours} clock hour(s) × 3 lists at most; they expire at the end of their hour + 1 min), ${endOther} other (base ${baseOther})`,
  });
  checks.push({
    name: 'every message decided, no protocol error, Themis up',
    pass: result !== undefined && result.messages_total === o.messages && result.protocol_errors === 0 && failedMsgs === 0 && themisAlive,
    detail: result ? `${result.messages_total.toLocaleString('en')}/${o.messages.toLocaleString('en')} decided, ${result.messages_failed} failed, ${result.protocol_errors} protocol errors${themisAlive ? '' : ', THEMIS EXITED'}` : 'no load result',
  });
  print();
  for (const c of checks) print(`${c.pass ? 'PASS' : 'FAIL'}  ${c.name}: ${c.detail}`);

  // ---- Chart and JSON
  const colors = ['#1f5fbf', '#d9822b', '#7b3fbf', '#2b9d8f', '#bf3f5f'];
  const series: Series[] = names.map((n, j) => ({ label: `${n} RSS`, color: colors[j % colors.length], axis: 'left' as const, points: samples.map((s) => [s.t, s.rssMb[j]] as [number, number]), dashed: o.workers > 1 && j === 0 }));
  series.push({ label: o.workers > 1 ? 'V8 heap used (sum)' : 'V8 heap used', color: '#999', axis: 'left', dashed: true, points: samples.map((s) => [s.t, s.heapMb]) });
  series.push({ label: o.workers > 1 ? 'V8 heap committed (sum)' : 'V8 heap committed', color: '#555', axis: 'left', dashed: true, points: samples.map((s) => [s.t, s.heapTotalMb]) });
  series.push({ label: 'store keys', color: '#6a9a2a', axis: 'right', points: samples.map((s) => [s.t, s.keys]) });
  const ref = warm ? serving(warm) : [];
  const band = ref.length ? { low: Math.min(...ref) * (1 - SETTLE_BAND), high: Math.max(...ref) * (1 + SETTLE_BAND), label: `±${SETTLE_BAND * 100} % of the RSS at 10 %` } : undefined;
  const svg = renderChart({
    title: `themis soak: ${o.messages.toLocaleString('en')} messages, ${o.senders.toLocaleString('en')} senders${o.workers > 1 ? `, --workers ${o.workers}` : ''}${o.nodeOptions ? `, ${o.nodeOptions}` : ''} (${result ? `${result.msgs_per_s.toFixed(0)} msg/s` : 'no result'})`,
    series,
    band,
    ceiling: { value: CEILING_MB, label: `${CEILING_MB} MB` },
    markers: [...(warm ? [{ at: warm.t, label: '10 %' }] : []), { at: endSample.t, label: 'end of load' }],
  });
  writeFileSync(svgPath, svg);
  writeFileSync(jsonPath, JSON.stringify({ options: o, smaps_at_end_of_load: smaps, pids: Object.fromEntries(names.map((n, i) => [n, pids[i]])), load_s: loadS, load: result, keys: { base: baseCensus, peak: { ...peakCensus, hourly: peakCensus.hourly.length }, end: endCensus }, checks, samples }, null, 1) + '\n');
  print();
  print(`chart: ${svgPath.replace(REPO, '')}   samples: ${jsonPath.replace(REPO, '')}${heapDir && existsSync(heapDir) ? `   heap snapshots: ${heapDir.replace(REPO, '')}/ (node bench/soak/heapdiff.ts BEFORE AFTER)` : ''}`);
  return checks.every((c) => c.pass) ? 0 : 1;
}

try {
  process.exitCode = await main();
} catch (err) {
  process.stderr.write(`soak: ${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  killAll();
  await redis?.stop().catch(() => undefined);
  await dns?.close().catch(() => undefined);
}
