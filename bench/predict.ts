/**
 * The predict case of `npm run bench` (issue 23's cost point): what the predict plugin costs per message
 * through the real kernel (`createTestKernel`), and how many store round trips it makes, side by side in one
 * run, for
 * - `none`: the kernel with a no-op plugin tapping the stages predict taps (the floor);
 * - `rec`: the recommended configuration without signals (two policies on the SASL login: new recipients
 *   outside `example.com` over 1/5/10/60 min, factor 2, and a recipient-rate backstop over 1/5/10/60 min,
 *   factor 2.5, as `bench/predict/configs.ts` `recommended`);
 * - `rec+sig`: the same with `signals` (network and mail client) on both policies;
 * - `rec+all`: the same with every trait on (`signals: { replyTo: true, displayName: true, tls: true }`);
 * - `rate+all`: the rate backstop alone (no new recipients) with every trait on.
 *
 * Messages are realistic for a submission port: SASL login (`{auth_authen}`, `{auth_type}`), TLS macros, the
 * login's client address, `From` with its display name, sometimes `Reply-To`, `User-Agent` or `X-Mailer`,
 * 1–5 recipients mostly from the login's address book, from a population of logins whose profiles were
 * learned in a warm-up (simulated clock: about 20 messages per login over 40 hours), on the MemoryStore and
 * on a RedisStore against a real local redis-server (its own: loopback, random port, temporary directory).
 *
 * CPU: `process.cpuUsage()` of this process over N messages, 1 and 10 in flight, rows interleaved in each
 * round (the order rotated), medians over the rounds; with Redis also redis-server's CPU (`INFO cpu`).
 * Round trips: through a counting TCP proxy in front of the redis-server, sequential messages: the client's
 * writes per message (a write of a request the client then waits on is one round trip), the commands in
 * them (parsed from the RESP stream) and the commands Redis ran (`INFO commandstats`, the scripts' inner
 * commands included).
 *
 * Usage: node --conditions=themis-source bench/predict.ts [--quick] [--rounds N] [--messages N] [--logins N] [--json PATH]
 * Exit status: 0 when every check passed (the Redis checks SKIP without redis-server), 1 otherwise, 2 bad usage.
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Redis } from 'ioredis';
import { definePlugin, MemoryStore, RedisStore, type KernelLogger, type PluginDefinition, type Store } from 'themis-milter';
import { createTestKernel, redisAvailable, startRedis, type TestConnectionMessage, type TestKernel } from 'themis-milter/testing';
import predict from 'themis-plugin-predict';
import { countingProxy, type CountingProxy } from './counting-proxy.ts';
import { Rng } from './predict/rng.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    messages: { type: 'string' },
    logins: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const USAGE = 'Usage: node --conditions=themis-source bench/predict.ts [--quick] [--rounds N (default 5; --quick 1)] [--messages N per run (default 2000; --quick 500)] [--logins N (default 1000; --quick 200)] [--json PATH]\n';
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const int = (v: string | undefined, d: number, name: string): number => {
  const n = v === undefined ? d : Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`predict bench: --${name} must be a positive integer\n${USAGE}`);
    process.exit(2);
  }
  return n;
};
const QUICK = values.quick;
const ROUNDS = int(values.rounds, QUICK ? 1 : 5, 'rounds');
/** Messages per run (one row, one store, one concurrency). */
const MESSAGES = int(values.messages, QUICK ? 500 : 2000, 'messages');
const LOGINS = int(values.logins, QUICK ? 200 : 1000, 'logins');
/** Warm-up messages per login: about 16 distinct active hours each over the warm-up's 40 simulated hours, past `minHistory` and `learning` (10). */
const WARMUP_PER_LOGIN = 20;
const WARMUP_HOURS = 40;
/** Simulated time between two messages of the whole population: every login sends about one message per 2 hours. */
const SPACING_MS = (WARMUP_HOURS * 3_600_000) / (LOGINS * WARMUP_PER_LOGIN);
/** Sequential messages through the counting proxy, per row. */
const RT_MESSAGES = QUICK ? 200 : 1000;
const CONCURRENCY = [1, 10] as const;
/**
 * (n4): every trait on costs at most this much CPU per message over the recommended configuration without
 * signals, (d) ÷ (b) measured side by side (medians of the rounds). Measured here: 1.18–1.26, single rounds
 * 0.87–1.42 (bench/README.md); the bound leaves room for a noisy shared 2-core machine.
 */
const MAX_SIGNALS_RATIO = 1.5;

/**
 * A full garbage collection before each measured run, so that a run does not pay for the garbage of the one
 * before it (each still pays for its own).
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

// ---------------------------------------------------------------------------------------------
// The configurations

const INTERNAL = ['example.com'];
const TIMEFRAMES = [1, 5, 10, 60];
const base = { by: 'saslUser', action: 'tag', shadow: true } as const;
const NEW_RECIPIENTS = { ...base, count: 'newRecipients', internalDomains: INTERNAL, timeframes: TIMEFRAMES, factor: 2 } as const;
const RATE_BACKSTOP = { ...base, timeframes: TIMEFRAMES, factor: 2.5 } as const;
/** Network and mail client only (Reply-To and display name, on by default, off): row (c) as first measured. */
const SIGNALS = { replyTo: false, displayName: false };
const ALL_TRAITS = { replyTo: true, displayName: true, tls: true };

type RowId = 'none' | 'rec' | 'rec+sig' | 'rec+all' | 'rate' | 'rate+all';
interface RowSpec {
  id: RowId;
  letter: string;
  label: string;
  /** Policies' predict fields; undefined: the no-op plugin alone. */
  policies?: Record<string, unknown>[];
}
/** Policy names are the same in every row, so that the rows share the profiles learned in the warm-up. */
const POLICY_NAMES = { new: 'submission-new', rate: 'submission' };
const ROWS: RowSpec[] = [
  { id: 'none', letter: 'a', label: 'kernel + no-op plugin (floor)' },
  { id: 'rec', letter: 'b', label: 'recommended (new recipients + rate), no signals', policies: [NEW_RECIPIENTS, RATE_BACKSTOP] },
  { id: 'rec+sig', letter: 'c', label: 'recommended + signals (network, client)', policies: [NEW_RECIPIENTS, RATE_BACKSTOP].map((p) => ({ ...p, signals: SIGNALS })) },
  { id: 'rec+all', letter: 'd', label: 'recommended + every trait (+ Reply-To, display name, SASL/TLS)', policies: [NEW_RECIPIENTS, RATE_BACKSTOP].map((p) => ({ ...p, signals: { ...SIGNALS, ...ALL_TRAITS } })) },
  { id: 'rate', letter: 'r0', label: 'rate backstop alone, no signals', policies: [RATE_BACKSTOP] },
  { id: 'rate+all', letter: 'r', label: 'rate backstop alone + every trait', policies: [{ ...RATE_BACKSTOP, signals: { ...SIGNALS, ...ALL_TRAITS } }] },
];
/** Rows whose CPU is measured (the round trips are counted for every row but the floor). */
const CPU_ROWS: RowId[] = ['none', 'rec', 'rec+sig', 'rec+all', 'rate+all'];

// ---------------------------------------------------------------------------------------------
// The population and its messages

/** A seeded generator (the evaluation's sfc32), so that every run sends the same mail. */
function prng(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}

const FIRST = ['Alice', 'Bruno', 'Chloé', 'David', 'Emma', 'Farid', 'Greta', 'Hugo', 'Inès', 'Jonas', 'Karin', 'Léo', 'Maya', 'Nils', 'Olga', 'Paul'];
const LAST = ['Martin', 'Bernard', 'Dubois', 'Schmidt', 'Rossi', 'García', 'Nowak', 'Larsen', 'Petit', 'Moreau', 'Keller', 'Silva'];
const CLIENTS: [string, string][] = [
  ['User-Agent', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0'],
  ['X-Mailer', 'Microsoft Outlook 16.0'],
  ['X-Mailer', 'Apple Mail (2.3826.300.87.4.3)'],
  ['User-Agent', 'Evolution 3.50.2'],
  ['X-Mailer', 'iPhone Mail (21H16)'],
  ['User-Agent', 'K-9 Mail for Android'],
];
const PHONE: [string, string] = ['X-Mailer', 'iPhone Mail (21H16)'];
const CIPHERS = ['TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256'];

interface Login {
  address: string;
  name: string;
  home: string;
  mobile: string;
  client: [string, string];
  replyTo: string | undefined;
  authType: string;
  cipher: string;
  book: string[];
}

function population(n: number): Login[] {
  const rnd = prng(23);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)];
  const logins: Login[] = [];
  for (let i = 0; i < n; i++) {
    const book: string[] = [];
    // 20 contacts: 12 colleagues, 8 outside.
    for (let k = 0; k < 12; k++) book.push(`user${Math.floor(rnd() * n)}@example.com`);
    for (let k = 0; k < 8; k++) book.push(`contact${Math.floor(rnd() * 50_000)}@partner${Math.floor(rnd() * 500)}.example`);
    logins.push({
      address: `user${i}@example.com`,
      name: `${pick(FIRST)} ${pick(LAST)}`,
      home: `10.${(i >> 8) & 255}.${i & 255}.${20 + (i % 200)}`,
      mobile: `100.64.${Math.floor(rnd() * 256)}.${Math.floor(rnd() * 256)}`,
      client: pick(CLIENTS),
      // A tenth of the logins set a Reply-To of their own domain (a team address).
      replyTo: rnd() < 0.1 ? `team${i % 17}@example.com` : undefined,
      authType: rnd() < 0.8 ? 'PLAIN' : 'LOGIN',
      cipher: pick(CIPHERS),
      book,
    });
  }
  return logins;
}

/** A message and the simulated time it is sent at. */
interface TimedMessage {
  at: number;
  m: TestConnectionMessage;
}

/** Monday 2026-01-05 08:00 UTC: the warm-up's first message. */
const START = Date.UTC(2026, 0, 5, 8);

class Traffic {
  private readonly rnd = prng(1);
  private seq = 0;
  private readonly logins: Login[];

  constructor(logins: Login[]) {
    this.logins = logins;
  }

  /** The next `n` messages, each `SPACING_MS` of simulated time after the last. */
  next(n: number): TimedMessage[] {
    const out: TimedMessage[] = [];
    const rnd = this.rnd;
    for (let i = 0; i < n; i++) {
      const at = START + ++this.seq * SPACING_MS;
      const login = this.logins[Math.floor(rnd() * this.logins.length)];
      const away = rnd() < 0.05;
      const r = rnd();
      const count = r < 0.5 ? 1 : r < 0.7 ? 2 : r < 0.85 ? 3 : r < 0.95 ? 4 : 5;
      const rcpt = new Set<string>();
      while (rcpt.size < count) rcpt.add(rnd() < 0.9 ? login.book[Math.floor(rnd() * login.book.length)] : `new${Math.floor(rnd() * 1e9)}@elsewhere${Math.floor(rnd() * 1000)}.example`);
      const to = [...rcpt];
      const [uaName, ua] = away ? PHONE : login.client;
      const headers: [string, string][] = [
        ['From', `"${login.name}" <${login.address}>`],
        ['To', to.join(', ')],
        ['Subject', `Re: planning ${this.seq % 97}`],
        ['Date', new Date(at).toUTCString().replace('GMT', '+0000')],
        ['Message-ID', `<${this.seq}.${Math.floor(rnd() * 1e9)}@example.com>`],
        ['MIME-Version', '1.0'],
        ['Content-Type', 'text/plain; charset=utf-8'],
        [uaName, ua],
      ];
      if (login.replyTo) headers.push(['Reply-To', login.replyTo]);
      const macros = { '{auth_type}': login.authType, '{tls_version}': 'TLSv1.3', '{cipher}': login.cipher, '{cipher_bits}': '256' };
      out.push({ at, m: { from: login.address, rcpt: to, auth: login.address, client: { address: away ? login.mobile : login.home, macros }, helo: 'laptop.example.com', headers, body: 'Hello,\n\nsee the notes below.\n\n-- \nBest regards\n' } });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels

let warnings = 0;
let firstWarning: string | undefined;
const warn = (fields: object, message?: string) => {
  warnings++;
  firstWarning ??= `${message ?? ''} ${JSON.stringify(fields)}`.trim();
};
const logger: KernelLogger = { debug() {}, info() {}, warn, error: warn, child: () => logger, isLevelEnabled: (l) => l === 'warn' || l === 'error' };

/** The floor: taps what predict taps (connect, MAIL, RCPT, headers observed; end of message answered) and does nothing. */
const noop = definePlugin({
  name: 'bench-noop',
  version: '1.0.0',
  kernel: '^1',
  observes: ['connect', 'mailFrom', 'rcptTo', 'header'],
  setup: () => ({ endOfMessage: () => undefined }),
});

/** What the plugin noted (the part the round-trip phase checks). */
interface Seen {
  notes: number;
  scored: number;
  withSignals: number;
}

async function kernelFor(row: RowSpec, store: Store, clock: { now: number }, seen?: Seen): Promise<TestKernel> {
  const plugins: { plugin: PluginDefinition<any, any>; options?: Record<string, unknown> }[] = row.policies ? [{ plugin: predict as PluginDefinition<any, any>, options: { now: () => clock.now, timeZone: 'UTC' } }] : [{ plugin: noop }];
  if (seen) {
    plugins.push({
      plugin: definePlugin({
        name: 'bench-observer',
        version: '1.0.0',
        kernel: '^1',
        setup: () => ({
          decision(ctx) {
            const note = ctx.message?.notes.of<{ timeframes: { bound: number | null }[]; signals?: unknown }>('predict');
            if (!note) return;
            seen.notes++;
            if (note.timeframes.some((t) => t.bound !== null)) seen.scored++;
            if (note.signals) seen.withSignals++;
          },
        }),
      }),
    });
  }
  const policies = (row.policies ?? [{}]).map((p, i) => ({ name: row.policies ? ((p as { count?: string }).count === 'newRecipients' ? POLICY_NAMES.new : POLICY_NAMES.rate) : `noop${i}`, ...(row.policies ? { predict: p } : {}) }));
  return createTestKernel({ plugins, policies: policies as never, store, logger });
}

/** Sends the messages through the kernel, `inFlight` at a time, the simulated clock at each message's time. */
async function drive(t: TestKernel, messages: TimedMessage[], inFlight: number, clock: { now: number }): Promise<number> {
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < messages.length) {
        const { at, m } = messages[next++];
        if (at > clock.now) clock.now = at;
        const r = await t.message(m);
        if (r.decision.action !== 'continue' && r.decision.action !== 'accept') failed++;
        // The harness keeps every trace; nothing here reads them.
        if (t.traces.length > 1000) t.traces.length = 0;
      }
    }),
  );
  return failed;
}

// ---------------------------------------------------------------------------------------------
// Redis: the counting proxy, INFO

/**
 * The counting proxy (bench/counting-proxy.ts) in front of redis-server, with the commands in the
 * client's requests, parsed from the RESP stream (name → count).
 */
async function commandCountingProxy(target: number): Promise<CountingProxy & { commands: () => Map<string, number> }> {
  let commands = new Map<string, number>();
  const parser = respCommands((name) => commands.set(name, (commands.get(name) ?? 0) + 1));
  const proxy = await countingProxy(target, parser);
  return {
    ...proxy,
    commands: () => commands,
    reset: () => {
      proxy.reset();
      commands = new Map();
    },
  };
}

/** A streaming parser of RESP requests (arrays of bulk strings, as every client sends them): calls `found` with each command's name, lower-cased. */
function respCommands(found: (name: string) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    let at = 0;
    for (;;) {
      const start = at;
      const line = (from: number) => {
        const eol = buf.indexOf('\r\n', from);
        return eol < 0 ? undefined : { text: buf.toString('latin1', from, eol), next: eol + 2 };
      };
      const head = line(at);
      if (!head) break;
      if (head.text[0] !== '*') {
        // An inline command (not sent by ioredis): its first word.
        found(head.text.split(' ')[0].toLowerCase());
        at = head.next;
        continue;
      }
      const n = Number(head.text.slice(1));
      let p = head.next;
      let name: string | undefined;
      let complete = true;
      for (let k = 0; k < n; k++) {
        const len = line(p);
        if (!len) {
          complete = false;
          break;
        }
        const size = Number(len.text.slice(1));
        if (len.next + size + 2 > buf.length) {
          complete = false;
          break;
        }
        if (k === 0) name = buf.toString('latin1', len.next, len.next + size).toLowerCase();
        p = len.next + size + 2;
      }
      if (!complete) {
        at = start;
        break;
      }
      found(name ?? '?');
      at = p;
    }
    buf = at >= buf.length ? Buffer.alloc(0) : buf.subarray(at);
  };
}

/**
 * Counts the socket writes of a RedisStore's command connection (its ioredis stream; the same hook as
 * test/helpers/redis.ts `countRoundTrips`): what the client hands the kernel, before TCP merges anything.
 */
function countStreamWrites(store: RedisStore): { writes: () => number; reset: () => void; restore: () => void } {
  const stream = (store as unknown as { main: { client: { stream: { write: (...a: unknown[]) => boolean } } } }).main.client.stream;
  const write = stream.write;
  let writes = 0;
  stream.write = function (...a: unknown[]) {
    writes++;
    return write.apply(this, a);
  };
  return { writes: () => writes, reset: () => void (writes = 0), restore: () => void (stream.write = write) };
}

async function commandStats(raw: Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await raw.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1], Number(m[2]));
  return out;
}

/** redis-server's CPU (user + system), seconds, from INFO cpu (µs resolution). */
async function redisCpu(raw: Redis): Promise<number> {
  const info = await raw.info('cpu');
  const get = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return get('used_cpu_user') + get('used_cpu_sys');
}

const delta = (after: Map<string, number>, before: Map<string, number>) => new Map([...after].filter(([k, v]) => !['info', 'config'].includes(k) && v !== (before.get(k) ?? 0)).map(([k, v]) => [k, v - (before.get(k) ?? 0)]));

// ---------------------------------------------------------------------------------------------
// Main

interface CpuRun {
  round: number;
  store: 'memory' | 'redis';
  inFlight: number;
  row: RowId;
  messages: number;
  /** This process's CPU per message, ms (the kernel, the plugin and the store's client). */
  cpuMs: number;
  /** redis-server's CPU per message, ms (redis runs only). */
  redisMs?: number;
  wallMs: number;
}

interface RoundTrips {
  row: RowId;
  messages: number;
  /** Sequential messages: the requests that reached Redis (reads at the proxy), per message: the round trips. */
  writesPerMsg: number;
  /** The same, counted as the store client's socket writes. */
  clientWritesPerMsg: number;
  /** Commands the client sent, per message, by name. */
  sentPerMsg: Record<string, number>;
  /** Commands Redis ran (INFO commandstats: the scripts' inner commands included), per message, by name. */
  ranPerMsg: Record<string, number>;
  /** At 10 in flight (informative): the client's socket writes, the proxy's reads and the commands, per message. */
  at10: { clientWritesPerMsg: number; readsPerMsg: number; sentPerMsg: Record<string, number> };
  notes: number;
  scored: number;
  withSignals: number;
}

interface Check {
  id: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  text: string;
}

const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x: number | undefined, d = 3) => (x !== undefined && Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const perMsg = (m: Map<string, number>, n: number) => Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, v / n]));
const words = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k} ${+v.toFixed(3)}`).join(', ') || 'none';
const sumOf = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
const SCRIPT = ['evalsha', 'eval'];

async function main(): Promise<number> {
  const t0 = performance.now();
  const logins = population(LOGINS);
  const haveRedis = redisAvailable();
  console.log(`\npredict: CPU and store round trips per message through the kernel (createTestKernel)${QUICK ? '  [--quick: smoke run, not for figures]' : ''}`);
  console.log(`host: ${cpus().length} CPU, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}; node ${process.version}`);
  console.log(`population: ${LOGINS} SASL logins, 1–5 recipients per message (90 % from a 20-address book, 12 internal), ${WARMUP_PER_LOGIN} warm-up messages per login over ${WARMUP_HOURS} simulated hours; ${MESSAGES} messages per run, ${ROUNDS} round(s), 1 and 10 in flight, rows interleaved; medians`);
  for (const r of ROWS) console.log(`  ${`(${r.letter}) ${r.id}`.padEnd(13)} ${r.label}`);

  const redis = haveRedis ? await startRedis() : undefined;
  if (!redis) console.log('redis-server is not installed: the MemoryStore only, and the round-trip checks SKIP');
  const raw = redis ? new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 }) : undefined;
  const stores: { name: 'memory' | 'redis'; store: Store }[] = [{ name: 'memory', store: new MemoryStore({ testClock: true }) }];
  const closers: (() => Promise<unknown>)[] = [];
  const checks: Check[] = [];
  const runs: CpuRun[] = [];
  const trips: RoundTrips[] = [];
  let failedMessages = 0;
  try {
    if (redis && raw) {
      await raw.connect();
      await raw.config('SET', 'save', '');
      const direct = new RedisStore({ url: redis.url, commandTimeout: 5_000 }, { testClock: true });
      await direct.connect();
      stores.push({ name: 'redis', store: direct });
    }
    for (const s of stores) closers.push(() => s.store.close());

    // One traffic, one clock: every store learns the same history; the rows share the profiles (same policy names).
    const traffic = new Traffic(logins);
    const clock = { now: START };
    const warmup = traffic.next(LOGINS * WARMUP_PER_LOGIN);
    const all = ROWS.find((r) => r.id === 'rec+all')!;
    const rateAll = ROWS.find((r) => r.id === 'rate+all')!;
    for (const s of stores) {
      const w0 = performance.now();
      const learnClock = { now: START };
      // The recommended configuration with every trait learns the memories, both profiles and every trait.
      const t = await kernelFor(all, s.store, learnClock);
      failedMessages += await drive(t, warmup, 10, learnClock);
      await t.close();
      console.log(`warm-up (${s.name}): ${warmup.length} messages in ${((performance.now() - w0) / 1000).toFixed(1)} s (not recorded)`);
    }
    clock.now = warmup.at(-1)!.at;
    // Redis keys learned (a sanity figure for the report).
    const keys = raw ? Number(/keys=(\d+)/.exec(await raw.info('keyspace'))?.[1] ?? 0) : undefined;
    if (keys !== undefined) console.log(`redis keys after the warm-up: ${keys} (a recipient memory and two profiles per login)`);

    // ------------------------------------------------------------ CPU
    const kernels = new Map<string, TestKernel>();
    for (const s of stores) for (const id of CPU_ROWS) kernels.set(`${s.name}/${id}`, await kernelFor(ROWS.find((r) => r.id === id)!, s.store, clock));
    for (const t of kernels.values()) closers.unshift(() => t.close());
    // A short warm-up of every kernel (JIT), not recorded.
    for (const s of stores) for (const id of CPU_ROWS) failedMessages += await drive(kernels.get(`${s.name}/${id}`)!, traffic.next(QUICK ? 200 : 500), 10, clock);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const s of stores) {
        for (const inFlight of CONCURRENCY) {
          const order = CPU_ROWS.map((_, i) => CPU_ROWS[(i + round - 1) % CPU_ROWS.length]);
          const line: string[] = [];
          for (const id of order) {
            const messages = traffic.next(MESSAGES);
            const t = kernels.get(`${s.name}/${id}`)!;
            const r0 = s.name === 'redis' && raw ? await redisCpu(raw) : NaN;
            gc();
            const c0 = process.cpuUsage();
            const w0 = performance.now();
            failedMessages += await drive(t, messages, inFlight, clock);
            const wall = performance.now() - w0;
            const c = process.cpuUsage(c0);
            const r1 = s.name === 'redis' && raw ? await redisCpu(raw) : NaN;
            const run: CpuRun = { round, store: s.name, inFlight, row: id, messages: MESSAGES, cpuMs: (c.user + c.system) / 1000 / MESSAGES, wallMs: wall / MESSAGES, ...(s.name === 'redis' ? { redisMs: ((r1 - r0) * 1000) / MESSAGES } : {}) };
            runs.push(run);
            line.push(`${id} ${f(run.cpuMs)}${run.redisMs !== undefined ? `+${f(run.redisMs)}` : ''}`);
          }
          console.log(`round ${round}/${ROUNDS} ${s.name.padEnd(6)} C=${String(inFlight).padEnd(2)} ${line.join('  ')}   (ms of CPU per message${s.name === 'redis' ? ': node+redis' : ''})`);
        }
      }
    }

    // ------------------------------------------------------------ round trips
    if (redis && raw) {
      const proxy = await commandCountingProxy(redis.port);
      const proxied = new RedisStore({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeout: 5_000 }, { testClock: true });
      await proxied.connect();
      const streamWrites = countStreamWrites(proxied);
      closers.unshift(async () => {
        streamWrites.restore();
        await proxied.close();
        proxy.close();
      });
      for (const row of ROWS.filter((r) => r.policies)) {
        const seen: Seen = { notes: 0, scored: 0, withSignals: 0 };
        const t = await kernelFor(row, proxied, clock, seen);
        failedMessages += await drive(t, traffic.next(20), 1, clock);
        seen.notes = seen.scored = seen.withSignals = 0;
        const messages = traffic.next(RT_MESSAGES);
        const before = await commandStats(raw);
        proxy.reset();
        streamWrites.reset();
        failedMessages += await drive(t, messages, 1, clock);
        const writes = proxy.writes();
        const clientWrites = streamWrites.writes();
        const sent = new Map(proxy.commands());
        const ran = delta(await commandStats(raw), before);
        const judged = { ...seen };
        // The same at 10 in flight (informative: what the client writes, and what reaches Redis, when messages overlap).
        proxy.reset();
        streamWrites.reset();
        failedMessages += await drive(t, traffic.next(RT_MESSAGES), 10, clock);
        const reads10 = proxy.writes();
        const clientWrites10 = streamWrites.writes();
        const sent10 = new Map(proxy.commands());
        await t.close();
        trips.push({ row: row.id, messages: RT_MESSAGES, writesPerMsg: writes / RT_MESSAGES, clientWritesPerMsg: clientWrites / RT_MESSAGES, sentPerMsg: perMsg(sent, RT_MESSAGES), ranPerMsg: perMsg(ran, RT_MESSAGES), at10: { clientWritesPerMsg: clientWrites10 / RT_MESSAGES, readsPerMsg: reads10 / RT_MESSAGES, sentPerMsg: perMsg(sent10, RT_MESSAGES) }, ...judged });
      }
    }
  } finally {
    for (const c of closers) await c().catch(() => undefined);
    raw?.disconnect();
    await redis?.stop();
  }

  // ------------------------------------------------------------ report
  const cell = (store: string, inFlight: number, row: RowId) => runs.filter((r) => r.store === store && r.inFlight === inFlight && r.row === row);
  /** Median of the per-round ratios of two rows (the same round, store and concurrency: side by side). */
  const ratio = (store: string, inFlight: number, a: RowId, b: RowId) => {
    const rs: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const x = cell(store, inFlight, a).find((r) => r.round === round);
      const y = cell(store, inFlight, b).find((r) => r.round === round);
      if (x && y) rs.push(x.cpuMs / y.cpuMs);
    }
    return { median: median(rs), perRound: rs };
  };
  const ratioRows: { store: string; inFlight: number; row: RowId; cpuMs: number; redisMs?: number; vsNone: number; plugin: number; cOverB?: number; dOverB?: number }[] = [];
  console.log(`\npredict: CPU per message (median of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''}; node = this process: kernel, plugin, store client; plugin = node − floor)`);
  console.log(`${'store'.padEnd(7)} ${'C'.padStart(3)}  ${'row'.padEnd(13)} ${'node ms'.padStart(8)} ${'redis ms'.padStart(9)} ${'plugin ms'.padStart(10)} ${'÷ floor'.padStart(8)} ${'÷ (b)'.padStart(6)}   per round ÷ (b)`);
  for (const s of ['memory', 'redis']) {
    for (const inFlight of CONCURRENCY) {
      const floor = median(cell(s, inFlight, 'none').map((r) => r.cpuMs));
      for (const id of CPU_ROWS) {
        const rs = cell(s, inFlight, id);
        if (rs.length === 0) continue;
        const cpuMs = median(rs.map((r) => r.cpuMs));
        const redisMs = s === 'redis' ? median(rs.map((r) => r.redisMs ?? NaN)) : undefined;
        const vsNone = ratio(s, inFlight, id, 'none').median;
        const vsB = id === 'none' ? undefined : ratio(s, inFlight, id, 'rec');
        const letter = ROWS.find((r) => r.id === id)!.letter;
        ratioRows.push({ store: s, inFlight, row: id, cpuMs, redisMs, vsNone, plugin: cpuMs - floor, ...(id === 'rec+sig' ? { cOverB: vsB!.median } : {}), ...(id === 'rec+all' ? { dOverB: vsB!.median } : {}) });
        console.log(`${s.padEnd(7)} ${String(inFlight).padStart(3)}  ${`(${letter}) ${id}`.padEnd(13)} ${f(cpuMs).padStart(8)} ${(redisMs === undefined ? '' : f(redisMs)).padStart(9)} ${(id === 'none' ? '' : f(cpuMs - floor)).padStart(10)} ${f(vsNone, 2).padStart(8)} ${(vsB ? f(vsB.median, 2) : '').padStart(6)}   ${vsB ? vsB.perRound.map((x) => x.toFixed(2)).join(' ') : ''}`);
      }
    }
  }
  console.log('\nWhat the signals cost (CPU of this process per message, side by side): (c) ÷ (b), (d) ÷ (b); the plugin alone, above the floor: (c − a) ÷ (b − a), (d − a) ÷ (b − a); and the ms added');
  for (const s of ['memory', 'redis']) {
    for (const inFlight of CONCURRENCY) {
      const at = (id: RowId) => ratioRows.find((r) => r.store === s && r.inFlight === inFlight && r.row === id);
      const [a, b, c, d] = (['none', 'rec', 'rec+sig', 'rec+all'] as const).map(at);
      if (!a || !b || !c || !d) continue;
      console.log(`${s.padEnd(7)} C=${String(inFlight).padEnd(3)} (c)/(b) ${f(c.cOverB, 2)}  (d)/(b) ${f(d.dOverB, 2)}   plugin alone: (c) ${f(c.plugin / b.plugin, 2)}  (d) ${f(d.plugin / b.plugin, 2)}   added: (c) +${f(c.cpuMs - b.cpuMs)} ms  (d) +${f(d.cpuMs - b.cpuMs)} ms${s === 'redis' ? `   redis-server: (b) ${f(b.redisMs)}, (c) ${f(c.redisMs)}, (d) ${f(d.redisMs)} ms; node + redis (d)/(b) ${f((d.cpuMs + d.redisMs!) / (b.cpuMs + b.redisMs!), 2)}` : ''}`);
    }
  }
  if (trips.length > 0) {
    console.log(`\npredict: store round trips per message (RedisStore through a counting TCP proxy; ${RT_MESSAGES} sequential messages per row)`);
    console.log(`${'row'.padEnd(13)} ${'round'.padStart(6)} ${'client'.padStart(7)} ${'sent'.padStart(5)} ${'ran'.padStart(5)}  ${'@10: writes'.padStart(11)} ${'reads'.padStart(6)} ${'sent'.padStart(5)}   commands sent / ran by Redis per message; messages scored, with signals`);
    console.log(`${''.padEnd(13)} ${'trips'.padStart(6)} ${'writes'.padStart(7)}`);
    for (const t of trips) {
      const letter = ROWS.find((r) => r.id === t.row)!.letter;
      console.log(`${`(${letter}) ${t.row}`.padEnd(13)} ${f(t.writesPerMsg).padStart(6)} ${f(t.clientWritesPerMsg).padStart(7)} ${f(sumOf(t.sentPerMsg), 2).padStart(5)} ${f(sumOf(t.ranPerMsg), 1).padStart(5)}  ${f(t.at10.clientWritesPerMsg).padStart(11)} ${f(t.at10.readsPerMsg).padStart(6)} ${f(sumOf(t.at10.sentPerMsg), 2).padStart(5)}   sent: ${words(t.sentPerMsg)}; ran: ${words(t.ranPerMsg)}; ${t.scored}/${t.notes} scored, ${t.withSignals} with signals`);
    }
    console.log("round trips: the requests that reached Redis per message (reads at the proxy; messages one at a time, so each is a round trip the message waits for); client writes: the store client's socket writes; sent: the commands in them (RESP parsed at the proxy); ran: INFO commandstats, the scripts' inner commands included (a store without testClock also runs TIME inside each PREDICT.PROFILE call). @10: 10 messages in flight");
  }

  // ------------------------------------------------------------ checks
  const trip = (id: RowId) => trips.find((t) => t.row === id);
  const scripts = (o: Record<string, number>) => SCRIPT.reduce((n, k) => n + (o[k] ?? 0), 0);
  const others = (o: Record<string, number>) => Object.entries(o).filter(([k]) => !SCRIPT.includes(k));
  {
    const r = trip('rate+all');
    const what = 'predict: rate policy alone with every trait: exactly 1 store round trip per message (one PREDICT.PROFILE script call)';
    if (!r) checks.push({ id: 'n1', status: 'SKIP', text: `${what}: not measured (no redis-server)` });
    else checks.push({ id: 'n1', status: r.writesPerMsg === 1 && r.clientWritesPerMsg === 1 && scripts(r.sentPerMsg) === 1 && others(r.sentPerMsg).length === 0 ? 'PASS' : 'FAIL', text: `${what}: ${f(r.writesPerMsg)} writes, ${words(r.sentPerMsg)} per message` });
  }
  {
    const r = trip('rec+all');
    const what = 'predict: new recipients + rate with every trait: exactly 2 store round trips per message (PREDICT.SEEN, then PREDICT.PROFILE for both policies)';
    if (!r) checks.push({ id: 'n2', status: 'SKIP', text: `${what}: not measured (no redis-server)` });
    else checks.push({ id: 'n2', status: r.writesPerMsg === 2 && r.clientWritesPerMsg === 2 && scripts(r.sentPerMsg) === 3 && others(r.sentPerMsg).length === 0 ? 'PASS' : 'FAIL', text: `${what}: ${f(r.writesPerMsg)} writes, ${words(r.sentPerMsg)} per message` });
  }
  {
    const b = trip('rec');
    const c = trip('rec+sig');
    const d = trip('rec+all');
    const r0 = trip('rate');
    const r = trip('rate+all');
    const what = 'predict: signals add no round trip: (c) and (d) = (b), (r) = (r0), in writes and commands sent per message';
    if (!b || !c || !d || !r0 || !r) checks.push({ id: 'n3', status: 'SKIP', text: `${what}: not measured (no redis-server)` });
    else {
      const same = (x: RoundTrips, y: RoundTrips) => x.writesPerMsg === y.writesPerMsg && x.clientWritesPerMsg === y.clientWritesPerMsg && sumOf(x.sentPerMsg) === sumOf(y.sentPerMsg);
      checks.push({ id: 'n3', status: same(c, b) && same(d, b) && same(r, r0) ? 'PASS' : 'FAIL', text: `${what}: writes (b) ${f(b.writesPerMsg)}, (c) ${f(c.writesPerMsg)}, (d) ${f(d.writesPerMsg)}, (r0) ${f(r0.writesPerMsg)}, (r) ${f(r.writesPerMsg)}; commands (b) ${f(sumOf(b.sentPerMsg), 2)}, (c) ${f(sumOf(c.sentPerMsg), 2)}, (d) ${f(sumOf(d.sentPerMsg), 2)}, (r0) ${f(sumOf(r0.sentPerMsg), 2)}, (r) ${f(sumOf(r.sentPerMsg), 2)}` });
    }
  }
  {
    const ds = ratioRows.filter((r) => r.dOverB !== undefined);
    const what = `predict: every trait costs ≤ ${MAX_SIGNALS_RATIO} × the CPU per message of the recommended configuration without signals, (d) ÷ (b) side by side, every store and concurrency`;
    if (ds.length === 0) checks.push({ id: 'n4', status: 'FAIL', text: `${what}: not measured` });
    else if (QUICK) checks.push({ id: 'n4', status: 'SKIP', text: `${what}: --quick runs too few messages for a CPU ratio (the full run checks it): ${ds.map((r) => `${r.store} C=${r.inFlight} ${f(r.dOverB, 2)}`).join(', ')}` });
    else {
      const worst = Math.max(...ds.map((r) => r.dOverB!));
      checks.push({ id: 'n4', status: worst <= MAX_SIGNALS_RATIO ? 'PASS' : 'FAIL', text: `${what}: ${ds.map((r) => `${r.store} C=${r.inFlight} ${f(r.dOverB, 2)}`).join(', ')}` });
    }
  }
  {
    const unscored = trips.filter((t) => t.notes !== t.messages || t.scored < t.notes * 0.9 || t.withSignals !== (ROWS.find((r) => r.id === t.row)!.policies!.some((p) => 'signals' in p) ? t.notes : 0));
    const ok = warnings === 0 && failedMessages === 0 && unscored.length === 0;
    checks.push({ id: 'n5', status: ok ? 'PASS' : 'FAIL', text: `predict: every message judged, none refused, no warning logged (a store error would pass messages unjudged and flatter the CPU), ≥ 90 % of the measured messages scored on a learned profile: ${warnings} warning(s)${firstWarning ? ` (first: ${firstWarning})` : ''}, ${failedMessages} refused; ${trips.map((t) => `${t.row} ${t.scored}/${t.notes}`).join(', ') || 'no round-trip phase'}` });
  }
  for (const c of checks) console.log(`${c.status}  (${c.id}) ${c.text}`);
  console.log(`predict bench took ${((performance.now() - t0) / 1000).toFixed(0)} s; load average now ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  if (values.json) {
    mkdirSync(dirname(values.json), { recursive: true });
    writeFileSync(values.json, `${JSON.stringify({ quick: QUICK, rounds: ROUNDS, messages: MESSAGES, logins: LOGINS, rows: ROWS, cpu: ratioRows, roundTrips: trips, checks, runs }, null, 1)}\n`);
  }
  return checks.some((c) => c.status === 'FAIL') ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    console.error(`predict bench: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  },
);
