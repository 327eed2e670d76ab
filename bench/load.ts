/**
 * `bench/load.ts`: the project's milter load generator. It plays Postfix 3.7 against a milter on a
 * loopback address and measures the milter. It is built to cost as little CPU as possible, because on
 * a small box it shares the cores with the milter it measures:
 * - one process and one event loop, with many connections;
 * - every packet is encoded once, at start (or once per negotiated option set), and re-used;
 * - one shared receive buffer for all sockets (`onread`), so reads allocate nothing;
 * - an inline reply parser that reads code bytes in place, with no per-frame objects;
 * - latencies go into preallocated typed arrays, and one timer checks every timeout.
 *
 * The packets are the ones `../shared/bench/milterload.py` sends, which are the ones Postfix sends:
 * OPTNEG (v6, actions 0x1ff, protocol 0x1fffff). Then `D C`+CONNECT (family '4') and `D H`+HELO.
 * Then K messages, each: `D M`+MAIL, R × (`D R`+RCPT), `D T`+DATA, N × (`D L`+HEADER), `D N`+EOH,
 * body chunks (`D B`+BODY, ≤ 65535 bytes each) and `D E`+EOM. After each message comes ABORT, and
 * the session ends with ABORT+QUIT. What the milter negotiated is honoured:
 * - NO* means the event is not sent, but its macro packet still is;
 * - NR* means no reply is awaited;
 * - SKIP, HDR_LEADSPC and SETSYMLIST lists are followed.
 *
 * Usage:
 *   node bench/load.ts --port P [-c 10] [-k 10] [-r 5] [--headers 10] [--body-bytes 20480] [-m 3000]
 *                      [--rate N] [--milter-pid PID] [--timeout 30] [--json] [--trace]
 *   node bench/load.ts --port P --idle 1000 --milter-pid PID [--json]   (memory: N idle sessions)
 * Without --rate every connection sends its next message as soon as the previous one is decided (the
 * milter is saturated). With --rate N the load is paced: N messages per second in total, spread evenly
 * over the connections; each message starts at its scheduled time, or as soon as its connection is
 * free when it is behind schedule. The result says whether the milter kept up (achieved ≥ 95 % of N).
 * Exit status: 0 when there were no protocol errors; 1 when there were any; 2 on bad usage.
 * @module
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ALL_ACTIONS, ALL_PROTOCOL, Action, Command, MILTER_CHUNK_SIZE, MILTER_VERSION, Protocol } from '../src/milter/constants.ts';
import { encodeChunks, encodeConnect, encodeMacros, encodeOptionNegotiation, encodePacket, encodeStrings } from '../src/milter/codec.ts';

// ---------------------------------------------------------------------------------------------
// Options

/** Load settings (command line). */
export interface LoadOptions {
  host: string;
  port: number;
  connections: number;
  messages: number;
  msgsPerConn: number;
  rcpts: number;
  headers: number;
  bodyBytes: number;
  chunkSize: number;
  timeoutMs: number;
  milterPid: number | undefined;
  offerActions: number;
  offerProtocol: number;
  idle: number;
  idleSettleMs: number;
  /** Paced mode: messages per second offered in total (0 = unpaced: as fast as the milter answers). */
  rate: number;
  /**
   * Distinct envelopes (0 = every message the same, the default): message n is sent by sender
   * n mod N, to recipients drawn from N addresses, and session s comes from client network s mod N (a
   * /24 of its own). See {@link variant}.
   */
  distinct: number;
  /** With `distinct`: the senders' domains, `d0.example.test` … (default 1,000). */
  domains: number;
  /** Print `progress <decided> <failed> <ms>` on stderr this often, in ms (0 = never). */
  progressMs: number;
  json: boolean;
  trace: boolean;
}

const USAGE = `Usage: node bench/load.ts --port P [options]
  --host ADDR           milter address, loopback only (default 127.0.0.1)
  --port P              milter port (required)
  -c, --connections N   concurrent milter connections (default 1)
  -m, --messages N      total messages (default 1000)
  -k, --msgs-per-conn N messages per milter session; ABORT between them (default 1)
  -r, --rcpts N         RCPT TO per message (default 1)
  --headers N           headers per message (default 10)
  --body-bytes N        body size (default 2048)
  --chunk-size N        body chunk size, ≤ 65535 (default 65535)
  --timeout S           seconds allowed per message (default 30)
  --rate N              paced load: offer N messages per second in total, spread evenly over the
                        connections (a message starts at its scheduled time, or as soon as its
                        connection is free); reports the achieved rate and whether the milter kept up
                        (achieved ≥ 95 % of N). Default: unpaced, each connection as fast as answered
  --milter-pid PID      also measure this process's CPU per message (all threads, from /proc)
  --distinct N          vary the envelope over N values (default 0: every message the same): message n
                        is from user<n mod N>@d<(n mod N) mod D>.example.test, to R recipients among
                        rcpt0..rcpt<N-1>@example.test, and session s connects from client network
                        s mod N, a /24 of its own in 240.0.0.0/4 (reserved: payload only, nothing is
                        ever sent there)
  --domains D           with --distinct: the senders' domains d0..d<D-1>.example.test (default 1000)
  --progress MS         print "progress DECIDED FAILED ELAPSED_MS" on stderr every MS ms
  --offer-actions N     actions offered in OPTNEG (default 0x1ff)
  --offer-protocol N    protocol bits offered in OPTNEG (default 0x1fffff)
  --idle N              memory mode: open N sessions (OPTNEG+CONNECT+HELO), leave them idle, read
                        the milter's RSS (needs --milter-pid), then close them
  --idle-settle-ms MS   wait this long with the idle sessions open before reading (default 1000)
  --json                print the result as JSON
  --trace               print every frame to stderr (use a small -m)
`;

function parseOptions(argv: string[]): LoadOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      connections: { type: 'string', short: 'c', default: '1' },
      messages: { type: 'string', short: 'm', default: '1000' },
      'msgs-per-conn': { type: 'string', short: 'k', default: '1' },
      rcpts: { type: 'string', short: 'r', default: '1' },
      headers: { type: 'string', default: '10' },
      'body-bytes': { type: 'string', short: 'b', default: '2048' },
      'chunk-size': { type: 'string', default: String(MILTER_CHUNK_SIZE) },
      timeout: { type: 'string', default: '30' },
      'milter-pid': { type: 'string' },
      'offer-actions': { type: 'string', default: String(ALL_ACTIONS) },
      'offer-protocol': { type: 'string', default: String(ALL_PROTOCOL) },
      idle: { type: 'string', default: '0' },
      'idle-settle-ms': { type: 'string', default: '1000' },
      rate: { type: 'string' },
      distinct: { type: 'string', default: '0' },
      domains: { type: 'string', default: '1000' },
      progress: { type: 'string', default: '0' },
      json: { type: 'boolean', default: false },
      trace: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const n = v === undefined ? NaN : Number(v);
    if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    return n;
  };
  const host = values.host as string;
  if (!isLoopback(host)) usage(`--host must be a loopback address (127.0.0.0/8, ::1, localhost), got ${JSON.stringify(host)}`);
  if (values.port === undefined) usage('--port is required');
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) usage('--timeout must be a positive number of seconds');
  const rate = values.rate === undefined ? 0 : Number(values.rate);
  if (!(rate >= 0) || !Number.isFinite(rate)) usage(`--rate must be a number of messages per second (0: unpaced), got ${JSON.stringify(values.rate)}`);
  return {
    host,
    port: int('port', values.port as string, 1, 65535),
    connections: int('connections', values.connections as string, 1, 100_000),
    messages: int('messages', values.messages as string, 1),
    msgsPerConn: int('msgs-per-conn', values['msgs-per-conn'] as string, 1),
    rcpts: int('rcpts', values.rcpts as string, 1, 10_000),
    headers: int('headers', values.headers as string, 0, 10_000),
    bodyBytes: int('body-bytes', values['body-bytes'] as string, 0, 1 << 30),
    chunkSize: int('chunk-size', values['chunk-size'] as string, 1, MILTER_CHUNK_SIZE),
    timeoutMs: timeout * 1000,
    milterPid: values['milter-pid'] === undefined ? undefined : int('milter-pid', values['milter-pid'] as string, 1),
    offerActions: int('offer-actions', values['offer-actions'] as string, 0, 0xffffffff),
    offerProtocol: int('offer-protocol', values['offer-protocol'] as string, 0, 0xffffffff),
    idle: int('idle', values.idle as string, 0, 100_000),
    idleSettleMs: int('idle-settle-ms', values['idle-settle-ms'] as string, 0),
    rate,
    distinct: int('distinct', values.distinct as string, 0, 1 << 24),
    domains: int('domains', values.domains as string, 1, 1 << 24),
    progressMs: int('progress', values.progress as string, 0),
    json: values.json as boolean,
    trace: values.trace as boolean,
  };
}

function usage(message: string): never {
  process.stderr.write(`load.ts: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const v = isIP(host);
  if (v === 4) return host.startsWith('127.');
  if (v === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

// ---------------------------------------------------------------------------------------------
// /proc readings of the milter process

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`, normally 100). */
export function clockTicks(): number {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (Number.isInteger(n) && n > 0) return n;
  } catch {
    // fall through
  }
  return 100;
}

/** CPU time of a process. */
export interface ProcCpu {
  /** utime+stime from /proc/<pid>/stat, in clock ticks. This counts every thread, including ones that have exited. */
  ticks: number;
  /** utime alone (user mode), in clock ticks. */
  userTicks: number;
  /** Sum of the on-CPU ns in /proc/<pid>/task/<tid>/schedstat. This is finer, but counts live threads only. */
  schedNs: number;
  /** Live threads. */
  threads: number;
}

/** Reads a process's CPU time from /proc (all threads). */
export function readProcCpu(pid: number): ProcCpu {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]);
  let schedNs = 0;
  let threads = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1');
      schedNs += Number(s.slice(0, s.indexOf(' ')));
      threads++;
    } catch {
      // the thread exited between readdir and read
    }
  }
  return { ticks, userTicks: Number(f[11]), schedNs, threads };
}

/** Memory of a process from /proc/<pid>/status, in kB. */
export interface ProcMemory {
  /** Peak resident set size (VmHWM). */
  hwmKb: number;
  /** Current resident set size (VmRSS). */
  rssKb: number;
  /** Threads. */
  threads: number;
}

/** Reads VmHWM, VmRSS and Threads of a process. */
export function readProcMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
    return m ? Number(m[1]) : NaN;
  };
  return { hwmKb: field('VmHWM'), rssKb: field('VmRSS'), threads: field('Threads') };
}

// ---------------------------------------------------------------------------------------------
// Message material: everything pre-encoded

const CLIENT_NAME = 'client.example.test';
const CLIENT_ADDR = '192.0.2.10'; // RFC 5737: protocol payload only, no traffic goes there
const CLIENT_PORT = 1031;
const SENDER_DOMAIN = 'example.test';
const RCPT_DOMAIN = 'example.test';
const QUEUE_ID = '4D2C1B0A99';

/** Postfix 3.7's default macro lists, with {client_addr} {client_name} {client_port} at CONNECT (as milterload.py). */
const DEFAULT_MACROS: Readonly<Record<string, readonly string[]>> = {
  C: ['j', '{daemon_name}', '{daemon_addr}', 'v', '_', '{client_addr}', '{client_name}', '{client_port}'],
  H: ['{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}'],
  M: ['i', '{auth_type}', '{auth_authen}', '{auth_author}', '{mail_addr}', '{mail_host}', '{mail_mailer}'],
  R: ['i', '{rcpt_addr}', '{rcpt_host}', '{rcpt_mailer}'],
  T: ['i'],
  N: ['i'],
  E: ['i'],
};
/** Header macros use the EOH list and body chunks the EOM list (Postfix milter8.c). */
const MACRO_LIST_OF: Readonly<Record<string, string>> = { L: 'N', B: 'E' };
/** SETSYMLIST stage number → the command whose list it replaces. */
const SYMLIST_STAGE: Readonly<Record<number, string>> = { 0: 'C', 1: 'H', 2: 'M', 3: 'R', 4: 'T', 5: 'E', 6: 'N' };

const BODY_LINE = 'The quick brown fox jumps over the lazy dog; milterload body filler 0123456789 abcdefghijklmnopqrstuvwxyz.\r\n';

function makeBody(n: number): Buffer {
  const line = Buffer.from(BODY_LINE, 'latin1');
  const out = Buffer.allocUnsafe(n);
  for (let o = 0; o < n; o += line.length) line.copy(out, o, 0, Math.min(line.length, n - o));
  return out;
}

function makeHeaders(n: number, sender: string, rcpts: string[], date: string): [string, string][] {
  const h: [string, string][] = [
    ['Received', `from ${CLIENT_NAME} (${CLIENT_NAME} [${CLIENT_ADDR}])\r\n\tby mx.example.test (Postfix) with ESMTP id ${QUEUE_ID}\r\n\tfor <${rcpts[0]}>; ${date}`],
    ['From', `Load Sender <${sender}>`],
    ['To', rcpts.map((r) => `<${r}>`).join(', ')],
    ['Subject', 'milterload test message 0'],
    ['Date', date],
    ['Message-ID', `<0.${process.pid}@milterload.example.test>`],
    ['MIME-Version', '1.0'],
    ['Content-Type', 'text/plain; charset=us-ascii'],
    ['Content-Transfer-Encoding', '7bit'],
    ['X-Mailer', 'milterload.py'],
  ];
  if (n <= h.length) return h.slice(0, n);
  for (let i = 0; h.length < n; i++) h.push([`X-Load-${i}`, `filler header ${i}`]);
  return h;
}

// Stage ids of the steps (numbers, for cheap switches).
const S_CONNECT = 0;
const S_HELO = 1;
const S_MAIL = 2;
const S_RCPT = 3;
const S_DATA = 4;
const S_HEADER = 5;
const S_EOH = 6;
const S_BODY = 7;
const S_EOM = 8;
const STAGE_NAMES = ['connect', 'helo', 'mail', 'rcpt', 'data', 'header', 'eoh', 'body', 'eom'];

/** One write of the script: a macro packet and, unless the event is switched off, its command. */
interface Step {
  readonly stage: number;
  /** Bytes to write. */
  readonly buf: Buffer;
  /** RCPT after the first: the variant without `i`, used while no recipient has been accepted yet. */
  readonly bufNoI: Buffer | null;
  /** Whether the milter answers this step. */
  readonly reply: boolean;
}

/** The packets of a session for one negotiated option set. */
interface Script {
  readonly key: string;
  readonly actions: number;
  readonly protocol: number;
  readonly setup: readonly Step[];
  readonly message: readonly Step[];
  /** Index in `message` of the first step after the headers (the target of SKIP at a header). */
  readonly afterHeaders: number;
  /** Index in `message` of the EOM step (the target of SKIP at a body chunk). */
  readonly eom: number;
  /** Index in `message` of the last RCPT step. */
  readonly lastRcpt: number;
  /** --distinct: the message of variant `v` (its envelope steps built anew; indices as in `message`). */
  readonly varyMessage: (v: number) => Step[];
  /** --distinct: the setup of session `s` (CONNECT from its own client network). */
  readonly varySetup: (s: number) => Step[];
}

const OPTNEG_REPLY = 0x4f;
const P_ABORT = encodePacket(Command.ABORT);
const P_QUIT = encodePacket(Command.QUIT);
const P_ABORT_QUIT = Buffer.concat([P_ABORT, P_QUIT]);
const P_ABORT_ABORT_QUIT = Buffer.concat([P_ABORT, P_ABORT, P_QUIT]);

/** Builds (once per negotiated option set) every packet of a session. */
class Plan {
  readonly opts: LoadOptions;
  readonly optneg: Buffer;
  private readonly scripts = new Map<string, Script>();
  private readonly sender = `user0@${SENDER_DOMAIN}`;
  private readonly rcptList: string[];
  private readonly date = new Date().toUTCString();
  private readonly body: Buffer;

  constructor(opts: LoadOptions) {
    this.opts = opts;
    this.optneg = encodeOptionNegotiation({ version: MILTER_VERSION, actions: opts.offerActions, protocol: opts.offerProtocol });
    this.rcptList = Array.from({ length: opts.rcpts }, (_, r) => `rcpt${r}@${RCPT_DOMAIN}`);
    this.body = makeBody(opts.bodyBytes);
  }

  script(actions: number, protocol: number, symlists: Map<string, string[]>): Script {
    const key = `${actions}:${protocol}:${[...symlists].map(([k, v]) => `${k}=${v.join(' ')}`).join(';')}`;
    let s = this.scripts.get(key);
    if (s === undefined) {
      s = this.build(key, actions, protocol, symlists);
      this.scripts.set(key, s);
    }
    return s;
  }

  private build(key: string, actions: number, pf: number, symlists: Map<string, string[]>): Script {
    const known = new Map<string, string>([
      ['j', 'mx.example.test'],
      ['daemon_name', 'mx.example.test'],
      ['daemon_addr', '127.0.0.1'],
      ['v', 'Postfix 3.7.11'],
      ['_', `${CLIENT_NAME} [${CLIENT_ADDR}]`],
      ['client_addr', CLIENT_ADDR],
      ['client_name', CLIENT_NAME],
      ['client_port', String(CLIENT_PORT)],
    ]);
    // As Postfix: the stage's list (or the milter's SETSYMLIST list), keeping the macros that have a value.
    const macros = (cmd: string): Buffer => {
      const list = MACRO_LIST_OF[cmd] ?? cmd;
      const names = symlists.get(list) ?? DEFAULT_MACROS[list] ?? [];
      const pairs: [string, string][] = [];
      for (const name of names) {
        const v = known.get(name.replace(/^\{|\}$/g, ''));
        if (v !== undefined) pairs.push([name, v]);
      }
      return encodeMacros(cmd.charCodeAt(0), pairs);
    };
    const step = (stage: number, cmd: string, packet: Buffer, no: number, nr: number): Step => {
      const mac = macros(cmd);
      if (pf & no) return { stage, buf: mac, bufNoI: null, reply: false };
      return { stage, buf: Buffer.concat([mac, packet]), bufNoI: null, reply: (pf & nr) === 0 };
    };
    const cstrs = (code: number, strings: string[]) => encodeStrings(code, strings);

    const setup: Step[] = [
      step(S_CONNECT, 'C', encodeConnect({ hostname: CLIENT_NAME, family: '4', port: CLIENT_PORT, address: CLIENT_ADDR }), Protocol.NOCONNECT, Protocol.NR_CONN),
      step(S_HELO, 'H', cstrs(Command.HELO, [CLIENT_NAME]), Protocol.NOHELO, Protocol.NR_HELO),
    ];

    const o = this.opts;
    const message: Step[] = [];
    known.set('mail_addr', this.sender);
    known.set('mail_host', SENDER_DOMAIN);
    known.set('mail_mailer', 'smtp');
    message.push(step(S_MAIL, 'M', cstrs(Command.MAIL, [`<${this.sender}>`, `SIZE=${o.bodyBytes}`]), Protocol.NOMAIL, Protocol.NR_MAIL));
    for (let r = 0; r < this.rcptList.length; r++) {
      const rcpt = this.rcptList[r];
      known.set('rcpt_addr', rcpt);
      known.set('rcpt_host', RCPT_DOMAIN);
      known.set('rcpt_mailer', 'smtp');
      known.delete('i');
      const withoutI = step(S_RCPT, 'R', cstrs(Command.RCPT, [`<${rcpt}>`]), Protocol.NORCPT, Protocol.NR_RCPT);
      if (r === 0) {
        message.push(withoutI);
      } else {
        // Postfix: the queue file (`i`) exists once a recipient was accepted.
        known.set('i', QUEUE_ID);
        const withI = step(S_RCPT, 'R', cstrs(Command.RCPT, [`<${rcpt}>`]), Protocol.NORCPT, Protocol.NR_RCPT);
        message.push({ ...withI, bufNoI: withoutI.buf });
      }
    }
    const lastRcpt = message.length - 1;
    known.set('i', QUEUE_ID);
    message.push(step(S_DATA, 'T', encodePacket(Command.DATA), Protocol.NODATA, Protocol.NR_DATA));
    // Headers: with NOHDRS nothing at all is sent for them (as milterload.py).
    if (!(pf & Protocol.NOHDRS)) {
      const lead = pf & Protocol.HDR_LEADSPC ? ' ' : '';
      for (const [name, value] of makeHeaders(o.headers, this.sender, this.rcptList, this.date)) {
        message.push(step(S_HEADER, 'L', cstrs(Command.HEADER, [name, lead + value]), 0, Protocol.NR_HDR));
      }
    }
    const afterHeaders = message.length;
    message.push(step(S_EOH, 'N', encodePacket(Command.EOH), Protocol.NOEOH, Protocol.NR_EOH));
    // Body chunks: with NOBODY nothing at all is sent for them (as milterload.py).
    if (!(pf & Protocol.NOBODY)) {
      for (const chunk of encodeChunks(Command.BODY, this.body, o.chunkSize)) message.push(step(S_BODY, 'B', chunk, 0, Protocol.NR_BODY));
    }
    const eom = message.length;
    message.push({ stage: S_EOM, buf: Buffer.concat([macros('E'), encodePacket(Command.BODYEOB)]), bufNoI: null, reply: true });

    // --distinct: the envelope steps of one variant, built per message (the rest of the message is shared).
    const envelope = (v: number): Step[] => {
      const { sender, senderDomain, rcpts } = variant(v, o.distinct, o.domains, o.rcpts);
      known.set('mail_addr', sender);
      known.set('mail_host', senderDomain);
      known.delete('i');
      const out: Step[] = [step(S_MAIL, 'M', cstrs(Command.MAIL, [`<${sender}>`, `SIZE=${o.bodyBytes}`]), Protocol.NOMAIL, Protocol.NR_MAIL)];
      for (let r = 0; r < rcpts.length; r++) {
        known.set('rcpt_addr', rcpts[r]);
        known.delete('i');
        const withoutI = step(S_RCPT, 'R', cstrs(Command.RCPT, [`<${rcpts[r]}>`]), Protocol.NORCPT, Protocol.NR_RCPT);
        if (r === 0) out.push(withoutI);
        else {
          known.set('i', QUEUE_ID);
          out.push({ ...step(S_RCPT, 'R', cstrs(Command.RCPT, [`<${rcpts[r]}>`]), Protocol.NORCPT, Protocol.NR_RCPT), bufNoI: withoutI.buf });
        }
      }
      known.set('i', QUEUE_ID);
      return out;
    };
    const varyMessage = (v: number): Step[] => [...envelope(v), ...message.slice(lastRcpt + 1)];
    const varySetup = (s: number): Step[] => {
      const addr = clientAddr(s % o.distinct);
      const saved = [known.get('_'), known.get('client_addr')] as const;
      known.set('_', `${CLIENT_NAME} [${addr}]`);
      known.set('client_addr', addr);
      const out = [
        step(S_CONNECT, 'C', encodeConnect({ hostname: CLIENT_NAME, family: '4', port: CLIENT_PORT, address: addr }), Protocol.NOCONNECT, Protocol.NR_CONN),
        step(S_HELO, 'H', cstrs(Command.HELO, [CLIENT_NAME]), Protocol.NOHELO, Protocol.NR_HELO),
      ];
      known.set('_', saved[0]!);
      known.set('client_addr', saved[1]!);
      return out;
    };
    return { key, actions, protocol: pf, setup, message, afterHeaders, eom, lastRcpt, varyMessage, varySetup };
  }
}

/**
 * The envelope of variant `v` of `n` (--distinct): sender `user<v>@d<v mod domains>.example.test`;
 * recipients `rcpt<(v × rcpts + r) mod n>@example.test`, so that the n variants together write to n
 * distinct recipients.
 */
export function variant(v: number, n: number, domains: number, rcpts: number): { sender: string; senderDomain: string; rcpts: string[] } {
  const senderDomain = `d${v % domains}.${SENDER_DOMAIN}`;
  const list: string[] = [];
  for (let r = 0; r < rcpts; r++) list.push(`rcpt${(v * rcpts + r) % n}@${RCPT_DOMAIN}`);
  return { sender: `user${v}@${senderDomain}`, senderDomain, rcpts: list };
}

/** Client address of network `k` (--distinct): one /24 per k in 240.0.0.0/4 (reserved; it only appears in the CONNECT payload). */
export function clientAddr(k: number): string {
  return `${240 + ((k >> 16) & 15)}.${(k >> 8) & 255}.${k & 255}.${1 + (k % 254)}`;
}

// ---------------------------------------------------------------------------------------------
// Statistics

const V_ACCEPT = 0;
const V_REJECT = 1;
const V_TEMPFAIL = 2;
const V_DISCARD = 3;
const V_CONTINUE = -1; // not a verdict: go on
const VERDICT_NAMES = ['accept', 'reject', 'tempfail', 'discard'];

class Stats {
  /** Message latency, first packet of the message (its `D M`) to the decision, in ms. */
  readonly lat: Float64Array;
  /** Session setup latency, TCP connect to the HELO answer, in ms. */
  readonly setup: Float64Array;
  latCount = 0;
  setupCount = 0;
  ok = 0;
  failed = 0;
  sessions = 0;
  progress = 0;
  rcptRejects = 0;
  readonly verdicts = new Map<string, number>();
  readonly mods = new Map<string, number>();
  readonly errors = new Map<string, number>();
  readonly errorSamples: string[] = [];
  negotiated: { version: number; actions: number; protocol: number; symlists: Record<string, string> } | undefined;

  constructor(messages: number) {
    this.lat = new Float64Array(messages);
    this.setup = new Float64Array(messages + 16);
  }

  count(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  error(kind: string, detail: string): void {
    this.count(this.errors, kind);
    if (this.errorSamples.length < 5) this.errorSamples.push(`${kind}: ${detail}`);
  }

  get protocolErrors(): number {
    let n = 0;
    for (const v of this.errors.values()) n += v;
    return n;
  }
}

class ProtoError extends Error {
  readonly kind: string;
  constructor(kind: string, detail: string) {
    super(detail);
    this.kind = kind;
  }
}

/** Modification replies: code → [needed action bit, name]. */
const MODS: Readonly<Record<number, readonly [number, string]>> = {
  0x2b: [Action.ADDRCPT, 'addrcpt'],
  0x2d: [Action.DELRCPT, 'delrcpt'],
  0x32: [Action.ADDRCPT_PAR, 'addrcpt_par'],
  0x62: [Action.CHGBODY, 'replbody'],
  0x65: [Action.CHGFROM, 'chgfrom'],
  0x68: [Action.ADDHDRS, 'addheader'],
  0x69: [Action.ADDHDRS, 'insheader'],
  0x6d: [Action.CHGHDRS, 'chgheader'],
  0x71: [Action.QUARANTINE, 'quarantine'],
};

// Reply codes
const R_ACCEPT = 0x61; // a
const R_CONTINUE = 0x63; // c
const R_DISCARD = 0x64; // d
const R_REJECT = 0x72; // r
const R_SKIP = 0x73; // s
const R_TEMPFAIL = 0x74; // t
const R_REPLYCODE = 0x79; // y
const R_PROGRESS = 0x70; // p
const R_QUARANTINE = 0x71; // q
const R_SHUTDOWN = 0x34; // 4
const R_CONN_FAIL = 0x66; // f

/** Codes that carry no data (`acrtdsp`). */
function isNoDataCode(code: number): boolean {
  return code === R_ACCEPT || code === R_CONTINUE || code === R_REJECT || code === R_TEMPFAIL || code === R_DISCARD || code === R_SKIP || code === R_PROGRESS;
}

function nulCount(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) if (buf[i] === 0) n++;
  return n;
}

function codeChar(code: number): string {
  return code >= 0x20 && code < 0x7f ? String.fromCharCode(code) : `0x${code.toString(16)}`;
}

const MAX_FRAME = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// One connection slot (a worker): runs sessions one after another

/** Shared receive buffer: every read lands here and is parsed at once, so reads allocate nothing. */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

const ST_IDLE = 0;
const ST_OPTNEG = 1;
const ST_SETUP = 2;
const ST_MESSAGE = 3;
const ST_READY = 4; // idle mode: setup done, holding the session
const ST_CLOSING = 5;

class Load {
  readonly opts: LoadOptions;
  readonly plan: Plan;
  readonly stats: Stats;
  private nextMessage = 0;
  /** Sessions opened so far (--distinct: session s connects from client network s mod N). */
  sessionCount = 0;
  private activeWorkers = 0;
  private pendingCloses = 0;
  private onAllDone: (() => void) | undefined;
  private onClosesDone: (() => void) | undefined;
  lastDecision = 0;
  readonly workers: Conn[] = [];
  /** Paced mode: ms between two message starts on one connection (0 = unpaced). */
  slotMs = 0;
  /** Paced mode: when the schedule started (performance.now()). */
  t0 = 0;
  /** Paced mode: how late each message started against its schedule, in ms. */
  readonly lag: Float64Array | null;
  lagCount = 0;
  /** Paced mode: messages that started more than one slot behind their schedule. */
  lateStarts = 0;

  constructor(opts: LoadOptions) {
    this.opts = opts;
    this.plan = new Plan(opts);
    this.stats = new Stats(opts.messages);
    this.lag = opts.rate > 0 ? new Float64Array(opts.messages) : null;
  }

  /**
   * Paced mode: when the `nth` message (0-based) of connection `slot` is due. Connection `slot` starts its
   * messages at t0 + (slot + nth × connections) / rate: the offered load is `rate` messages per second
   * in total, every connection at rate / connections, the connections evenly staggered.
   */
  dueAt(slot: number, nth: number, connections: number): number {
    return this.t0 + ((slot + nth * connections) * 1000) / this.opts.rate;
  }

  /** Paced mode: records how late a message started. */
  started(lagMs: number): void {
    if (this.lagCount < this.lag!.length) this.lag![this.lagCount++] = lagMs;
    if (lagMs > this.slotMs) this.lateStarts++;
  }

  /** A message number for a connection that still has quota. */
  take(): number {
    return this.nextMessage++;
  }

  /**
   * Runs all messages over `connections` workers; resolves when every message is decided (or failed).
   * Each connection gets a fixed share of the messages, so the number of sessions (and the setup work
   * the milter does) is the same from run to run: ceil(share / K) per connection.
   */
  run(): Promise<void> {
    return new Promise((resolve) => {
      this.onAllDone = resolve;
      const n = Math.min(this.opts.connections, this.opts.messages);
      this.activeWorkers = n;
      if (this.opts.rate > 0) {
        this.slotMs = (n * 1000) / this.opts.rate;
        this.t0 = performance.now();
      }
      for (let i = 0; i < n; i++) {
        const w = new Conn(this, i, false, Math.floor(this.opts.messages / n) + (i < this.opts.messages % n ? 1 : 0));
        this.workers.push(w);
      }
      for (const w of this.workers) w.next();
    });
  }

  workerDone(): void {
    if (--this.activeWorkers === 0) this.onAllDone?.();
  }

  closeStarted(): void {
    this.pendingCloses++;
  }

  closeEnded(): void {
    if (--this.pendingCloses === 0) this.onClosesDone?.();
  }

  /** Resolves once every session this run ended has been closed by the milter (or after `ms`). */
  closes(ms: number): Promise<boolean> {
    if (this.pendingCloses <= 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.onClosesDone = undefined;
        resolve(false);
      }, ms);
      this.onClosesDone = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
  }

  /** Checks every worker's deadline; one timer for the whole run. */
  checkTimeouts(): void {
    const now = performance.now();
    for (const w of this.workers) w.checkTimeout(now);
  }
}

const trace = (dir: string, buf: Buffer, start: number, end: number): void => {
  for (let o = start; o + 5 <= end; ) {
    const len = buf.readUInt32BE(o);
    const data = buf.subarray(o + 5, Math.min(o + 4 + len, end));
    const shown = JSON.stringify(data.subarray(0, 100).toString('latin1')) + (data.length > 100 ? '…' : '');
    process.stderr.write(`${performance.now().toFixed(3).padStart(10)}ms ${dir} ${codeChar(buf[o + 4])} len=${len} ${shown}\n`);
    o += 4 + len;
  }
};

class Conn {
  private readonly load: Load;
  private readonly plan: Plan;
  private readonly stats: Stats;
  private readonly k: number;
  private readonly idle: boolean;
  private readonly traceOn: boolean;
  readonly id: number;
  private sock: Socket | null = null;
  private state = ST_IDLE;
  private script: Script | null = null;
  private steps: readonly Step[] = [];
  private stepIdx = 0;
  private waitStage = -1;
  private waiting = false;
  /** Set when a reply ended a wait and new packets went out: a further frame in the same read is unsolicited. */
  private advanced = false;
  private partial: Buffer | null = null;
  private msg = -1;
  /** This session's number (--distinct). */
  private session = 0;
  private msgStart = 0;
  private sessionStart = 0;
  private deadline = Infinity;
  private inSession = 0;
  private rcptOk = 0;
  private rcptLast = V_REJECT;
  /** Idle mode: called once the session is set up (or failed). */
  onReady: ((ok: boolean) => void) | undefined;

  /** Messages this connection slot still has to send. */
  private quota: number;
  /** Paced mode: messages this connection has started (its place in the schedule). */
  private nth = 0;
  /** Paced mode: the timer that waits for the next message's slot. */
  private slotTimer: NodeJS.Timeout | undefined;

  constructor(load: Load, id: number, idle = false, quota = 0) {
    this.quota = quota;
    this.load = load;
    this.plan = load.plan;
    this.stats = load.stats;
    this.k = load.opts.msgsPerConn;
    this.idle = idle;
    this.traceOn = load.opts.trace;
    this.id = id;
  }

  /** Takes the next message, opening a session when none is open; reports to the load when none is left. */
  next(): void {
    if (this.quota > 0 && this.load.slotMs > 0 && this.waitForSlot(() => this.nextNow())) return;
    this.nextNow();
  }

  private nextNow(): void {
    const idx = this.quota > 0 ? (this.quota--, this.load.take()) : -1;
    if (idx < 0) {
      if (this.sock !== null) this.endSession(P_ABORT_QUIT);
      this.load.workerDone();
      return;
    }
    if (this.sock === null) this.open(idx);
    else this.beginMessage(idx);
  }

  private send(buf: Buffer): void {
    if (this.traceOn) trace('->', buf, 0, buf.length);
    this.sock!.write(buf);
  }

  /** Opens a session: TCP connect, OPTNEG, then CONNECT and HELO. `idx` is the message it opens for (-1 in idle mode). */
  open(idx: number): void {
    this.msg = idx;
    this.sessionStart = performance.now();
    this.session = this.load.sessionCount++;
    this.deadline = this.sessionStart + this.load.opts.timeoutMs;
    this.inSession = 0;
    this.partial = null;
    this.state = ST_OPTNEG;
    this.waiting = true;
    this.waitStage = -1;
    const o = this.load.opts;
    let connected = false;
    const onRead = (nread: number, buf: Buffer): boolean => {
      if (sock === this.sock) this.onRead(sock, buf, nread);
      else if (nread > 0) this.stats.error('unsolicited_reply', `${nread} bytes from the milter after QUIT`);
      return true;
    };
    const sock = netConnect({ host: o.host, port: o.port, noDelay: true, onread: { buffer: READ_BUFFER, callback: onRead } });
    this.sock = sock;
    sock.on('connect', () => {
      connected = true;
      if (sock !== this.sock) return;
      this.stats.sessions++;
      this.send(this.plan.optneg);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (sock !== this.sock) return;
      this.fail(connected ? 'io' : 'connect', `${err.code ?? ''} ${err.message}`);
    });
    sock.on('close', () => {
      if (sock !== this.sock) return;
      this.fail('eof', `milter closed the connection (${STATE_DESC[this.state]}${this.waitStage >= 0 ? ` at ${STAGE_NAMES[this.waitStage]}` : ''})`);
    });
  }

  private onRead(sock: Socket, buf: Buffer, nread: number): void {
    let data = buf;
    let end = nread;
    if (this.partial !== null) {
      data = Buffer.concat([this.partial, buf.subarray(0, nread)]);
      end = data.length;
      this.partial = null;
    }
    if (this.traceOn) trace('<-', data, 0, end);
    let off = 0;
    this.advanced = false;
    try {
      while (end - off >= 4) {
        const len = data.readUInt32BE(off);
        if (len === 0 || len > MAX_FRAME) throw new ProtoError('bad_length', `reply frame length ${len}`);
        if (end - off - 4 < len) break;
        if (this.advanced || !this.waiting) throw new ProtoError('unsolicited_reply', `${codeChar(data[off + 4])} (${len - 1} data bytes) while no reply was due (${STATE_DESC[this.state]})`);
        this.onFrame(data[off + 4], data, off + 5, off + 4 + len);
        off += 4 + len;
        if (this.sock !== sock) {
          // The session ended (its last message decided, a connection-level verdict, or an error).
          if (end - off >= 5) this.stats.error('unsolicited_reply', `${codeChar(data[off + 4])} after the session's final answer`);
          return;
        }
      }
    } catch (err) {
      if (err instanceof ProtoError) this.fail(err.kind, err.message);
      else this.fail('internal', String((err as Error).stack ?? err));
      return;
    }
    if (off < end) this.partial = Buffer.from(data.subarray(off, end)); // copy: the read buffer is shared
  }

  /** One reply frame: `payload` is `data[start, end)`. */
  private onFrame(code: number, data: Buffer, start: number, end: number): void {
    const dataLen = end - start;
    switch (this.state) {
      case ST_OPTNEG:
        return this.onOptneg(code, data, start, end);
      case ST_SETUP:
      case ST_MESSAGE:
        break;
      default:
        throw new ProtoError('unsolicited_reply', `${codeChar(code)} (${dataLen} data bytes) while no reply was due (${STATE_DESC[this.state]})`);
    }
    const stage = this.waitStage;
    if (stage === S_EOM) return this.onEomFrame(code, data, start, end);
    // Any other stage: progress and quarantine do not answer; anything else does.
    if (code === R_PROGRESS) {
      if (dataLen > 0) throw new ProtoError('bad_reply_data', `progress with data at ${STAGE_NAMES[stage]}`);
      this.stats.progress++;
      return;
    }
    if (code === R_QUARANTINE) return this.checkMod(code, data, start, end);
    if (dataLen > 0 && isNoDataCode(code)) throw new ProtoError('bad_reply_data', `${codeChar(code)} at ${STAGE_NAMES[stage]} carries ${dataLen} data bytes`);
    this.waiting = false;
    if (code === R_SKIP) {
      if (stage !== S_HEADER && stage !== S_BODY) throw new ProtoError('unexpected_reply', `SMFIR_SKIP at ${STAGE_NAMES[stage]}`);
      if (!(this.script!.protocol & Protocol.SKIP)) throw new ProtoError('unexpected_reply', `SMFIR_SKIP without SMFIP_SKIP at ${STAGE_NAMES[stage]}`);
      this.stats.count(this.stats.mods, 'skip');
      this.stepIdx = stage === S_HEADER ? this.script!.afterHeaders : this.script!.eom;
      this.advance();
      return;
    }
    const v = verdict(code, data, start, end, stage);
    if (stage === S_CONNECT || stage === S_HELO) {
      if (v === V_CONTINUE) {
        this.stepIdx++;
        this.advance();
        return;
      }
      if (v === V_DISCARD) throw new ProtoError('bad_discard', `DISCARD at ${STAGE_NAMES[stage]}`);
      return this.connectionVerdict(v, stage);
    }
    if (stage === S_RCPT) {
      if (v === V_CONTINUE) this.rcptOk++;
      else if (v === V_REJECT || v === V_TEMPFAIL) {
        this.stats.rcptRejects++;
        this.rcptLast = v;
      } else return this.decide(v, stage); // accept / discard: the whole message
      if (this.stepIdx === this.script!.lastRcpt && this.rcptOk === 0) return this.decide(this.rcptLast, stage);
      this.stepIdx++;
      this.advance();
      return;
    }
    if (v !== V_CONTINUE) return this.decide(v, stage);
    this.stepIdx++;
    this.advance();
  }

  private onEomFrame(code: number, data: Buffer, start: number, end: number): void {
    const dataLen = end - start;
    if (code === R_PROGRESS) {
      if (dataLen > 0) throw new ProtoError('bad_reply_data', 'progress with data at eom');
      this.stats.progress++;
      return;
    }
    if (MODS[code] !== undefined) return this.checkMod(code, data, start, end);
    if (code === R_ACCEPT || code === R_CONTINUE || code === R_REJECT || code === R_TEMPFAIL || code === R_DISCARD || code === R_REPLYCODE || code === R_SHUTDOWN || code === R_CONN_FAIL) {
      if (dataLen > 0 && isNoDataCode(code)) throw new ProtoError('bad_reply_data', `${codeChar(code)} at eom carries ${dataLen} data bytes`);
      this.waiting = false;
      const v = verdict(code, data, start, end, S_EOM);
      return this.decide(v === V_CONTINUE ? V_ACCEPT : v, S_EOM);
    }
    throw new ProtoError('unexpected_reply', `${codeChar(code)} (${dataLen} data bytes) at eom`);
  }

  private checkMod(code: number, data: Buffer, start: number, end: number): void {
    const [need, name] = MODS[code];
    if (!(this.script!.actions & need)) throw new ProtoError('unpermitted_action', `${name} without negotiated action 0x${need.toString(16)}`);
    const len = end - start;
    const endsNul = len > 0 && data[end - 1] === 0;
    let ok = true;
    switch (code) {
      case 0x71: // q
        ok = endsNul && nulCount(data, start, end) === 1;
        break;
      case 0x2b: // +
      case 0x2d: // -
        ok = endsNul && nulCount(data, start, end) === 1 && len > 1;
        break;
      case 0x32: // 2
      case 0x65: {
        // e
        const n = nulCount(data, start, end);
        ok = endsNul && (n === 1 || n === 2) && len > 1;
        break;
      }
      case 0x68: // h
        ok = endsNul && nulCount(data, start, end) === 2 && data[start] !== 0;
        break;
      case 0x69: // i
      case 0x6d: // m
        ok = len >= 6 && endsNul && nulCount(data, start + 4, end) === 2 && data[start + 4] !== 0;
        break;
    }
    if (!ok) throw new ProtoError('bad_modification', `${name} payload ${JSON.stringify(data.subarray(start, Math.min(end, start + 60)).toString('latin1'))}`);
    this.stats.count(this.stats.mods, name);
  }

  private onOptneg(code: number, data: Buffer, start: number, end: number): void {
    if (code !== OPTNEG_REPLY || end - start < 12) throw new ProtoError('bad_optneg', `reply ${codeChar(code)} with ${end - start} bytes`);
    const o = this.load.opts;
    const version = data.readUInt32BE(start);
    const actions = data.readUInt32BE(start + 4);
    const protocol = data.readUInt32BE(start + 8);
    if (version < 2 || version > MILTER_VERSION) throw new ProtoError('bad_optneg', `milter protocol version ${version}`);
    if (actions & ~o.offerActions) throw new ProtoError('bad_optneg', `actions 0x${actions.toString(16)} not offered (offered 0x${o.offerActions.toString(16)})`);
    if (protocol & ~o.offerProtocol) throw new ProtoError('bad_optneg', `protocol flags 0x${(protocol & ~o.offerProtocol).toString(16)} not offered`);
    const symlists = new Map<string, string[]>();
    let pos = start + 12;
    while (pos < end) {
      if (end - pos < 5) throw new ProtoError('bad_optneg', `truncated symlist at offset ${pos - start}`);
      const where = data.readUInt32BE(pos);
      const nul = data.indexOf(0, pos + 4);
      if (nul < 0 || nul >= end || SYMLIST_STAGE[where] === undefined) throw new ProtoError('bad_optneg', `bad symlist entry (where=${where})`);
      if (!(actions & Action.SETSYMLIST)) throw new ProtoError('bad_optneg', 'symlist without SMFIF_SETSYMLIST');
      symlists.set(SYMLIST_STAGE[where], data.toString('utf8', pos + 4, nul).split(/\s+/).filter(Boolean));
      pos = nul + 1;
    }
    this.stats.negotiated ??= { version, actions, protocol, symlists: Object.fromEntries([...symlists].map(([k, v]) => [k, v.join(' ')])) };
    this.script = this.plan.script(actions, protocol, symlists);
    this.state = ST_SETUP;
    this.waiting = false;
    this.steps = o.distinct > 0 ? this.script.varySetup(this.session) : this.script.setup;
    this.stepIdx = 0;
    this.advance();
  }

  /**
   * Writes steps from `stepIdx` on until one that the milter answers (then waits for it). Steps that get
   * no answer (NO* or NR*) go out together with it in one corked write.
   */
  private advance(): void {
    const steps = this.steps;
    const sock = this.sock!;
    let i = this.stepIdx;
    let corked = false;
    this.advanced = true;
    while (i < steps.length) {
      const st = steps[i];
      const buf = st.bufNoI !== null && this.rcptOk === 0 ? st.bufNoI : st.buf;
      if (st.reply) {
        if (this.traceOn) trace('->', buf, 0, buf.length);
        sock.write(buf);
        if (corked) sock.uncork();
        this.stepIdx = i;
        this.waitStage = st.stage;
        this.waiting = true;
        return;
      }
      if (!corked) {
        sock.cork();
        corked = true;
      }
      if (this.traceOn) trace('->', buf, 0, buf.length);
      sock.write(buf);
      if (st.stage === S_RCPT) this.rcptOk++; // no answer: Postfix takes the recipient as accepted
      i++;
    }
    if (corked) sock.uncork();
    this.stepIdx = i;
    this.waiting = false;
    // Only the setup can end without a step to wait for (the message always ends with EOM).
    if (this.state === ST_SETUP) this.setupDone();
  }

  private setupDone(): void {
    const now = performance.now();
    this.stats.setup[this.stats.setupCount++] = now - this.sessionStart;
    if (this.idle) {
      this.state = ST_READY;
      this.waiting = false;
      this.waitStage = -1;
      this.deadline = Infinity;
      const cb = this.onReady;
      this.onReady = undefined;
      cb?.(true);
      return;
    }
    this.beginMessage(this.msg);
  }

  /** Starts message `idx` in the open session; `lead` (paced mode: the held ABORT) goes out in the same write. */
  private beginMessage(idx: number, lead?: Buffer): void {
    this.msg = idx;
    this.state = ST_MESSAGE;
    this.steps = this.load.opts.distinct > 0 && idx >= 0 ? this.script!.varyMessage(idx % this.load.opts.distinct) : this.script!.message;
    this.stepIdx = 0;
    this.rcptOk = 0;
    this.rcptLast = V_REJECT;
    const now = performance.now();
    this.msgStart = now;
    this.deadline = now + this.load.opts.timeoutMs;
    if (lead === undefined) {
      this.advance();
      return;
    }
    const sock = this.sock!;
    sock.cork();
    this.send(lead);
    this.advance();
    sock.uncork();
  }

  /** Counts a verdict and its latency from `since`; the message is over. Returns the time now. */
  private recordVerdict(v: number, stage: number, since: number): number {
    const now = performance.now();
    const st = this.stats;
    st.lat[st.latCount++] = now - since;
    st.ok++;
    st.count(st.verdicts, VERDICT_NAMES[v]);
    st.count(st.verdicts, `${VERDICT_NAMES[v]}@${STAGE_NAMES[stage]}`);
    this.load.lastDecision = now;
    this.msg = -1;
    this.waiting = false;
    return now;
  }

  /** The message got its decision at `stage`. */
  private decide(v: number, stage: number): void {
    this.recordVerdict(v, stage, this.msgStart);
    this.waitStage = -1;
    this.deadline = Infinity;
    this.advanced = true;
    // Postfix sends ABORT after every transaction, and ABORT+QUIT when the SMTP session ends.
    if (++this.inSession >= this.k) {
      this.endSession(P_ABORT_ABORT_QUIT);
      this.next();
      return;
    }
    const idx = this.quota > 0 ? (this.quota--, this.load.take()) : -1;
    if (idx < 0) {
      this.endSession(P_ABORT_ABORT_QUIT);
      this.load.workerDone();
      return;
    }
    if (this.load.slotMs > 0) {
      // Paced: the next message waits for its slot in the open session. As with Postfix, whose milter
      // writes stay in its buffer until it needs an answer, the ABORT goes out with that message's first
      // packets: an idle milter connection is not woken for the ABORT alone.
      this.msg = idx; // a session lost meanwhile counts it as failed
      if (this.waitForSlot(() => this.beginMessage(idx, P_ABORT))) return;
      this.beginMessage(idx, P_ABORT);
      return;
    }
    this.send(P_ABORT);
    this.beginMessage(idx);
  }

  /**
   * Paced mode: true when this connection's next message is not due yet; `then` runs when it is. A
   * message behind its schedule starts at once (its connection was busy), and its lag is recorded.
   */
  private waitForSlot(then: () => void): boolean {
    const load = this.load;
    const due = load.dueAt(this.id, this.nth++, load.workers.length);
    const now = performance.now();
    if (due > now) {
      this.slotTimer = setTimeout(() => {
        this.slotTimer = undefined;
        load.started(Math.max(0, performance.now() - due));
        then();
      }, due - now);
      return true;
    }
    load.started(now - due);
    return false;
  }

  /** A connection-level verdict at CONNECT/HELO: counts as the message's verdict; Postfix then sends QUIT only. */
  private connectionVerdict(v: number, stage: number): void {
    this.stats.setup[this.stats.setupCount++] = performance.now() - this.sessionStart;
    this.recordVerdict(v, stage, this.sessionStart);
    this.endSession(P_QUIT);
    if (this.idle) {
      const cb = this.onReady;
      this.onReady = undefined;
      cb?.(false);
      return;
    }
    this.next();
  }

  /** Writes the session's last packets and lets the milter close; the close is awaited before CPU is read. */
  endSession(last: Buffer): void {
    const sock = this.sock;
    if (sock === null) return;
    this.sock = null;
    this.state = ST_CLOSING;
    this.waiting = false;
    if (this.traceOn) trace('->', last, 0, last.length);
    this.load.closeStarted();
    let closed = false;
    const done = () => {
      if (closed) return;
      closed = true;
      this.load.closeEnded();
    };
    sock.removeAllListeners('close');
    sock.removeAllListeners('error');
    sock.on('error', () => {});
    sock.on('close', done);
    // Any byte the milter sends now is unsolicited. (The onread callback ignores a socket that is no longer current.)
    sock.end(last);
  }

  /** A protocol or I/O error: counted, the session dropped; the message in flight (if any) failed. */
  private fail(kind: string, detail: string): void {
    const st = this.stats;
    st.error(kind, detail);
    const sock = this.sock;
    this.sock = null;
    this.state = ST_IDLE;
    this.waiting = false;
    this.waitStage = -1;
    this.deadline = Infinity;
    this.partial = null;
    if (this.slotTimer !== undefined) {
      clearTimeout(this.slotTimer);
      this.slotTimer = undefined;
      this.nth--; // the slot goes to the next message
    }
    if (sock !== null) sock.destroy();
    if (this.idle) {
      const cb = this.onReady;
      this.onReady = undefined;
      cb?.(false);
      return;
    }
    if (this.msg >= 0) {
      st.failed++;
      st.count(st.verdicts, 'error');
      this.msg = -1;
    }
    // Don't spin when the milter is down; otherwise carry on at once with a new session.
    if (kind === 'connect') setTimeout(() => this.next(), 10);
    else setImmediate(() => this.next());
  }

  checkTimeout(now: number): void {
    if (now > this.deadline && this.sock !== null) {
      this.fail('timeout', `no ${this.state === ST_MESSAGE ? 'verdict' : 'session setup'} within ${this.load.opts.timeoutMs / 1000} s (${STATE_DESC[this.state]}${this.waitStage >= 0 ? ` at ${STAGE_NAMES[this.waitStage]}` : ''})`);
    }
  }

  /** Idle mode: ends a held session the way Postfix ends one (QUIT). */
  quit(): void {
    if (this.sock !== null && this.state === ST_READY) this.endSession(P_QUIT);
  }
}

const STATE_DESC = ['idle', 'awaiting OPTNEG', 'session setup', 'in a message', 'idle session', 'after QUIT'];

/** Maps a final reply to a verdict (or V_CONTINUE), checking SMFIR_REPLYCODE as Postfix does. */
function verdict(code: number, data: Buffer, start: number, end: number, stage: number): number {
  switch (code) {
    case R_CONTINUE:
      return V_CONTINUE;
    case R_ACCEPT:
      return V_ACCEPT;
    case R_REJECT:
      return V_REJECT;
    case R_TEMPFAIL:
    case R_SHUTDOWN:
    case R_CONN_FAIL:
      return V_TEMPFAIL;
    case R_DISCARD:
      return V_DISCARD;
    case R_REPLYCODE: {
      // Postfix milter8.c: "[45]DD[ -]" and the enhanced code's class must match ("550 5.7.1 ...").
      const len = end - start;
      const c0 = data[start];
      const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
      if (len < 6 || data[end - 1] !== 0 || (c0 !== 0x34 && c0 !== 0x35) || !isDigit(data[start + 1]) || !isDigit(data[start + 2]) || (data[start + 3] !== 0x20 && data[start + 3] !== 0x2d) || data[start + 4] !== c0) {
        throw new ProtoError('bad_replycode', `${JSON.stringify(data.subarray(start, Math.min(end, start + 60)).toString('latin1'))} at ${STAGE_NAMES[stage]}`);
      }
      return c0 === 0x34 ? V_TEMPFAIL : V_REJECT;
    }
    default:
      throw new ProtoError('unexpected_reply', `${codeChar(code)} (${end - start} data bytes) at ${STAGE_NAMES[stage]}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Runs and results

/** Latency summary in ms. */
export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  mean: number;
  max: number;
}

function summarize(values: Float64Array, n: number): LatencySummary | null {
  if (n === 0) return null;
  const s = values.slice(0, n).sort();
  const pct = (q: number) => s[Math.max(0, Math.min(n - 1, Math.ceil(q * n) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i];
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { p50: r(pct(0.5)), p95: r(pct(0.95)), p99: r(pct(0.99)), mean: r(sum / n), max: r(s[n - 1]) };
}

/** What one load run reports (`--json`). */
export interface LoadResult {
  mode: 'load';
  target: string;
  config: { connections: number; messages: number; msgs_per_conn: number; rcpts: number; headers: number; body_bytes: number; chunk_size: number };
  negotiated: { version: number; actions: string; protocol: string; symlists: Record<string, string> } | null;
  messages_total: number;
  messages_ok: number;
  messages_failed: number;
  sessions: number;
  duration_s: number;
  msgs_per_s: number;
  latency_ms: LatencySummary | null;
  setup_latency_ms: LatencySummary | null;
  verdicts: Record<string, number>;
  rcpt_rejects: number;
  modifications: Record<string, number>;
  progress_replies: number;
  protocol_errors: number;
  protocol_error_kinds: Record<string, number>;
  error_samples: string[];
  unclosed_sessions: boolean;
  client_cpu_s: number;
  client_cpu_ms_per_msg: number;
  milter_pid?: number;
  /** Milter CPU from /proc/<pid>/stat utime+stime (every thread, also exited ones), in ms per message. */
  milter_cpu_stat_ms_per_msg?: number;
  /** Milter CPU from the sum of /proc/<pid>/task/<tid>/schedstat (live threads, ns precision), in ms per message. */
  milter_cpu_sched_ms_per_msg?: number;
  /** The figure to use: schedstat when it agrees with stat (no CPU lost with exited threads), else stat. */
  milter_cpu_ms_per_msg?: number;
  milter_cpu_source?: 'schedstat' | 'stat';
  /** The user-mode part (utime) of the stat figure, in ms per message; the rest is kernel time (stime). */
  milter_user_ms_per_msg?: number;
  milter_sys_ms_per_msg?: number;
  milter_cpu_s?: number;
  milter_threads_before?: number;
  milter_threads_after?: number;
  clk_tck?: number;
  /** Paced mode (--rate) only. */
  pacing?: PacingResult;
}

/** How a paced run (--rate) went. */
export interface PacingResult {
  /** Messages per second offered, in total over the connections. */
  offered_msgs_per_s: number;
  /** Messages decided per second (the same figure as `msgs_per_s`). */
  achieved_msgs_per_s: number;
  /** achieved ÷ offered. */
  achieved_ratio: number;
  /** The milter kept up: achieved ≥ 95 % of offered. */
  kept_up: boolean;
  /** ms between two message starts on one connection (connections ÷ rate). */
  slot_ms: number;
  /** How late messages started against their schedule (0 when on time), in ms. */
  start_lag_ms: LatencySummary | null;
  /** Messages that started more than one slot behind their schedule. */
  late_starts: number;
}

/** A paced run counts as kept up when it achieved at least this share of the offered rate. */
export const KEPT_UP_RATIO = 0.95;

const hex = (n: number) => `0x${n.toString(16)}`;

/** Runs the load described by `opts` and returns its figures. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const load = new Load(opts);
  const tck = opts.milterPid !== undefined ? clockTicks() : 0;
  const timer = setInterval(() => load.checkTimeouts(), 250);
  const t00 = performance.now();
  const progress = opts.progressMs > 0 ? setInterval(() => process.stderr.write(`progress ${load.stats.ok} ${load.stats.failed} ${Math.round(performance.now() - t00)}\n`), opts.progressMs) : undefined;
  const cpu0 = process.cpuUsage();
  const m0 = opts.milterPid !== undefined ? readProcCpu(opts.milterPid) : undefined;
  const t0 = performance.now();
  await load.run();
  const t1 = load.lastDecision > 0 ? load.lastDecision : performance.now();
  // The milter's work includes closing the sessions: wait for it before reading its CPU.
  const allClosed = await load.closes(5000);
  const m1 = opts.milterPid !== undefined ? readProcCpu(opts.milterPid) : undefined;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(timer);
  if (progress) {
    clearInterval(progress);
    process.stderr.write(`progress ${load.stats.ok} ${load.stats.failed} ${Math.round(performance.now() - t00)}\n`);
  }

  const st = load.stats;
  const total = st.ok + st.failed;
  const n = Math.max(total, 1);
  const clientS = (cpu.user + cpu.system) / 1e6;
  const duration = (t1 - t0) / 1000;
  const result: LoadResult = {
    mode: 'load',
    target: `${opts.host}:${opts.port}`,
    config: { connections: opts.connections, messages: opts.messages, msgs_per_conn: opts.msgsPerConn, rcpts: opts.rcpts, headers: opts.headers, body_bytes: opts.bodyBytes, chunk_size: opts.chunkSize },
    negotiated: st.negotiated ? { version: st.negotiated.version, actions: hex(st.negotiated.actions), protocol: hex(st.negotiated.protocol), symlists: st.negotiated.symlists } : null,
    messages_total: total,
    messages_ok: st.ok,
    messages_failed: st.failed,
    sessions: st.sessions,
    duration_s: round(duration, 3),
    msgs_per_s: round(st.ok / Math.max(duration, 1e-9), 1),
    latency_ms: summarize(st.lat, st.latCount),
    setup_latency_ms: summarize(st.setup, st.setupCount),
    verdicts: Object.fromEntries(st.verdicts),
    rcpt_rejects: st.rcptRejects,
    modifications: Object.fromEntries(st.mods),
    progress_replies: st.progress,
    protocol_errors: st.protocolErrors,
    protocol_error_kinds: Object.fromEntries(st.errors),
    error_samples: st.errorSamples,
    unclosed_sessions: !allClosed,
    client_cpu_s: round(clientS, 3),
    client_cpu_ms_per_msg: round((clientS * 1000) / n, 4),
  };
  if (m0 && m1) {
    const statMs = ((m1.ticks - m0.ticks) * 1000) / tck;
    const schedMs = (m1.schedNs - m0.schedNs) / 1e6;
    // stat is in whole ticks (utime and stime each rounded): schedstat agrees within 2 ticks unless threads exited.
    const useSched = schedMs >= statMs - (2 * 1000) / tck;
    const ms = useSched ? schedMs : statMs;
    result.milter_pid = opts.milterPid;
    result.milter_cpu_stat_ms_per_msg = round(statMs / n, 4);
    result.milter_cpu_sched_ms_per_msg = round(schedMs / n, 4);
    result.milter_cpu_ms_per_msg = round(ms / n, 4);
    result.milter_cpu_source = useSched ? 'schedstat' : 'stat';
    const userMs = ((m1.userTicks - m0.userTicks) * 1000) / tck;
    result.milter_user_ms_per_msg = round(userMs / n, 4);
    result.milter_sys_ms_per_msg = round((statMs - userMs) / n, 4);
    result.milter_cpu_s = round(ms / 1000, 4);
    result.milter_threads_before = m0.threads;
    result.milter_threads_after = m1.threads;
    result.clk_tck = tck;
  }
  if (opts.rate > 0) {
    const achieved = result.msgs_per_s;
    result.pacing = {
      offered_msgs_per_s: opts.rate,
      achieved_msgs_per_s: achieved,
      achieved_ratio: round(achieved / opts.rate, 4),
      kept_up: achieved >= KEPT_UP_RATIO * opts.rate,
      slot_ms: round(load.slotMs, 3),
      start_lag_ms: summarize(load.lag!, load.lagCount),
      late_starts: load.lateStarts,
    };
  }
  return result;
}

/** What the idle-connections run reports (`--idle N --json`). */
export interface IdleResult {
  mode: 'idle';
  target: string;
  requested: number;
  established: number;
  failed: number;
  protocol_errors: number;
  protocol_error_kinds: Record<string, number>;
  error_samples: string[];
  setup_latency_ms: LatencySummary | null;
  milter_pid?: number;
  /** Before any idle session was opened. */
  before?: ProcMemory;
  /** With every session open and idle, after the settle time. */
  during?: ProcMemory;
  /** Per established session: (VmRSS during − VmRSS before) / established, in kB. */
  rss_per_conn_kb?: number;
}

/** Opens `opts.idle` sessions (OPTNEG+CONNECT+HELO), holds them, reads the milter's memory, then QUITs them. */
export async function runIdle(opts: LoadOptions): Promise<IdleResult> {
  const load = new Load({ ...opts, messages: opts.idle, msgsPerConn: 1 });
  const before = opts.milterPid !== undefined ? readProcMemory(opts.milterPid) : undefined;
  const timer = setInterval(() => load.checkTimeouts(), 250);
  const workers: Conn[] = [];
  let established = 0;
  let failed = 0;
  // At most 64 handshakes in flight: a burst of 1,000 SYNs would overflow a small listen backlog.
  await new Promise<void>((resolve) => {
    let started = 0;
    let finished = 0;
    const startOne = () => {
      const w = new Conn(load, started++, true);
      workers.push(w);
      load.workers.push(w);
      w.onReady = (ok) => {
        if (ok) established++;
        else failed++;
        if (++finished === opts.idle) resolve();
        else if (started < opts.idle) startOne();
      };
      w.open(-1);
    };
    for (let i = 0; i < Math.min(64, opts.idle); i++) startOne();
  });
  clearInterval(timer);
  await new Promise((r) => setTimeout(r, opts.idleSettleMs));
  const during = opts.milterPid !== undefined ? readProcMemory(opts.milterPid) : undefined;
  for (const w of workers) w.quit();
  await load.closes(10_000);
  const st = load.stats;
  const result: IdleResult = {
    mode: 'idle',
    target: `${opts.host}:${opts.port}`,
    requested: opts.idle,
    established,
    failed,
    protocol_errors: st.protocolErrors,
    protocol_error_kinds: Object.fromEntries(st.errors),
    error_samples: st.errorSamples,
    setup_latency_ms: summarize(st.setup, st.setupCount),
  };
  if (before && during) {
    result.milter_pid = opts.milterPid;
    result.before = before;
    result.during = during;
    result.rss_per_conn_kb = established > 0 ? round((during.rssKb - before.rssKb) / established, 2) : 0;
  }
  return result;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function printLoad(r: LoadResult): void {
  const c = r.config;
  const out: string[] = [];
  out.push(`load -> ${r.target}  C=${c.connections} K=${c.msgs_per_conn} R=${c.rcpts} headers=${c.headers} body=${c.body_bytes}B`);
  if (r.negotiated) out.push(`negotiated: v${r.negotiated.version} actions=${r.negotiated.actions} protocol=${r.negotiated.protocol}${Object.keys(r.negotiated.symlists).length ? ` symlists=${JSON.stringify(r.negotiated.symlists)}` : ''}`);
  out.push(`messages: ${r.messages_ok} ok / ${r.messages_total} in ${r.duration_s.toFixed(3)} s -> ${r.msgs_per_s.toFixed(1)} msg/s  (sessions ${r.sessions})`);
  const p = r.pacing;
  if (p) {
    out.push(`paced: offered ${p.offered_msgs_per_s} msg/s (one message every ${p.slot_ms.toFixed(2)} ms per connection), achieved ${p.achieved_msgs_per_s.toFixed(1)} msg/s = ${(p.achieved_ratio * 100).toFixed(1)} %: ${p.kept_up ? 'kept up' : `DID NOT KEEP UP (< ${KEPT_UP_RATIO * 100} %)`}`);
    if (p.start_lag_ms) out.push(`  start lag vs schedule        ms: p50 ${p.start_lag_ms.p50.toFixed(3)}  p95 ${p.start_lag_ms.p95.toFixed(3)}  p99 ${p.start_lag_ms.p99.toFixed(3)}  max ${p.start_lag_ms.max.toFixed(3)}   (${p.late_starts} started more than one slot late)`);
  }
  for (const [label, s] of [['latency/msg (D M..decision)', r.latency_ms], ['session setup', r.setup_latency_ms]] as const) {
    if (s) out.push(`  ${label.padEnd(28)} ms: p50 ${s.p50.toFixed(3)}  p95 ${s.p95.toFixed(3)}  p99 ${s.p99.toFixed(3)}  mean ${s.mean.toFixed(3)}  max ${s.max.toFixed(3)}`);
  }
  const fmt = (o: Record<string, number>) => Object.entries(o).sort().map(([k, v]) => `${k}=${v}`).join('  ') || '-';
  out.push(`verdicts: ${fmt(r.verdicts)}`);
  if (r.rcpt_rejects) out.push(`rcpt rejects: ${r.rcpt_rejects}`);
  out.push(`modifications: ${fmt(r.modifications)}   progress: ${r.progress_replies}`);
  out.push(`protocol errors: ${r.protocol_errors}${r.protocol_errors ? `  ${fmt(r.protocol_error_kinds)}   <<<<<<<<<< PROTOCOL ERRORS` : ''}`);
  for (const s of r.error_samples) out.push(`  e.g. ${s}`);
  let cpu = `cpu: client ${r.client_cpu_ms_per_msg.toFixed(3)} ms/msg`;
  if (r.milter_cpu_ms_per_msg !== undefined) {
    cpu += `   milter (pid ${r.milter_pid}) ${r.milter_cpu_ms_per_msg.toFixed(3)} ms/msg [${r.milter_cpu_source}; stat ${r.milter_cpu_stat_ms_per_msg!.toFixed(3)} = user ${r.milter_user_ms_per_msg!.toFixed(3)} + sys ${r.milter_sys_ms_per_msg!.toFixed(3)}, schedstat ${r.milter_cpu_sched_ms_per_msg!.toFixed(3)}; threads ${r.milter_threads_before}->${r.milter_threads_after}]`;
  }
  out.push(cpu);
  if (r.unclosed_sessions) out.push('warning: some sessions were not closed by the milter within 5 s of QUIT');
  process.stdout.write(out.join('\n') + '\n');
}

function printIdle(r: IdleResult): void {
  const out = [`idle sessions -> ${r.target}: ${r.established} established / ${r.requested} (failed ${r.failed})`];
  if (r.before && r.during) {
    out.push(`milter (pid ${r.milter_pid}) before: VmRSS ${(r.before.rssKb / 1024).toFixed(1)} MB, VmHWM ${(r.before.hwmKb / 1024).toFixed(1)} MB, threads ${r.before.threads}`);
    out.push(`milter with the sessions idle: VmRSS ${(r.during.rssKb / 1024).toFixed(1)} MB, VmHWM ${(r.during.hwmKb / 1024).toFixed(1)} MB, threads ${r.during.threads}; ${r.rss_per_conn_kb} kB RSS per session`);
  }
  out.push(`protocol errors: ${r.protocol_errors}${r.protocol_errors ? `  ${JSON.stringify(r.protocol_error_kinds)}   <<<<<<<<<< PROTOCOL ERRORS` : ''}`);
  for (const s of r.error_samples) out.push(`  e.g. ${s}`);
  process.stdout.write(out.join('\n') + '\n');
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts.idle > 0) {
    const r = await runIdle(opts);
    if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else printIdle(r);
    return r.protocol_errors > 0 || r.failed > 0 ? 1 : 0;
  }
  const r = await runLoad(opts);
  if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else printLoad(r);
  if (r.protocol_errors > 0) process.stderr.write(`load.ts: ${r.protocol_errors} PROTOCOL ERROR(S): ${JSON.stringify(r.protocol_error_kinds)}\n`);
  return r.protocol_errors > 0 ? 1 : 0;
}

if (import.meta.main) {
  process.exitCode = await main();
}
