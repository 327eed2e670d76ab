/**
 * The MTA side of bench/dkim.ts: plays Postfix against a milter, like bench/load.ts (same packet
 * sequence: OPTNEG v6 offering every action and protocol bit, `D C`+CONNECT, `D H`+HELO, then per
 * message `D M`+MAIL, R × (`D R`+RCPT), `D T`+DATA, the headers, `D N`+EOH, the body in ≤ 65535-byte
 * chunks, `D E`+EOM, ABORT; ABORT+QUIT at the end of a session), honouring what the milter negotiates
 * (NO*: the event is not sent; NR*: no reply awaited; SKIP).
 *
 * Why not load.ts itself: load.ts sends fixed headers (its Date: and Message-ID: change with every run)
 * and counts the modifications by kind only. The DKIM cases need the message to be chosen (the verify
 * case sends one that carries two signatures made beforehand) and the modifications read (a benchmark of
 * a milter that neither signed nor verified is worthless): every message's modifications are checked
 * here — the sign case wants two DKIM-Signature headers inserted, the verify case an
 * Authentication-Results with two dkim=pass.
 * @module
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { encodeChunks, encodeConnect, encodeMacros, encodeOptionNegotiation, encodePacket, encodeStrings, FrameDecoder } from '../../src/milter/codec.ts';
import { ALL_ACTIONS, ALL_PROTOCOL, Command, MILTER_VERSION, Protocol, Response } from '../../src/milter/constants.ts';
import { clockTicks, readProcCpu } from '../load.ts';

export const CLIENT_NAME = 'client.example.test';
export const CLIENT_ADDR = '192.0.2.10';
export const QUEUE_ID = '4D2C1B0A99';

/** A header modification the milter asked for. */
export interface HeaderMod {
  kind: 'addheader' | 'insheader' | 'chgheader';
  index: number;
  name: string;
  value: string;
}

export interface RunOptions {
  port: number;
  connections: number;
  messages: number;
  msgsPerConn: number;
  sender: string;
  rcpts: string[];
  /** The message's headers, as the MTA hands them to a milter (value without the leading space; folds as LF + WSP). */
  headers: [string, string][];
  /** The body, CRLF line ends. */
  body: Buffer;
  /** Measure this process's CPU (all threads, /proc/PID/stat). */
  milterPid?: number;
  /** Called with every message's header modifications; returns false when the milter did not do its job. */
  check: (mods: HeaderMod[]) => boolean;
  timeoutMs?: number;
}

export interface RunResult {
  messages: number;
  /** Messages accepted or continued at EOM and passing `check`. */
  ok: number;
  /** Messages whose modifications failed `check`. */
  checkFailed: number;
  /** Other verdicts (reject, tempfail, …) and protocol errors. */
  errors: string[];
  seconds: number;
  msgsPerS: number;
  /** Milter CPU ms per message (utime+stime of every thread), and its user part. */
  cpuMsPerMsg: number | null;
  userMsPerMsg: number | null;
  /** The first message's modifications. */
  sample: HeaderMod[];
  p50: number;
  p99: number;
}

/** One packet of a message, and the protocol bits that switch its event off and its reply off. */
interface Step {
  macro: Buffer | null;
  packet: Buffer;
  no: number;
  nr: number;
  eom?: boolean;
  body?: boolean;
}

function buildSteps(o: RunOptions): { setup: Step[]; message: Step[] } {
  const setup: Step[] = [
    {
      macro: encodeMacros(Command.CONNECT, [['j', 'mx.example.test'], ['{daemon_name}', 'mx.example.test'], ['v', 'Postfix 3.7.11'], ['_', `${CLIENT_NAME} [${CLIENT_ADDR}]`], ['{client_addr}', CLIENT_ADDR], ['{client_name}', CLIENT_NAME]]),
      packet: encodeConnect({ hostname: CLIENT_NAME, family: '4', port: 45678, address: CLIENT_ADDR }),
      no: Protocol.NOCONNECT,
      nr: Protocol.NR_CONN,
    },
    { macro: encodeMacros(Command.HELO, []), packet: encodeStrings(Command.HELO, [CLIENT_NAME]), no: Protocol.NOHELO, nr: Protocol.NR_HELO },
  ];
  const message: Step[] = [
    { macro: encodeMacros(Command.MAIL, [['{mail_addr}', o.sender], ['{mail_mailer}', 'smtp']]), packet: encodeStrings(Command.MAIL, [`<${o.sender}>`, `SIZE=${o.body.length}`]), no: Protocol.NOMAIL, nr: Protocol.NR_MAIL },
  ];
  o.rcpts.forEach((r, i) => {
    const m: [string, string][] = [['{rcpt_addr}', r], ['{rcpt_mailer}', 'smtp']];
    if (i > 0) m.unshift(['i', QUEUE_ID]);
    message.push({ macro: encodeMacros(Command.RCPT, m), packet: encodeStrings(Command.RCPT, [`<${r}>`]), no: Protocol.NORCPT, nr: Protocol.NR_RCPT });
  });
  message.push({ macro: encodeMacros(Command.DATA, [['i', QUEUE_ID]]), packet: encodePacket(Command.DATA), no: Protocol.NODATA, nr: Protocol.NR_DATA });
  const eohMacro = encodeMacros(Command.HEADER, [['i', QUEUE_ID]]);
  for (const [name, value] of o.headers) message.push({ macro: eohMacro, packet: encodeStrings(Command.HEADER, [name, value]), no: Protocol.NOHDRS, nr: Protocol.NR_HDR });
  message.push({ macro: encodeMacros(Command.EOH, [['i', QUEUE_ID]]), packet: encodePacket(Command.EOH), no: Protocol.NOEOH, nr: Protocol.NR_EOH });
  const eomMacro = encodeMacros(Command.BODY, [['i', QUEUE_ID]]);
  for (const chunk of encodeChunks(Command.BODY, o.body)) message.push({ macro: eomMacro, packet: chunk, no: Protocol.NOBODY, nr: Protocol.NR_BODY, body: true });
  message.push({ macro: encodeMacros(Command.BODYEOB, [['i', QUEUE_ID]]), packet: encodePacket(Command.BODYEOB), no: 0, nr: 0, eom: true });
  return { setup, message };
}

/** A connection with an awaitable frame queue. */
class Conn {
  private readonly decoder = new FrameDecoder();
  private readonly frames: [number, Buffer][] = [];
  private waiter: ((f: [number, Buffer]) => void) | null = null;
  private failure: Error | null = null;
  private failWaiter: ((e: Error) => void) | null = null;
  readonly socket: Socket;
  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d) =>
      this.decoder.push(d, (code, payload) => {
        const f: [number, Buffer] = [code, Buffer.from(payload)];
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = null;
          this.failWaiter = null;
          w(f);
        } else this.frames.push(f);
      }),
    );
    const fail = (e: Error) => {
      this.failure ??= e;
      if (this.failWaiter) {
        const w = this.failWaiter;
        this.waiter = null;
        this.failWaiter = null;
        w(e);
      }
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed by the milter')));
  }
  next(): Promise<[number, Buffer]> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }
}

function cstrings(b: Buffer, start: number): string[] {
  const out: string[] = [];
  let s = start;
  for (let i = start; i < b.length; i++) if (b[i] === 0) {
    out.push(b.toString('utf8', s, i));
    s = i + 1;
  }
  return out;
}

function openConn(port: number): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(new Conn(s));
    });
    s.once('error', reject);
  });
}

/** Runs the load; resolves when every message is decided and every session closed. */
export async function runClient(o: RunOptions): Promise<RunResult> {
  const { setup, message } = buildSteps(o);
  const latencies: number[] = [];
  const errors: string[] = [];
  let ok = 0;
  let checkFailed = 0;
  let sample: HeaderMod[] | null = null;
  let remaining = o.messages;
  const timeoutMs = o.timeoutMs ?? 30_000;

  const session = async (count: number): Promise<void> => {
    const conn = await openConn(o.port);
    const write = (b: Buffer) => conn.socket.write(b);
    const reply = async (): Promise<[number, Buffer]> => {
      for (;;) {
        const t = setTimeout(() => conn.socket.destroy(new Error(`no reply in ${timeoutMs} ms`)), timeoutMs);
        const f = await conn.next().finally(() => clearTimeout(t));
        if (f[0] !== Response.PROGRESS) return f;
      }
    };
    write(encodeOptionNegotiation({ version: MILTER_VERSION, actions: ALL_ACTIONS, protocol: ALL_PROTOCOL }));
    const [oc, op] = await reply();
    if (oc !== Response.OPTNEG) throw new Error(`OPTNEG answered with ${String.fromCharCode(oc)}`);
    const pf = op.readUInt32BE(8);
    const send = async (st: Step): Promise<number> => {
      if (st.macro) write(st.macro);
      if (pf & st.no) return Response.CONTINUE;
      write(st.packet);
      if (pf & st.nr) return Response.CONTINUE;
      return (await reply())[0];
    };
    for (const st of setup) {
      const c = await send(st);
      if (c !== Response.CONTINUE) throw new Error(`session refused: ${String.fromCharCode(c)}`);
    }
    for (let m = 0; m < count; m++) {
      const t0 = performance.now();
      let verdict: number = Response.CONTINUE;
      let skipping = false;
      let replyText = '';
      const mods: HeaderMod[] = [];
      for (const st of message) {
        if (st.body && skipping) continue;
        if (!st.eom) {
          const c = await send(st);
          if (c === Response.SKIP) skipping = true;
          else if (c !== Response.CONTINUE) {
            verdict = c;
            break;
          }
          continue;
        }
        write(st.macro!);
        write(st.packet);
        for (;;) {
          const [c, p] = await reply();
          if (c === Response.INSHEADER || c === Response.CHGHEADER) {
            const [name, value] = cstrings(p, 4);
            mods.push({ kind: c === Response.INSHEADER ? 'insheader' : 'chgheader', index: p.readUInt32BE(0), name, value });
          } else if (c === Response.ADDHEADER) {
            const [name, value] = cstrings(p, 0);
            mods.push({ kind: 'addheader', index: -1, name, value });
          } else if (c === Response.ADDRCPT || c === Response.DELRCPT || c === Response.ADDRCPT_PAR || c === Response.CHGFROM || c === Response.REPLBODY || c === Response.QUARANTINE) {
            // not expected here; ignored
          } else {
            verdict = c;
            if (c === Response.REPLYCODE) replyText = p.toString('latin1').replace(/\0$/, '');
            break;
          }
        }
      }
      latencies.push(performance.now() - t0);
      write(encodePacket(Command.ABORT));
      sample ??= mods;
      if (verdict === Response.CONTINUE || verdict === Response.ACCEPT) {
        if (o.check(mods)) ok++;
        else checkFailed++;
      } else errors.push(`verdict ${String.fromCharCode(verdict)}${replyText ? ` ${replyText}` : ''}`);
    }
    write(encodePacket(Command.QUIT));
    conn.socket.end();
    await new Promise<void>((r) => (conn.socket.closed ? r() : conn.socket.once('close', () => r())));
  };

  const worker = async (): Promise<void> => {
    while (remaining > 0) {
      const n = Math.min(o.msgsPerConn, remaining);
      remaining -= n;
      try {
        await session(n);
      } catch (e) {
        errors.push(`session: ${(e as Error).message}`);
      }
    }
  };

  const c0 = o.milterPid !== undefined ? readProcCpu(o.milterPid) : undefined;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: o.connections }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const c1 = o.milterPid !== undefined ? readProcCpu(o.milterPid) : undefined;
  const tck = clockTicks();
  const n = Math.max(o.messages, 1);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] : NaN);
  return {
    messages: o.messages,
    ok,
    checkFailed,
    errors,
    seconds,
    msgsPerS: ok / seconds,
    cpuMsPerMsg: c0 && c1 ? ((c1.ticks - c0.ticks) * 1000) / tck / n : null,
    userMsPerMsg: c0 && c1 ? ((c1.userTicks - c0.userTicks) * 1000) / tck / n : null,
    sample: sample ?? [],
    p50: pct(50),
    p99: pct(99),
  };
}
