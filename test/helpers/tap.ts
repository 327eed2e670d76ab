/**
 * A proxy between an MTA and a milter: forwards bytes both ways unchanged and decodes the MTA's
 * side, so a test can assert which events the MTA actually sent (e.g. no body packets) and how the
 * MTA grouped them into writes.
 */
import { chmodSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FrameDecoder, codeName, readConnect, readMacros } from '../../src/milter/index.ts';

/**
 * The MTA wrote again although nothing answered its previous write: that write ended on a packet
 * boundary with a packet the milter does not answer. Over TCP this is the pattern that makes the MTA
 * wait for a delayed ACK (Nagle holds the second write until the first is acknowledged, and the
 * milter's kernel delays that ACK because no answer carries it).
 */
export interface UnansweredFlush {
  /** Tap connection number (1-based, in accept order). */
  conn: number;
  /** Packets of the unanswered write, by name (`SMFIC_MACRO/T`, `SMFIC_DATA`, …). */
  write: string[];
  /** The first packets of the MTA's next write. */
  next: string[];
  /** Milliseconds between the two writes. */
  gapMs: number;
}

/** One CONNECT the MTA sent: the client as the packet has it, and the macros sent with it. */
export interface TappedConnect {
  /** Tap connection number (1-based, in accept order). */
  conn: number;
  hostname: string;
  family: string;
  address: string | undefined;
  /** The macros of the CONNECT stage (`{client_addr}`, `j`, …), as the MTA sent them. */
  macros: Record<string, string>;
}

/** A running tap. */
export interface MilterTap {
  /** Port the MTA connects to (0 when listening on a UNIX socket). */
  port: number;
  /** `inet:127.0.0.1:PORT` or `unix:/path`: what to give Postfix as its milter. */
  postfixSpec: string;
  /** Commands seen from the MTA, by name (`SMFIC_BODY`: 3). */
  counts(): Record<string, number>;
  /** Every CONNECT the MTA sent so far, in order. */
  connects(): TappedConnect[];
  /** Writes from the MTA (reads that ended on a packet boundary) so far, over all connections. */
  writes(): number;
  /** Every {@link UnansweredFlush} seen so far. */
  unansweredFlushes(): UnansweredFlush[];
  /**
   * Per finished message (one entry per end-of-message answer), the milliseconds the MTA waited for
   * the milter's answers on that connection since the previous message: from the end of each
   * answered write to the first byte of its answer, summed. This is the milter's own latency as the
   * MTA sees it, plus two loopback hops through the tap.
   */
  answerWaits(): number[];
  /** Where new connections are forwarded to from now on (a TCP port on 127.0.0.1). */
  retarget(port: number): void;
  close(): Promise<void>;
}

/** Options of {@link startTap}. */
export interface TapOptions {
  /** Listen on this UNIX socket path (mode 0666, for Postfix's unprivileged smtpd) instead of a TCP port. */
  unixPath?: string;
}

/** Starts a tap on a random loopback port (or a UNIX socket) in front of the milter at 127.0.0.1:`targetPort`. */
export async function startTap(targetPort: number, options: TapOptions = {}): Promise<MilterTap> {
  const counts: Record<string, number> = {};
  const flushes: UnansweredFlush[] = [];
  const waits: number[] = [];
  const connects: TappedConnect[] = [];
  const sockets = new Set<Socket>();
  let target = targetPort;
  let conns = 0;
  let writes = 0;
  const server: Server = createServer({ noDelay: true }, (mta) => {
    const conn = ++conns;
    const milter = connect({ host: '127.0.0.1', port: target, noDelay: true });
    const decoder = new FrameDecoder(16 * 1024 * 1024);
    sockets.add(mta).add(milter);
    // The MTA's current write, while it is unanswered: its packets and when it ended.
    let pending: { frames: string[]; at: number } | undefined;
    let frames: string[] = [];
    // The MTA's last complete write, until the milter answers it; and the waits of the open message.
    let awaiting: { at: number; eom: boolean } | undefined;
    let messageWait = 0;
    // The macros sent for the next CONNECT (SMFIC_MACRO for command C comes first).
    let connectMacros: Record<string, string> = {};
    mta.on('data', (chunk: Buffer) => {
      const now = performance.now();
      decoder.push(chunk, (code, payload) => {
        const name = codeName(code);
        counts[name] = (counts[name] ?? 0) + 1;
        if (name === 'SMFIC_MACRO' && payload[0] === 0x43) {
          const { pairs } = readMacros(payload);
          connectMacros = {};
          for (let i = 0; i < pairs.length; i += 2) connectMacros[pairs[i]] = pairs[i + 1];
        } else if (name === 'SMFIC_CONNECT') {
          const c = readConnect(payload);
          connects.push({ conn, hostname: c.hostname, family: c.family, address: c.address, macros: connectMacros });
          connectMacros = {};
        }
        frames.push(name === 'SMFIC_MACRO' && payload.length > 0 ? `${name}/${String.fromCharCode(payload[0])}` : name);
      });
      milter.write(chunk);
      if (pending) {
        flushes.push({ conn, write: pending.frames, next: frames.slice(0, 4), gapMs: Math.round((now - pending.at) * 10) / 10 });
        pending = undefined;
      }
      // A read that ends inside a packet is part of a larger write still arriving.
      if (decoder.pendingBytes === 0 && frames.length > 0) {
        writes++;
        pending = { frames, at: now };
        awaiting = { at: now, eom: frames.at(-1) === 'SMFIC_BODYEOB' };
        frames = [];
      }
    });
    milter.on('data', (chunk: Buffer) => {
      pending = undefined;
      if (awaiting) {
        messageWait += performance.now() - awaiting.at;
        if (awaiting.eom) {
          waits.push(messageWait);
          messageWait = 0;
        }
        awaiting = undefined;
      }
      mta.write(chunk);
    });
    const end = () => {
      mta.destroy();
      milter.destroy();
      sockets.delete(mta);
      sockets.delete(milter);
    };
    mta.on('close', end).on('error', end);
    milter.on('close', end).on('error', end);
  });
  if (options.unixPath) {
    await new Promise<void>((resolve) => server.listen(options.unixPath, resolve));
    chmodSync(options.unixPath, 0o666);
  } else await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = options.unixPath ? 0 : (server.address() as { port: number }).port;
  return {
    port,
    postfixSpec: options.unixPath ? `unix:${options.unixPath}` : `inet:127.0.0.1:${port}`,
    counts: () => ({ ...counts }),
    connects: () => connects.map((c) => ({ ...c, macros: { ...c.macros } })),
    writes: () => writes,
    unansweredFlushes: () => [...flushes],
    answerWaits: () => [...waits],
    retarget: (p) => void (target = p),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
