/**
 * Test helper: run a REAL, throwaway Sendmail 8.17 on 127.0.0.1, the way test/helpers/postfix.ts
 * runs a Postfix.
 *
 * Sendmail comes from a private prefix (default /opt/themis-test-sendmail, or
 * THEMIS_TEST_SENDMAIL_PREFIX): Debian's sendmail-bin conflicts with Postfix as a package, so
 * `.ci/install-test-sendmail` unpacks the .debs there with `dpkg -x` and builds a small syslog
 * shim. Nothing of the system's mail setup is used or changed.
 *
 * Everything of one instance lives in a fresh temp dir under os.tmpdir():
 *   etc/    sendmail.mc, the sendmail.cf built from it with m4 and sendmail-cf's cf/ tree,
 *           service.switch, hosts, nsswitch.conf, resolv.conf, aliases (empty), and for SMTP AUTH
 *           sasl2/ (a copy of Cyrus SASL's plugin dir with a Sendmail.conf and a sasldb)
 *   mqueue/ the queue (QueueDirectory); quarantined messages stay here
 *   run/    pid file, statistics file
 *   log/    syslog.log (every line Sendmail logs) and daemon.out (its stdout/stderr)
 *   sink/   one file per message delivered to the sink (same format as the Postfix helper's)
 *
 * How it runs (as root; the daemon in the foreground, `-bD`, so the test owns its process):
 *
 *   unshare --mount --uts --propagation private  DIR/bin/in-namespace DIR \
 *     PREFIX/root/usr/libexec/sendmail/sendmail -C DIR/etc/sendmail.cf -bD -q5s
 *
 * `in-namespace` bind-mounts the instance's hosts, nsswitch.conf ("hosts: files") and resolv.conf
 * (nameserver 127.0.0.1) over /etc's — in a private mount namespace, so only this Sendmail sees
 * them — and names the host mx.example.test in a private UTS namespace. Sendmail resolves its own
 * name before it reads any configuration, and an unqualified name it cannot resolve makes it
 * sleep 60 s ("My unqualified host name … unknown; sleeping for retry"); this makes that lookup,
 * and every other one, answer from the instance's files: no DNS query ever leaves the process.
 * `mailq -qQ` and `sendmail -bs` of the instance run with nsenter inside the same namespaces, so
 * every process of the instance (the delivery processes Sendmail forks and detaches included) is
 * found by its mount namespace and stopped by stop().
 *
 * Logging: Sendmail only logs through syslog(3), and a CI machine has neither a syslog daemon nor
 * /dev/log (which must not be touched system-wide). The prefix's LD_PRELOAD shim
 * (lib/syslog-to-file.so) replaces syslog(3) and appends each line to $THEMIS_SYSLOG_FILE: log()
 * returns what Sendmail itself wrote at LogLevel 14 (milter actions, deliveries, quarantines).
 *
 * Delivery: every address is relayed (SMART_HOST and MAIL_HUB `[sink.example.test]`, which is
 * 127.0.0.1 in the instance's hosts file; the relay mailer on the sink's port) to a tiny in-process
 * SMTP sink on 127.0.0.1:<random port>, which stores each message as `sink/NNNNNN.msg`: a JSON
 * envelope line, then the message bytes as received (dot-unstuffed, CRLF). The sink code duplicates
 * test/helpers/postfix.ts's (not exported there).
 *
 * Milter: INPUT_MAIL_FILTER(`themis', `S=<opts.milter>, F=T, T=C:5s;S:10s;R:10s;E:1m') with the
 * macro lists of SENDMAIL_MILTER_MACROS. SMTP AUTH (opts.saslUsers): PLAIN and LOGIN from a private
 * sasldb, Cyrus SASL's plugin directory replaced by the instance's copy inside the namespace.
 *
 * Requires root, the prefix (`.ci/install-test-sendmail`), m4, and util-linux's unshare/nsenter
 * with the right to create mount and UTS namespaces. Use sendmailAvailable() to skip.
 * Set THEMIS_KEEP_TMP=1 to keep the temp dir after stop() for inspection.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SINK_HOSTNAME, parseMessageFile, startSink, type DeliveredMessage, type Sink } from './sink.ts';
import { freePort, onProcessExit, waitUntil } from './process.ts';

export type { DeliveredMessage } from './sink.ts';

/** One SMTP reply of `sendmail -bs`: code and every line of it (joined with \n). */
export interface BsReply {
  code: number;
  text: string;
}

export interface BsResult {
  /** exit code of `sendmail -bs` */
  code: number;
  /** the replies, in order: greeting, EHLO, MAIL, RCPT…, DATA, end of data, QUIT */
  replies: BsReply[];
  /** everything it wrote on stdout */
  stdout: string;
  stderr: string;
}

export interface SendmailInstance {
  /** the daemon listens on 127.0.0.1:smtpPort (random free port) */
  smtpPort: number;
  /** temp dir with etc/, mqueue/, run/, log/, sink/ */
  dir: string;
  /** the generated sendmail.cf (for `-C`) */
  configFile: string;
  /** Messages delivered to the local sink so far (complete messages only, in delivery order) */
  delivered(): Promise<DeliveredMessage[]>;
  /** Wait until `n` messages are in the sink (poll, with timeout); resolves with all of them */
  waitForDelivered(n: number, timeoutMs?: number): Promise<DeliveredMessage[]>;
  /** Queue ids of the quarantined messages, from `mailq -qQ` of this instance */
  quarantined(): Promise<string[]>;
  /** The raw listing of `mailq -qQ` (`sendmail -C CF -bp -qQ`) of this instance */
  mailqQ(): Promise<string>;
  /** What Sendmail logged (syslog lines), then its stdout/stderr */
  log(): Promise<string>;
  /**
   * Runs `sendmail -C CF -bs` of this instance and speaks SMTP with it on stdin/stdout: EHLO, MAIL,
   * RCPT for each recipient, DATA and the message (when some recipient was accepted), QUIT.
   */
  sendmailBs(from: string, to: string[], message: string): Promise<BsResult>;
  /** stop the daemon and every process it forked, close the sink, remove the dir; safe to call twice */
  stop(): Promise<void>;
}

export interface SendmailOptions {
  /** the milter, as Sendmail writes it: 'inet:PORT@127.0.0.1'. Undefined: no milter at all. */
  milter?: string;
  /** the milter's F= flags: 'T' (tempfail when it cannot be reached, the default), 'R' (reject), '' (accept) */
  milterFlags?: string;
  /** the milter's T= timeouts (default 'C:5s;S:10s;R:10s;E:1m') */
  milterTimeouts?: string;
  /** SMTP AUTH (PLAIN, LOGIN) for these users, from a private sasldb; `login` is user@realm */
  saslUsers?: { login: string; password: string }[];
  /** extra .mc lines, appended before the MAILER() lines */
  extraMc?: string;
}

const DEFAULT_WAIT_MS = 20_000;
/** The instance's host name ($j): what the UTS namespace and the hosts file say. */
export const SENDMAIL_HOSTNAME = 'mx.example.test';

/**
 * Milter macros per stage, as the .mc lists them: Sendmail's defaults (cf/m4/cfhead.m4) plus what
 * Themis reads and Postfix sends at CONNECT ({client_addr}, {client_name}, {client_port},
 * {daemon_addr}, v). As by default, the queue id `i` comes at MAIL only (Sendmail assigns it there);
 * libmilter keeps MAIL's macros for the rest of the message. (A milter may also ask for lists of its
 * own in the negotiation; Sendmail 8.14+ then sends it those instead, for the stages it names.)
 */
export const SENDMAIL_MILTER_MACROS = {
  CONNECT: 'j, _, {daemon_name}, {daemon_addr}, {if_name}, {if_addr}, {client_addr}, {client_name}, {client_port}, v',
  HELO: '{tls_version}, {cipher}, {cipher_bits}, {cert_subject}, {cert_issuer}',
  ENVFROM: 'i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}',
  ENVRCPT: '{rcpt_mailer}, {rcpt_host}, {rcpt_addr}',
  EOM: '{msg_id}',
} as const;

// ---------------------------------------------------------------------------
// what is needed, and where it is

interface Tools {
  prefix: string;
  sendmail: string;
  libDir: string;
  shim: string;
  cfDir: string;
  helpFile: string;
  m4: string;
  unshare: string;
  nsenter: string;
  saslpasswd2: string | undefined;
}

let toolsCache: { tools?: Tools; reason?: string } | undefined;

function which(name: string): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8' });
  const p = r.stdout?.trim();
  return r.status === 0 && p ? p : undefined;
}

function probe(): { tools?: Tools; reason?: string } {
  if (toolsCache) return toolsCache;
  const fail = (reason: string) => (toolsCache = { reason });
  if (process.platform !== 'linux') return fail('the test Sendmail runs on Linux only');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return fail('a Sendmail daemon needs root');
  const prefix = process.env.THEMIS_TEST_SENDMAIL_PREFIX || '/opt/themis-test-sendmail';
  if (!existsSync(join(prefix, '.complete'))) return fail(`no private Sendmail in ${prefix} (run .ci/install-test-sendmail as root)`);
  const sendmail = join(prefix, 'root/usr/libexec/sendmail/sendmail');
  const shim = join(prefix, 'lib/syslog-to-file.so');
  const cfDir = join(prefix, 'root/usr/share/sendmail/cf');
  for (const p of [sendmail, shim, join(cfDir, 'm4/cf.m4')]) if (!existsSync(p)) return fail(`${p} missing (run .ci/install-test-sendmail --force)`);
  let libDir: string | undefined;
  const libRoot = join(prefix, 'root/usr/lib');
  for (const d of [libRoot, ...readdirSync(libRoot).map((n) => join(libRoot, n))]) if (existsSync(join(d, 'libwrap.so.0'))) libDir = d;
  if (!libDir) return fail(`libwrap.so.0 not found under ${libRoot}`);
  const m4 = which('m4');
  if (!m4) return fail('m4 not found (Debian package m4)');
  const unshare = which('unshare');
  const nsenter = which('nsenter');
  if (!unshare || !nsenter || !which('mount') || !which('hostname')) return fail('unshare, nsenter, mount or hostname not found (util-linux, hostname)');
  // the daemon needs private mount and UTS namespaces, a bind mount in them and its own host name
  const scratch = mkdtempSync(join(tmpdir(), 'themis-sendmail-probe-'));
  try {
    writeFileSync(join(scratch, 'a'), 'a');
    writeFileSync(join(scratch, 'b'), 'b');
    const ns = spawnSync(unshare, ['--mount', '--uts', '--propagation', 'private', 'sh', '-c', `mount --bind a b && hostname ${SENDMAIL_HOSTNAME} && cat b`], { cwd: scratch, encoding: 'utf8', timeout: 10_000 });
    if (ns.status !== 0 || ns.stdout !== 'a') return fail(`cannot create private mount/UTS namespaces with unshare: ${(ns.stderr || ns.error?.message || '').trim()}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return (toolsCache = {
    tools: { prefix, sendmail, libDir, shim, cfDir, helpFile: join(prefix, 'root/etc/mail/helpfile'), m4, unshare, nsenter, saslpasswd2: which('saslpasswd2') },
  });
}

/** true when the private Sendmail and the tools to run it are there (and we are root); tests skip otherwise */
export function sendmailAvailable(): boolean {
  return probe().tools !== undefined;
}

/** why sendmailAvailable() is false (undefined when it is true) */
export function sendmailUnavailableReason(): string | undefined {
  return probe().reason;
}

/** Cyrus SASL's plugin directory (the one that holds the sasldb plugin), '' when there is none */
function saslPluginDir(): string {
  const candidates = ['/usr/lib/sasl2'];
  try {
    for (const d of readdirSync('/usr/lib')) candidates.unshift(join('/usr/lib', d, 'sasl2'));
  } catch {
    // no /usr/lib
  }
  return candidates.find((d) => existsSync(join(d, 'libsasldb.so.2'))) ?? '';
}

/** why SMTP AUTH cannot be offered by the test Sendmail (undefined when it can) */
export function sendmailSaslUnavailableReason(): string | undefined {
  const p = probe();
  if (!p.tools) return p.reason;
  if (!p.tools.saslpasswd2) return 'saslpasswd2 not found (Debian package sasl2-bin)';
  if (!saslPluginDir()) return 'the sasldb auxprop plugin is missing (Debian package libsasl2-modules-db)';
  return undefined;
}

// ---------------------------------------------------------------------------
// processes

interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => {
      err.push(Buffer.from(`\n[sendmail helper] ${cmd} timed out after ${opts.timeoutMs ?? 30_000} ms, killed\n`));
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => err.push(Buffer.from(`[sendmail helper] cannot run ${cmd}: ${e.message}`)));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => {});
      child.stdin!.end(opts.input);
    }
  });
}

/** the mount namespace of a process ('mnt:[4026532174]'), undefined when it is gone */
function mountNs(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** live (non-zombie) processes in a mount namespace */
function pidsInNs(ns: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    if (mountNs(pid) !== ns) continue;
    const st = procState(pid);
    if (st !== undefined && st !== 'Z' && st !== 'X') pids.push(pid);
  }
  return pids;
}

function killAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}



/** Is `pid` listening on 127.0.0.1:port? (/proc/net/tcp, and the socket's inode among its fds) */
function listensOn(pid: number, port: number): boolean {
  let table: string;
  try {
    table = readFileSync('/proc/net/tcp', 'latin1');
  } catch {
    return false;
  }
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[3] === '0A') inodes.add(f[9]);
  }
  if (inodes.size === 0) return false;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m && inodes.has(m[1])) return true;
    }
  } catch {
    return false;
  }
  return false;
}

// ---------------------------------------------------------------------------
// the SMTP sink (the same as test/helpers/postfix.ts's, which does not export it)

// ---------------------------------------------------------------------------
// configuration

function mc(v: { dir: string; tools: Tools; smtpPort: number; sinkPort: number; opts: SendmailOptions }): string {
  const { dir, tools, smtpPort, sinkPort, opts } = v;
  for (const p of [dir, tools.cfDir, tools.helpFile]) if (/[`',\s]/.test(p)) throw new Error(`path unusable in a .mc file: ${p}`);
  const lines = [
    'divert(-1)',
    '# throwaway Sendmail for tests (test/helpers/sendmail.ts)',
    'divert(0)dnl',
    "VERSIONID(`themis test instance')dnl",
    "OSTYPE(`linux')dnl",
    `define(\`confDOMAIN_NAME', \`${SENDMAIL_HOSTNAME}')dnl`,
    // the instance's own files
    `define(\`QUEUE_DIR', \`${dir}/mqueue')dnl`,
    `define(\`confPID_FILE', \`${dir}/run/sendmail.pid')dnl`,
    `define(\`STATUS_FILE', \`${dir}/run/statistics')dnl`,
    `define(\`ALIAS_FILE', \`${dir}/etc/aliases')dnl`,
    `define(\`HELP_FILE', \`${tools.helpFile}')dnl`,
    `define(\`confSERVICE_SWITCH_FILE', \`${dir}/etc/service.switch')dnl`,
    `define(\`confHOSTS_FILE', \`${dir}/etc/hosts')dnl`,
    "define(`confDEF_USER_ID', `mail:mail')dnl",
    // not needed under /tmp; keeps a TMPDIR below a group-writable directory usable
    "define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe')dnl",
    "define(`confLOG_LEVEL', `14')dnl",
    // no DNS: hosts come from files only (service.switch); no search list for what little is left
    "define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl",
    "define(`confTO_IDENT', `0s')dnl",
    // quick
    "define(`confTO_QUEUEWARN', `1h')dnl",
    "define(`confMIN_QUEUE_AGE', `0s')dnl",
    "define(`confQUEUE_LA', `100')dnl",
    "define(`confREFUSE_LA', `200')dnl",
    "define(`confDELAY_LA', `0')dnl",
    "define(`confMAX_DAEMON_CHILDREN', `0')dnl",
    "define(`confCONNECTION_RATE_THROTTLE', `0')dnl",
    "define(`confPRIVACY_FLAGS', `authwarnings')dnl",
    // every message goes to the sink on loopback
    // (by name: Sendmail counts [127.0.0.1] as itself, class w, and would drop it as a relay)
    `define(\`SMART_HOST', \`[${SINK_HOSTNAME}]')dnl`,
    `define(\`MAIL_HUB', \`[${SINK_HOSTNAME}]')dnl`,
    `define(\`RELAY_MAILER_ARGS', \`TCP $h ${sinkPort}')dnl`,
    `define(\`ESMTP_MAILER_ARGS', \`TCP $h ${sinkPort}')dnl`,
    `define(\`SMTP_MAILER_ARGS', \`TCP $h ${sinkPort}')dnl`,
    "FEATURE(`nocanonify')dnl",
    // clients on 127.0.0.1 may relay anywhere (Sendmail's default); anyone, `sendmail -bs` ones
    // ([UNIX: localhost]) included, to the test domains
    "RELAY_DOMAIN(`example.test example.net example.org example.com')dnl",
    "FEATURE(`no_default_msa')dnl",
    "FEATURE(`accept_unresolvable_domains')dnl",
    "FEATURE(`accept_unqualified_senders')dnl",
    `DAEMON_OPTIONS(\`Port=${smtpPort}, Addr=127.0.0.1, Name=MTA, Family=inet')dnl`,
  ];
  if (!opts.saslUsers?.length) {
    lines.push("define(`confAUTH_MECHANISMS', `')dnl");
  } else {
    lines.push(
      "define(`confAUTH_MECHANISMS', `PLAIN LOGIN')dnl",
      "TRUST_AUTH_MECH(`PLAIN LOGIN')dnl",
      // no TLS here: allow PLAIN/LOGIN in the clear (A: AUTH= only when authenticated)
      "define(`confAUTH_OPTIONS', `A')dnl",
    );
  }
  if (opts.milter) {
    if (!/^inet6?:\d+@[\w.:[\]]+$|^(unix|local):\//.test(opts.milter)) throw new Error(`milter socket spec not usable: ${opts.milter}`);
    for (const [stage, list] of Object.entries(SENDMAIL_MILTER_MACROS)) lines.push(`define(\`confMILTER_MACROS_${stage}', \`\`${list}'')dnl`);
    const flags = opts.milterFlags ?? 'T';
    const timeouts = opts.milterTimeouts ?? 'C:5s;S:10s;R:10s;E:1m';
    lines.push(`INPUT_MAIL_FILTER(\`themis', \`S=${opts.milter}${flags ? `, F=${flags}` : ''}, T=${timeouts}')dnl`);
  }
  if (opts.extraMc) lines.push(opts.extraMc.trimEnd());
  lines.push("MAILER(`local')dnl", "MAILER(`smtp')dnl", '');
  return lines.join('\n');
}

const IN_NAMESPACE = `#!/bin/sh
# Runs in a private mount + UTS namespace (unshare --mount --uts --propagation private): only the
# processes of this test Sendmail see the instance's hosts, nsswitch.conf and resolv.conf in /etc.
# $1 = the instance dir; the rest = the command.
set -e
d=$1
shift
mount --bind "$d/etc/hosts" /etc/hosts
mount --bind "$d/etc/nsswitch.conf" /etc/nsswitch.conf
mount --bind "$d/etc/resolv.conf" /etc/resolv.conf
# SMTP AUTH: Cyrus SASL reads Sendmail.conf only from fixed places (Sendmail clears SASL_CONF_PATH
# from its environment); the instance's copy of the plugin directory, with its Sendmail.conf, hides
# the system's here
if [ -n "$THEMIS_SASL_PLUGIN_DIR" ]; then
    mount --bind "$d/etc/sasl2" "$THEMIS_SASL_PLUGIN_DIR"
fi
hostname ${SENDMAIL_HOSTNAME}
exec "$@"
`;

// ---------------------------------------------------------------------------
// emergency cleanup when the test process exits without stop()

const live = new Map<string, { pid: number; ns: string | undefined; dir: string; keep: boolean }>();

function emergencyCleanup(): void {
  for (const [key, inst] of live) {
    live.delete(key);
    const ns = inst.ns ?? mountNs(inst.pid);
    killAll(ns ? [inst.pid, ...pidsInNs(ns)] : [inst.pid], 'SIGKILL');
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

export async function startSendmail(opts: SendmailOptions = {}): Promise<SendmailInstance> {
  const p = probe();
  if (!p.tools) throw new Error(`sendmail not available: ${p.reason}`);
  const tools = p.tools;
  const keep = process.env.THEMIS_KEEP_TMP === '1';

  const dir = await mkdtemp(join(tmpdir(), 'themis-sendmail-'));
  const etc = join(dir, 'etc');
  const configFile = join(etc, 'sendmail.cf');
  const sinkDir = join(dir, 'sink');
  const syslogFile = join(dir, 'log', 'syslog.log');
  const daemonOut = join(dir, 'log', 'daemon.out');
  const wrapper = join(dir, 'bin', 'in-namespace');
  let sink: Sink | undefined;
  let daemon: ChildProcess | undefined;
  let ns: string | undefined;

  const env = (): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C',
      LC_ALL: 'C',
      TZ: 'UTC',
      LD_LIBRARY_PATH: tools.libDir,
      LD_PRELOAD: tools.shim,
      THEMIS_SYSLOG_FILE: syslogFile,
    };
    if (opts.saslUsers?.length) e.THEMIS_SASL_PLUGIN_DIR = saslPluginDir();
    return e;
  };

  const readLog = async (): Promise<string> => {
    const read = async (f: string) => {
      try {
        return await readFile(f, 'utf8');
      } catch {
        return '';
      }
    };
    const out = await read(daemonOut);
    return (await read(syslogFile)) + (out ? `--- sendmail stdout/stderr ---\n${out}` : '');
  };

  /** a command of this instance, inside the daemon's namespaces */
  const inInstance = (args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> => {
    if (daemon?.pid === undefined || !ns) return Promise.resolve({ code: 127, stdout: '', stderr: '[sendmail helper] the daemon is not running' });
    return run(tools.nsenter, [`--mount=/proc/${daemon.pid}/ns/mnt`, `--uts=/proc/${daemon.pid}/ns/uts`, '--', tools.sendmail, '-C', configFile, ...args], { ...o, env: env() });
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const pid = daemon?.pid;
      if (pid !== undefined && daemon!.exitCode === null && daemon!.signalCode === null) {
        const space = ns ?? mountNs(pid);
        daemon!.kill('SIGTERM');
        const gone = () => (space ? pidsInNs(space).length === 0 : procState(pid) === undefined);
        if (!(await waitUntil(gone, 5_000)) && space) {
          killAll(pidsInNs(space), 'SIGKILL');
          await waitUntil(gone, 2_000);
        }
      }
      live.delete(dir);
      if (sink) await sink.close();
      if (keep) process.stderr.write(`[sendmail helper] THEMIS_KEEP_TMP=1: kept ${dir}\n`);
      else await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };

  try {
    await chmod(dir, 0o755);
    for (const d of ['etc', 'mqueue', 'run', 'log', 'sink', 'bin']) await mkdir(join(dir, d), { mode: 0o755 });
    await chmod(join(dir, 'mqueue'), 0o700);
    await writeFile(join(dir, 'run', 'statistics'), '', { mode: 0o600 });
    await writeFile(join(etc, 'aliases'), '', { mode: 0o644 });
    await writeFile(join(etc, 'service.switch'), 'hosts files\naliases files\n', { mode: 0o644 });
    await writeFile(
      join(etc, 'hosts'),
      `127.0.0.1 localhost\n127.0.0.1 ${SENDMAIL_HOSTNAME} ${SENDMAIL_HOSTNAME.split('.')[0]}\n127.0.0.1 ${SINK_HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n`,
      { mode: 0o644 },
    );
    await writeFile(join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n', { mode: 0o644 });
    await writeFile(join(etc, 'resolv.conf'), 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n', { mode: 0o644 });
    await writeFile(wrapper, IN_NAMESPACE, { mode: 0o755 });
    if (opts.saslUsers?.length) {
      if (!tools.saslpasswd2) throw new Error('SMTP AUTH needs saslpasswd2 (Debian package sasl2-bin)');
      // a copy of the system's SASL plugin directory (bind-mounted over it in the namespace) with
      // a Sendmail.conf and a sasldb of the instance
      const pluginDir = saslPluginDir();
      await cp(pluginDir, join(etc, 'sasl2'), { recursive: true, dereference: true });
      const db = join(etc, 'sasl2', 'sasldb2');
      for (const u of opts.saslUsers) {
        const at = u.login.lastIndexOf('@');
        execFileSync(tools.saslpasswd2, ['-f', db, '-c', '-p', '-u', u.login.slice(at + 1), u.login.slice(0, at)], { input: u.password });
      }
      await chmod(db, 0o600);
      await writeFile(join(etc, 'sasl2', 'Sendmail.conf'), `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: ${db}\n`, { mode: 0o644 });
    }

    sink = await startSink(sinkDir);
    onProcessExit(emergencyCleanup);

    let lastErr = '';
    for (let attempt = 1; attempt <= 5; attempt++) {
      const smtpPort = await freePort();
      await writeFile(join(etc, 'sendmail.mc'), mc({ dir, tools, smtpPort, sinkPort: sink.port, opts }), { mode: 0o644 });
      const built = await run(tools.m4, [`-D_CF_DIR_=${tools.cfDir}/`, join(tools.cfDir, 'm4/cf.m4'), join(etc, 'sendmail.mc')], { env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
      if (built.code !== 0 || built.stderr.trim()) throw new Error(`m4 could not build sendmail.cf (exit ${built.code}): ${built.stderr}`);
      await writeFile(configFile, built.stdout, { mode: 0o644 });
      await writeFile(syslogFile, '', { mode: 0o644 });

      const outFd = openSync(daemonOut, 'a');
      daemon = spawn(tools.unshare, ['--mount', '--uts', '--propagation', 'private', wrapper, dir, tools.sendmail, '-C', configFile, '-bD', '-q5s'], {
        env: env(),
        stdio: ['ignore', outFd, outFd],
        detached: true,
      });
      closeSync(outFd);
      const pid = daemon.pid!;
      live.set(dir, { pid, ns: undefined, dir, keep });
      const exited = () => daemon!.exitCode !== null || daemon!.signalCode !== null;
      const up = await waitUntil(async () => exited() || listensOn(pid, smtpPort) || /cannot bind/.test(await readLog()), 15_000);
      if (up && !exited() && listensOn(pid, smtpPort)) {
        ns = mountNs(pid);
        live.set(dir, { pid, ns, dir, keep });
        return makeInstance(smtpPort);
      }
      lastErr = `sendmail did not come up on 127.0.0.1:${smtpPort} (exit ${daemon.exitCode ?? daemon.signalCode ?? 'none'})\n${await readLog()}`;
      const space = mountNs(pid);
      daemon.kill('SIGKILL');
      if (space) killAll(pidsInNs(space), 'SIGKILL');
      await waitUntil(exited, 2_000);
      daemon = undefined;
      if (!/cannot bind|Address already in use/i.test(lastErr)) break;
    }
    throw new Error(`could not start sendmail in ${dir}: ${lastErr}`);
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }

  function makeInstance(smtpPort: number): SendmailInstance {
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
    const mailqQ = async (): Promise<string> => {
      const r = await inInstance(['-bp', '-qQ']);
      if (r.code !== 0) throw new Error(`mailq -qQ exited ${r.code}: ${r.stdout}${r.stderr}`);
      return r.stdout;
    };
    const quarantined = async (): Promise<string[]> => {
      // "6B3BXcHP019561     7 Thu Dec  3 11:33 <a@example.org>" — the id first, then size and date
      const ids: string[] = [];
      for (const line of (await mailqQ()).split('\n')) {
        const m = /^([A-Za-z0-9]{8,})[*X-]?\s+\d+\s/.exec(line);
        if (m) ids.push(m[1]);
      }
      return ids;
    };
    const sendmailBs = async (from: string, to: string[], message: string): Promise<BsResult> => {
      if (daemon?.pid === undefined || !ns) return { code: 127, replies: [], stdout: '', stderr: '[sendmail helper] the daemon is not running' };
      const child = spawn(tools.nsenter, [`--mount=/proc/${daemon.pid}/ns/mnt`, `--uts=/proc/${daemon.pid}/ns/uts`, '--', tools.sendmail, '-C', configFile, '-bs'], {
        env: env(),
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      let pending = '';
      const lines: string[] = [];
      let wake: (() => void) | undefined;
      let closed = false;
      child.stdout!.setEncoding('latin1');
      child.stdout!.on('data', (d: string) => {
        stdout += d;
        pending += d;
        let i: number;
        while ((i = pending.indexOf('\n')) >= 0) {
          lines.push(pending.slice(0, i).replace(/\r$/, ''));
          pending = pending.slice(i + 1);
        }
        wake?.();
      });
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.stdin!.on('error', () => {});
      const exit = new Promise<number>((resolve) =>
        child.on('close', (code, signal) => {
          closed = true;
          wake?.();
          resolve(code ?? (signal ? 128 : 1));
        }),
      );
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const replies: BsReply[] = [];
      const read = async (): Promise<BsReply> => {
        const text: string[] = [];
        for (;;) {
          while (lines.length === 0) {
            if (closed) throw new Error(`sendmail -bs closed its output; partial reply ${JSON.stringify(text)}; stderr: ${stderr}`);
            await new Promise<void>((r) => {
              wake = r;
              setTimeout(r, 100);
            });
          }
          const line = lines.shift()!;
          text.push(line);
          if (line.length < 4 || line[3] !== '-') {
            const reply = { code: Number(line.slice(0, 3)), text: text.join('\n') };
            replies.push(reply);
            return reply;
          }
        }
      };
      const command = async (line: string): Promise<BsReply> => {
        child.stdin!.write(`${line}\r\n`);
        return read();
      };
      try {
        await read();
        await command('EHLO localhost');
        const mail = await command(`MAIL FROM:<${from}>`);
        let accepted = 0;
        if (mail.code === 250) for (const r of to) if ((await command(`RCPT TO:<${r}>`)).code === 250) accepted++;
        if (accepted > 0 && (await command('DATA')).code === 354) {
          const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
          child.stdin!.write(`${body}${body.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
          await read();
        }
        await command('QUIT');
      } catch (e) {
        stderr += `\n[sendmail helper] ${(e as Error).message}`;
      }
      child.stdin!.end();
      const code = await exit;
      clearTimeout(killer);
      return { code, replies, stdout, stderr };
    };
    return {
      smtpPort,
      dir,
      configFile,
      delivered,
      waitForDelivered: async (n, timeoutMs = DEFAULT_WAIT_MS) => {
        let last: DeliveredMessage[] = [];
        if (await waitUntil(async () => (last = await delivered()).length >= n, timeoutMs, 100)) return last;
        const text = await readLog();
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${n} delivered message(s) (have ${last.length}) in ${dir}\n--- sendmail log (last 40 lines) ---\n${text.split('\n').slice(-41).join('\n')}`);
      },
      quarantined,
      mailqQ,
      log: readLog,
      sendmailBs,
      stop,
    };
  }
}
