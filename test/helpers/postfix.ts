/**
 * Test helper: run a REAL, throwaway Postfix instance on 127.0.0.1.
 *
 * Everything lives in a fresh temp dir under os.tmpdir():
 *   etc/    main.cf + master.cf (config_directory, passed with `postfix -c`)
 *   spool/  queue_directory (created by `postfix start` / post-install)
 *   data/   data_directory (owned by mail_owner)
 *   log/    maillog_file (postfix.log, written by the postlogd service)
 *   sink/   one file per message delivered to the sink
 *
 * smtpd listens on 127.0.0.1:<random port>. Every transport delivers with the
 * Postfix smtp client to a tiny in-process SMTP sink on 127.0.0.1:<random port>
 * (no DNS, nothing leaves 127.0.0.0/8). The sink writes each accepted message
 * as `sink/NNNNNN.msg`: a first line holding the envelope as JSON, then the
 * message bytes exactly as received (dot-unstuffed, CRLF line ends). Files are
 * written under a temporary name and renamed, so only complete messages are
 * ever visible, and the sink only answers 250 after the rename.
 *
 * Requires root (the Postfix master must run as root) and the Debian postfix
 * package (plus swaks for `swaks()`). Use `postfixAvailable()` to skip.
 * Set THEMIS_KEEP_TMP=1 to keep the temp dir after stop() for inspection.
 */
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, accessSync, constants as fsConstants, statSync, rmSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, mkdir, chmod, chown, writeFile, readdir, readFile, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, delimiter } from 'node:path';
import { parseMessageFile, startSink, type DeliveredMessage, type Sink } from './sink.ts';
import { freePort, onProcessExit, waitUntil } from './process.ts';

export type { DeliveredMessage } from './sink.ts';


export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface PostfixInstance {
  /** smtpd listening on 127.0.0.1:smtpPort (random free port) */
  smtpPort: number;
  /** temp dir with etc/, spool/, data/, log/, sink/ */
  dir: string;
  configDir: string;
  /** Messages delivered to the local sink so far (complete messages only, in delivery order) */
  delivered(): Promise<DeliveredMessage[]>;
  /** Wait until `n` messages are in the sink (poll, with timeout); resolves with all of them */
  waitForDelivered(n: number, timeoutMs?: number): Promise<DeliveredMessage[]>;
  /** queue IDs currently in the hold queue (spool/hold) */
  held(): Promise<string[]>;
  waitForHeld(n: number, timeoutMs?: number): Promise<string[]>;
  /** Run swaks against smtpd; never throws on non-zero exit */
  swaks(args: string[]): Promise<ExecResult>;
  /** Submit a message with Postfix's local `sendmail` (pickup/cleanup, i.e. non_smtpd_milters) */
  sendmail(from: string, to: string[], message: string): Promise<ExecResult>;
  /** the instance's maillog file contents ('' before anything was logged) */
  log(): Promise<string>;
  /** stop postfix and the sink, remove the temp dir (kept when THEMIS_KEEP_TMP=1); safe to call twice */
  stop(): Promise<void>;
}

export interface PostfixOptions {
  /** e.g. 'inet:127.0.0.1:12345' -> smtpd_milters AND non_smtpd_milters */
  milter?: string;
  /** milter_default_action (Postfix default: tempfail) */
  milterDefaultAction?: 'accept' | 'tempfail' | 'reject' | 'quarantine';
  /** extra/overriding main.cf parameters (applied last) */
  extraMainCf?: Record<string, string>;
}

const DEFAULT_WAIT_MS = 20_000;

// ---------------------------------------------------------------------------
// binaries

interface Binaries {
  postconf: string;
  postfix: string;
  sendmail: string;
  master: string;
  swaks: string;
}

let binariesCache: { bins?: Binaries; reason?: string } | undefined;

function findInPath(name: string, extra: string[]): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extra].filter(Boolean);
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, fsConstants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function probeBinaries(): { bins?: Binaries; reason?: string } {
  if (binariesCache) return binariesCache;
  const sbin = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
  const postconf = findInPath('postconf', sbin);
  if (!postconf) return (binariesCache = { reason: 'postconf not found (Debian package "postfix")' });
  let commandDir: string;
  let daemonDir: string;
  try {
    const out = execFileSync(postconf, ['-d', '-h', 'command_directory', 'daemon_directory'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv(),
    }).split('\n');
    commandDir = out[0].trim();
    daemonDir = out[1].trim();
  } catch (e) {
    return (binariesCache = { reason: `postconf -d failed: ${(e as Error).message}` });
  }
  const postfix = join(commandDir, 'postfix');
  const sendmail = join(commandDir, 'sendmail');
  const master = join(daemonDir, 'master');
  for (const p of [postfix, sendmail, master]) {
    if (!existsSync(p)) return (binariesCache = { reason: `${p} not found (Debian package "postfix")` });
  }
  const swaks = findInPath('swaks', ['/usr/bin', '/usr/local/bin']);
  if (!swaks) return (binariesCache = { reason: 'swaks not found (Debian package "swaks")' });
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return (binariesCache = { reason: 'a Postfix instance needs root (the master daemon runs as root)' });
  }
  return (binariesCache = { bins: { postconf, postfix, sendmail, master, swaks } });
}

/** true when the postfix binaries (and swaks) exist and we can run them (root); tests skip otherwise */
export function postfixAvailable(): boolean {
  return probeBinaries().bins !== undefined;
}

/** why postfixAvailable() is false (undefined when it is true) */
export function postfixUnavailableReason(): string | undefined {
  return probeBinaries().reason;
}

/** environment for Postfix commands: no inherited MAIL_CONFIG etc. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LANG: 'C', LC_ALL: 'C', ...extra };
  if (!('MAIL_CONFIG' in extra)) delete env.MAIL_CONFIG;
  delete env.MAIL_DEBUG;
  delete env.MAIL_VERBOSE;
  return env;
}

// ---------------------------------------------------------------------------
// process helpers

function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? cleanEnv(),
      cwd: opts.cwd,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    const timer = setTimeout(() => {
      err.push(Buffer.from(`\n[test helper] ${cmd} timed out after ${opts.timeoutMs ?? 60_000} ms, killed\n`));
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code: 127, stdout: '', stderr: `[test helper] cannot run ${cmd}: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({
        code: code ?? 128 + (signal ? (osSignalNumber(signal) ?? 0) : 0),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => {}); // EPIPE when the command exits early
      child.stdin!.end(opts.input);
    }
  });
}

function osSignalNumber(sig: NodeJS.Signals): number | undefined {
  const map: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGPIPE: 13, SIGABRT: 6 };
  return map[sig];
}

/** state and process group of a pid from /proc/<pid>/stat; undefined when there is no such process */
function procStat(pid: number): { state: string; pgid: number } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // "pid (comm) S ppid pgrp ..." -- comm may contain spaces and parentheses
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0], pgid: Number(rest[2]) };
}

const haveProc = existsSync('/proc/self/stat');

/**
 * Is the process running? Zombies count as gone: PID 1 in containers/VMs may
 * reap the daemonized master's zombie only much later.
 */
function alive(pid: number): boolean {
  if (haveProc) {
    const st = procStat(pid);
    return st !== undefined && st.state !== 'Z' && st.state !== 'X';
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** live (non-zombie) members of a process group */
function groupAlive(pgid: number): boolean {
  if (haveProc) {
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const st = procStat(Number(name));
      if (st && st.pgid === pgid && st.state !== 'Z' && st.state !== 'X') return true;
    }
    return false;
  }
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isPostfixMaster(pid: number): boolean {
  if (!alive(pid)) return false;
  const cmdline = readFileSyncSafe(`/proc/${pid}/cmdline`);
  return cmdline === undefined ? true : /(^|\/)master\0/.test(cmdline);
}

function readFileSyncSafe(p: string): string | undefined {
  try {
    return readFileSync(p, 'latin1');
  } catch {
    return undefined;
  }
}


function userIds(user: string): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

/** The postfix user (daemons) must be able to traverse down to the queue directory. */
function assertTraversable(dir: string): void {
  let d = dirname(dir);
  for (;;) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      throw new Error(
        `${d} is not searchable by other users (mode ${(st.mode & 0o777).toString(8)}); ` +
          `the postfix user could not reach the queue under ${dir}. Point TMPDIR elsewhere.`,
      );
    }
    const parent = dirname(d);
    if (parent === d) return;
    d = parent;
  }
}


// ---------------------------------------------------------------------------
// the SMTP sink



// ---------------------------------------------------------------------------
// config

function mainCf(v: {
  dir: string;
  smtpPort: number;
  sinkPort: number;
  opts: PostfixOptions;
}): string {
  const { dir, sinkPort, opts } = v;
  const sink = `smtp:[127.0.0.1]:${sinkPort}`;
  const p = new Map<string, string>([
    ['compatibility_level', '3.6'],
    ['queue_directory', join(dir, 'spool')],
    ['data_directory', join(dir, 'data')],
    ['maillog_file', join(dir, 'log', 'postfix.log')],
    ['maillog_file_prefixes', join(dir, 'log')],
    ['mail_owner', 'postfix'],
    ['setgid_group', 'postdrop'],
    // identity; no DNS anywhere
    ['myhostname', 'mx.example.test'],
    ['mydomain', 'example.test'],
    ['myorigin', '$myhostname'],
    ['mydestination', ''],
    ['append_dot_mydomain', 'no'],
    ['inet_interfaces', '127.0.0.1'],
    ['inet_protocols', 'ipv4'],
    ['mynetworks', '127.0.0.0/8'],
    ['relay_domains', 'example.test'],
    ['smtpd_relay_restrictions', 'reject_unauth_destination'],
    ['smtpd_recipient_restrictions', ''],
    ['alias_maps', ''],
    ['alias_database', ''],
    ['local_recipient_maps', ''],
    ['biff', 'no'],
    ['smtputf8_enable', 'no'],
    ['notify_classes', ''],
    ['smtpd_banner', '$myhostname ESMTP themis-test'],
    ['smtpd_peername_lookup', 'no'],
    ['smtpd_tls_security_level', 'none'],
    ['smtp_tls_security_level', 'none'],
    // everything goes to the sink
    ['relayhost', ''],
    ['default_transport', sink],
    ['relay_transport', sink],
    ['local_transport', sink],
    ['virtual_transport', sink],
    ['smtp_host_lookup', 'native'],
    ['smtp_dns_support_level', 'disabled'],
    ['smtp_address_preference', 'ipv4'],
    ['smtp_connection_cache_on_demand', 'no'],
    ['smtp_connect_timeout', '5s'],
    // quick
    ['smtpd_error_sleep_time', '0'],
    ['smtpd_soft_error_limit', '100'],
    ['smtpd_hard_error_limit', '200'],
    ['smtpd_client_connection_count_limit', '0'],
    ['in_flow_delay', '0'],
    ['queue_run_delay', '1s'],
    ['minimal_backoff_time', '1s'],
    ['maximal_backoff_time', '2s'],
    ['default_process_limit', '100'],
    // milter
    ['milter_protocol', '6'],
    ['milter_default_action', opts.milterDefaultAction ?? 'tempfail'],
    ['milter_connect_macros', 'j {daemon_name} {daemon_addr} v _ {client_addr} {client_name} {client_port}'],
    ['milter_connect_timeout', '10s'],
    ['milter_command_timeout', '30s'],
    ['milter_content_timeout', '30s'],
    ['smtpd_milters', opts.milter ?? ''],
    ['non_smtpd_milters', opts.milter ?? ''],
  ]);
  for (const [k, val] of Object.entries(opts.extraMainCf ?? {})) p.set(k, val);
  let s = `# throwaway Postfix instance for tests (test/helpers/postfix.ts)\n`;
  for (const [k, val] of p) {
    if (/[\r\n]/.test(val)) throw new Error(`main.cf value for ${k} contains a newline`);
    s += `${k} = ${val}\n`;
  }
  return s;
}

function masterCf(smtpPort: number): string {
  return `# throwaway instance: no chroot anywhere, smtpd on 127.0.0.1:${smtpPort} only
# service     type  private unpriv chroot wakeup maxproc command
127.0.0.1:${smtpPort} inet n  -      n      -      -       smtpd
pickup        unix  n       -      n      1      1       pickup
cleanup       unix  n       -      n      -      0       cleanup
qmgr          unix  n       -      n      300    1       qmgr
rewrite       unix  -       -      n      -      -       trivial-rewrite
bounce        unix  -       -      n      -      0       bounce
defer         unix  -       -      n      -      0       bounce
trace         unix  -       -      n      -      0       bounce
verify        unix  -       -      n      -      1       verify
flush         unix  n       -      n      1000?  0       flush
proxymap      unix  -       -      n      -      -       proxymap
proxywrite    unix  -       -      n      -      1       proxymap
smtp          unix  -       -      n      -      -       smtp
relay         unix  -       -      n      -      -       smtp
showq         unix  n       -      n      -      -       showq
error         unix  -       -      n      -      -       error
retry         unix  -       -      n      -      -       error
discard       unix  -       -      n      -      -       discard
anvil         unix  -       -      n      -      1       anvil
scache        unix  -       -      n      -      1       scache
tlsmgr        unix  -       -      n      1000?  1       tlsmgr
postlog       unix-dgram n  -      n      -      1       postlogd
`;
}

// ---------------------------------------------------------------------------
// emergency cleanup when the test process exits without stop()

const live = new Map<string, { pidFile: string; dir: string; keep: boolean }>();

function emergencyCleanup(): void {
  for (const [key, inst] of live) {
    live.delete(key);
    try {
      const pid = Number(readFileSync(inst.pidFile, 'utf8').trim());
      if (pid > 1 && isPostfixMaster(pid)) process.kill(-pid, 'SIGKILL');
    } catch {
      // not running
    }
    if (!inst.keep) {
      try {
        rmSync(inst.dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }
}


// ---------------------------------------------------------------------------

export async function startPostfix(opts: PostfixOptions = {}): Promise<PostfixInstance> {
  const probe = probeBinaries();
  if (!probe.bins) throw new Error(`postfix not available: ${probe.reason}`);
  const bins = probe.bins;
  const keep = process.env.THEMIS_KEEP_TMP === '1';

  const dir = await mkdtemp(join(tmpdir(), 'themis-postfix-'));
  const configDir = join(dir, 'etc');
  const spool = join(dir, 'spool');
  const sinkDir = join(dir, 'sink');
  const logFile = join(dir, 'log', 'postfix.log');
  const pidFile = join(spool, 'pid', 'master.pid');
  let sink: Sink | undefined;

  const readLog = async (): Promise<string> => {
    try {
      return await readFile(logFile, 'utf8');
    } catch {
      return '';
    }
  };

  const masterPid = async (): Promise<number | undefined> => {
    try {
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      return pid > 1 ? pid : undefined;
    } catch {
      return undefined;
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const pid = await masterPid();
      if (pid !== undefined && alive(pid) && isPostfixMaster(pid)) {
        await run(bins.postfix, ['-c', configDir, 'stop'], { timeoutMs: 15_000 });
        if (!(await waitUntil(() => !alive(pid), 10_000))) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        // children (smtpd, cleanup, ...) share the master's process group; the
        // master sends them SIGTERM on its way out
        if (!(await waitUntil(() => !groupAlive(pid), 5_000))) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // gone
          }
          await waitUntil(() => !groupAlive(pid), 2_000);
        }
      }
      live.delete(dir);
      if (sink) await sink.close();
      if (keep) {
        process.stderr.write(`[postfix helper] THEMIS_KEEP_TMP=1: kept ${dir}\n`);
      } else {
        await rm(dir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };

  try {
    await chmod(dir, 0o755);
    assertTraversable(join(dir, 'spool'));
    for (const d of ['etc', 'spool', 'data', 'log', 'sink']) await mkdir(join(dir, d), { mode: 0o755 });
    const owner = userIds(opts.extraMainCf?.mail_owner ?? 'postfix');
    await chown(join(dir, 'data'), owner.uid, owner.gid);
    await chmod(join(dir, 'data'), 0o700);

    sink = await startSink(sinkDir);
    live.set(dir, { pidFile, dir, keep });
    onProcessExit(emergencyCleanup);

    let smtpPort = 0;
    let lastErr = '';
    for (let attempt = 1; attempt <= 5; attempt++) {
      smtpPort = await freePort();
      await writeFile(join(configDir, 'main.cf'), mainCf({ dir, smtpPort, sinkPort: sink.port, opts }), { mode: 0o644 });
      await writeFile(join(configDir, 'master.cf'), masterCf(smtpPort), { mode: 0o644 });
      // Every Postfix command re-reads a main.cf modified within the last second
      // (in 300 ms steps) until it looks stable -- ~1.5 s per command: backdate it.
      const past = new Date(Date.now() - 60_000);
      await utimes(join(configDir, 'main.cf'), past, past);
      await utimes(join(configDir, 'master.cf'), past, past);
      // `start` runs `postfix check` (creates the queue dirs with the right owners)
      // and then `master -w`, which returns once the master has bound its sockets.
      const r = await run(bins.postfix, ['-c', configDir, 'start'], { timeoutMs: 60_000 });
      const pid = await masterPid();
      if (r.code === 0 && pid !== undefined && alive(pid)) {
        return makeInstance();
      }
      lastErr = `postfix start exited ${r.code}\n${r.stdout}${r.stderr}\n--- maillog ---\n${await readLog()}`;
      if (!/bind|address already in use/i.test(lastErr)) break;
    }
    throw new Error(`could not start postfix in ${dir}: ${lastErr}`);

    function makeInstance(): PostfixInstance {
      const delivered = async (): Promise<DeliveredMessage[]> => {
        let names: string[];
        try {
          names = await readdir(sinkDir);
        } catch {
          return [];
        }
        const msgs: DeliveredMessage[] = [];
        for (const n of names.filter((x) => x.endsWith('.msg')).sort()) {
          const file = join(sinkDir, n);
          try {
            msgs.push(parseMessageFile(file, await readFile(file)));
          } catch {
            // removed concurrently (stop)
          }
        }
        return msgs;
      };
      const held = async (): Promise<string[]> => {
        const out: string[] = [];
        const walk = async (d: string): Promise<void> => {
          let ents;
          try {
            ents = await readdir(d, { withFileTypes: true });
          } catch {
            return;
          }
          for (const e of ents) {
            if (e.isDirectory()) await walk(join(d, e.name));
            else out.push(e.name);
          }
        };
        await walk(join(spool, 'hold'));
        return out.sort();
      };
      const waitFor = async <T>(what: string, get: () => Promise<T[]>, n: number, timeoutMs: number): Promise<T[]> => {
        let last: T[] = [];
        const ok = await waitUntil(async () => (last = await get()).length >= n, timeoutMs, 100);
        if (ok) return last;
        const logText = await readLog();
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${n} ${what} (have ${last.length}) in ${dir}\n` +
            `--- maillog (last 40 lines) ---\n${logText.split('\n').slice(-41).join('\n')}`,
        );
      };
      return {
        smtpPort,
        dir,
        configDir,
        delivered,
        waitForDelivered: (n, timeoutMs = DEFAULT_WAIT_MS) => waitFor('delivered message(s)', delivered, n, timeoutMs),
        held,
        waitForHeld: (n, timeoutMs = DEFAULT_WAIT_MS) => waitFor('held message(s)', held, n, timeoutMs),
        swaks: (args) => run(bins.swaks, ['--server', '127.0.0.1', '--port', String(smtpPort), ...args], { timeoutMs: 120_000 }),
        sendmail: (from, to, message) =>
          run(bins.sendmail, ['-C', configDir, '-i', '-f', from, '--', ...to], {
            input: message,
            env: cleanEnv({ MAIL_CONFIG: configDir }),
            timeoutMs: 60_000,
          }),
        log: readLog,
        stop,
      };
    }
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
}
