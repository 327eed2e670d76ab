/**
 * A counting proxy between an MTA and a milter: forwards bytes both ways unchanged and decodes the
 * MTA's side, so a test can assert which events the MTA actually sent (e.g. no body packets).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FrameDecoder, codeName } from '../../src/milter/index.ts';

/** A running tap. */
export interface MilterTap {
  /** Port the MTA connects to. */
  port: number;
  /** Commands seen from the MTA, by name (`SMFIC_BODY`: 3). */
  counts(): Record<string, number>;
  close(): Promise<void>;
}

/** Starts a tap on a random loopback port in front of the milter at 127.0.0.1:`targetPort`. */
export async function startTap(targetPort: number): Promise<MilterTap> {
  const counts: Record<string, number> = {};
  const sockets = new Set<Socket>();
  const server: Server = createServer((mta) => {
    const milter = connect({ host: '127.0.0.1', port: targetPort });
    const decoder = new FrameDecoder(16 * 1024 * 1024);
    sockets.add(mta).add(milter);
    mta.on('data', (chunk: Buffer) => {
      decoder.push(chunk, (code) => {
        const name = codeName(code);
        counts[name] = (counts[name] ?? 0) + 1;
      });
      milter.write(chunk);
    });
    milter.on('data', (chunk: Buffer) => mta.write(chunk));
    const end = () => {
      mta.destroy();
      milter.destroy();
      sockets.delete(mta);
      sockets.delete(milter);
    };
    mta.on('close', end).on('error', end);
    milter.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    counts: () => ({ ...counts }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
