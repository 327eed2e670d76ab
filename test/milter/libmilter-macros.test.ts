// Macro scoping checked against libmilter itself: the same milter frames are replayed, byte for byte,
// to a small C milter on libmilter (test/fixtures/libmilter-macros.c) and to the engine, and each
// side reports, per callback, the macros it can see. The reports and the reply codes must be equal.
// The scenarios are the orders an MTA may send: Sendmail's transactions without ABORT (after RSET,
// after a refusal, after an abandoned DATA), ABORT without new macros, HELO repeated after STARTTLS,
// QUIT_NC with a new CONNECT on the same socket, and macro packets with no command after them.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Command, createMilterServer, encodeConnect, encodeMacros, encodePacket, encodeStrings, type MilterApplication, type MilterServer, type MilterSession } from '../../src/milter/index.ts';
import { freePort, onProcessExit, waitUntil } from '../helpers/process.ts';
import { RawConnection, hex } from '../helpers/raw.ts';

/** Postfix's OPTNEG offer: version 6, every action, every protocol bit. */
const OPTNEG = hex('00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff');
/** The macro names both sides look up, in this order, in every callback. */
const NAMES = ['j', '_', '{daemon_name}', '{tls_version}', '{cipher}', 'i', '{mail_addr}', '{rcpt_addr}', '{data}', '{hdr}', '{eoh}', '{body}', '{eom}'];

const SOURCE = fileURLToPath(new URL('../fixtures/libmilter-macros.c', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'themis-libmilter-'));
const binary = join(dir, 'libmilter-macros');

/** Compiles the C milter now, so that a missing gcc or libmilter skips the whole suite. */
function build(): string | undefined {
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', binary, SOURCE, '-lmilter', '-lpthread'], { encoding: 'utf8' });
  if (cc.error) return `gcc not available (${cc.error.message})`;
  if (cc.status !== 0) return `cannot build against libmilter (is libmilter-dev installed?): ${cc.stderr.trim().split('\n').slice(0, 3).join(' | ')}`;
  return undefined;
}
const skipReason = build();
if (skipReason) rmSync(dir, { recursive: true, force: true });
if (skipReason) console.log(`# libmilter macro comparison skipped: ${skipReason}`);

// ---- frames --------------------------------------------------------------------------------------

/** One exchange: bytes written at once, then the number of replies the stage expects (0: none). */
interface Step {
  send: Buffer[];
  replies: number;
}
type Macros = Record<string, string>;

const step = (replies: number, ...send: Buffer[]): Step => ({ send, replies });
const connect = (macros: Macros | null, host = 'client.test', address = '192.0.2.1'): Step =>
  step(1, ...(macros ? [encodeMacros(Command.CONNECT, macros)] : []), encodeConnect({ hostname: host, family: '4', port: 4321, address }));
const helo = (macros: Macros | null, name = 'client.test'): Step => step(1, ...(macros ? [encodeMacros(Command.HELO, macros)] : []), encodeStrings(Command.HELO, [name]));
const mail = (macros: Macros | null, sender: string): Step => step(1, ...(macros ? [encodeMacros(Command.MAIL, macros)] : []), encodeStrings(Command.MAIL, [`<${sender}>`]));
const rcpt = (macros: Macros | null, addr: string): Step => step(1, ...(macros ? [encodeMacros(Command.RCPT, macros)] : []), encodeStrings(Command.RCPT, [`<${addr}>`]));
const data = (macros: Macros | null): Step => step(1, ...(macros ? [encodeMacros(Command.DATA, macros)] : []), encodePacket(Command.DATA));
const header = (name: string, value: string, macros: Macros | null = null): Step =>
  step(1, ...(macros ? [encodeMacros(Command.HEADER, macros)] : []), encodeStrings(Command.HEADER, [name, value]));
const eoh = (macros: Macros | null): Step => step(1, ...(macros ? [encodeMacros(Command.EOH, macros)] : []), encodePacket(Command.EOH));
const body = (text: string, macros: Macros | null = null): Step => step(1, ...(macros ? [encodeMacros(Command.BODY, macros)] : []), encodePacket(Command.BODY, Buffer.from(text)));
const eom = (macros: Macros | null): Step => step(1, ...(macros ? [encodeMacros(Command.BODYEOB, macros)] : []), encodePacket(Command.BODYEOB));
const abort = (): Step => step(0, encodePacket(Command.ABORT));
const quitNc = (): Step => step(0, encodePacket(Command.QUIT_NC));
/** A macro packet alone: no command follows it. */
const macrosOnly = (command: number, macros: Macros): Step => step(0, encodeMacros(command, macros));

/** CONNECT (j, _, daemon name) and a first HELO without TLS. */
const opening = (): Step[] => [connect({ j: 'mx.test', _: 'client.test [192.0.2.1]', '{daemon_name}': 'mta' }), helo({})];
/** A whole message after MAIL and RCPT. */
const message = (queueId: string): Step[] => [
  data({ '{data}': `data-${queueId}` }),
  header('Subject', 'hi'),
  header('From', 'a@x'),
  eoh({ '{eoh}': `eoh-${queueId}` }),
  body('hello\r\n'),
  eom({ "{eom}": `eom-${queueId}`, i: `${queueId}-eom`, j: "mx-eom.test" }),
];

// ---- the two milters ------------------------------------------------------------------------------

/** What one side did in a scenario: the reply codes read, and one line per callback. */
interface Outcome {
  replies: string[];
  lines: string[];
}

interface Target {
  name: string;
  port: number;
  lines: string[];
}

const line = (stage: string, get: (name: string) => string | undefined): string => {
  let out = stage;
  for (const n of NAMES) {
    const v = get(n);
    if (v !== undefined) out += ` ${n}=${v}`;
  }
  return out;
};

/** Replays `steps` on a fresh connection to `t`, then ends it with QUIT (if still open). */
async function replay(t: Target, steps: Step[]): Promise<Outcome> {
  const from = t.lines.length;
  const replies: string[] = [];
  const c = await RawConnection.open(t.port);
  try {
    c.write(OPTNEG);
    const o = await c.next();
    replies.push(String.fromCharCode(o.code));
    for (const s of steps) {
      c.write(...s.send);
      for (let i = 0; i < s.replies; i++) {
        try {
          replies.push(String.fromCharCode((await c.next(800)).code));
        } catch (err) {
          replies.push(c.isClosed ? 'closed' : `none (${(err as Error).message})`);
          break;
        }
      }
      if (s.replies === 0) await new Promise((r) => setTimeout(r, 30)); // let a reply-less stage run before the next one
      if (c.isClosed) break;
    }
    const extra = c.pending();
    if (extra.length) replies.push(`unexpected ${extra.map((p) => String.fromCharCode(p.code)).join('')}`);
    if (!c.isClosed) {
      c.write(encodePacket(Command.QUIT));
      await c.closedWithin(1000);
    } else replies.push('closed');
  } finally {
    c.close();
  }
  // The close callback ends a milter connection: wait for it, then for the output to settle.
  await waitUntil(() => t.lines.slice(from).some((l) => l.startsWith('close')), 1000, 10);
  let n = -1;
  await waitUntil(() => (n === t.lines.length ? true : ((n = t.lines.length), false)), 500, 40);
  return { replies, lines: t.lines.slice(from) };
}

describe('macro scoping compared with libmilter', { skip: skipReason }, () => {
  let child: ChildProcess | undefined;
  let server: MilterServer;
  const lib: Target = { name: 'libmilter', port: 0, lines: [] };
  const themis: Target = { name: 'themis', port: 0, lines: [] };
  const kill = (): void => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };

  before(async () => {
    // The C milter on a free loopback port (a second try if another process took the port meanwhile).
    for (let attempt = 0; attempt < 3 && !lib.port; attempt++) {
      const port = await freePort();
      const p = spawn(binary, [String(port), ...NAMES], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = p;
      onProcessExit(kill);
      let buf = '';
      let stderr = '';
      p.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buf += chunk;
        const parts = buf.split('\n');
        buf = parts.pop()!;
        for (const l of parts) if (l !== 'ready') lib.lines.push(l);
        if (parts.includes('ready')) lib.port = port;
      });
      p.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      await waitUntil(() => lib.port !== 0 || p.exitCode !== null, 5000, 10);
      if (!lib.port) {
        kill();
        if (attempt === 2) throw new Error(`libmilter milter did not start: ${stderr.trim()}`);
      }
    }

    const record = (stage: string) => (s: MilterSession) => void themis.lines.push(line(stage, (n) => s.macros.get(n)));
    const app: MilterApplication = {
      connect: record('connect'),
      helo: record('helo'),
      mailFrom: (s, e) => (record('mail')(s), e.address.startsWith('refuse') ? { action: 'reject' } : undefined),
      rcptTo: record('rcpt'),
      data: record('data'),
      header: record('header'),
      endOfHeaders: (s) => (record('eoh')(s), s.sender?.address.startsWith('late') ? { action: 'tempfail' } : undefined),
      body: record('body'),
      endOfMessage: record('eom'),
      abort: record('abort'),
      close: record('close'),
    };
    server = createMilterServer(app);
    await server.listen('inet:0@127.0.0.1');
    themis.port = server.port!;
  });

  after(async () => {
    kill();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Replays the scenario on both sides and compares; returns both outcomes for scenario-specific checks. */
  async function compare(steps: Step[]): Promise<{ lib: Outcome; themis: Outcome }> {
    const l = await replay(lib, steps);
    const t = await replay(themis, steps);
    const show = (o: Outcome): string => `replies ${o.replies.join(' ')}\n    ${o.lines.join('\n    ')}`;
    const detail = `\n  libmilter: ${show(l)}\n  themis:    ${show(t)}`;
    if (process.env.THEMIS_TEST_VERBOSE) console.log(detail.replace(/^/gm, '# '));
    assert.deepEqual(t.replies, l.replies, `reply codes differ:${detail}`);
    assert.deepEqual(t.lines, l.lines, `macros seen per callback differ:${detail}`);
    return { lib: l, themis: t };
  }

  it('MAIL after an RSET without ABORT (Sendmail: MAIL, RCPT, then D M + MAIL of the next transaction)', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      mail({ i: 'Q2', '{mail_addr}': 'again@x' }, 'again@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q2'),
    ]);
  });

  it('MAIL after a transaction refused at MAIL, and after one refused at end of headers, without ABORT', async () => {
    const { lib: l } = await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'refuse@x' }, 'refuse@x'),
      mail({ i: 'Q2', '{mail_addr}': 'late@x' }, 'late@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q2' }),
      header('Subject', 'hi'),
      eoh({ '{eoh}': 'eoh-Q2', i: 'Q2-eoh' }),
      mail({ i: 'Q3', '{mail_addr}': 'third@x' }, 'third@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q3'),
    ]);
    assert.deepEqual(l.replies.slice(3, 9), ['r', 'c', 'c', 'c', 'c', 't'], 'libmilter refused where the scenario says');
  });

  it('MAIL after an abandoned DATA (DATA macros + DATA, a header, then D M + MAIL)', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'first'),
      mail({ i: 'Q2', '{mail_addr}': 'again@x' }, 'again@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q2'),
    ]);
  });

  it('ABORT then MAIL with no macro packet; ABORT then HELO (new D H) mid-session', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      abort(),
      mail(null, 'b@x'),
      rcpt(null, 'c@x'),
      abort(),
      helo({ '{tls_version}': 'TLSv1.3' }, 'again'),
      mail({ i: 'Q3', '{mail_addr}': 'c@x' }, 'c@x'),
      rcpt({ '{rcpt_addr}': 'd@x' }, 'd@x'),
      ...message('Q3'),
    ]);
  });

  it('HELO repeated mid-session (STARTTLS: D H with {tls_version}) then a message', async () => {
    await compare([
      ...opening(),
      helo({ '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384' }, 'client.test'),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      ...message('Q1'),
    ]);
  });

  it('QUIT_NC then a new CONNECT on the same socket', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      ...message('Q1'),
      quitNc(),
      connect(null, 'second.test', '192.0.2.2'),
      helo(null, 'second.test'),
      mail({ i: 'Q2', '{mail_addr}': 'z@x' }, 'z@x'),
      rcpt(null, 'y@x'),
      ...message('Q2'),
    ]);
  });

  it('macros for a stage with no command after them: D T without DATA, D N / D E ahead of their command', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      macrosOnly(Command.DATA, { '{data}': 'orphan' }), // an MTA that does not send DATA (SMFIP_NODATA-like)
      header('Subject', 'hi'),
      macrosOnly(Command.EOH, { '{eoh}': 'early' }), // ahead of the headers that still come
      header('From', 'a@x'),
      eoh(null),
      macrosOnly(Command.BODYEOB, { '{eom}': 'early' }),
      body('hello\r\n'),
      eom(null),
      mail({ i: 'Q2', '{mail_addr}': 'b@x' }, 'b@x'),
    ]);
  });

  // libmilter's st_macros() only files macro packets for C, H, M, R, T, N and E (SMFIC_CONNECT, HELO,
  // MAIL, RCPT, DATA, EOH, BODYEOB): for L (HEADER) or B (BODY) it returns _SMFIS_FAIL, the packet is
  // dropped without a reply and the session goes on. The engine drops them too.
  it('D L (header macros) before a header: dropped, as libmilter drops it', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'hi', { '{hdr}': 'subject' }),
      eoh(null),
      body('hello\r\n'),
      eom(null),
    ]);
  });

  it('D B (body macros) before a body chunk: dropped, as libmilter drops it', async () => {
    await compare([
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'hi'),
      eoh(null),
      body('hello\r\n', { '{body}': 'chunk' }),
      eom(null),
    ]);
  });
});
