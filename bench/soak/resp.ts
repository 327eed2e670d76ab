/**
 * A minimal Redis client for the soak run: one TCP connection on loopback, RESP2, commands answered in
 * order. It only has to read DBSIZE, INFO and SCAN, so it carries no dependency and no reconnection.
 * @module
 */
import { connect, type Socket } from 'node:net';

/** A RESP2 reply. */
export type Reply = string | number | null | Error | Reply[];

/** A Redis connection on 127.0.0.1:`port`. */
export class Resp {
  private readonly sock: Socket;
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private closed: Error | undefined;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => this.onData(d));
    const fail = (err: Error) => {
      this.closed = err;
      for (const p of this.pending.splice(0)) p.reject(err);
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('redis connection closed')));
  }

  /** Connects to redis-server on 127.0.0.1:`port`. */
  static open(port: number): Promise<Resp> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.off('error', reject);
        resolve(new Resp(s));
      });
      s.once('error', reject);
    });
  }

  /** Sends one command; resolves with its reply (an error reply rejects). */
  command(...args: (string | number)[]): Promise<Reply> {
    if (this.closed) return Promise.reject(this.closed);
    const parts = [`*${args.length}\r\n`];
    for (const a of args) {
      const s = String(a);
      parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);
    }
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve: (r) => (r instanceof Error ? reject(r) : resolve(r)), reject });
      this.sock.write(parts.join(''));
    });
  }

  /** DBSIZE. */
  async dbsize(): Promise<number> {
    return Number(await this.command('DBSIZE'));
  }

  /** INFO `section` as name → value. */
  async info(section: string): Promise<Map<string, string>> {
    const text = String(await this.command('INFO', section));
    const out = new Map<string, string>();
    for (const line of text.split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0 && !line.startsWith('#')) out.set(line.slice(0, i), line.slice(i + 1));
    }
    return out;
  }

  /** Every key (SCAN, 1,000 at a time). */
  async keys(): Promise<string[]> {
    const out: string[] = [];
    let cursor = '0';
    do {
      const r = (await this.command('SCAN', cursor, 'COUNT', 1000)) as Reply[];
      cursor = String(r[0]);
      for (const k of r[1] as Reply[]) out.push(String(k));
    } while (cursor !== '0');
    return out;
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    for (;;) {
      const r = parse(this.buf, 0);
      if (r === undefined) return;
      this.buf = this.buf.subarray(r.end);
      this.pending.shift()?.resolve(r.value);
    }
  }
}

/** Parses one reply at `pos`; undefined while it is incomplete. */
function parse(b: Buffer, pos: number): { value: Reply; end: number } | undefined {
  const eol = b.indexOf('\r\n', pos);
  if (eol < 0) return undefined;
  const line = b.toString('utf8', pos + 1, eol);
  switch (b[pos]) {
    case 0x2b: // +
      return { value: line, end: eol + 2 };
    case 0x2d: // -
      return { value: new Error(line), end: eol + 2 };
    case 0x3a: // :
      return { value: Number(line), end: eol + 2 };
    case 0x24: {
      // $
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      if (b.length < eol + 2 + n + 2) return undefined;
      return { value: b.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case 0x2a: {
      // *
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      const items: Reply[] = [];
      let p = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = parse(b, p);
        if (r === undefined) return undefined;
        items.push(r.value);
        p = r.end;
      }
      return { value: items, end: p };
    }
    default:
      throw new Error(`unexpected RESP byte 0x${b[pos].toString(16)}`);
  }
}
