/**
 * A raw MTA-side socket for byte-level tests: write exact bytes, read whole packets back.
 */
import { connect, type Socket } from 'node:net';
import { FrameDecoder } from '../../src/milter/index.ts';

/** Hex string (spaces allowed) to bytes. */
export function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

/** Bytes to a spaced hex string, for readable assertion failures. */
export function toHex(b: Buffer): string {
  return b.toString('hex').replace(/(..)/g, '$1 ').trim();
}

/** One packet as read back: code and payload. */
export interface Packet {
  code: number;
  payload: Buffer;
  /** The whole packet re-encoded (length, code, payload), to compare with vectors. */
  bytes: Buffer;
}

/** A raw connection to a milter. */
export class RawConnection {
  readonly socket: Socket;
  private readonly packets: Packet[] = [];
  private waiters: (() => void)[] = [];
  private ended = false;
  private readonly decoder = new FrameDecoder(16 * 1024 * 1024);

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) =>
      this.decoder.push(chunk, (code, payload) => {
        const bytes = Buffer.alloc(5 + payload.length);
        bytes.writeUInt32BE(payload.length + 1, 0);
        bytes[4] = code;
        payload.copy(bytes, 5);
        this.packets.push({ code, payload: Buffer.from(payload), bytes });
        this.wake();
      }),
    );
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static open(port: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => resolve(new RawConnection(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  write(...buffers: Buffer[]): void {
    this.socket.write(Buffer.concat(buffers));
  }

  /** Resolves with the next packet; rejects if the connection closes or nothing comes in time. */
  async next(timeoutMs = 2000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs;
    while (this.packets.length === 0) {
      if (this.ended) throw new Error('connection closed while waiting for a packet');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a packet');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.packets.shift()!;
  }

  /** Asserts helper: true when no packet arrives within `ms`. */
  async silentFor(ms: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, ms));
    return this.packets.length === 0;
  }

  /** Resolves true when the peer closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return this.ended;
  }

  get isClosed(): boolean {
    return this.ended;
  }

  pending(): Packet[] {
    return this.packets.splice(0);
  }

  close(): void {
    this.socket.destroy();
  }
}
