/**
 * The daemon's status endpoint: `GET /status` (JSON: version, configuration hash and load time,
 * connections, store, workers), `GET /metrics` (Prometheus text) and `GET /healthz`. It listens on
 * loopback by default; it is read-only, so it changes nothing a client could abuse beyond reading.
 * @module
 */
import { createServer, type Server } from 'node:http';
import { unlink } from 'node:fs/promises';
import { formatSocketSpec, parseSocketSpec } from '../milter/index.ts';

/** Default socket of the status endpoint. */
export const DEFAULT_HTTP = 'inet:8441@127.0.0.1';

/** What the endpoint serves. */
export interface StatusSource {
  /** The `/status` document. */
  status(): Promise<unknown>;
  /** The `/metrics` exposition. */
  metrics(): Promise<{ contentType: string; body: string }>;
}

/** A listening status endpoint. */
export interface StatusServer {
  /** The bound address, as a socket spec (with the real port). */
  address: string;
  /** Stops listening. */
  close(): Promise<void>;
}

/** Starts the endpoint on a socket spec (`inet:PORT@HOST`, `inet6:…`, `unix:/path`). */
export async function startStatusServer(spec: string, source: StatusSource, onError: (err: unknown) => void): Promise<StatusServer> {
  const parsed = parseSocketSpec(spec);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    const answer =
      path === '/status'
        ? source.status().then((s) => send(200, 'application/json', `${JSON.stringify(s, null, 2)}\n`))
        : path === '/metrics'
          ? source.metrics().then((m) => send(200, m.contentType, m.body))
          : path === '/healthz'
            ? Promise.resolve(send(200, 'text/plain', 'ok\n'))
            : Promise.resolve(send(404, 'text/plain', 'not found: try /status, /metrics or /healthz\n'));
    answer.catch((err: unknown) => {
      onError(err);
      if (!res.headersSent) send(500, 'text/plain', `${(err as Error).message}\n`);
      else res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  if (parsed.kind === 'unix') await unlink(parsed.path).catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (parsed.kind === 'unix') server.listen(parsed.path, done);
    else server.listen({ host: parsed.host, port: parsed.port, ipv6Only: parsed.family === 6 }, done);
  });
  server.on('error', onError);
  const a = server.address();
  const address = parsed.kind === 'unix' ? formatSocketSpec(parsed) : formatSocketSpec({ ...parsed, port: a && typeof a === 'object' ? a.port : parsed.port });
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Reads a JSON document from a status endpoint (what `themis status` does). */
export async function fetchStatus(spec: string, path = '/status', timeoutMs = 5_000): Promise<unknown> {
  const parsed = parseSocketSpec(spec);
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(
      parsed.kind === 'unix' ? { socketPath: parsed.path, path, timeout: timeoutMs } : { host: parsed.host, port: parsed.port, path, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          if (res.statusCode !== 200) return reject(new Error(`${spec}${path} answered ${res.statusCode}: ${body.trim()}`));
          try {
            resolve(JSON.parse(body));
          } catch (err) {
            reject(err as Error);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${spec}${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
