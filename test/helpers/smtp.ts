/**
 * A minimal SMTP client for end-to-end tests that need what swaks cannot do, such as several
 * messages on one SMTP connection. Loopback only.
 */
import { connect, type Socket } from 'node:net';

/** One SMTP reply: code and the full text of all its lines. */
export interface SmtpResponse {
  code: number;
  text: string;
}

/** A line-oriented SMTP conversation. */
export class SmtpConversation {
  private readonly socket: Socket;
  private buffer = '';
  private lines: string[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    // Each command goes out in one write, at once: what is timed is the server, not this client.
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buffer += d;
      let i: number;
      while ((i = this.buffer.indexOf('\r\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, i));
        this.buffer = this.buffer.slice(i + 2);
      }
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  /** Connects to 127.0.0.1:port (from `localAddress`, another loopback address, when given) and reads the greeting. */
  static async open(port: number, timeoutMs?: number, localAddress?: string): Promise<{ smtp: SmtpConversation; greeting: SmtpResponse }> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}) });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    const smtp = new SmtpConversation(socket);
    return { smtp, greeting: await smtp.read(timeoutMs) };
  }

  /** Reads one (possibly multi-line) reply. */
  async read(timeoutMs = 20_000): Promise<SmtpResponse> {
    const deadline = Date.now() + timeoutMs;
    const text: string[] = [];
    for (;;) {
      while (this.lines.length === 0) {
        if (this.closed) throw new Error(`connection closed; partial reply ${JSON.stringify(text)}`);
        if (Date.now() > deadline) throw new Error('SMTP reply timed out');
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 50);
          this.waiter = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      const line = this.lines.shift()!;
      text.push(line);
      if (line.length < 4 || line[3] !== '-') return { code: Number(line.slice(0, 3)), text: text.join('\n') };
    }
  }

  /** Sends a command line and reads the reply. */
  async command(line: string, timeoutMs?: number): Promise<SmtpResponse> {
    this.socket.write(`${line}\r\n`);
    return this.read(timeoutMs);
  }

  /** MAIL, RCPT…, DATA and the message; returns every reply in order. */
  async send(from: string, to: string[], message: string): Promise<SmtpResponse[]> {
    const replies = [await this.command(`MAIL FROM:<${from}>`)];
    for (const r of to) replies.push(await this.command(`RCPT TO:<${r}>`));
    const data = await this.command('DATA');
    replies.push(data);
    if (data.code !== 354) return replies;
    const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
    this.socket.write(`${body}${body.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
    replies.push(await this.read());
    return replies;
  }

  /** Drops the connection without QUIT. */
  close(): void {
    this.socket.destroy();
  }

  /** QUIT and close. */
  async quit(timeoutMs?: number): Promise<void> {
    try {
      await this.command('QUIT', timeoutMs);
    } catch {
      // already closed
    }
    this.socket.destroy();
  }
}
