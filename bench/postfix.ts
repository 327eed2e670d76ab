/**
 * The "Postfix end to end" section of the benchmark: Themis behind a real Postfix, against the same
 * Postfix with no milter and with the C libmilter null milter.
 *
 * It starts its own throwaway Postfix (test/helpers/postfix.ts) with one smtpd service per target, each
 * on its own loopback port with its own `smtpd_milters` (master.cf `-o`). Postfix delivers every message
 * with its smtp client to a local sink, Postfix's own `smtp-sink` on a loopback port, as a relay passes
 * mail on (`--delivery discard`: every transport is `discard:`, and delivery costs next to nothing — the
 * harshest ratio, since the milter's share of the work is then largest). Then, targets interleaved over
 * several rounds:
 * - `smtp-source` sends M messages over 20 parallel sessions, several messages per connection (`-d`),
 *   then one message per connection; msg/s is messages accepted by smtpd (queued, from the Postfix log)
 *   per wall second of the smtp-source run;
 * - a small sequential SMTP client of this module sends ~200 messages on one session to the target and
 *   200 on one to the no-milter smtpd, alternately, and times MAIL → 250 and end of data → 250; a
 *   target's added latency is its p50 minus that of the no-milter session alongside;
 * - `sendmail(1)` submits messages through pickup and cleanup (non_smtpd_milters), into two more
 *   instances: no milter and Themis with no plugin (target `repo`, postfix-configs/none.config.ts).
 * After each run it waits for the queue to drain and reads that run's slice of the Postfix log:
 * delivered, deferred, bounced, milter-reject, other rejects, `warning: … milter` lines.
 *
 * It also reads CPU time per message: the milter's (/proc/PID), all of Postfix's (the master's process
 * group), smtp-source's — on a saturated box msg/s follows them, and they say who spends it.
 *
 * Checks: every Themis row ≥ 0.8 × no-milter msg/s (same mode, same round, median over rounds); added p50
 * latency ≤ 1 ms; 0 deferred or rejected messages and no milter warnings in every row; Themis logged one
 * decision per message (the milter really was in the path) and nothing at warn level.
 *
 * Usage: node bench/postfix.ts [--quick] [--rounds N] [--messages N] [--targets a,b] [--delivery sink|discard] [--json [PATH]]
 * Exit status: 0 every check passed or was skipped, 1 a check failed or it could not run, 2 bad usage,
 * 130 interrupted.
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { chmod, chown } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDnsServer, type DnsServer } from '../test/helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance, type PostfixOptions } from '../test/helpers/postfix.ts';
import { redisAvailable, startRedis, type RedisServer } from '../test/helpers/redis.ts';
import { MTA_NAME, RECIPIENT, SENDER, SENDER_DOMAIN } from './postfix-configs/mail.ts';
import { canConnect, findOrBuildC, isExecutable, killAll, removeTempDir, stopChild, track, trackTempDir } from './baselines.ts';
import { freePort } from '../test/helpers/process.ts';
import { SmtpConversation } from '../test/helpers/smtp.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const THEMIS_BIN = join(REPO, 'bin', 'themis.js');
const DEFAULT_JSON = join(REPO, 'bench', 'results', 'postfix.json');
const SMTP_SOURCE = '/usr/sbin/smtp-source';
const SMTP_SINK = '/usr/sbin/smtp-sink';

// ---------------------------------------------------------------------------------------------
// What is measured

/** Sizes of one run. */
export interface PostfixBenchPlan {
  rounds: number;
  /** Messages per smtp-source run. */
  messages: number;
  /** Parallel SMTP sessions of smtp-source. */
  sessions: number;
  /** Payload bytes per message (smtp-source -l; the latency client sends the same). */
  bodyBytes: number;
  /** Messages per target sent before the rounds, not recorded (JIT, caches, Postfix processes). */
  warmup: number;
  /** Messages of the sequential latency session, per target and round. */
  latencyMessages: number;
  /** Messages submitted with sendmail(1) per sendmail run (0: no sendmail rows). */
  sendmailMessages: number;
  /** sendmail(1) processes running at once. */
  sendmailConcurrency: number;
}

/**
 * The full run: 5–6 minutes on a 2-core box. 14 targets × 2 modes × 3 rounds of smtp-source at 300–900
 * msg/s: 1,200 messages per run (2,000 would take 8 minutes; 3 interleaved rounds beat longer runs on a
 * box whose noise comes from other processes).
 */
const FULL: PostfixBenchPlan = { rounds: 3, messages: 1200, sessions: 20, bodyBytes: 1000, warmup: 200, latencyMessages: 200, sendmailMessages: 200, sendmailConcurrency: 4 };
/** `--quick`: a smoke run, figures not for comparison. */
const QUICK: PostfixBenchPlan = { rounds: 1, messages: 500, sessions: 20, bodyBytes: 1000, warmup: 100, latencyMessages: 100, sendmailMessages: 50, sendmailConcurrency: 4 };

/** Thresholds of the checks. */
const CHECK = { minRatio: 0.8, maxAddedP50Ms: 1 };

type TargetKind = 'none' | 'c' | 'themis';

/** One thing Postfix is run against. */
interface TargetDef {
  id: string;
  label: string;
  kind: TargetKind;
  /** Themis: the configuration file (relative to the repository). */
  config?: string;
  /** Themis: `--engine-only`. */
  engineOnly?: boolean;
  /** Themis: listen on a UNIX socket instead of TCP. */
  unix?: boolean;
  /** Needs the loopback DNS server (SPF). */
  dns?: boolean;
  /** Needs a Redis store. */
  redis?: boolean;
}

/** No plugin, no policy: what the repository's themis.config.ts was before it demonstrated the plugins. */
const NO_PLUGIN_CONFIG = 'bench/postfix-configs/none.config.ts';

/** Every target, in table order. `none` is the reference of every ratio and latency. */
const TARGETS: readonly TargetDef[] = [
  { id: 'none', label: 'no milter', kind: 'none' },
  { id: 'c', label: 'C libmilter null', kind: 'c' },
  { id: 'engine', label: 'engine only', kind: 'themis', config: NO_PLUGIN_CONFIG, engineOnly: true },
  { id: 'repo', label: 'no plugin', kind: 'themis', config: NO_PLUGIN_CONFIG },
  { id: 'unix', label: 'no plugin, unix socket', kind: 'themis', config: NO_PLUGIN_CONFIG, unix: true },
  { id: 'ratelimit', label: 'ratelimit', kind: 'themis', config: 'bench/postfix-configs/ratelimit.config.ts' },
  { id: 'spf', label: 'spf', kind: 'themis', config: 'bench/postfix-configs/spf.config.ts', dns: true },
  { id: 'headers', label: 'headers', kind: 'themis', config: 'bench/postfix-configs/headers.config.ts' },
  { id: 'monitor', label: 'monitor', kind: 'themis', config: 'bench/postfix-configs/monitor.config.ts' },
  { id: 'predict', label: 'predict', kind: 'themis', config: 'bench/postfix-configs/predict.config.ts' },
  { id: 'all', label: 'all 5, Redis', kind: 'themis', config: 'bench/postfix-configs/all.config.ts', dns: true, redis: true },
  { id: 'allowlist', label: 'example plugin', kind: 'themis', config: 'bench/postfix-configs/allowlist.config.ts' },
  { id: 'bypass', label: 'bypass policy', kind: 'themis', config: 'bench/postfix-configs/bypass.config.ts' },
  { id: 'match', label: 'match src+dst', kind: 'themis', config: 'bench/postfix-configs/match.config.ts' },
];

/** The ids `--targets` accepts. */
export const POSTFIX_TARGET_IDS: readonly string[] = TARGETS.map((t) => t.id);

/** smtp-source modes: several messages per connection (`-d`), or one. */
type Mode = 'reuse' | 'single';
const MODES: readonly Mode[] = ['reuse', 'single'];
const MODE_LABEL: Record<Mode, string> = { reuse: 'several msgs/conn (-d)', single: '1 msg/conn' };

// ---------------------------------------------------------------------------------------------
// Options and results

/** Options of {@link runPostfixBench}. */
export interface PostfixBenchOptions {
  /** Smoke run: 1 round, fewer messages. */
  quick?: boolean;
  /** Overrides the plan's rounds. */
  rounds?: number;
  /** Overrides the plan's messages per smtp-source run. */
  messages?: number;
  /** Target ids to run (see {@link POSTFIX_TARGET_IDS}); `none` is always added. Default: all. */
  targets?: string[];
  /**
   * Where Postfix delivers: `sink` (default) with its smtp client to Postfix's `smtp-sink` on a loopback
   * port, as a relay passes mail on; `discard` to the discard transport (delivery costs next to nothing).
   */
  delivery?: 'sink' | 'discard';
  /** Progress lines (default: stdout). */
  print?: (line: string) => void;
}

/** What the Postfix log says about one run (its slice of the log, after the queue drained). */
export interface LogCounts {
  /** Messages queued (qmgr `from=` lines): accepted by smtpd, or by pickup for sendmail. */
  accepted: number;
  /** `status=sent` deliveries (to the sink, or by the discard transport). */
  delivered: number;
  deferred: number;
  bounced: number;
  /** `milter-reject` lines (any stage, any code). */
  milterRejects: number;
  /** `milter-discard` and `milter-hold` lines. */
  milterOther: number;
  /** Other `reject:` lines (Postfix's own restrictions). */
  otherRejects: number;
  /** `warning:` lines that mention a milter. */
  milterWarnings: number;
  /** A few of the lines above, for the report. */
  samples: string[];
}

/** One smtp-source run. */
export interface SmtpRun {
  round: number;
  target: string;
  mode: Mode;
  messages: number;
  seconds: number;
  /** Accepted messages per second of the smtp-source run. */
  msgs_per_s: number;
  log: LogCounts;
  /** smtp-source's own complaints (stderr lines, non-zero exit). */
  client_errors: string[];
  /** Themis targets: `decision` lines it logged during the run (one per message it decided). */
  themis_decisions?: number;
  /** Themis targets: log lines at warn level or above during the run. */
  themis_warnings?: number;
  /** The first of them, shortened. */
  themis_warning_samples?: string[];
  /** CPU time of the milter process (all threads; for `all`, plus redis-server) per accepted message, ms. */
  milter_cpu_ms_per_msg?: number;
  /** CPU time of every Postfix process (the master's process group, reaped children included) per accepted message, ms. */
  postfix_cpu_ms_per_msg: number;
  /** CPU time of smtp-source (and of smtp-sink, when Postfix delivers to it) per accepted message, ms. */
  client_cpu_ms_per_msg: number;
  /** CPU time of the whole host (/proc/stat: every process, also what else runs on the box) per accepted message, ms. */
  host_cpu_ms_per_msg: number;
  /** Share of the host's CPUs busy during the run, % (100 = every core saturated). */
  host_busy_pct: number;
  /** Redis targets: script calls (EVALSHA, EVAL, FCALL) per accepted message. */
  store_scripts_per_msg?: number;
  /** Redis targets: every command Redis executed per accepted message, those run inside scripts included (INFO commandstats). */
  store_commands_per_msg?: number;
}

/**
 * One latency measurement: a session to the target's smtpd and one to the no-milter smtpd, one message
 * on each in turn, so that both see the same moments of a noisy box.
 */
export interface LatencyRun {
  round: number;
  target: string;
  /** Messages per session. */
  messages: number;
  /** Replies other than the expected 250/354 on the target's session (the message was then abandoned with RSET). */
  errors: number;
  /** MAIL FROM → 250, ms. */
  mail: Percentiles;
  /** Final `.` of DATA → 250, ms. */
  eod: Percentiles;
  /** The whole transaction (MAIL … 250 after the data), ms. */
  transaction: Percentiles;
  /** The same, on the no-milter session that ran alongside. */
  reference: { errors: number; mail: Percentiles; eod: Percentiles; transaction: Percentiles };
}

/** p50/p90/p99/max of a latency sample, ms. */
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** One sendmail(1) run. */
export interface SendmailRun {
  round: number;
  /** `none` or `repo`. */
  target: string;
  messages: number;
  /** From the first submission to the last delivery in the log. */
  seconds: number;
  msgs_per_s: number;
  /** sendmail processes that exited non-zero. */
  submit_errors: number;
  log: LogCounts;
}

/** The summary of one target. */
export interface PostfixRow {
  target: string;
  label: string;
  kind: TargetKind;
  /** Per mode: median msg/s, median of the per-round ratios to `none`, per-round figures. */
  modes: Record<Mode, {
    msgs_per_s: number;
    ratio: number;
    /** Median of the per-round ratios to the C libmilter null milter (NaN without it). */
    ratio_c: number;
    msgs_per_s_per_round: number[];
    ratio_per_round: number[];
    /** Medians over rounds, ms per accepted message. */
    milter_cpu_ms_per_msg: number;
    postfix_cpu_ms_per_msg: number;
    client_cpu_ms_per_msg: number;
    host_cpu_ms_per_msg: number;
    host_busy_pct: number;
    /** Redis targets: medians of script calls and of commands (inside scripts included) per message. */
    store_scripts_per_msg?: number;
    store_commands_per_msg?: number;
  }>;
  /** Median over rounds of the p50s, ms. */
  mail_p50_ms: number;
  eod_p50_ms: number;
  /** Median over rounds of (p50 − none's p50 in that round), ms. */
  mail_added_ms: number;
  eod_added_ms: number;
  /** Totals over every recorded run of the target (smtp-source and latency). */
  deferred: number;
  rejected: number;
  milter_warnings: number;
  /** Messages sent that the log does not show accepted, smtp-source errors, latency-session errors. */
  missing: number;
  themis_warnings: number;
}

/** The sendmail(1) comparison. */
export interface SendmailRow {
  target: string;
  msgs_per_s: number;
  ratio: number;
  msgs_per_s_per_round: number[];
  ratio_per_round: number[];
  deferred: number;
  rejected: number;
  milter_warnings: number;
  missing: number;
}

/** A check and its outcome. */
export interface PostfixCheck {
  id: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  text: string;
}

/** Everything {@link runPostfixBench} measured; JSON-serialisable. */
export interface PostfixBenchResult {
  started: string;
  elapsed_s: number;
  quick: boolean;
  /** Where Postfix delivered ({@link PostfixBenchOptions.delivery}). */
  delivery: 'sink' | 'discard';
  plan: PostfixBenchPlan;
  host: { cpus: number; model: string | undefined; kernel: string; node: string; postfix: string; loadavg_end: number[] };
  /** How each target was run (command line, milter spec as Postfix sees it). */
  targets: { id: string; label: string; kind: TargetKind; milter: string; command?: string }[];
  /** Targets not run, with the reason. */
  skipped: Record<string, string>;
  runs: SmtpRun[];
  latency: LatencyRun[];
  sendmail: SendmailRun[];
  rows: PostfixRow[];
  sendmail_rows: SendmailRow[];
  checks: PostfixCheck[];
  /** Things that went wrong outside the checks (a target that died, a run that failed). */
  errors: string[];
}

// ---------------------------------------------------------------------------------------------
// Processes and temp dirs: all tracked, all removed on the way out (also on exit and signals)

/** Kills what is left of it when the process exits (Postfix, Redis and the DNS server have their own exit hooks in their helpers). */
function installExitHook(): void {
  process.once('exit', killAll);
}




const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/** Reads `file` from byte `from` to its current end. */
function readFrom(file: string, from: number): { text: string; end: number } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { text: '', end: from };
  }
  try {
    const size = statSync(file).size;
    if (size <= from) return { text: '', end: size };
    const buf = Buffer.alloc(size - from);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, from + got);
      if (n === 0) break;
      got += n;
    }
    return { text: buf.subarray(0, got).toString('utf8'), end: from + got };
  } finally {
    closeSync(fd);
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux that matters). */
let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** CPU time of a process, all its threads, ms (/proc/PID/stat utime + stime); NaN when unreadable. */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / clkTck;
  } catch {
    return NaN;
  }
}

/** The host's busy and total CPU time so far, ms, summed over every CPU (/proc/stat). */
function hostCpuMs(): { busy: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    const idle = f[3] + f[4];
    return { busy: ((total - idle) * 1000) / clkTck, total: (total * 1000) / clkTck };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/**
 * CPU time of a process group, ms: its live members' own times plus the leader's reaped children's.
 * Postfix's master leads the group of its daemons and reaps them, so a daemon that exits between two
 * samples moves from the first term to the second with its whole time: the difference of two samples
 * is exactly what the group spent in between.
 */
function groupCpuMs(pgid: number | undefined): number {
  if (pgid === undefined) return NaN;
  let ticks = 0;
  for (const name of readdirSync('/proc')) {
    if (name.charCodeAt(0) > 57) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'latin1');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) !== pgid) continue;
    ticks += Number(f[11]) + Number(f[12]);
    if (Number(name) === pgid) ticks += Number(f[13]) + Number(f[14]);
  }
  return (ticks * 1000) / clkTck;
}

/** CPU time of this process's reaped children, ms (/proc/self/stat cutime + cstime): smtp-source's, once it exited. */
function reapedChildrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / clkTck;
}

/**
 * What a Redis server has executed so far (INFO commandstats): script calls, and every command — those
 * a script runs count too, which is why both are kept. NaN when it does not answer.
 */
function redisCalls(port: number | undefined): Promise<{ scripts: number; commands: number }> {
  const none = { scripts: NaN, commands: NaN };
  if (port === undefined) return Promise.resolve(none);
  return new Promise((res) => {
    const s = netConnect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (n: { scripts: number; commands: number }) => {
      s.destroy();
      res(n);
    };
    s.setTimeout(2000, () => done(none));
    s.on('error', () => done(none));
    s.on('connect', () => s.write('INFO commandstats\r\n'));
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const m = /^\$(\d+)\r\n/.exec(buf);
      if (!m || Buffer.byteLength(buf, 'latin1') < m[0].length + Number(m[1])) return;
      // This INFO call itself is counted by Redis only after it answers.
      const n = { scripts: 0, commands: 0 };
      for (const c of buf.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
        n.commands += Number(c[2]);
        if (/^(evalsha|eval|evalsha_ro|eval_ro|fcall|fcall_ro)$/.test(c[1])) n.scripts += Number(c[2]);
      }
      done(n);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Milters

/** A running milter target (C or Themis). */
interface Milter {
  def: TargetDef;
  /** The milter as `smtpd_milters` names it. */
  spec: string;
  command: string;
  child: ChildProcess;
  /** Themis: where its stdout and stderr go (JSON log lines). */
  logFile?: string;
}

/** Environment for Themis: none of the caller's THEMIS_* settings, which would change what is measured. */
function themisEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('THEMIS_')) env[k] = v;
  return { ...env, ...extra };
}

async function startThemis(def: TargetDef, dir: string, ctx: { dns?: DnsServer; redis?: RedisServer; socketDir: string }): Promise<Milter> {
  let listen: string;
  let spec: string;
  let ready: { port: number } | { path: string };
  if (def.unix) {
    const path = join(ctx.socketDir, `${def.id}.sock`);
    listen = `unix:${path}`;
    spec = `unix:${path}`;
    ready = { path };
  } else {
    const port = await freePort();
    listen = `inet:${port}@127.0.0.1`;
    spec = `inet:127.0.0.1:${port}`;
    ready = { port };
  }
  const args = [THEMIS_BIN, 'start', '--config', join(REPO, def.config!), '--listen', listen, '--http', 'off'];
  if (def.engineOnly) args.push('--engine-only');
  if (def.redis) {
    if (!ctx.redis) throw new Error('no Redis');
    args.push('--redis-url', ctx.redis.url);
  }
  const logFile = join(dir, `themis-${def.id}.log`);
  // The daemon's log goes to a file, as it would to journald: a pipe read by this process would put
  // this process's CPU into the measurement.
  const fd = openSync(logFile, 'a');
  const child = track(spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', fd, fd], env: themisEnv(ctx.dns ? { THEMIS_BENCH_DNS: ctx.dns.address } : {}) }));
  closeSync(fd);
  const m: Milter = { def, spec, command: [process.execPath, ...args].join(' '), child, logFile };
  const deadline = Date.now() + 60_000;
  while (!readFrom(logFile, 0).text.includes('"msg":"themis started') || !(await canConnect(ready))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`themis (${def.id}) exited (${child.exitCode ?? child.signalCode}) before listening: ${tail(logFile)}`);
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`themis (${def.id}) did not listen on ${listen} within 60 s: ${tail(logFile)}`);
    }
    await sleep(50);
  }
  return m;
}

function tail(file: string, lines = 3): string {
  return readFrom(file, 0).text.trim().split('\n').slice(-lines).map((l) => (l.length > 300 ? l.slice(0, 300) + '…' : l)).join(' | ');
}

async function startC(def: TargetDef, bin: string): Promise<Milter> {
  const port = await freePort();
  const child = track(spawn(bin, [String(port)], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString('utf8')).slice(-2000)));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect({ port }))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited (${child.exitCode ?? child.signalCode}) before listening: ${err.trim()}`);
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`did not listen on 127.0.0.1:${port} within 10 s: ${err.trim()}`);
    }
    await sleep(50);
  }
  return { def, spec: `inet:127.0.0.1:${port}`, command: `${bin} ${port}`, child };
}

function alive(m: Milter): boolean {
  return m.child.exitCode === null && m.child.signalCode === null;
}

// ---------------------------------------------------------------------------------------------
// Postfix

/** A throwaway Postfix and the files of it this module reads. */
interface Instance {
  pf: PostfixInstance;
  logFile: string;
  spool: string;
  /** The master's pid, which is also its process group. */
  masterPid: number | undefined;
}

/**
 * main.cf for throughput: Postfix's load-test settings, and everything discarded at delivery (the sink
 * mode replaces the four transports, see {@link mainCfFor}). The helper already sets `smtpd_error_sleep_time = 0`, `in_flow_delay = 0`, no client connection limit,
 * `smtpd_peername_lookup = no`, `milter_protocol = 6` and the milter macros.
 */
const BENCH_MAIN_CF: Record<string, string> = {
  default_transport: 'discard:bench',
  relay_transport: 'discard:bench',
  local_transport: 'discard:bench',
  virtual_transport: 'discard:bench',
  // Idle smtpd processes exit quickly, so that every run starts from the same state whatever the
  // time since the target's previous run.
  max_idle: '5s',
  smtpd_client_connection_rate_limit: '0',
  smtpd_client_message_rate_limit: '0',
  smtpd_client_recipient_rate_limit: '0',
  default_process_limit: '200',
  myhostname: MTA_NAME,
};

/** main.cf for a delivery mode: `sink` sends every message with Postfix's smtp client to 127.0.0.1:`sinkPort`. */
function mainCfFor(delivery: 'sink' | 'discard', sinkPort: number | undefined): Record<string, string> {
  if (delivery === 'discard' || sinkPort === undefined) return BENCH_MAIN_CF;
  const smtp = `smtp:[127.0.0.1]:${sinkPort}`;
  return { ...BENCH_MAIN_CF, default_transport: smtp, relay_transport: smtp, local_transport: smtp, virtual_transport: smtp };
}

/**
 * Starts a Postfix through the test helper. Its queue goes to /dev/shm when there is one: the
 * helper puts it under os.tmpdir(), which it reads synchronously at the call, so TMPDIR is switched
 * around the call only.
 */
async function startInstance(opts: PostfixOptions): Promise<Instance> {
  const saved = process.env.TMPDIR;
  const shm = existsSync('/dev/shm') && (statSync('/dev/shm').mode & 0o1777) === 0o1777;
  if (shm) process.env.TMPDIR = '/dev/shm';
  let started: Promise<PostfixInstance>;
  try {
    started = startPostfix(opts);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
  const pf = await started;
  const spool = join(pf.dir, 'spool');
  let masterPid: number | undefined;
  try {
    masterPid = Number(readFileSync(join(spool, 'pid', 'master.pid'), 'utf8').trim()) || undefined;
  } catch {
    // no CPU figures for Postfix then
  }
  return { pf, logFile: join(pf.dir, 'log', 'postfix.log'), spool, masterPid };
}

/** master.cf lines of one smtpd service per target, each with its own milter and log name. */
function serviceLines(services: { id: string; port: number; milter: string }[]): string {
  let s = '\n# bench/postfix.ts: one smtpd per target, each with its own milter (empty: none)\n';
  for (const v of services) s += `127.0.0.1:${v.port} inet n - n - - smtpd -o syslog_name=postfix/bench-${v.id} -o smtpd_milters=${v.milter}\n`;
  return s;
}

/** Environment for Postfix commands: -c names the configuration, nothing inherited may override it. */
function postfixEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LANG: 'C', LC_ALL: 'C' };
  delete env.MAIL_CONFIG;
  delete env.MAIL_DEBUG;
  delete env.MAIL_VERBOSE;
  return env;
}

async function postfixCommand(inst: Instance, args: string[]): Promise<void> {
  const out = await new Promise<{ code: number | null; text: string }>((res) => {
    const c = spawn('/usr/sbin/postfix', ['-c', inst.pf.configDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: postfixEnv() });
    let text = '';
    c.stdout!.on('data', (d: Buffer) => (text += d.toString('utf8')));
    c.stderr!.on('data', (d: Buffer) => (text += d.toString('utf8')));
    c.once('close', (code) => res({ code, text }));
  });
  if (out.code !== 0) throw new Error(`postfix ${args.join(' ')} exited ${out.code}: ${out.text.trim()}`);
}

/** Reads SMTP lines until the greeting's last line: the service answers. */
function smtpGreets(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = netConnect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      s.destroy();
      res(ok);
    };
    s.setTimeout(5000, () => done(false));
    s.on('error', () => done(false));
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (/^220 .*\r\n/m.test(buf)) {
        s.write('QUIT\r\n');
        done(true);
      }
    });
  });
}

/** Files still in the queues a message passes through before delivery. */
function queued(spool: string): { inFlight: number; deferred: number; hold: number } {
  const count = (d: string): number => {
    try {
      let n = 0;
      for (const e of readdirSync(join(spool, d), { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
      return n;
    } catch {
      return 0;
    }
  };
  return { inFlight: count('incoming') + count('active') + count('maildrop'), deferred: count('deferred'), hold: count('hold') };
}

const RE = {
  accepted: /\/qmgr\[\d+\]: [0-9A-Za-z]+: from=</,
  delivered: /status=sent\b/,
  deferred: /status=deferred\b/,
  bounced: /status=bounced\b/,
  milterReject: /milter-reject:/,
  milterOther: /milter-(discard|hold):/,
  reject: /\breject: /,
  warning: /warning: /,
};

function parseLog(text: string): LogCounts {
  const c: LogCounts = { accepted: 0, delivered: 0, deferred: 0, bounced: 0, milterRejects: 0, milterOther: 0, otherRejects: 0, milterWarnings: 0, samples: [] };
  const sample = (line: string) => {
    if (c.samples.length < 4) c.samples.push(line.replace(/^\w{3} [ \d]\d [\d:]{8} \S+ /, '').slice(0, 240));
  };
  for (const line of text.split('\n')) {
    if (!line) continue;
    if (RE.accepted.test(line)) c.accepted++;
    else if (RE.delivered.test(line)) c.delivered++;
    else if (RE.deferred.test(line)) {
      c.deferred++;
      sample(line);
    } else if (RE.bounced.test(line)) {
      c.bounced++;
      sample(line);
    } else if (RE.milterReject.test(line)) {
      c.milterRejects++;
      sample(line);
    } else if (RE.milterOther.test(line)) {
      c.milterOther++;
      sample(line);
    } else if (RE.reject.test(line)) {
      c.otherRejects++;
      sample(line);
    }
    if (RE.warning.test(line) && /milter/i.test(line)) {
      c.milterWarnings++;
      sample(line);
    }
  }
  return c;
}

/**
 * Waits until the messages of a run are through the queue and logged: nothing in incoming, active
 * or maildrop, and the log accounts for every message (delivered, deferred, bounced or refused) — or,
 * when it cannot, until it has stopped growing. Returns that run's slice of the log.
 */
async function settle(inst: Instance, from: number, expected: number, timeoutMs = 60_000): Promise<LogCounts> {
  const deadline = Date.now() + timeoutMs;
  let size = -1;
  let stableSince = Date.now();
  for (;;) {
    const q = queued(inst.spool);
    const now = fileSize(inst.logFile);
    if (now !== size) {
      size = now;
      stableSince = Date.now();
    }
    if (q.inFlight === 0) {
      const c = parseLog(readFrom(inst.logFile, from).text);
      const accounted = c.delivered + c.deferred + c.bounced + c.milterRejects + c.milterOther + c.otherRejects;
      // postlogd writes asynchronously: a short quiet spell lets a late warning land in this slice.
      if (accounted >= expected && Date.now() - stableSince >= 30) return c;
      if (Date.now() - stableSince >= 1000) return c;
    }
    if (Date.now() > deadline) return parseLog(readFrom(inst.logFile, from).text);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------------------------
// Load: smtp-source, the latency client, sendmail

function runSmtpSource(port: number, plan: PostfixBenchPlan, messages: number, mode: Mode): Promise<{ seconds: number; errors: string[] }> {
  const args = ['-A', ...(mode === 'reuse' ? ['-d'] : []), '-s', String(plan.sessions), '-m', String(messages), '-l', String(plan.bodyBytes), '-f', SENDER, '-t', RECIPIENT, '-M', `client.${SENDER_DOMAIN}`, '-S', 'themis postfix bench', `127.0.0.1:${port}`];
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const child = track(spawn(SMTP_SOURCE, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.once('error', rej);
    child.once('close', (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      const errors = out.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 5);
      if (code !== 0) errors.push(`smtp-source exited ${code ?? signal}`);
      res({ seconds, errors });
    });
  });
}

/** How long the latency client waits for one SMTP reply (a saturated box can be slow). */
const REPLY_TIMEOUT_MS = 60_000;

/** p50, p90, p99 and max of `xs`. */
export function percentiles(xs: number[]): Percentiles {
  if (xs.length === 0) return { p50: NaN, p90: NaN, p99: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1] };
}

/** The latency session's message: smtp-source's shape (a few headers, `bodyBytes` of payload). */
function latencyMessage(i: number, bodyBytes: number): string {
  const line = 'x'.repeat(78);
  const lines: string[] = [];
  for (let n = 0; n < bodyBytes; n += 80) lines.push(line.slice(0, Math.max(1, Math.min(78, bodyBytes - n - 2))));
  return [`From: <${SENDER}>`, `To: <${RECIPIENT}>`, `Subject: themis postfix bench latency ${i}`, `Message-ID: <latency-${i}-${Date.now()}@${SENDER_DOMAIN}>`, `Date: ${new Date().toUTCString()}`, '', ...lines].join('\r\n');
}

/** One timed message. */
interface Timed {
  mail: number;
  eod: number;
  transaction: number;
}

/** Opens an SMTP session for timing: greeting and EHLO read. */
async function openTimed(port: number): Promise<SmtpConversation> {
  const { smtp: s, greeting } = await SmtpConversation.open(port, REPLY_TIMEOUT_MS);
  try {
    if (greeting.code !== 220) throw new Error(`127.0.0.1:${port}: no 220 greeting`);
    if ((await s.command(`EHLO client.${SENDER_DOMAIN}`, REPLY_TIMEOUT_MS)).code !== 250) throw new Error(`127.0.0.1:${port}: EHLO refused`);
    return s;
  } catch (err) {
    s.close();
    throw err;
  }
}

/**
 * Sends one message and times MAIL → 250 and the final `.` → 250; undefined when a reply was not the
 * expected one (the transaction is then reset). Each command is written once, whole, with Nagle off on
 * this side, so what is timed is Postfix (and its milter), not this client.
 */
async function timeOne(s: SmtpConversation, i: number, bodyBytes: number): Promise<Timed | undefined> {
  const cmd = (line: string) => s.command(line, REPLY_TIMEOUT_MS);
  const reset = async () => {
    await cmd('RSET');
    return undefined;
  };
  const t0 = performance.now();
  const m = await cmd(`MAIL FROM:<${SENDER}>`);
  const t1 = performance.now();
  if (m.code !== 250) return reset();
  if ((await cmd(`RCPT TO:<${RECIPIENT}>`)).code !== 250) return reset();
  if ((await cmd('DATA')).code !== 354) return reset();
  const body = latencyMessage(i, bodyBytes);
  const t2 = performance.now();
  // The message and its final dot in one write, as smtp-source sends it.
  const e = await cmd(`${body}\r\n.`);
  const t3 = performance.now();
  if (e.code !== 250) return undefined;
  return { mail: t1 - t0, eod: t3 - t2, transaction: t3 - t0 };
}

/** Latency samples of one session, in ms: MAIL → 250, end of data → 250, the whole transaction. */
export interface Samples {
  mail: number[];
  eod: number[];
  transaction: number[];
  errors: number;
}

/**
 * `n` messages on a session to `port` and `n` on one to `refPort`, alternately (which one goes first
 * alternates too): the target and the reference see the same moments of the box, whose noise comes
 * and goes on the scale of seconds.
 */
export async function latencyPaired(refPort: number, port: number, n: number, bodyBytes: number): Promise<{ ref: Samples; target: Samples }> {
  const ref: Samples = { mail: [], eod: [], transaction: [], errors: 0 };
  const target: Samples = { mail: [], eod: [], transaction: [], errors: 0 };
  const a = await openTimed(refPort);
  let b: SmtpConversation | undefined;
  try {
    b = await openTimed(port);
    const one = async (s: SmtpConversation, into: Samples, i: number) => {
      const t = await timeOne(s, i, bodyBytes);
      if (!t) into.errors++;
      else {
        into.mail.push(t.mail);
        into.eod.push(t.eod);
        into.transaction.push(t.transaction);
      }
    };
    for (let i = 0; i < n; i++) {
      if (i % 2 === 0) {
        await one(a, ref, i);
        await one(b, target, i);
      } else {
        await one(b, target, i);
        await one(a, ref, i);
      }
    }
    for (const s of [a, b]) await s.quit(5000);
  } finally {
    a.close();
    b?.close();
  }
  return { ref, target };
}

// ---------------------------------------------------------------------------------------------
// Summary

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x));
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Messages of a run that the log does not show accepted and delivered, plus client-side errors. */
function missingOf(r: { messages: number; log: LogCounts }, clientErrors: number): number {
  return Math.max(0, r.messages - r.log.accepted) + Math.max(0, r.log.accepted - r.log.delivered - r.log.deferred - r.log.bounced) + clientErrors;
}

function summarize(defs: TargetDef[], runs: SmtpRun[], lat: LatencyRun[], latencySettle: Map<string, LogCounts[]>): PostfixRow[] {
  const rows: PostfixRow[] = [];
  const rounds = [...new Set(runs.map((r) => r.round))];
  for (const d of defs) {
    const modes = {} as PostfixRow['modes'];
    for (const mode of MODES) {
      const mine = runs.filter((r) => r.target === d.id && r.mode === mode);
      const ratiosTo = (ref: string): number[] => {
        const out: number[] = [];
        for (const round of rounds) {
          const a = mine.find((r) => r.round === round);
          const b = runs.find((r) => r.target === ref && r.mode === mode && r.round === round);
          if (a && b && b.msgs_per_s > 0) out.push(a.msgs_per_s / b.msgs_per_s);
        }
        return out;
      };
      const ratios = ratiosTo('none');
      modes[mode] = {
        msgs_per_s: median(mine.map((r) => r.msgs_per_s)),
        ratio: median(ratios),
        ratio_c: median(ratiosTo('c')),
        msgs_per_s_per_round: mine.map((r) => r.msgs_per_s),
        ratio_per_round: ratios,
        milter_cpu_ms_per_msg: median(mine.map((r) => r.milter_cpu_ms_per_msg ?? NaN)),
        postfix_cpu_ms_per_msg: median(mine.map((r) => r.postfix_cpu_ms_per_msg)),
        client_cpu_ms_per_msg: median(mine.map((r) => r.client_cpu_ms_per_msg)),
        host_cpu_ms_per_msg: median(mine.map((r) => r.host_cpu_ms_per_msg)),
        host_busy_pct: median(mine.map((r) => r.host_busy_pct)),
        store_scripts_per_msg: d.redis ? median(mine.map((r) => r.store_scripts_per_msg ?? NaN)) : undefined,
        store_commands_per_msg: d.redis ? median(mine.map((r) => r.store_commands_per_msg ?? NaN)) : undefined,
      };
    }
    // The no-milter row's latency is that of its sessions alongside every other target.
    const myLat = d.id === 'none' ? lat.map((l) => ({ ...l, ...l.reference, reference: l.reference })) : lat.filter((l) => l.target === d.id);
    const added = (k: 'mail' | 'eod') => (d.id === 'none' ? 0 : median(myLat.map((l) => l[k].p50 - l.reference[k].p50)));
    const mineRuns = runs.filter((r) => r.target === d.id);
    const latLogs = latencySettle.get(d.id) ?? [];
    const logs = [...mineRuns.map((r) => r.log), ...latLogs];
    rows.push({
      target: d.id,
      label: d.label,
      kind: d.kind,
      modes,
      mail_p50_ms: median(myLat.map((l) => l.mail.p50)),
      eod_p50_ms: median(myLat.map((l) => l.eod.p50)),
      mail_added_ms: added('mail'),
      eod_added_ms: added('eod'),
      deferred: logs.reduce((n, l) => n + l.deferred + l.bounced, 0),
      rejected: logs.reduce((n, l) => n + l.milterRejects + l.milterOther + l.otherRejects, 0),
      milter_warnings: logs.reduce((n, l) => n + l.milterWarnings, 0),
      missing: mineRuns.reduce((n, r) => n + missingOf(r, r.client_errors.length), 0) + myLat.reduce((n, l) => n + l.errors, 0),
      themis_warnings: mineRuns.reduce((n, r) => n + (r.themis_warnings ?? 0), 0),
    });
  }
  return rows;
}

function summarizeSendmail(runs: SendmailRun[]): SendmailRow[] {
  const rows: SendmailRow[] = [];
  for (const target of [...new Set(runs.map((r) => r.target))]) {
    const mine = runs.filter((r) => r.target === target);
    const ratios = mine
      .map((r) => {
        const n = runs.find((x) => x.target === 'none' && x.round === r.round);
        return n && n.msgs_per_s > 0 ? r.msgs_per_s / n.msgs_per_s : NaN;
      })
      .filter((x) => Number.isFinite(x));
    rows.push({
      target,
      msgs_per_s: median(mine.map((r) => r.msgs_per_s)),
      ratio: median(ratios),
      msgs_per_s_per_round: mine.map((r) => r.msgs_per_s),
      ratio_per_round: ratios,
      deferred: mine.reduce((n, r) => n + r.log.deferred + r.log.bounced, 0),
      rejected: mine.reduce((n, r) => n + r.log.milterRejects + r.log.milterOther + r.log.otherRejects, 0),
      milter_warnings: mine.reduce((n, r) => n + r.log.milterWarnings, 0),
      missing: mine.reduce((n, r) => n + missingOf(r, r.submit_errors), 0),
    });
  }
  return rows;
}

function makeChecks(rows: PostfixRow[], smRows: SendmailRow[], runs: SmtpRun[], skipped: Record<string, string>, errors: string[]): PostfixCheck[] {
  const checks: PostfixCheck[] = [];
  const themis = rows.filter((r) => r.kind === 'themis');
  const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
  for (const r of themis) {
    const ok = MODES.every((m) => r.modes[m].ratio >= CHECK.minRatio);
    checks.push({ id: `t-${r.target}`, status: ok ? 'PASS' : 'FAIL', text: `${r.target}: msg/s ≥ ${CHECK.minRatio.toFixed(2)} × no milter: ${MODES.map((m) => `${m === 'reuse' ? '-d' : '1/conn'} ${f2(r.modes[m].ratio)}`).join(', ')}` });
  }
  const sm = smRows.find((r) => r.target === 'repo');
  if (sm) checks.push({ id: 't-sendmail', status: sm.ratio >= CHECK.minRatio ? 'PASS' : 'FAIL', text: `sendmail(1) with no plugin (repo target): msg/s ≥ ${CHECK.minRatio.toFixed(2)} × no milter: ${f2(sm.ratio)}` });
  for (const r of themis) {
    const ok = r.mail_added_ms <= CHECK.maxAddedP50Ms && r.eod_added_ms <= CHECK.maxAddedP50Ms;
    checks.push({ id: `l-${r.target}`, status: ok ? 'PASS' : 'FAIL', text: `${r.target}: added p50 latency ≤ ${CHECK.maxAddedP50Ms} ms: MAIL ${f2(r.mail_added_ms)} ms, end of data ${f2(r.eod_added_ms)} ms` });
  }
  const dirty = [...rows.map((r) => ({ id: r.target, ...r })), ...smRows.map((r) => ({ ...r, id: `sendmail:${r.target}` }))].filter((r) => r.deferred + r.rejected + r.milter_warnings + r.missing > 0);
  checks.push({
    id: 'q',
    status: dirty.length === 0 && rows.length > 0 ? 'PASS' : 'FAIL',
    text: `every row: 0 deferred or rejected, no milter warning, every message accepted and delivered${dirty.length ? `: ${dirty.map((r) => `${r.id} (${r.deferred} deferred, ${r.rejected} rejected, ${r.milter_warnings} milter warnings, ${r.missing} missing)`).join('; ')}` : ` (${rows.length + smRows.length} rows)`}`,
  });
  // Proof that each milter really was in the path: the kernel logs one decision per message it decided.
  const counted = runs.filter((r) => r.themis_decisions !== undefined);
  const undecided = counted.filter((r) => r.themis_decisions! < r.log.accepted);
  checks.push({
    id: 'd',
    status: undecided.length === 0 && counted.length > 0 ? 'PASS' : counted.length === 0 ? 'SKIP' : 'FAIL',
    text: `Themis logged a decision for every message it was sent (every target but the engine alone, which has no kernel)${undecided.length ? `: ${undecided.map((r) => `${r.target} ${r.mode} round ${r.round}: ${r.themis_decisions}/${r.log.accepted}`).join('; ')}` : `: ${counted.reduce((n, r) => n + r.themis_decisions!, 0)} decisions in ${counted.length} runs`}`,
  });
  const warned = themis.filter((r) => r.themis_warnings > 0);
  checks.push({ id: 'w', status: warned.length ? 'FAIL' : 'PASS', text: `Themis logged nothing at warn level or above${warned.length ? `: ${warned.map((r) => `${r.target} ${r.themis_warnings}`).join(', ')}` : ''}` });
  if (skipped.c) checks.push({ id: 'c', status: 'SKIP', text: `C libmilter reference: ${skipped.c}` });
  for (const [id, why] of Object.entries(skipped)) if (id !== 'c') checks.push({ id: `skip-${id}`, status: 'SKIP', text: `${id}: ${why}` });
  if (errors.length) checks.push({ id: 'e', status: 'FAIL', text: `${errors.length} run error(s): ${errors.slice(0, 3).join(' | ')}` });
  return checks;
}

// ---------------------------------------------------------------------------------------------
// The run

/**
 * Runs the Postfix end-to-end benchmark: starts a throwaway Postfix, the milters and what they need
 * (loopback DNS, Redis), sends the load, stops everything it started (also on error) and returns every
 * figure. Needs root, Debian's postfix (with smtp-source) and swaks (the Postfix helper insists on it).
 * Throws when Postfix cannot run at all.
 */
export async function runPostfixBench(opts: PostfixBenchOptions = {}): Promise<PostfixBenchResult> {
  const plan: PostfixBenchPlan = { ...(opts.quick ? QUICK : FULL) };
  const delivery = opts.delivery ?? 'sink';
  if (opts.rounds) plan.rounds = opts.rounds;
  if (opts.messages) plan.messages = opts.messages;
  const print = opts.print ?? ((line: string) => process.stdout.write(line + '\n'));
  const started = new Date();
  const t0 = performance.now();
  if (!postfixAvailable()) throw new Error(`postfix bench: ${postfixUnavailableReason()}`);
  if (!isExecutable(SMTP_SOURCE)) throw new Error(`postfix bench: ${SMTP_SOURCE} is missing (Debian package "postfix")`);
  installExitHook();

  const wanted = new Set(opts.targets ?? POSTFIX_TARGET_IDS);
  for (const t of wanted) if (!POSTFIX_TARGET_IDS.includes(t)) throw new Error(`postfix bench: unknown target ${JSON.stringify(t)} (${POSTFIX_TARGET_IDS.join(', ')})`);
  wanted.add('none');
  let defs = TARGETS.filter((t) => wanted.has(t.id));
  const skipped: Record<string, string> = {};
  const errors: string[] = [];
  const dir = trackTempDir(mkdtempSync(join(tmpdir(), 'themis-pfbench-')));
  // smtpd (user postfix) must traverse it to reach the unix socket below; nothing in it is listable.
  await chmod(dir, 0o711);

  const milters = new Map<string, Milter>();
  const instances: Instance[] = [];
  let dns: DnsServer | undefined;
  let redis: RedisServer | undefined;
  const runs: SmtpRun[] = [];
  const latency: LatencyRun[] = [];
  const latencySettle = new Map<string, LogCounts[]>();
  const sendmail: SendmailRun[] = [];
  const services = new Map<string, { port: number; milter: string }>();
  let postfixVersion = '?';
  let sink: ChildProcess | undefined;
  try {
    postfixVersion = execFileSync('/usr/sbin/postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' }).trim();
    print(`Postfix end to end — ${started.toISOString()}${opts.quick ? '  [--quick: smoke run, not for figures]' : ''}`);
    print(`host: ${cpus().length} CPU, Linux ${release()}, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; Postfix ${postfixVersion}; node ${process.version}`);
    print(`load: smtp-source -s ${plan.sessions} -m ${plan.messages} -l ${plan.bodyBytes} -r 1, with -d (${MODE_LABEL.reuse}) and without (${MODE_LABEL.single}); latency: ${plan.latencyMessages} messages on one session; sendmail(1): ${plan.sendmailMessages} messages, ${plan.sendmailConcurrency} at a time; ${plan.rounds} round(s), targets interleaved, medians`);

    // What the targets need.
    if (defs.some((d) => d.redis) && !redisAvailable()) {
      for (const d of defs.filter((x) => x.redis)) skipped[d.id] = 'redis-server is not installed';
      defs = defs.filter((d) => !d.redis);
    }
    if (defs.some((d) => d.dns)) {
      // The sender's domain passes 127.0.0.1 through an include and an mx, as real records do: an
      // uncached check costs several queries; then the plugin's cache answers.
      dns = await startDnsServer({
        [SENDER_DOMAIN]: { TXT: [`v=spf1 include:_spf.${SENDER_DOMAIN} mx -all`], MX: [{ exchange: `mx.${SENDER_DOMAIN}`, priority: 10 }] },
        [`_spf.${SENDER_DOMAIN}`]: { TXT: ['v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 ~all'] },
        [`mx.${SENDER_DOMAIN}`]: { A: ['192.0.2.25'] },
      });
    }
    if (defs.some((d) => d.redis)) redis = await startRedis();
    const socketDir = join(dir, 'sock');
    if (defs.some((d) => d.unix)) {
      // smtpd runs as postfix: the socket's directory is setgid postfix, so the socket Themis creates
      // (mode 0660 by default) belongs to group postfix and smtpd may connect.
      mkdirSync(socketDir);
      const gid = Number(execFileSync('id', ['-g', 'postfix'], { encoding: 'utf8' }).trim());
      await chown(socketDir, 0, gid);
      await chmod(socketDir, 0o2750);
    }

    // Milters: started once (all at once: Node's start-up is CPU-bound, and there are two CPUs), kept for every round.
    const tStart = performance.now();
    await Promise.all(
      defs.map(async (d) => {
        if (d.kind === 'none') return;
        try {
          if (d.kind === 'c') {
            const c = findOrBuildC(resolve(process.env.THEMIS_SHARED_BENCH ?? join(REPO, '..', 'shared', 'bench')));
            if ('skip' in c) skipped.c = c.skip;
            else milters.set(d.id, await startC(d, c.bin));
          } else milters.set(d.id, await startThemis(d, dir, { dns, redis, socketDir }));
        } catch (err) {
          skipped[d.id] = `could not start: ${(err as Error).message}`;
        }
      }),
    );
    print(`started ${milters.size} milter(s) in ${((performance.now() - tStart) / 1000).toFixed(1)} s`);
    defs = defs.filter((d) => d.kind === 'none' || milters.has(d.id));
    for (const [id, why] of Object.entries(skipped)) print(`skipped ${id}: ${why}`);

    // One Postfix, one smtpd service per target (each with its own smtpd_milters). A service's
    // milter setting is fixed when its processes start, so no reload ever has to reach a running
    // smtpd; the services are added by one reload before any traffic, and each is probed.
    // The sink: Postfix's smtp-sink (C, one process, nothing written), as the next hop of a relay.
    let sinkPort: number | undefined;
    if (delivery === 'sink') {
      if (!isExecutable(SMTP_SINK)) throw new Error(`postfix bench: ${SMTP_SINK} is missing (Debian package "postfix"); --delivery discard does without`);
      sinkPort = await freePort();
      const started = track(spawn(SMTP_SINK, ['-u', 'postfix', '-h', 'sink.example.test', `127.0.0.1:${sinkPort}`, '256'], { stdio: 'ignore' }));
      sink = started;
      const deadline = Date.now() + 10_000;
      while (!(await canConnect({ port: sinkPort }))) {
        if (started.exitCode !== null || Date.now() > deadline) throw new Error(`postfix bench: smtp-sink did not listen on 127.0.0.1:${sinkPort}`);
        await sleep(50);
      }
    }
    const mainCf = mainCfFor(delivery, sinkPort);
    const smtp = await startInstance({ extraMainCf: mainCf });
    instances.push(smtp);
    for (const d of defs) services.set(d.id, { port: await freePort(), milter: d.kind === 'none' ? '' : milters.get(d.id)!.spec });
    const masterCf = join(smtp.pf.configDir, 'master.cf');
    writeFileSync(masterCf, readFileSync(masterCf, 'utf8') + serviceLines([...services].map(([id, s]) => ({ id, ...s }))));
    // The helper's note: Postfix commands re-read a config file changed within the last second until it looks stable.
    const past = new Date(Date.now() - 60_000);
    utimesSync(masterCf, past, past);
    await postfixCommand(smtp, ['reload']);
    for (const [id, s] of services) {
      const deadline = Date.now() + 10_000;
      while (!(await smtpGreets(s.port))) {
        if (Date.now() > deadline) throw new Error(`postfix: the smtpd service of ${id} on 127.0.0.1:${s.port} does not answer after the reload`);
        await sleep(100);
      }
    }
    print(`postfix: ${smtp.pf.dir} (queue on ${smtp.spool.startsWith('/dev/shm') ? 'tmpfs' : 'disk'}), ${delivery === 'sink' ? `delivery with the smtp client to smtp-sink on 127.0.0.1:${sinkPort}` : 'discard transport'}, ${services.size} smtpd services:`);
    for (const d of defs) {
      const m = milters.get(d.id);
      print(`  ${d.id.padEnd(10)} 127.0.0.1:${services.get(d.id)!.port}  smtpd_milters = ${services.get(d.id)!.milter || '(none)'}${m ? `   ← ${m.command.replace(REPO, '')}` : ''}`);
    }

    // sendmail(1): pickup → cleanup → non_smtpd_milters is one setting per instance, so one instance
    // without a milter and one with the `repo` target's milter (no plugin).
    const sm = new Map<string, Instance>();
    if (plan.sendmailMessages > 0 && milters.has('repo')) {
      sm.set('none', await startInstance({ extraMainCf: mainCf }));
      sm.set('repo', await startInstance({ milter: milters.get('repo')!.spec, extraMainCf: mainCf }));
      instances.push(...sm.values());
    } else if (plan.sendmailMessages > 0) skipped.sendmail = 'the repo target is not run';

    const themisSlice = (id: string) => {
      const m = milters.get(id);
      return m?.logFile ? fileSize(m.logFile) : 0;
    };
    const themisCounts = (id: string, from: number): { decisions: number; warnings: number; samples: string[] } | undefined => {
      const m = milters.get(id);
      if (!m?.logFile) return undefined;
      const text = readFrom(m.logFile, from).text;
      let decisions = 0;
      let warnings = 0;
      const samples: string[] = [];
      for (const line of text.split('\n')) {
        if (line.includes('"msg":"decision"')) decisions++;
        const lv = /"level":(\d+)/.exec(line);
        if (lv && Number(lv[1]) >= 40) {
          warnings++;
          if (samples.length < 2) samples.push(line.length > 300 ? line.slice(0, 300) + '…' : line);
        }
      }
      return { decisions, warnings, samples };
    };

    const smtpRun = async (round: number, d: TargetDef, mode: Mode, messages: number): Promise<SmtpRun | undefined> => {
      const m = milters.get(d.id);
      if (m && !alive(m)) {
        errors.push(`${d.id}: the milter is no longer running (${m.child.exitCode ?? m.child.signalCode})${m.logFile ? `: ${tail(m.logFile)}` : ''}`);
        return undefined;
      }
      const from = fileSize(smtp.logFile);
      const tFrom = themisSlice(d.id);
      const milterCpu = () => (m ? processCpuMs(m.child.pid) + (d.redis ? processCpuMs(redis?.pid) : 0) : NaN);
      const cpu0 = milterCpu();
      const host0 = hostCpuMs();
      const pf0 = groupCpuMs(smtp.masterPid);
      const client0 = reapedChildrenCpuMs() + (sink ? processCpuMs(sink.pid) : 0);
      const calls0 = d.redis ? await redisCalls(redis?.port) : undefined;
      const { seconds, errors: clientErrors } = await runSmtpSource(services.get(d.id)!.port, plan, messages, mode);
      const host1 = hostCpuMs();
      const log = await settle(smtp, from, messages);
      const calls1 = d.redis ? await redisCalls(redis?.port) : undefined;
      // After the queue drained: delivery is part of what a message costs Postfix.
      const cpu1 = milterCpu();
      const pf1 = groupCpuMs(smtp.masterPid);
      const client1 = reapedChildrenCpuMs() + (sink ? processCpuMs(sink.pid) : 0);
      const tc = themisCounts(d.id, tFrom);
      const n = Math.max(1, log.accepted);
      return {
        round,
        target: d.id,
        mode,
        messages,
        seconds,
        msgs_per_s: log.accepted / seconds,
        log,
        client_errors: clientErrors,
        themis_decisions: d.engineOnly ? undefined : tc?.decisions,
        themis_warnings: tc?.warnings,
        themis_warning_samples: tc?.samples.length ? tc.samples : undefined,
        milter_cpu_ms_per_msg: m ? (cpu1 - cpu0) / n : undefined,
        postfix_cpu_ms_per_msg: (pf1 - pf0) / n,
        client_cpu_ms_per_msg: (client1 - client0) / n,
        host_cpu_ms_per_msg: (host1.busy - host0.busy) / n,
        host_busy_pct: (100 * (host1.busy - host0.busy)) / (host1.total - host0.total),
        // The first INFO call is counted between the two samples: take it off.
        store_scripts_per_msg: calls0 && calls1 ? (calls1.scripts - calls0.scripts) / n : undefined,
        store_commands_per_msg: calls0 && calls1 ? (calls1.commands - calls0.commands - 1) / n : undefined,
      };
    };

    // Warm-up, not recorded: JIT, SPF cache, Postfix's processes.
    print(`warm-up: ${plan.warmup} messages per target (-d), not recorded`);
    for (const d of defs) {
      const r = await smtpRun(0, d, 'reuse', plan.warmup);
      if (r && missingOf(r, r.client_errors.length) + r.log.milterWarnings > 0) print(`  warm-up ${d.id}: ${r.log.accepted}/${r.messages} accepted; ${r.log.samples.concat(r.client_errors).slice(0, 2).join(' | ')}`);
    }
    for (const [id, inst] of sm) await sendmailRun(inst, id, 0, Math.min(20, plan.sendmailMessages), plan.sendmailConcurrency);

    for (let round = 1; round <= plan.rounds; round++) {
      // A different target goes first in each round, so that no target always follows the same one.
      const order = defs.map((_, i) => defs[(i + round - 1) % defs.length]);
      for (const mode of MODES) {
        const line: string[] = [];
        for (const d of order) {
          const r = await smtpRun(round, d, mode, plan.messages);
          if (!r) {
            line.push(`${d.id} FAILED`);
            continue;
          }
          runs.push(r);
          const bad = r.messages - r.log.delivered;
          line.push(`${d.id} ${r.msgs_per_s.toFixed(0)}${bad ? ` (${bad} not delivered)` : ''}`);
        }
        print(`round ${round}/${plan.rounds} ${MODE_LABEL[mode].padEnd(22)} msg/s: ${line.join('  ')}`);
      }
      const latLine: string[] = [];
      for (const d of order) {
        if (d.id === 'none') continue;
        const from = fileSize(smtp.logFile);
        try {
          const { ref, target } = await latencyPaired(services.get('none')!.port, services.get(d.id)!.port, plan.latencyMessages, plan.bodyBytes);
          const l: LatencyRun = {
            round,
            target: d.id,
            messages: plan.latencyMessages,
            errors: target.errors,
            mail: percentiles(target.mail),
            eod: percentiles(target.eod),
            transaction: percentiles(target.transaction),
            reference: { errors: ref.errors, mail: percentiles(ref.mail), eod: percentiles(ref.eod), transaction: percentiles(ref.transaction) },
          };
          latency.push(l);
          latLine.push(`${d.id} ${signed(l.mail.p50 - l.reference.mail.p50)}/${signed(l.eod.p50 - l.reference.eod.p50)}`);
        } catch (err) {
          errors.push(`latency ${d.id} round ${round}: ${(err as Error).message}`);
          latLine.push(`${d.id} FAILED`);
        }
        // Both sessions' messages went through the same instance.
        const c = await settle(smtp, from, 2 * plan.latencyMessages);
        latencySettle.set(d.id, [...(latencySettle.get(d.id) ?? []), c]);
      }
      print(`round ${round}/${plan.rounds} latency, added p50 ms MAIL/end of data (each alongside no milter): ${latLine.join('  ')}`);
      if (sm.size > 0) {
        const smLine: string[] = [];
        const smOrder = round % 2 ? ['none', 'repo'] : ['repo', 'none'];
        for (const id of smOrder) {
          const r = await sendmailRun(sm.get(id)!, id, round, plan.sendmailMessages, plan.sendmailConcurrency);
          sendmail.push(r);
          smLine.push(`${id} ${r.msgs_per_s.toFixed(0)}${r.log.delivered < r.messages ? ` (${r.messages - r.log.delivered} not delivered)` : ''}`);
        }
        print(`round ${round}/${plan.rounds} sendmail(1) msg/s: ${smLine.join('  ')}`);
      }
    }
    for (const d of defs) {
      const m = milters.get(d.id);
      if (m && !alive(m)) errors.push(`${d.id}: the milter exited during the bench (${m.child.exitCode ?? m.child.signalCode})`);
    }
  } finally {
    await Promise.all([...milters.values()].map((m) => stopChild(m.child)));
    for (const inst of instances) await inst.pf.stop().catch((err: unknown) => errors.push(`postfix stop: ${(err as Error).message}`));
    await redis?.stop();
    await dns?.close();
    if (sink) await stopChild(sink);
    removeTempDir(dir);
  }

  const rows = summarize(defs, runs, latency, latencySettle);
  const sendmailRows = summarizeSendmail(sendmail);
  const result: PostfixBenchResult = {
    started: started.toISOString(),
    elapsed_s: Math.round((performance.now() - t0) / 1000),
    quick: !!opts.quick,
    delivery,
    plan,
    host: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), node: process.version, postfix: postfixVersion, loadavg_end: loadavg() },
    targets: defs.map((d) => ({ id: d.id, label: d.label, kind: d.kind, milter: services.get(d.id)?.milter ?? '', command: milters.get(d.id)?.command })),
    skipped,
    runs,
    latency,
    sendmail,
    rows,
    sendmail_rows: sendmailRows,
    checks: [],
    errors,
  };
  result.checks = makeChecks(rows, sendmailRows, runs, skipped, errors);
  return result;
}

/**
 * Submits `n` messages with the instance's sendmail(1), `concurrency` at a time, and times them from
 * the first submission until the log shows every one delivered (or refused).
 */
async function sendmailRun(inst: Instance, target: string, round: number, n: number, concurrency: number): Promise<SendmailRun> {
  const from = fileSize(inst.logFile);
  const t0 = performance.now();
  let next = 0;
  let submitErrors = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const r = await inst.pf.sendmail(SENDER, [RECIPIENT], latencyMessage(i, 1000).replace(/\r\n/g, '\n') + '\n');
      if (r.code !== 0) submitErrors++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  // Until every submitted message is accounted for in the log; the last delivery ends the clock.
  const deadline = Date.now() + 60_000;
  let log = parseLog(readFrom(inst.logFile, from).text);
  while (log.delivered + log.deferred + log.bounced + log.milterRejects + log.milterOther < n - submitErrors && Date.now() < deadline) {
    await sleep(10);
    log = parseLog(readFrom(inst.logFile, from).text);
  }
  const seconds = (performance.now() - t0) / 1000;
  log = await settle(inst, from, n - submitErrors);
  return { round, target, messages: n, seconds, msgs_per_s: log.delivered / seconds, submit_errors: submitErrors, log };
}

// ---------------------------------------------------------------------------------------------
// Output

const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);
const fx = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const signed = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(2)}` : 'n/a');

/** Prints the result of {@link runPostfixBench}: the table, the sendmail rows, the checks. */
export function printPostfixBench(result: PostfixBenchResult, print: (line: string) => void = (line) => process.stdout.write(line + '\n')): void {
  const p = result.plan;
  print('');
  print(`Postfix end to end: median of ${p.rounds} round${p.rounds > 1 ? 's' : ''}; smtp-source, ${p.messages} messages over ${p.sessions} sessions per run, several per connection (-d) or one (1/conn).`);
  print(`÷none, ÷C: msg/s over no milter's (over the C null milter's), same mode, same round. MAIL, EOD: p50 ms, MAIL → 250 and end of data → 250, over ${p.latencyMessages} sequential messages on one session; + is over a no-milter session run alongside (alternate messages).`);
  print(`CPU ms/msg (-d / 1/conn): the milter process's (all 5: with redis-server), and all of Postfix's processes'.`);
  const h1 = `${pad('target', 10)} ${pad('', 18)} ${lpad('-d msg/s', 8)} ${lpad('÷none', 5)} ${lpad('÷C', 5)} ${lpad('1/conn', 6)} ${lpad('÷none', 5)} ${lpad('÷C', 5)} ${lpad('MAIL', 5)} ${lpad('+', 5)} ${lpad('EOD', 5)} ${lpad('+', 5)} ${lpad('milter CPU', 11)} ${lpad('Postfix CPU', 11)} ${lpad('defer', 5)} ${lpad('rej', 4)} ${lpad('warn', 4)} ${lpad('miss', 4)}`;
  print(h1);
  for (const r of result.rows) {
    const none = r.target === 'none';
    const cpu = (k: 'milter_cpu_ms_per_msg' | 'postfix_cpu_ms_per_msg') => (Number.isFinite(r.modes.reuse[k]) ? `${fx(r.modes.reuse[k])}/${fx(r.modes.single[k])}` : '');
    print(
      `${pad(r.target, 10)} ${pad(r.label, 18)} ${lpad(fx(r.modes.reuse.msgs_per_s, 0), 8)} ${lpad(fx(r.modes.reuse.ratio), 5)} ${lpad(r.kind === 'themis' ? fx(r.modes.reuse.ratio_c) : '', 5)} ` +
        `${lpad(fx(r.modes.single.msgs_per_s, 0), 6)} ${lpad(fx(r.modes.single.ratio), 5)} ${lpad(r.kind === 'themis' ? fx(r.modes.single.ratio_c) : '', 5)} ` +
        `${lpad(fx(r.mail_p50_ms), 5)} ${lpad(none ? '' : signed(r.mail_added_ms), 5)} ${lpad(fx(r.eod_p50_ms), 5)} ${lpad(none ? '' : signed(r.eod_added_ms), 5)} ` +
        `${lpad(cpu('milter_cpu_ms_per_msg'), 11)} ${lpad(cpu('postfix_cpu_ms_per_msg'), 11)} ${lpad(String(r.deferred), 5)} ${lpad(String(r.rejected), 4)} ${lpad(String(r.milter_warnings), 4)} ${lpad(String(r.missing), 4)}`,
    );
  }

  // Why a throughput ratio is what it is: on saturated CPUs msg/s follows the CPU every message costs,
  // whoever spends it — and with any milter, Postfix itself spends more (its milter client, and the
  // hand-over of the milter connection from smtpd to cleanup for every message).
  const none = result.rows.find((r) => r.target === 'none');
  if (none && result.rows.length > 1) {
    print('');
    print('Where the CPU goes, ms per message (-d | 1/conn): Postfix over no milter\'s, the milter, and the msg/s ratio to no milter those predict on saturated CPUs ((Postfix + smtp-source) of none ÷ (Postfix + milter + smtp-source)); "Postfix alone" is that ratio with a milter that costs nothing:');
    const w = 13;
    print(`${pad('target', 10)}   ${lpad('Postfix +', w)}   ${lpad('milter', w)}   ${lpad('predicted', w)}   ${lpad('Postfix alone', w)}   ${lpad('measured', w)}`);
    const base = (m: Mode) => none.modes[m].postfix_cpu_ms_per_msg + none.modes[m].client_cpu_ms_per_msg;
    for (const r of result.rows.filter((x) => x.kind !== 'none')) {
      const cell = (f: (m: Mode) => number, d = 2) => `${fx(f('reuse'), d)} | ${fx(f('single'), d)}`;
      const own = (m: Mode) => r.modes[m].postfix_cpu_ms_per_msg + r.modes[m].client_cpu_ms_per_msg;
      print(
        `${pad(r.target, 10)}   ${lpad(cell((m) => r.modes[m].postfix_cpu_ms_per_msg - none.modes[m].postfix_cpu_ms_per_msg), w)}   ${lpad(cell((m) => r.modes[m].milter_cpu_ms_per_msg), w)}   ` +
          `${lpad(cell((m) => base(m) / (own(m) + r.modes[m].milter_cpu_ms_per_msg)), w)}   ${lpad(cell((m) => base(m) / own(m)), w)}   ${lpad(cell((m) => r.modes[m].ratio), w)}` +
          `${r.modes.reuse.store_scripts_per_msg !== undefined ? `   Redis per message: ${cell((m) => r.modes[m].store_scripts_per_msg ?? NaN, 1)} script calls, ${cell((m) => r.modes[m].store_commands_per_msg ?? NaN, 1)} commands (those inside scripts included)` : ''}`,
      );
    }
  }
  // The host's share: when its CPUs are saturated, msg/s follows CPU per message, whoever spends it.
  print('');
  print(`${pad('per round', 10)} ${lpad('-d msg/s', 16)} | ${lpad('1/conn msg/s', 16)}   host CPUs busy -d | 1/conn; host CPU ms/msg (every process on the box) -d | 1/conn; smtp-source CPU ms/msg`);
  for (const r of result.rows) {
    const m = r.modes;
    print(`${pad(r.target, 10)} ${lpad(m.reuse.msgs_per_s_per_round.map((x) => x.toFixed(0)).join(' '), 16)} | ${lpad(m.single.msgs_per_s_per_round.map((x) => x.toFixed(0)).join(' '), 16)}   ${fx(m.reuse.host_busy_pct, 0)}% | ${fx(m.single.host_busy_pct, 0)}%; ${fx(m.reuse.host_cpu_ms_per_msg)} | ${fx(m.single.host_cpu_ms_per_msg)}; ${fx(m.reuse.client_cpu_ms_per_msg)} | ${fx(m.single.client_cpu_ms_per_msg)}`);
  }
  if (result.sendmail_rows.length > 0) {
    print('');
    print(`sendmail(1) → pickup → cleanup (non_smtpd_milters): ${p.sendmailMessages} messages, ${p.sendmailConcurrency} sendmail processes at a time, timed to the last delivery:`);
    print(`${pad('target', 10)} ${lpad('msg/s', 7)} ${lpad('ratio', 6)} ${lpad('defer', 6)} ${lpad('rej', 4)} ${lpad('warn', 5)} ${lpad('miss', 5)}   msg/s per round`);
    for (const r of result.sendmail_rows) print(`${pad(r.target, 10)} ${lpad(fx(r.msgs_per_s, 0), 7)} ${lpad(fx(r.ratio), 6)} ${lpad(String(r.deferred), 6)} ${lpad(String(r.rejected), 4)} ${lpad(String(r.milter_warnings), 5)} ${lpad(String(r.missing), 5)}   ${r.msgs_per_s_per_round.map((x) => x.toFixed(0)).join(' ')}`);
  }
  const dirtyRuns = result.runs.filter((r) => missingOf(r, r.client_errors.length) + r.log.deferred + r.log.milterRejects + r.log.otherRejects + r.log.milterWarnings > 0);
  if (dirtyRuns.length > 0) {
    print('');
    print('Runs with messages not delivered or milter warnings (first lines of each):');
    for (const r of dirtyRuns.slice(0, 8)) print(`  ${r.target} ${r.mode} round ${r.round}: ${r.log.accepted}/${r.messages} accepted, ${r.log.delivered} delivered; ${[...r.log.samples, ...r.client_errors].slice(0, 3).join(' | ')}`);
  }
  const warned = result.runs.filter((r) => r.themis_warning_samples);
  if (warned.length > 0) {
    print('');
    print('Themis log lines at warn level or above (first of each run):');
    for (const r of warned.slice(0, 6)) print(`  ${r.target} ${r.mode} round ${r.round}: ${r.themis_warning_samples![0]}`);
  }
  if (result.errors.length > 0) {
    print('');
    print('Errors:');
    for (const e of result.errors) print(`  ${e}`);
  }
  print('');
  print('Checks (Postfix end to end):');
  for (const c of result.checks) print(`${c.status} (${c.id}) ${c.text}`);
  print(`postfix bench took ${result.elapsed_s} s; load average now ${result.host.loadavg_end.map((x) => x.toFixed(2)).join(' ')}`);
}

// ---------------------------------------------------------------------------------------------
// Standalone

const USAGE = `Usage: node bench/postfix.ts [options]
  --quick            smoke run: 1 round, ${QUICK.messages} messages per run (~1 minute)
  --rounds N         rounds of interleaved runs (default ${FULL.rounds})
  --messages N       messages per smtp-source run (default ${FULL.messages}; --quick ${QUICK.messages})
  --targets LIST     comma list of ${POSTFIX_TARGET_IDS.join(', ')} (none is always run)
  --delivery MODE    sink (default): Postfix delivers with its smtp client to smtp-sink on a loopback port;
                     discard: to the discard transport (delivery costs next to nothing)
  --json [PATH]      also write the result as JSON (default ${DEFAULT_JSON.replace(REPO, '')})
  --help
Needs root, Debian's postfix (smtp-source, sendmail), swaks; redis-server for the "all" target; the C
reference milter from $THEMIS_BENCH_BIN or ../shared/bench (optional). Everything stays on 127.0.0.1.
`;

async function main(argv: string[]): Promise<number> {
  const opts: PostfixBenchOptions = {};
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) usage(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--rounds') {
      opts.rounds = Number(value());
      if (!Number.isInteger(opts.rounds) || opts.rounds < 1) usage('--rounds must be a positive integer');
    } else if (a === '--messages') {
      opts.messages = Number(value());
      if (!Number.isInteger(opts.messages) || opts.messages < 20) usage('--messages must be an integer ≥ 20');
    } else if (a === '--targets') {
      opts.targets = value().split(',').map((s) => s.trim()).filter(Boolean);
      for (const t of opts.targets) if (!POSTFIX_TARGET_IDS.includes(t)) usage(`unknown target ${JSON.stringify(t)}`);
    } else if (a === '--delivery') {
      const v = value();
      if (v !== 'sink' && v !== 'discard') usage('--delivery must be sink or discard');
      opts.delivery = v;
    } else if (a === '--json') {
      const next = argv[i + 1];
      json = next !== undefined && !next.startsWith('--') ? resolve(argv[++i]) : DEFAULT_JSON;
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      return 0;
    } else usage(`unknown option ${JSON.stringify(a)}`);
  }
  const result = await runPostfixBench(opts);
  printPostfixBench(result);
  if (json) {
    mkdirSync(dirname(json), { recursive: true });
    writeFileSync(json, JSON.stringify(result, null, 1) + '\n');
    process.stdout.write(`JSON: ${json}\n`);
  }
  return result.checks.some((c) => c.status === 'FAIL') || result.rows.length === 0 ? 1 : 0;
}

function usage(message: string): never {
  process.stderr.write(`postfix bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  installExitHook();
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\npostfix bench: ${sig}: stopping every process it started\n`);
      // process.exit runs the exit hooks: this module's (milters, smtp-source, temp dirs) and the
      // helpers' (Postfix, redis-server, the DNS server).
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`postfix bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
