/**
 * A tiny SMTP sink on 127.0.0.1 for the throwaway MTAs of the tests (Postfix, Sendmail): it accepts
 * every message and writes it as `NNNNNN.msg` — a first line holding the envelope as JSON, then the
 * message bytes exactly as received (dot-unstuffed, CRLF line ends). Files are written under a
 * temporary name and renamed, so only complete messages are ever visible, and the sink answers 250
 * only after the rename.
 */
import { rename, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

/** The name the sink gives itself in its greeting and replies. */
export const SINK_HOSTNAME = 'sink.example.test';

export interface DeliveredMessage {
  /** absolute path of the sink file holding this message */
  file: string;
  /** the message as received by the sink (headers + CRLF CRLF + body), decoded as UTF-8 */
  raw: string;
  /** header fields in order: name as written, value unfolded and without leading whitespace */
  headers: [string, string][];
  /** everything after the blank line that ends the header section */
  body: string;
  /** MAIL FROM address without angle brackets ('' for the null sender) */
  envelopeFrom?: string;
  /** RCPT TO addresses without angle brackets */
  envelopeTo?: string[];
}

/** A running sink. */
export interface Sink {
  port: number;
  close(): Promise<void>;
}

interface SinkEnvelope {
  from: string;
  to: string[];
  helo?: string;
  client?: string;
  receivedAt: string;
}

function parsePath(arg: string): string {
  // "<addr> PARAM=..." or "addr PARAM" -> addr
  const s = arg.trim();
  if (s.startsWith('<')) {
    const end = s.indexOf('>');
    return end < 0 ? s.slice(1) : s.slice(1, end);
  }
  return s.split(/\s+/)[0] ?? '';
}

/** Starts a sink writing into `dir` on a random loopback port. */
export function startSink(dir: string): Promise<Sink> {
  let seq = 0;
  const sockets = new Set<Socket>();

  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let mode: 'cmd' | 'data' = 'cmd';
    let helo: string | undefined;
    let from: string | undefined;
    let rcpts: string[] = [];
    let dataLines: Buffer[] = [];
    let busy = false;
    let closed = false;

    const reply = (s: string): void => {
      if (!closed && !sock.destroyed) sock.write(s + '\r\n');
    };

    const handleCommand = async (line: string): Promise<void> => {
      const verb = line.split(' ', 1)[0].toUpperCase();
      const arg = line.slice(verb.length).trim();
      switch (verb) {
        case 'EHLO':
          helo = arg;
          reply(`250-${SINK_HOSTNAME}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 0`);
          return;
        case 'HELO':
          helo = arg;
          reply(`250 ${SINK_HOSTNAME}`);
          return;
        case 'MAIL': {
          const m = /^FROM:\s*(.*)$/i.exec(arg);
          if (!m) return reply('501 5.5.4 Syntax: MAIL FROM:<address>');
          from = parsePath(m[1]);
          rcpts = [];
          return reply('250 2.1.0 Ok');
        }
        case 'RCPT': {
          const m = /^TO:\s*(.*)$/i.exec(arg);
          if (!m) return reply('501 5.5.4 Syntax: RCPT TO:<address>');
          if (from === undefined) return reply('503 5.5.1 Error: need MAIL command');
          rcpts.push(parsePath(m[1]));
          return reply('250 2.1.5 Ok');
        }
        case 'DATA':
          if (from === undefined || rcpts.length === 0) return reply('503 5.5.1 Error: need RCPT command');
          mode = 'data';
          dataLines = [];
          return reply('354 End data with <CR><LF>.<CR><LF>');
        case 'RSET':
          from = undefined;
          rcpts = [];
          return reply('250 2.0.0 Ok');
        case 'NOOP':
          return reply('250 2.0.0 Ok');
        case 'QUIT':
          reply(`221 2.0.0 ${SINK_HOSTNAME} Bye`);
          closed = true;
          sock.end();
          return;
        default:
          return reply('502 5.5.2 Error: command not recognized');
      }
    };

    const finishData = async (): Promise<void> => {
      const raw = Buffer.concat(dataLines.flatMap((l) => [l, Buffer.from('\r\n')]));
      dataLines = [];
      mode = 'cmd';
      const env: SinkEnvelope = {
        from: from ?? '',
        to: rcpts,
        helo,
        client: `${sock.remoteAddress}:${sock.remotePort}`,
        receivedAt: new Date().toISOString(),
      };
      from = undefined;
      rcpts = [];
      const n = ++seq;
      const name = String(n).padStart(6, '0');
      const tmp = join(dir, `.${name}.tmp`);
      try {
        await writeFile(tmp, Buffer.concat([Buffer.from(JSON.stringify(env) + '\n'), raw]));
        await rename(tmp, join(dir, `${name}.msg`));
        reply(`250 2.0.0 Ok: queued as SINK${name}`);
      } catch (e) {
        reply(`451 4.3.0 sink cannot store message: ${(e as Error).message}`);
      }
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          const i = buf.indexOf('\r\n');
          if (i < 0) break;
          const line = buf.subarray(0, i);
          buf = buf.subarray(i + 2);
          if (mode === 'data') {
            if (line.length === 1 && line[0] === 0x2e) await finishData();
            else dataLines.push(Buffer.from(line[0] === 0x2e ? line.subarray(1) : line));
          } else {
            await handleCommand(line.toString('latin1'));
          }
          if (closed) break;
        }
      } finally {
        busy = false;
      }
    };

    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      void pump();
    });
    reply(`220 ${SINK_HOSTNAME} ESMTP themis test sink`);
  });

  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      resolve({
        port,
        close: () =>
          new Promise<void>((res) => {
            for (const s of sockets) s.destroy();
            server.close(() => res());
          }),
      });
    });
  });
}

/** Reads back one `NNNNNN.msg` file written by the sink. */
export function parseMessageFile(file: string, data: Buffer): DeliveredMessage {
  const nl = data.indexOf(0x0a);
  const env = JSON.parse(data.subarray(0, nl).toString('utf8')) as SinkEnvelope;
  const raw = data.subarray(nl + 1).toString('utf8');
  let sep = raw.indexOf('\r\n\r\n');
  let sepLen = 4;
  if (sep < 0) {
    const lf = raw.indexOf('\n\n');
    if (lf >= 0) {
      sep = lf;
      sepLen = 2;
    }
  }
  const head = sep < 0 ? raw : raw.slice(0, sep);
  const body = sep < 0 ? '' : raw.slice(sep + sepLen);
  const headers: [string, string][] = [];
  for (const line of head.split(/\r?\n/)) {
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && headers.length > 0) {
      headers[headers.length - 1][1] += line; // unfold: drop the CRLF, keep the whitespace
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    headers.push([line.slice(0, colon), line.slice(colon + 1).replace(/^[ \t]+/, '')]);
  }
  return { file, raw, headers, body, envelopeFrom: env.from, envelopeTo: env.to };
}
