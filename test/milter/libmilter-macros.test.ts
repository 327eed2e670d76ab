// Macro scoping checked against libmilter itself: the same milter frames are replayed, byte for byte,
// to a small C milter on libmilter (test/fixtures/libmilter-macros.c) and to the engine, and each
// side reports, per callback, the macros it can see. The reports and the reply codes must be equal.
// The scenarios are the orders an MTA may send: Sendmail's transactions without ABORT (after RSET,
// after a refusal, after an abandoned DATA), ABORT without new macros, HELO repeated after STARTTLS,
// QUIT_NC with a new CONNECT on the same socket, macro packets with no command after them, and
// UNKNOWN commands with their `D U` packet.
// Each scenario runs under several negotiation shapes (SMFIP_NO* stages switched off, SMFIP_NR_*
// stages unanswered), asked for by both milters and checked in their OPTNEG answers. The frames
// follow the shape as Sendmail sends them: a switched-off stage still gets its macro packet but not
// its command, and an unanswered stage is not waited for.
// Where libmilter's state machine does something the engine knowingly does not (xxfi_abort, ignored
// commands), the scenario says so and checks that difference exactly instead of equality.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Command, STAGES, STAGE_BITS, createMilterServer, encodeConnect, encodeMacros, encodePacket, encodeStrings, type MilterApplication, type MilterServer, type MilterSession, type Stage } from '../../src/milter/index.ts';
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

// ---- negotiation shapes ---------------------------------------------------------------------------

/**
 * One negotiation, the same on both sides: the stages switched off (SMFIP_NO*) and the stages not
 * answered (SMFIP_NR_*). The C milter asks for them with `-p`, the engine through
 * `MilterApplication.negotiation` (with `answerData: false`, else it would keep DATA on and answered).
 */
interface Shape {
  name: string;
  off: readonly Stage[];
  noReply: readonly Stage[];
}
/** Every stage, each answered: the C milter without `-p`, the engine's default negotiation (it has every handler). */
const FULL: Shape = { name: 'every stage answered', off: [], noReply: [] };
/** What a Postfix-oriented Themis application asks for: envelope and unknown unanswered, DATA answered, the content switched off. */
const POSTFIX: Shape = { name: 'connect, helo, mail, rcpt, unknown NR; data answered; headers, eoh, body NO', off: ['header', 'endOfHeaders', 'body'], noReply: ['connect', 'helo', 'mailFrom', 'rcptTo', 'unknown'] };
/** No DATA command (NODATA): the DATA macros arrive alone, headers stream unanswered. */
const NODATA: Shape = { name: 'mail, rcpt, header NR; data, eoh, body NO', off: ['data', 'endOfHeaders', 'body'], noReply: ['mailFrom', 'rcptTo', 'header'] };
/** Nothing but end of message: every other command is dropped, only macro packets announce the stages. */
const EOM_ONLY: Shape = { name: 'every stage NO but end of message', off: STAGES.filter((st) => st !== 'endOfMessage'), noReply: [] };
const SHAPES: readonly Shape[] = [FULL, POSTFIX, NODATA, EOM_ONLY];

/** The SMFIP_* bits of a shape: what both milters must answer in OPTNEG (Postfix offers every bit). */
const protocolOf = (shape: Shape): number =>
  shape.off.reduce((bits, st) => bits | STAGE_BITS[st].no, 0) | shape.noReply.reduce((bits, st) => bits | STAGE_BITS[st].nr, 0);

// ---- frames --------------------------------------------------------------------------------------

/**
 * One exchange: bytes written at once, then the number of replies awaited (0: none). An SMTP event
 * names its `stage`: its bytes are its macro packet (if any) then its command, and {@link shaped}
 * adapts it to the negotiation.
 */
interface Step {
  send: Buffer[];
  replies: number;
  stage?: Stage;
}
type Macros = Record<string, string>;

const step = (replies: number, ...send: Buffer[]): Step => ({ send, replies });
/** An SMTP event of `stage`: the stage's macro packet (unless null), then `command`, one reply. */
const event = (stage: Stage, macros: Macros | null, command: Buffer): Step => ({
  stage,
  replies: 1,
  send: [...(macros ? [encodeMacros(STAGE_BITS[stage].command, macros)] : []), command],
});
const connect = (macros: Macros | null, host = 'client.test', address = '192.0.2.1'): Step =>
  event('connect', macros, encodeConnect({ hostname: host, family: '4', port: 4321, address }));
const helo = (macros: Macros | null, name = 'client.test'): Step => event('helo', macros, encodeStrings(Command.HELO, [name]));
const mail = (macros: Macros | null, sender: string): Step => event('mailFrom', macros, encodeStrings(Command.MAIL, [`<${sender}>`]));
const rcpt = (macros: Macros | null, addr: string): Step => event('rcptTo', macros, encodeStrings(Command.RCPT, [`<${addr}>`]));
const data = (macros: Macros | null): Step => event('data', macros, encodePacket(Command.DATA));
const header = (name: string, value: string, macros: Macros | null = null): Step => event('header', macros, encodeStrings(Command.HEADER, [name, value]));
const eoh = (macros: Macros | null): Step => event('endOfHeaders', macros, encodePacket(Command.EOH));
const body = (text: string, macros: Macros | null = null): Step => event('body', macros, encodePacket(Command.BODY, Buffer.from(text)));
const eom = (macros: Macros | null): Step => event('endOfMessage', macros, encodePacket(Command.BODYEOB));
/** SMFIC_UNKNOWN: an SMTP command the MTA does not know, with its `D U` packet (unless null). */
const unknown = (macros: Macros | null, command: string): Step => event('unknown', macros, encodeStrings(Command.UNKNOWN, [command]));
const abort = (): Step => step(0, encodePacket(Command.ABORT));
const quitNc = (): Step => step(0, encodePacket(Command.QUIT_NC));
/** A macro packet alone: no command follows it. */
const macrosOnly = (command: number, macros: Macros): Step => step(0, encodeMacros(command, macros));

/**
 * What an MTA sends for `s` under `shape`: for a stage switched off, the macro packet only (Sendmail's
 * milter_command sends the macros whether or not the filter wants the command) and no reply; for an
 * unanswered stage, everything and no reply.
 */
function shaped(s: Step, shape: Shape): Step {
  if (s.stage === undefined) return s;
  if (shape.off.includes(s.stage)) return { send: s.send.slice(0, -1), replies: 0 };
  if (shape.noReply.includes(s.stage)) return { send: s.send, replies: 0 };
  return s;
}

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

/** What one side did in a scenario: the replies read (OPTNEG as `O` and its protocol bits), and one line per callback. */
interface Outcome {
  replies: string[];
  lines: string[];
}

/** One milter (C or engine) listening with one negotiation shape, and the lines its callbacks wrote. */
interface Target {
  name: string;
  shape: Shape;
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

const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** Replays `steps`, shaped for `t`'s negotiation, on a fresh connection to `t`, then ends it with QUIT (if still open). */
async function replay(t: Target, steps: Step[]): Promise<Outcome> {
  const from = t.lines.length;
  const replies: string[] = [];
  const c = await RawConnection.open(t.port);
  try {
    c.write(OPTNEG);
    const o = await c.next();
    replies.push(`${String.fromCharCode(o.code)} ${o.payload.length >= 12 ? hex32(o.payload.readUInt32BE(8)) : '?'}`);
    for (const unshaped of steps) {
      const s = shaped(unshaped, t.shape);
      if (s.send.length === 0) continue; // a switched-off stage sent without macros: nothing goes out
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

/** A difference between libmilter and the engine that is known and written down: checked instead of equality. */
interface Known {
  /** What libmilter does, and why the engine does not follow it. */
  why: string;
  /** Asserts the difference exactly (and that everything else is equal). */
  check: (lib: Outcome, themis: Outcome) => void;
}

/** A scenario: the frames an MTA sends, and the shapes it is replayed under (every shape unless said). */
interface Scenario {
  title: string;
  steps: () => Step[];
  shapes?: readonly Shape[];
  /** Scenario-specific checks on top of the comparison. */
  check?: (shape: Shape, lib: Outcome, themis: Outcome) => void;
  /** For the shapes where libmilter and the engine knowingly differ: the documented difference. */
  known?: (shape: Shape) => Known | undefined;
}

const isAbort = (l: string): boolean => l.startsWith('abort');
const count = (lines: string[], pred: (l: string) => boolean): number => lines.filter(pred).length;

/**
 * libmilter with MAIL switched off (SMFIP_NOMAIL): its state machine skips the MAIL state, so an ABORT
 * is a valid transition from HELO or end of message and xxfi_abort runs, even when the filter saw
 * nothing of the transaction. The engine calls `abort` only for a message it saw an event of. In these
 * scenarios every ABORT follows a RCPT, so the two differ when RCPT is off too. The rest must be equal.
 */
const abortWithoutMessage = (aborts: number) => (shape: Shape): Known | undefined =>
  shape.off.includes('mailFrom') && shape.off.includes('rcptTo')
    ? {
        why: 'libmilter calls xxfi_abort for an ABORT of a transaction it saw no event of (MAIL switched off)',
        check: (l, t) => {
          assert.equal(count(l.lines, isAbort), aborts, 'libmilter: one xxfi_abort per ABORT');
          assert.equal(count(t.lines, isAbort), 0, 'engine: no abort for a message it saw nothing of');
          assert.deepEqual(t.lines, l.lines.filter((x) => !isAbort(x)), 'the other callbacks see the same macros');
          assert.deepEqual(t.replies, l.replies);
        },
      }
    : undefined;

const SCENARIOS: readonly Scenario[] = [
  {
    title: 'MAIL after an RSET without ABORT (Sendmail: MAIL, RCPT, then D M + MAIL of the next transaction)',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      mail({ i: 'Q2', '{mail_addr}': 'again@x' }, 'again@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q2'),
    ],
  },
  {
    title: 'MAIL after a transaction refused at MAIL, and after one refused at end of headers, without ABORT',
    // A refusal needs MAIL and EOH answered: only the full shape has both.
    shapes: [FULL],
    steps: () => [
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
    ],
    check: (_shape, l) => assert.deepEqual(l.replies.slice(3, 9), ['r', 'c', 'c', 'c', 'c', 't'], 'libmilter refused where the scenario says'),
  },
  {
    title: 'MAIL after an abandoned DATA (DATA macros + DATA, a header, then D M + MAIL)',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'first'),
      mail({ i: 'Q2', '{mail_addr}': 'again@x' }, 'again@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q2'),
    ],
  },
  {
    title: 'ABORT then MAIL with no macro packet; ABORT then HELO (new D H) mid-session',
    known: abortWithoutMessage(2),
    steps: () => [
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
    ],
  },
  {
    title: 'two whole messages with ABORT (RSET) between them; the second sends no D R',
    known: abortWithoutMessage(1),
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      ...message('Q1'),
      abort(),
      mail({ i: 'Q2', '{mail_addr}': 'c@x' }, 'c@x'),
      rcpt(null, 'd@x'),
      data(null),
      header('Subject', 'again'),
      eoh(null),
      body('again\r\n'),
      eom(null),
    ],
  },
  {
    title: 'two whole messages back to back, no ABORT between them; the second sends no D R',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      ...message('Q1'),
      mail({ i: 'Q2', '{mail_addr}': 'c@x' }, 'c@x'),
      rcpt(null, 'd@x'),
      data(null),
      eoh(null),
      eom(null),
    ],
  },
  {
    title: 'HELO repeated mid-session (STARTTLS: D H with {tls_version}) then a message',
    steps: () => [
      ...opening(),
      helo({ '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384' }, 'client.test'),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      ...message('Q1'),
    ],
  },
  {
    title: 'QUIT_NC then a new CONNECT on the same socket',
    steps: () => [
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
    ],
  },
  {
    title: 'macros for a stage with no command after them: D T without DATA, D N / D E ahead of their command',
    steps: () => [
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
    ],
  },
  // libmilter's st_macros() only files macro packets for C, H, M, R, T, N and E (SMFIC_CONNECT, HELO,
  // MAIL, RCPT, DATA, EOH, BODYEOB): for L (HEADER) or B (BODY) it returns _SMFIS_FAIL, the packet is
  // dropped without a reply and the session goes on. The engine drops them too.
  {
    title: 'D L (header macros) before a header: dropped, as libmilter drops it',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'hi', { '{hdr}': 'subject' }),
      eoh(null),
      body('hello\r\n'),
      eom(null),
    ],
  },
  {
    title: 'D B (body macros) before a body chunk: dropped, as libmilter drops it',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      data({ '{data}': 'data-Q1' }),
      header('Subject', 'hi'),
      eoh(null),
      body('hello\r\n', { '{body}': 'chunk' }),
      eom(null),
    ],
  },
  {
    // Postfix sends an empty `D U` before each UNKNOWN (milter_unknown_command_macros is empty by default).
    title: 'UNKNOWN (empty D U + U) before MAIL and between two RCPTs, then a message',
    steps: () => [
      ...opening(),
      unknown({}, 'FOO one'),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      unknown({}, 'FOO two'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q1'),
    ],
  },
  {
    title: 'UNKNOWN with macros in its D U packet (libmilter drops D U as it drops D L and D B)',
    steps: () => [
      ...opening(),
      unknown({ i: 'U1', '{mail_addr}': 'unknown-1' }, 'FOO one'),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      unknown({ i: 'U2', '{rcpt_addr}': 'unknown-2' }, 'FOO two'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q1'),
    ],
    // st_macros() files no packet for SMFIC_UNKNOWN: xxfi_unknown sees the macros of the stages before,
    // and so does the engine's unknown handler (MacroStore drops `D U`). Under NOUNKNOWN the packets
    // still come and must not shadow the later stages' macros either.
    check: (shape, l) => {
      if (shape.off.includes('unknown')) return;
      const [l1, l2] = l.lines.filter((x) => x.startsWith('unknown'));
      assert.equal(l1, 'unknown j=mx.test _=client.test [192.0.2.1] {daemon_name}=mta', 'no D U macro');
      assert.equal(l2, 'unknown j=mx.test _=client.test [192.0.2.1] {daemon_name}=mta i=Q1 {mail_addr}=a@x {rcpt_addr}=b@x', 'no D U macro');
    },
  },
  {
    title: 'UNKNOWN between the last RCPT and the message',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      unknown({}, 'FOO'),
      ...message('Q1'),
    ],
    // libmilter's ST_UNKN may be followed by DATA but not by a header, EOH, body or end of message.
    // With DATA switched off the header comes next: an invalid transition, so libmilter goes back to
    // its HELO state and, that state not leading to a header either, ignores the command — every
    // header and the end of message too, which then gets no reply at all (an MTA would time out).
    // The engine takes the message.
    known: (shape) =>
      shape.off.includes('data') && !shape.off.includes('unknown')
        ? {
            why: 'libmilter ignores the message after an UNKNOWN when DATA is off, and never answers its end',
            check: (l, t) => {
              assert.match(l.replies.at(-1)!, /^none/, 'libmilter: no reply to end of message');
              assert.deepEqual(t.replies, [...l.replies.slice(0, -1), 'c'], 'engine: end of message answered');
              assert.deepEqual(l.lines.filter((x) => /^(header|eoh|body|eom)/.test(x)), [], 'libmilter: message ignored');
              assert.deepEqual(t.lines.filter((x) => !/^(header|eoh|body|eom)/.test(x)), l.lines, 'the other callbacks see the same macros');
              assert.ok(t.lines.some((x) => x.startsWith('eom')), 'engine: end of message handled');
            },
          }
        : undefined,
  },
  {
    title: 'UNKNOWN mid-transaction, then MAIL without ABORT (RSET after an unknown command)',
    steps: () => [
      ...opening(),
      mail({ i: 'Q1', '{mail_addr}': 'a@x' }, 'a@x'),
      rcpt({ '{rcpt_addr}': 'b@x' }, 'b@x'),
      unknown({}, 'FOO'),
      mail({ i: 'Q2', '{mail_addr}': 'again@x' }, 'again@x'),
      rcpt({ '{rcpt_addr}': 'c@x' }, 'c@x'),
      ...message('Q2'),
    ],
    // libmilter's ST_UNKN is not "in a mail transaction" (ST_IN_MAIL) and leads to MAIL: the first
    // transaction ends without xxfi_abort. The engine calls `abort` for the abandoned message (before
    // the new MAIL, whose D M has already arrived). Macros are the same everywhere else.
    known: (shape) =>
      shape.off.includes('unknown') || shape.off.includes('mailFrom')
        ? undefined
        : {
            why: 'libmilter calls no xxfi_abort when a new MAIL follows an UNKNOWN mid-transaction',
            check: (l, t) => {
              assert.deepEqual(t.replies, l.replies);
              assert.equal(count(l.lines, isAbort), 0, 'libmilter: no xxfi_abort');
              assert.deepEqual(t.lines.filter(isAbort), ['abort j=mx.test _=client.test [192.0.2.1] {daemon_name}=mta i=Q2 {mail_addr}=again@x {rcpt_addr}=b@x'], 'engine: one abort, before the new MAIL');
              assert.deepEqual(t.lines.filter((x) => !isAbort(x)), l.lines, 'the other callbacks see the same macros');
            },
          },
  },
];

describe('macro scoping compared with libmilter', { skip: skipReason }, () => {
  const children: ChildProcess[] = [];
  const servers: MilterServer[] = [];
  const lib = new Map<Shape, Target>();
  const themis = new Map<Shape, Target>();
  const kill = (): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };

  /** Starts the C milter asking for `shape` on a free loopback port (a second try if another process took the port meanwhile). */
  async function startLibmilter(shape: Shape): Promise<Target> {
    const t: Target = { name: 'libmilter', shape, port: 0, lines: [] };
    const bits = protocolOf(shape);
    for (let attempt = 0; attempt < 3 && !t.port; attempt++) {
      const port = await freePort();
      const p = spawn(binary, [...(bits ? ['-p', bits.toString(16)] : []), String(port), ...NAMES], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(p);
      let buf = '';
      let stderr = '';
      p.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        buf += chunk;
        const parts = buf.split('\n');
        buf = parts.pop()!;
        for (const l of parts) if (l !== 'ready') t.lines.push(l);
        if (parts.includes('ready')) t.port = port;
      });
      p.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      await waitUntil(() => t.port !== 0 || p.exitCode !== null, 5000, 10);
      if (!t.port) {
        if (p.exitCode === null) p.kill('SIGKILL');
        if (attempt === 2) throw new Error(`libmilter milter did not start: ${stderr.trim()}`);
      }
    }
    return t;
  }

  /** Starts an engine server whose application reports like the C milter and negotiates `shape`. */
  async function startThemis(shape: Shape): Promise<Target> {
    const t: Target = { name: 'themis', shape, port: 0, lines: [] };
    const record = (stage: string) => (s: MilterSession) => void t.lines.push(line(stage, (n) => s.macros.get(n)));
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
      unknown: record('unknown'),
      abort: record('abort'),
      close: record('close'),
      // The full shape keeps the default negotiation (every handler present: every stage, answered).
      ...(shape === FULL ? {} : { negotiation: { stages: STAGES.filter((st) => !shape.off.includes(st)), noReply: shape.noReply, answerData: false } }),
    };
    const server = createMilterServer(app);
    servers.push(server);
    await server.listen('inet:0@127.0.0.1');
    t.port = server.port!;
    return t;
  }

  before(async () => {
    onProcessExit(kill);
    for (const shape of SHAPES) {
      lib.set(shape, await startLibmilter(shape));
      themis.set(shape, await startThemis(shape));
    }
  });

  after(async () => {
    kill();
    await Promise.all(servers.map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Replays the scenario on both sides under `shape` and compares them — or, for a known difference,
   * checks that difference exactly; returns both outcomes for scenario-specific checks.
   */
  async function compare(shape: Shape, steps: Step[], known?: Known): Promise<{ lib: Outcome; themis: Outcome }> {
    const l = await replay(lib.get(shape)!, steps);
    const t = await replay(themis.get(shape)!, steps);
    const show = (o: Outcome): string => `replies ${o.replies.join(' ')}\n    ${o.lines.join('\n    ')}`;
    const detail = `\n  libmilter: ${show(l)}\n  themis:    ${show(t)}`;
    if (process.env.THEMIS_TEST_VERBOSE) console.log(detail.replace(/^/gm, '# '));
    assert.equal(l.replies[0], `O ${hex32(protocolOf(shape))}`, `the C milter did not negotiate the shape:${detail}`);
    if (known) {
      try {
        known.check(l, t);
      } catch (err) {
        throw new Error(`known difference (${known.why}) not as documented: ${(err as Error).message}${detail}`, { cause: err });
      }
      return { lib: l, themis: t };
    }
    assert.deepEqual(t.replies, l.replies, `reply codes differ:${detail}`);
    assert.deepEqual(t.lines, l.lines, `macros seen per callback differ:${detail}`);
    return { lib: l, themis: t };
  }

  for (const shape of SHAPES) {
    describe(`${shape.name} (protocol ${hex32(protocolOf(shape))})`, () => {
      for (const sc of SCENARIOS) {
        if (sc.shapes && !sc.shapes.includes(shape)) continue;
        it(sc.title, async () => {
          const { lib: l, themis: t } = await compare(shape, sc.steps(), sc.known?.(shape));
          sc.check?.(shape, l, t);
        });
      }
    });
  }
});
