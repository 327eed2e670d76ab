/**
 * A TCP proxy in front of a local server (redis-server) that counts the client's writes: each read of
 * the client's stream here is one request the client sent, so a client that waits for the answer
 * before its next request makes one network round trip per write. `onRequest` sees each chunk the
 * client sent (to parse the commands in it).
 * @module
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** The proxy: its port, the writes counted since the last reset, and close. */
export interface CountingProxy {
  port: number;
  writes: () => number;
  reset: () => void;
  close: () => void;
}

/** Starts a counting proxy on 127.0.0.1 (a free port) to `target` on 127.0.0.1. */
export function countingProxy(target: number, onRequest?: (chunk: Buffer) => void): Promise<CountingProxy> {
  let writes = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('data', (d) => {
      writes++;
      onRequest?.(d);
      upstream.write(d);
    });
    upstream.on('data', (d) => client.write(d));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({
        port: typeof a === 'object' && a ? a.port : 0,
        writes: () => writes,
        reset: () => void (writes = 0),
        close: () => {
          for (const s of sockets) s.destroy();
          server.close();
        },
      });
    }),
  );
}
