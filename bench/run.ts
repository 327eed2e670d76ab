/**
 * `npm run bench`: Themis against the reference null milters, side by side, in one run.
 *
 * It starts `themis start` (the accept-all application, which taps every stage like the reference
 * null milters). When the shared harness folder is there, it also starts the C libmilter null milter
 * and the pymilter one. It then runs the same load (`bench/load.ts`) against each target:
 * - at 1, 10 and 50 concurrent connections, each as fast as the milter answers (saturated);
 * - and paced: 1,000 messages per second offered over 10 connections, a realistic load that saturates
 *   neither milter, where the cost of each wake-up (one packet in, one answer out) dominates;
 * - 10 messages per connection, 5 recipients, 10 headers and a 20 KiB body per message;
 * - targets interleaved within each round (themis, c, py, themis, c, py, …), over several rounds,
 *   reporting medians.
 * Then it opens 1,000 idle sessions against a fresh instance of each milter and reads its memory. It
 * prints a table, the Themis/baseline CPU ratios and PASS/FAIL lines for the targets.
 *
 * Usage: npm run bench [-- --quick] [-- --targets themis,c,py] [-- --rounds N] [-- --json [PATH]]
 * Exit status: 0 when it ran and every check passed (or was skipped); 1 when a check failed or the
 * bench could not run; 130 on SIGINT.
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KEPT_UP_RATIO, type IdleResult, type LoadResult } from './load.ts';
import { canConnect, findOrBuildC, killAll, stopChild, track } from './baselines.ts';
import { freePort } from '../test/helpers/process.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const LOAD = join(REPO, 'bench', 'load.ts');
const THEMIS_BIN = join(REPO, 'bin', 'themis.js');
const DEFAULT_JSON = join(REPO, 'bench', 'results', 'latest.json');

// ---------------------------------------------------------------------------------------------
// What is measured

/** The load per message, the same for every target and config. */
const MESSAGE = { msgsPerConn: 10, rcpts: 5, headers: 10, bodyBytes: 20 * 1024 };

interface Config {
  connections: number;
  messages: number;
  /** Paced: messages per second offered in total (load.ts --rate); absent = saturated (as fast as answered). */
  rate?: number;
}

/** How a config is named in the table, the ratios and the JSON: `C=10`, or `C=10 @1000/s` when paced. */
function configName(c: Config): string {
  return c.rate ? `C=${c.connections} @${c.rate}/s` : `C=${c.connections}`;
}

/** The paced case: 1,000 msg/s offered over 10 connections, to every target in turn. */
const PACED = { connections: 10, rate: 1000 };

/**
 * Full run: enough messages for CPU figures to within about 1 % (≥ 2,000 per config; 1 connection is
 * latency-bound). The paced config lasts 4 s per run.
 */
const FULL = { rounds: 7, warmup: 1000, idle: 1000, configs: [{ connections: 1, messages: 3000 }, { connections: 10, messages: 5000 }, { connections: 50, messages: 5000 }, { ...PACED, messages: 4000 }] as Config[] };
/** `--quick`: a smoke run. */
const QUICK = { rounds: 1, warmup: 300, idle: 1000, configs: [{ connections: 1, messages: 300 }, { connections: 10, messages: 1000 }, { connections: 50, messages: 1000 }, { ...PACED, messages: 1500 }] as Config[] };

const TARGET_NAMES = ['themis', 'kernel', 'monitor', 'c', 'py', 'node-floor'] as const;
type TargetName = (typeof TARGET_NAMES)[number];
/** Targets run when --targets is not given. `node-floor` (bench/node-floor.ts) is a diagnostic, on request only. */
const DEFAULT_TARGETS: TargetName[] = ['themis', 'kernel', 'monitor', 'c', 'py'];
const TARGET_LABELS: Record<TargetName, string> = { themis: 'Themis (node)', kernel: 'Themis kernel', monitor: 'kernel+monitor', c: 'C libmilter', py: 'pymilter', 'node-floor': 'node floor' };
const SHORT: Record<TargetName, string> = { themis: 'Themis', kernel: 'kernel', monitor: 'monitor', c: 'C', py: 'py', 'node-floor': 'floor' };
/** The monitor plugin adds under 5 % CPU per message to the kernel case, at 10 connections. */
const CHECK_F = { connections: 10, maxRatio: 1.05 };

/** Targets the checks are about: Themis CPU per message compared with C libmilter's. */
const CHECK_A = { connections: 10, maxRatio: 0.5 };
const CHECK_B = { connections: 1, maxRatio: 1.0 };
/** At the paced load, Themis's engine spends no more CPU per message than C libmilter. */
const CHECK_G = { maxRatio: 1.0 };
const CHECK_D_MB = 150;

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  quick: boolean;
  /** Also run bench/ratelimit.ts (rate-limit decisions against a local Redis). */
  ratelimit: boolean;
  /** Also run bench/predict.ts (the predict plugin's CPU and store round trips per message, with and without signals). */
  predict: boolean;
  /** Also run bench/postfix.ts (Themis behind a real Postfix, against no milter and the C null milter). */
  postfix: boolean;
  /** Also run bench/sendmail.ts (the latency Themis adds behind a real Sendmail, TCP and UNIX socket). */
  sendmail: boolean;
  /** Also run bench/spf.ts (SPF checks against a loopback DNS server, cold and warm cache). */
  spf: boolean;
  /** Also run bench/dkim.ts (DKIM signing and verifying cost per message, beside OpenDKIM's). */
  dkim: boolean;
  targets: TargetName[];
  rounds: number;
  json: string | undefined;
}

const USAGE = `Usage: npm run bench -- [options]     (or: node bench/run.ts [options])
  --quick              smoke run: fewer messages, 1 round
  --targets LIST       comma list of themis, kernel, monitor, c, py, node-floor (default:
                       themis,kernel,monitor,c,py). themis is the bare engine (themis start
                       --engine-only); kernel is the kernel with one trivial plugin tapping every stage
                       (bench/kernel.config.ts); monitor is that plus the monitor plugin
                       (bench/monitor.config.ts). node-floor is bench/node-floor.ts, the cheapest null
                       milter Node can run: a diagnostic
  --rounds N           rounds of interleaved runs (default 7; --quick 1)
  --no-ratelimit       skip the ratelimit case (bench/ratelimit.ts: decisions/s, p99 and round trips
                       per decision against a local redis-server)
  --no-predict         skip the predict case (bench/predict.ts: the predict plugin's CPU per message
                       through the kernel, without signals, with signals and with every trait, beside
                       the kernel alone; store round trips per message against a local redis-server)
  --no-postfix         skip the Postfix end-to-end section (bench/postfix.ts: a throwaway Postfix,
                       smtp-source, no milter vs the C null milter vs every Themis configuration;
                       msg/s, the ratio to no milter, added latency; about 6 minutes)
  --no-sendmail        skip the Sendmail end-to-end section (bench/sendmail.ts: latency added behind the
                       tests' private Sendmail over TCP and a UNIX socket, beside the C null milter)
  --no-spf             skip the spf case (bench/spf.ts: SPF checks per second against a loopback DNS
                       server, cold and warm cache)
  --no-dkim            skip the dkim case (bench/dkim.ts: signing and verifying a 20 KiB message with 2
                       signatures through the milter protocol, Themis beside Debian's opendkim when
                       installed; msgs/s, CPU ms per message, Themis ÷ OpenDKIM)
  --json [PATH]        also write every raw figure as JSON (default path bench/results/latest.json)
  --help
Environment: THEMIS_SHARED_BENCH (default ../shared/bench from the repository root) is the folder with
the reference milters; without it only Themis runs. THEMIS_BENCH_BIN: where a built C null milter is
looked for (default /tmp/themis-bench); it is built into a temporary folder when missing.
`;

function parseOptions(argv: string[]): Options {
  const o: Options = { quick: false, ratelimit: true, predict: true, postfix: true, sendmail: true, spf: true, dkim: true, targets: [...DEFAULT_TARGETS], rounds: 0, json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) fail(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--no-ratelimit') o.ratelimit = false;
    else if (a === '--no-predict') o.predict = false;
    else if (a === '--no-postfix') o.postfix = false;
    else if (a === '--no-sendmail') o.sendmail = false;
    else if (a === '--no-spf') o.spf = false;
    else if (a === '--no-dkim') o.dkim = false;
    else if (a === '--targets') {
      const list = value().split(',').map((s) => s.trim()).filter(Boolean);
      for (const t of list) if (!(TARGET_NAMES as readonly string[]).includes(t)) fail(`unknown target ${JSON.stringify(t)} (${TARGET_NAMES.join(', ')})`);
      o.targets = TARGET_NAMES.filter((t) => list.includes(t));
    } else if (a === '--rounds') {
      o.rounds = Number(value());
      if (!Number.isInteger(o.rounds) || o.rounds < 1) fail('--rounds must be a positive integer');
    } else if (a === '--json') {
      const next = argv[i + 1];
      o.json = next !== undefined && !next.startsWith('--') ? resolve(argv[++i]) : DEFAULT_JSON;
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else fail(`unknown option ${JSON.stringify(a)}`);
  }
  if (o.targets.length === 0) fail('--targets is empty');
  return o;
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked and killed on the way out, whatever happens

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}: stopping every process it started\n`);
    killAll();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}




const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Targets

interface TargetSpec {
  name: TargetName;
  command: string;
  args: (port: number) => string[];
}

/** A running milter. */
interface Milter {
  spec: TargetSpec;
  port: number;
  child: ChildProcess;
  pid: number;
  /** The last output lines (stdout and stderr), for error reports. */
  tail: string[];
  /** Log lines at warn level or above (Themis runs with --log-level warn, so every line counts). */
  logLines: number;
}

async function startMilter(spec: TargetSpec): Promise<Milter> {
  const port = await freePort();
  const child = track(spawn(spec.command, spec.args(port), { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }));
  const m: Milter = { spec, port, child, pid: child.pid ?? 0, tail: [], logLines: 0 };
  const onOut = (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      m.logLines++;
      m.tail.push(line.length > 400 ? line.slice(0, 400) + '…' : line);
      if (m.tail.length > 20) m.tail.shift();
    }
  };
  child.stdout!.on('data', onOut);
  child.stderr!.on('data', onOut);
  const deadline = Date.now() + 15_000;
  while (!(await canConnect({ port }))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${spec.name} exited (${child.exitCode ?? child.signalCode}) before listening: ${m.tail.join(' | ')}`);
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`${spec.name} did not listen on 127.0.0.1:${port} within 15 s: ${m.tail.join(' | ')}`);
    }
    await sleep(50);
  }
  await sleep(200); // let the listener's start-up work settle before measuring its CPU
  // The startup lines (pymilter/libmilter banners) are not warnings.
  m.logLines = 0;
  return m;
}

function alive(m: Milter): boolean {
  return m.child.exitCode === null && m.child.signalCode === null;
}

/** Finds the reference milters; returns the runnable targets and the reasons for the others. */
function resolveTargets(wanted: TargetName[]): { specs: TargetSpec[]; skipped: Map<TargetName, string>; sharedDir: string } {
  const specs: TargetSpec[] = [];
  const skipped = new Map<TargetName, string>();
  const sharedDir = resolve(process.env.THEMIS_SHARED_BENCH ?? join(REPO, '..', 'shared', 'bench'));
  if (wanted.includes('themis')) specs.push({ name: 'themis', command: process.execPath, args: (port) => [THEMIS_BIN, 'start', '--engine-only', '--listen', `inet:${port}@127.0.0.1`, '--log-level', 'warn'] });
  if (wanted.includes('kernel')) specs.push({ name: 'kernel', command: process.execPath, args: (port) => [THEMIS_BIN, 'start', '--config', join(REPO, 'bench', 'kernel.config.ts'), '--listen', `inet:${port}@127.0.0.1`, '--log-level', 'warn'] });
  if (wanted.includes('monitor')) specs.push({ name: 'monitor', command: process.execPath, args: (port) => [THEMIS_BIN, 'start', '--config', join(REPO, 'bench', 'monitor.config.ts'), '--listen', `inet:${port}@127.0.0.1`, '--log-level', 'warn'] });
  if (wanted.includes('node-floor')) specs.push({ name: 'node-floor', command: process.execPath, args: (port) => [join(REPO, 'bench', 'node-floor.ts'), 'start', '--listen', `inet:${port}@127.0.0.1`] });
  const haveShared = existsSync(join(sharedDir, 'baselines'));
  if (wanted.includes('c')) {
    if (!haveShared) skipped.set('c', `no reference milters folder at ${join(sharedDir, 'baselines')} (set THEMIS_SHARED_BENCH)`);
    else {
      const r = findOrBuildC(sharedDir);
      if ('bin' in r) specs.push({ name: 'c', command: r.bin, args: (port) => [String(port)] });
      else skipped.set('c', r.skip);
    }
  }
  if (wanted.includes('py')) {
    const script = join(sharedDir, 'baselines', 'null_milter.py');
    if (!haveShared) skipped.set('py', `no reference milters folder at ${join(sharedDir, 'baselines')} (set THEMIS_SHARED_BENCH)`);
    else if (!existsSync(script)) skipped.set('py', `${script} is missing`);
    else if (!existsSync('/usr/bin/python3')) skipped.set('py', '/usr/bin/python3 is missing');
    else {
      try {
        execFileSync('/usr/bin/python3', ['-c', 'import Milter'], { stdio: 'pipe' });
        specs.push({ name: 'py', command: '/usr/bin/python3', args: (port) => [script, String(port)] });
      } catch {
        skipped.set('py', 'pymilter is not importable by /usr/bin/python3 (Debian: apt install python3-milter)');
      }
    }
  }
  // Keep the order themis, c, py.
  specs.sort((a, b) => TARGET_NAMES.indexOf(a.name) - TARGET_NAMES.indexOf(b.name));
  return { specs, skipped, sharedDir };
}



// ---------------------------------------------------------------------------------------------
// Load runs

function runLoadProcess(args: string[]): Promise<{ json: unknown; code: number | null; stderr: string }> {
  return new Promise((res, rej) => {
    const child = track(spawn(process.execPath, [LOAD, ...args, '--json'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.once('error', rej);
    child.once('close', (code) => {
      try {
        res({ json: JSON.parse(out), code, stderr: err });
      } catch {
        rej(new Error(`load.ts ${args.join(' ')} exited ${code} without a JSON result: ${(out + err).trim().slice(-800)}`));
      }
    });
  });
}

function loadArgs(m: Milter, c: Config): string[] {
  const args = ['--port', String(m.port), '-c', String(c.connections), '-m', String(c.messages), '-k', String(MESSAGE.msgsPerConn), '-r', String(MESSAGE.rcpts), '--headers', String(MESSAGE.headers), '--body-bytes', String(MESSAGE.bodyBytes), '--milter-pid', String(m.pid)];
  if (c.rate) args.push('--rate', String(c.rate));
  return args;
}

interface RunRecord {
  round: number;
  target: TargetName;
  /** {@link configName}. */
  config: string;
  connections: number;
  rate?: number;
  result: LoadResult;
}

interface Row {
  target: TargetName;
  config: string;
  connections: number;
  rate?: number;
  messages: number;
  runs: number;
  msgs_per_s: number;
  p50_ms: number;
  p99_ms: number;
  milter_cpu_ms_per_msg: number;
  /** User-mode and kernel parts of the milter's CPU (from /proc/<pid>/stat utime and stime). */
  milter_user_ms_per_msg: number;
  milter_sys_ms_per_msg: number;
  client_cpu_ms_per_msg: number;
  protocol_errors: number;
  msgs_per_s_per_round: number[];
  milter_cpu_per_round: number[];
  milter_cpu_sources: string[];
  /** Paced configs: runs in which the target achieved ≥ 95 % of the offered rate. */
  kept_up_runs?: number;
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarizeRows(records: RunRecord[], targets: TargetName[], configs: Config[]): Row[] {
  const rows: Row[] = [];
  for (const c of configs) {
    const name = configName(c);
    for (const t of targets) {
      const rs = records.filter((r) => r.target === t && r.config === name).map((r) => r.result);
      if (rs.length === 0) continue;
      rows.push({
        target: t,
        config: name,
        connections: c.connections,
        rate: c.rate,
        messages: c.messages,
        runs: rs.length,
        msgs_per_s: median(rs.map((r) => r.msgs_per_s)),
        p50_ms: median(rs.map((r) => r.latency_ms?.p50 ?? NaN)),
        p99_ms: median(rs.map((r) => r.latency_ms?.p99 ?? NaN)),
        milter_cpu_ms_per_msg: median(rs.map((r) => r.milter_cpu_ms_per_msg ?? NaN)),
        milter_user_ms_per_msg: median(rs.map((r) => r.milter_user_ms_per_msg ?? NaN)),
        milter_sys_ms_per_msg: median(rs.map((r) => r.milter_sys_ms_per_msg ?? NaN)),
        client_cpu_ms_per_msg: median(rs.map((r) => r.client_cpu_ms_per_msg)),
        protocol_errors: rs.reduce((n, r) => n + r.protocol_errors, 0),
        msgs_per_s_per_round: rs.map((r) => r.msgs_per_s),
        milter_cpu_per_round: rs.map((r) => r.milter_cpu_ms_per_msg ?? NaN),
        milter_cpu_sources: [...new Set(rs.map((r) => r.milter_cpu_source ?? '?'))],
        ...(c.rate ? { kept_up_runs: rs.filter((r) => r.pacing?.kept_up).length } : {}),
      });
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Output

function print(line = ''): void {
  process.stdout.write(line + '\n');
}

const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);

/** Width of the config column: `C=10 @1000/s`. */
const CW = 13;

function printTable(rows: Row[], configs: Config[]): void {
  print(`${pad('config', CW)} ${pad('target', 14)} ${lpad('msgs/s', 7)} ${lpad('p50 ms', 7)} ${lpad('p99 ms', 7)} ${lpad('milter CPU', 11)} ${lpad('user/sys', 12)} ${lpad('client CPU', 11)} ${lpad('proto', 6)}   msgs/s per round`);
  print(`${pad('', CW)} ${pad('', 14)} ${lpad('', 7)} ${lpad('', 7)} ${lpad('', 7)} ${lpad('ms/msg', 11)} ${lpad('ms/msg', 12)} ${lpad('ms/msg', 11)} ${lpad('errors', 6)}`);
  for (const c of configs) {
    let first = true;
    for (const r of rows.filter((x) => x.config === configName(c))) {
      const errs = r.protocol_errors > 0 ? `${r.protocol_errors} !!` : '0';
      print(`${pad(first ? r.config : '', CW)} ${pad(TARGET_LABELS[r.target], 14)} ${lpad(r.msgs_per_s.toFixed(0), 7)} ${lpad(f(r.p50_ms, 2), 7)} ${lpad(f(r.p99_ms, 2), 7)} ${lpad(f(r.milter_cpu_ms_per_msg), 11)} ${lpad(`${f(r.milter_user_ms_per_msg, 2)}/${f(r.milter_sys_ms_per_msg, 2)}`, 12)} ${lpad(f(r.client_cpu_ms_per_msg), 11)} ${lpad(errs, 6)}   ${r.msgs_per_s_per_round.map((x) => x.toFixed(0)).join(' ')}`);
      first = false;
    }
  }
}

interface Ratio {
  config: string;
  connections: number;
  baseline: TargetName;
  ratio: number;
  per_round: number[];
}

function ratios(records: RunRecord[], rows: Row[], configs: Config[], baselines: TargetName[]): Ratio[] {
  const res: Ratio[] = [];
  for (const c of configs) {
    const name = configName(c);
    const th = rows.find((r) => r.target === 'themis' && r.config === name);
    for (const b of baselines) {
      const br = rows.find((r) => r.target === b && r.config === name);
      if (!th || !br) continue;
      const perRound: number[] = [];
      for (const rec of records.filter((r) => r.target === 'themis' && r.config === name)) {
        const other = records.find((r) => r.target === b && r.config === name && r.round === rec.round);
        if (other?.result.milter_cpu_ms_per_msg && rec.result.milter_cpu_ms_per_msg !== undefined) perRound.push(rec.result.milter_cpu_ms_per_msg / other.result.milter_cpu_ms_per_msg);
      }
      res.push({ config: name, connections: c.connections, baseline: b, ratio: th.milter_cpu_ms_per_msg / br.milter_cpu_ms_per_msg, per_round: perRound });
    }
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// Main

interface Check {
  id: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  text: string;
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const plan = opts.quick ? QUICK : FULL;
  const rounds = opts.rounds || plan.rounds;
  const started = new Date();
  const t0 = performance.now();

  const { specs, skipped, sharedDir } = resolveTargets(opts.targets);
  print(`Themis milter benchmark — ${started.toISOString()}${opts.quick ? '  [--quick: smoke run, not for figures]' : ''}`);
  print(`host: ${cpus().length} CPU (${cpus()[0]?.model.trim() ?? '?'}), Linux ${release()}, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; node ${process.version} (${process.execPath})`);
  print(`load per message: MAIL, ${MESSAGE.rcpts} RCPT, DATA, ${MESSAGE.headers} headers, EOH, ${MESSAGE.bodyBytes}-byte body (1 chunk), EOM, each with its macro packet as Postfix sends them; ${MESSAGE.msgsPerConn} messages per connection; ABORT after each message`);
  print(`configs: ${plan.configs.map((c) => `${configName(c)} × ${c.messages} msgs`).join(', ')}; ${rounds} round(s), targets interleaved; medians shown`);
  print(`${configName({ ...PACED, messages: 0 })} is paced: ${PACED.rate} msg/s offered in total over ${PACED.connections} connections, each message at its scheduled time (or as soon as its connection is free); the others are saturated (each connection sends its next message as soon as the last is decided)`);
  for (const [name, why] of skipped) print(`baseline skipped: ${name}: ${why}`);
  if (!specs.some((s) => s.name === 'themis')) print('note: themis is not among the targets: no ratios and no checks');

  // Start every target once; they stay up for all rounds.
  const milters = new Map<TargetName, Milter>();
  for (const spec of specs) {
    try {
      const m = await startMilter(spec);
      milters.set(spec.name, m);
      print(`started ${pad(spec.name, 6)} pid ${m.pid} on 127.0.0.1:${m.port}: ${[spec.command, ...spec.args(m.port)].join(' ')}`);
    } catch (err) {
      if (spec.name === 'themis') throw err;
      skipped.set(spec.name, `could not start: ${(err as Error).message}`);
      print(`baseline skipped: ${spec.name}: could not start: ${(err as Error).message}`);
    }
  }
  const targets = TARGET_NAMES.filter((t) => milters.has(t));
  const runErrors: string[] = [];

  const runOne = async (m: Milter, c: Config): Promise<LoadResult | undefined> => {
    if (!alive(m)) {
      runErrors.push(`${m.spec.name} ${configName(c)}: the milter is no longer running (${m.child.exitCode ?? m.child.signalCode}): ${m.tail.slice(-3).join(' | ')}`);
      return undefined;
    }
    try {
      const { json } = await runLoadProcess(loadArgs(m, c));
      return json as LoadResult;
    } catch (err) {
      runErrors.push(`${m.spec.name} ${configName(c)}: ${(err as Error).message}`);
      return undefined;
    }
  };

  // Warm-up (not recorded): JIT, caches, thread pools.
  print(`warm-up: ${plan.warmup} messages at C=10 per target (not recorded)`);
  for (const t of targets) await runOne(milters.get(t)!, { connections: 10, messages: plan.warmup });

  const records: RunRecord[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const c of plan.configs) {
      const line: string[] = [];
      for (const t of targets) {
        const r = await runOne(milters.get(t)!, c);
        if (!r) {
          line.push(`${t} FAILED`);
          continue;
        }
        records.push({ round, target: t, config: configName(c), connections: c.connections, ...(c.rate ? { rate: c.rate } : {}), result: r });
        const behind = r.pacing && !r.pacing.kept_up ? ' (DID NOT KEEP UP)' : '';
        line.push(`${t} ${r.msgs_per_s.toFixed(0)}/s${behind} ${f(r.milter_cpu_ms_per_msg ?? NaN)}+${f(r.client_cpu_ms_per_msg)} ms${r.protocol_errors ? ` ${r.protocol_errors} PROTOCOL ERRORS` : ''}`);
      }
      print(`round ${round}/${rounds} ${c.rate ? configName(c) : `C=${pad(String(c.connections), 3)}`} ${line.join('  |  ')}   (msgs/s, milter+client CPU per msg)`);
    }
  }
  const logLines = new Map<TargetName, number>([...milters].map(([t, m]) => [t, m.logLines]));
  const tails = new Map<TargetName, string[]>([...milters].map(([t, m]) => [t, [...m.tail]]));
  for (const m of milters.values()) await stopChild(m.child);

  // Memory: a fresh instance of each milter, N idle sessions.
  const memory = new Map<TargetName, IdleResult>();
  print(`memory: ${plan.idle} idle sessions (OPTNEG+CONNECT+HELO, then idle) against a fresh instance of each target`);
  for (const t of targets) {
    const spec = specs.find((s) => s.name === t)!;
    let m: Milter | undefined;
    try {
      m = await startMilter(spec);
      const { json } = await runLoadProcess(['--port', String(m.port), '--idle', String(plan.idle), '--milter-pid', String(m.pid)]);
      memory.set(t, json as IdleResult);
    } catch (err) {
      runErrors.push(`memory ${t}: ${(err as Error).message}`);
    } finally {
      if (m) await stopChild(m.child);
    }
  }

  // ------------------------------------------------------------------ report
  const rows = summarizeRows(records, targets, plan.configs);
  const baselines = targets.filter((t) => t !== 'themis' && t !== 'kernel' && t !== 'monitor');
  const rs = targets.includes('themis') ? ratios(records, rows, plan.configs, baselines) : [];

  print();
  print(`Results (median of ${rounds} round${rounds > 1 ? 's' : ''}; latency is from the message's first packet to its decision):`);
  printTable(rows, plan.configs);
  const sources = [...new Set(rows.flatMap((r) => r.milter_cpu_sources))];
  print(`milter CPU: /proc/<pid> of the milter process, all threads (source per run: ${sources.join(', ')}; see bench/README.md)`);
  for (const c of plan.configs.filter((x) => x.rate)) {
    const paced = rows.filter((r) => r.config === configName(c));
    if (paced.length === 0) continue;
    print(`${configName(c)}: offered ${c.rate} msg/s; kept up (achieved ≥ ${KEPT_UP_RATIO * 100} % of offered) in: ${paced.map((r) => `${SHORT[r.target]} ${r.kept_up_runs}/${r.runs}`).join(', ')}`);
  }

  if (rs.length > 0) {
    print();
    print('Milter CPU per message, Themis ÷ baseline (< 1 = Themis cheaper):');
    print(`${pad('config', CW)} ${baselines.map((b) => lpad(`Themis/${SHORT[b]}`, 12)).join(' ')}   per round`);
    for (const c of plan.configs) {
      const cells = baselines.map((b) => rs.find((r) => r.config === configName(c) && r.baseline === b));
      const per = cells.map((r, i) => (r ? `${SHORT[baselines[i]]}: ${r.per_round.map((x) => x.toFixed(2)).join(' ')}` : '')).filter(Boolean).join('  ');
      print(`${pad(configName(c), CW)} ${cells.map((r) => lpad(r ? r.ratio.toFixed(2) : 'n/a', 12)).join(' ')}   ${per}`);
    }
  }

  const kernelRatios = plan.configs.map((c) => {
    const k = rows.find((r) => r.target === 'kernel' && r.config === configName(c));
    const e = rows.find((r) => r.target === 'themis' && r.config === configName(c));
    return { config: configName(c), ratio: k && e ? k.milter_cpu_ms_per_msg / e.milter_cpu_ms_per_msg : NaN };
  });
  if (kernelRatios.some((r) => Number.isFinite(r.ratio))) {
    print();
    print('Milter CPU per message, kernel with one trivial plugin ÷ bare engine (1.00 = the kernel costs nothing):');
    for (const r of kernelRatios) print(`${pad(r.config, CW)} ${lpad(Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : 'n/a', 12)}`);
  }

  const monitorRatios = plan.configs.map((c) => {
    const m = rows.find((r) => r.target === 'monitor' && r.config === configName(c));
    const k = rows.find((r) => r.target === 'kernel' && r.config === configName(c));
    return { config: configName(c), ratio: m && k ? m.milter_cpu_ms_per_msg / k.milter_cpu_ms_per_msg : NaN };
  });
  if (monitorRatios.some((r) => Number.isFinite(r.ratio))) {
    print();
    print('Milter CPU per message, kernel + monitor plugin ÷ kernel (1.00 = the monitor costs nothing):');
    for (const r of monitorRatios) print(`${pad(r.config, CW)} ${lpad(Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : 'n/a', 12)}`);
  }

  if (memory.size > 0) {
    print();
    print(`Memory with ${plan.idle} idle sessions (fresh process each):`);
    print(`${pad('target', 14)} ${lpad('sessions', 9)} ${lpad('RSS before', 11)} ${lpad('RSS idle', 9)} ${lpad('peak (VmHWM)', 13)} ${lpad('per session', 12)} ${lpad('threads', 8)}`);
    for (const [t, r] of memory) {
      const mb = (kb: number | undefined) => (kb === undefined ? 'n/a' : `${(kb / 1024).toFixed(1)} MB`);
      print(`${pad(TARGET_LABELS[t], 14)} ${lpad(`${r.established}/${r.requested}`, 9)} ${lpad(mb(r.before?.rssKb), 11)} ${lpad(mb(r.during?.rssKb), 9)} ${lpad(mb(r.during?.hwmKb), 13)} ${lpad(r.rss_per_conn_kb === undefined ? 'n/a' : `${r.rss_per_conn_kb.toFixed(1)} kB`, 12)} ${lpad(String(r.during?.threads ?? 'n/a'), 8)}${r.protocol_errors ? `   ${r.protocol_errors} PROTOCOL ERRORS ${JSON.stringify(r.protocol_error_kinds)}` : ''}`);
    }
  }

  // Protocol errors: loud, with samples.
  const errorRuns = records.filter((r) => r.result.protocol_errors > 0);
  if (errorRuns.length > 0) {
    print();
    print('!!!!!!!!!! PROTOCOL ERRORS !!!!!!!!!!');
    for (const r of errorRuns) print(`  ${r.target} ${r.config} round ${r.round}: ${r.result.protocol_errors} ${JSON.stringify(r.result.protocol_error_kinds)} e.g. ${r.result.error_samples.slice(0, 2).join(' / ')}`);
  }
  for (const [t, n] of logLines) {
    if (t === 'themis' && n > 0) print(`themis wrote ${n} log line(s) at warn level or above during the load; last: ${tails.get(t)!.slice(-3).join(' | ')}`);
  }
  if (runErrors.length > 0) {
    print();
    print('Runs that failed:');
    for (const e of runErrors) print(`  ${e}`);
  }

  // ------------------------------------------------------------------ checks
  const checks: Check[] = [];
  let ratelimitJson: unknown;
  const cpuRow = (t: TargetName, config: string) => rows.find((r) => r.target === t && r.config === config);
  for (const [id, spec] of [['a', CHECK_A], ['b', CHECK_B]] as const) {
    const th = cpuRow('themis', configName({ connections: spec.connections, messages: 0 }));
    const c = cpuRow('c', configName({ connections: spec.connections, messages: 0 }));
    const what = `Themis CPU/msg at ${spec.connections} connection${spec.connections > 1 ? 's' : ''} ≤ ${spec.maxRatio.toFixed(1)} × C libmilter's`;
    if (!th || !c || !Number.isFinite(th.milter_cpu_ms_per_msg) || !Number.isFinite(c.milter_cpu_ms_per_msg)) {
      checks.push({ id, status: 'SKIP', text: `${what}: ${!th ? 'no Themis figure' : `no C figure (${skipped.get('c') ?? 'run failed'})`}` });
      continue;
    }
    const limit = spec.maxRatio * c.milter_cpu_ms_per_msg;
    const ratio = th.milter_cpu_ms_per_msg / c.milter_cpu_ms_per_msg;
    checks.push({ id, status: th.milter_cpu_ms_per_msg <= limit ? 'PASS' : 'FAIL', text: `${what}: ${f(th.milter_cpu_ms_per_msg)} vs limit ${f(limit)} ms (C ${f(c.milter_cpu_ms_per_msg)} ms; ratio ${ratio.toFixed(2)})` });
  }
  {
    const themisRecords = records.filter((r) => r.target === 'themis');
    const n = themisRecords.reduce((s, r) => s + r.result.protocol_errors, 0) + (memory.get('themis')?.protocol_errors ?? 0);
    const failedRuns = runErrors.filter((e) => e.startsWith('themis') || e.startsWith('memory themis')).length;
    if (!targets.includes('themis')) checks.push({ id: 'c', status: 'SKIP', text: 'zero protocol errors for Themis: Themis not run' });
    else checks.push({ id: 'c', status: n === 0 && failedRuns === 0 && themisRecords.length > 0 ? 'PASS' : 'FAIL', text: `zero protocol errors for Themis: ${n} protocol error(s) in ${themisRecords.length} runs${failedRuns ? `, ${failedRuns} failed run(s)` : ''}` });
  }
  {
    const mem = memory.get('themis');
    if (!mem?.during) checks.push({ id: 'd', status: targets.includes('themis') ? 'FAIL' : 'SKIP', text: `Themis peak RSS with ${plan.idle} idle connections < ${CHECK_D_MB} MB: no measurement` });
    else {
      const mb = mem.during.hwmKb / 1024;
      const ok = mb < CHECK_D_MB && mem.established === plan.idle;
      checks.push({ id: 'd', status: ok ? 'PASS' : 'FAIL', text: `Themis peak RSS with ${plan.idle} idle connections < ${CHECK_D_MB} MB: VmHWM ${mb.toFixed(1)} MB, VmRSS ${(mem.during.rssKb / 1024).toFixed(1)} MB (${mem.established}/${plan.idle} sessions established)` });
    }
  }
  {
    const at10 = kernelRatios.find((r) => r.config === configName({ connections: CHECK_A.connections, messages: 0 }));
    const what = `the kernel with one trivial plugin adds < 20% CPU per message at ${CHECK_A.connections} connections`;
    if (!at10 || !Number.isFinite(at10.ratio)) checks.push({ id: 'e', status: 'SKIP', text: `${what}: kernel or engine not measured` });
    else checks.push({ id: 'e', status: at10.ratio < 1.2 ? 'PASS' : 'FAIL', text: `${what}: kernel ÷ engine = ${at10.ratio.toFixed(2)}` });
  }
  {
    const at10 = monitorRatios.find((r) => r.config === configName({ connections: CHECK_F.connections, messages: 0 }));
    const what = `the monitor plugin adds < 5% CPU per message at ${CHECK_F.connections} connections`;
    if (!at10 || !Number.isFinite(at10.ratio)) checks.push({ id: 'f', status: 'SKIP', text: `${what}: monitor or kernel not measured` });
    else checks.push({ id: 'f', status: at10.ratio < CHECK_F.maxRatio ? 'PASS' : 'FAIL', text: `${what}: (kernel + monitor) ÷ kernel = ${at10.ratio.toFixed(2)}` });
  }
  for (const c of plan.configs.filter((x) => x.rate)) {
    // The paced case: CPU per message where each packet is a wake-up of its own. Themis must have kept
    // up (else its figure is a saturated one, which is cheaper per message and would flatter it).
    const name = configName(c);
    const th = cpuRow('themis', name);
    const cr = cpuRow('c', name);
    const what = `Themis engine CPU/msg at the paced load (${c.rate} msg/s over ${c.connections} connections) ≤ ${CHECK_G.maxRatio.toFixed(1)} × C libmilter's`;
    if (!th || !cr || !Number.isFinite(th.milter_cpu_ms_per_msg) || !Number.isFinite(cr.milter_cpu_ms_per_msg)) {
      checks.push({ id: 'g', status: 'SKIP', text: `${what}: ${!th ? 'no Themis figure' : `no C figure (${skipped.get('c') ?? 'run failed'})`}` });
      continue;
    }
    const limit = CHECK_G.maxRatio * cr.milter_cpu_ms_per_msg;
    const ratio = th.milter_cpu_ms_per_msg / cr.milter_cpu_ms_per_msg;
    const keptUp = 2 * (th.kept_up_runs ?? 0) > th.runs;
    const ok = th.milter_cpu_ms_per_msg <= limit && keptUp;
    checks.push({ id: 'g', status: ok ? 'PASS' : 'FAIL', text: `${what}: ${f(th.milter_cpu_ms_per_msg)} vs limit ${f(limit)} ms (C ${f(cr.milter_cpu_ms_per_msg)} ms; ratio ${ratio.toFixed(2)}); kept up: Themis ${th.kept_up_runs}/${th.runs}, C ${cr.kept_up_runs}/${cr.runs} runs${keptUp ? '' : ' — Themis did not keep up in most runs'}` });
  }
  if (opts.ratelimit) {
    // A separate process: its Redis client and load must not share this process's event loop.
    const out = join(mkdtempSync(join(tmpdir(), 'themis-bench-rl-')), 'ratelimit.json');
    const child = spawn(process.execPath, [join(REPO, 'bench', 'ratelimit.ts'), ...(opts.quick ? ['--quick'] : []), '--json', out], { stdio: ['ignore', 'inherit', 'inherit'] });
    await new Promise((r) => child.once('exit', r));
    if (existsSync(out)) {
      const rl = JSON.parse(readFileSync(out, 'utf8')) as { checks: { name: string; status: 'PASS' | 'FAIL' }[] };
      rl.checks.forEach((c, i) => checks.push({ id: `r${i + 1}`, status: c.status, text: c.name.replace(/^ratelimit: /, 'ratelimit: ') }));
      ratelimitJson = rl;
    } else checks.push({ id: 'r', status: 'SKIP', text: 'ratelimit: not measured (redis-server not installed, or the run failed: see above)' });
  }
  let predictJson: unknown;
  if (opts.predict) {
    // A process of its own (its redis-server, its kernels); its checks (n1)–(n5) join this run's.
    const out = join(mkdtempSync(join(tmpdir(), 'themis-bench-predict-')), 'predict.json');
    const child = track(spawn(process.execPath, ['--conditions=themis-source', join(REPO, 'bench', 'predict.ts'), ...(opts.quick ? ['--quick'] : []), '--json', out], { stdio: ['ignore', 'inherit', 'inherit'] }));
    await new Promise((r) => child.once('exit', r));
    if (existsSync(out)) {
      const doc = JSON.parse(readFileSync(out, 'utf8')) as { checks: Check[] };
      checks.push(...doc.checks);
      predictJson = doc;
    } else checks.push({ id: 'n', status: 'FAIL', text: 'predict: the run failed (see above)' });
    rmSync(dirname(out), { recursive: true, force: true });
  }
  if (opts.spf) {
    const child = spawn(process.execPath, [join(REPO, 'bench', 'spf.ts'), '--checks', opts.quick ? '500' : '2000'], { stdio: ['ignore', 'inherit', 'inherit'] });
    await new Promise((r) => child.once('exit', r));
  }
  let dkimJson: unknown;
  if (opts.dkim) {
    // A process of its own (it starts its five milters); exit 1 means a milter did not sign or verify every message.
    const out = join(mkdtempSync(join(tmpdir(), 'themis-bench-dkim-json-')), 'dkim.json');
    const child = track(spawn(process.execPath, [join(REPO, 'bench', 'dkim.ts'), ...(opts.quick ? ['--quick'] : []), '--json', out], { stdio: ['ignore', 'inherit', 'inherit'] }));
    const code = await new Promise((r) => child.once('exit', r));
    if (existsSync(out)) dkimJson = JSON.parse(readFileSync(out, 'utf8'));
    rmSync(dirname(out), { recursive: true, force: true });
    checks.push({ id: 'k', status: code === 0 ? 'PASS' : 'FAIL', text: code === 0 ? 'dkim: every message signed twice / verified with dkim=pass ×2' : 'dkim: a milter did not sign or verify every message, or the run failed (see above)' });
  }
  // The end-to-end sections run as processes of their own (each starts its MTAs and milters and prints
  // its own table); their checks join this run's.
  const section = async (script: string, name: string, prefix: string, missing: string): Promise<unknown> => {
    const out = join(mkdtempSync(join(tmpdir(), `themis-bench-${script}-`)), `${script}.json`);
    const child = track(spawn(process.execPath, [join(REPO, 'bench', `${script}.ts`), ...(opts.quick ? ['--quick'] : []), '--json', out], { stdio: ['ignore', 'inherit', 'inherit'] }));
    await new Promise((r) => child.once('exit', r));
    if (!existsSync(out)) {
      checks.push({ id: prefix, status: 'SKIP', text: `${name}: not measured (${missing}, or the run failed: see above)` });
      return undefined;
    }
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { checks: { id: string; status: 'PASS' | 'FAIL' | 'SKIP'; text: string }[] };
    rmSync(dirname(out), { recursive: true, force: true });
    for (const c of doc.checks) checks.push(c.id.startsWith(`${prefix}-`) ? c : { ...c, id: `${prefix}-${c.id}`, text: `${name}: ${c.text}` });
    return doc;
  };
  const postfixJson = opts.postfix ? await section('postfix', 'Postfix end to end', 'p', 'postfix or smtp-source not installed') : undefined;
  const sendmailJson = opts.sendmail ? await section('sendmail', 'Sendmail end to end', 's', 'the private test Sendmail is not installed') : undefined;
  print();
  print('Checks:');
  for (const c of checks) print(`${c.status} (${c.id}) ${c.text}`);
  const elapsed = (performance.now() - t0) / 1000;
  print(`bench took ${elapsed.toFixed(0)} s; load average now ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  if (opts.json) {
    const doc = {
      started: started.toISOString(),
      elapsed_s: Math.round(elapsed),
      quick: opts.quick,
      rounds,
      host: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), node: process.version, loadavg_end: loadavg() },
      message: MESSAGE,
      configs: plan.configs,
      shared_dir: sharedDir,
      targets: Object.fromEntries(specs.map((s) => [s.name, { command: s.command, started: milters.has(s.name) }])),
      skipped: Object.fromEntries(skipped),
      summary: rows,
      ratios: rs,
      memory: Object.fromEntries(memory),
      checks,
      ratelimit: ratelimitJson,
      predict: predictJson,
      dkim: dkimJson,
      postfix: postfixJson,
      sendmail: sendmailJson,
      run_errors: runErrors,
      runs: records,
    };
    mkdirSync(dirname(opts.json), { recursive: true });
    writeFileSync(opts.json, JSON.stringify(doc, null, 1) + '\n');
    print(`JSON: ${opts.json}`);
  }
  return checks.some((c) => c.status === 'FAIL') || (runErrors.length > 0 && records.length === 0) ? 1 : 0;
}

main().then(
  (code) => {
    killAll();
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killAll();
    process.exitCode = 1;
  },
);
