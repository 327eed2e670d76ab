/**
 * The daemon's status endpoint: `GET /status` (JSON: version, configuration hash and load time,
 * connections, store, workers), `GET /metrics` (Prometheus text), `GET /healthz`, and the routes
 * plugins add (the monitor's dashboard and JSON API). It listens on loopback by default and is
 * read-only; with a bearer token set, everything but `/healthz` needs it.
 * @module
 */
import { createServer, type Server } from 'node:http';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { HttpRequest, HttpResponse } from '../kernel/plugin.ts';
import { unlink } from 'node:fs/promises';
import { formatSocketSpec, parseSocketSpec } from '../milter/index.ts';

/** Default socket of the status endpoint. */
export const DEFAULT_HTTP = 'inet:8441@127.0.0.1';

/** What the endpoint serves. */
export interface StatusSource {
  /** The `/status` document; `query` is the request's (`gc=1` asks for the heap after a full GC, see ProcessResources). */
  status(query?: Record<string, string>): Promise<unknown>;
  /** The `/metrics` exposition. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** A plugin route's answer, or undefined when no plugin serves the path. */
  route?(request: HttpRequest): Promise<HttpResponse | undefined>;
  /** The paths plugins serve (for the 404 text). */
  routes?(): Promise<string[]>;
}

/** Options of {@link startStatusServer}. */
export interface StatusServerOptions {
  /** Bearer token every path but `/healthz` requires (`Authorization: Bearer T`, or `?token=T` for a browser). */
  token?: string;
}

/** Compares a presented token with the configured one in constant time. */
function tokenMatches(presented: string | undefined, token: string): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/** A listening status endpoint. */
export interface StatusServer {
  /** The bound address, as a socket spec (with the real port). */
  address: string;
  /** Stops listening. */
  close(): Promise<void>;
}

/** Starts the endpoint on a socket spec (`inet:PORT@HOST`, `inet6:…`, `unix:/path`). */
export async function startStatusServer(spec: string, source: StatusSource, onError: (err: unknown) => void, options: StatusServerOptions = {}): Promise<StatusServer> {
  const parsed = parseSocketSpec(spec);
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://status.invalid');
    const path = url.pathname;
    const send = (code: number, type: string, body: string, extra: Record<string, string> = {}) => {
      // Pages are the administrator's own: no framing by other sites, no content-type guessing.
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', ...cookie, ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    let cookie: Record<string, string> = {};
    if (options.token !== undefined && path !== '/healthz') {
      const auth = req.headers.authorization;
      const inQuery = url.searchParams.get('token') ?? undefined;
      const inCookie = /(?:^|;\s*)themis_token=([^;]*)/.exec(req.headers.cookie ?? '')?.[1];
      const presented = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : (inQuery ?? (inCookie && decodeURIComponent(inCookie)));
      if (!tokenMatches(presented, options.token)) return send(401, 'text/plain', `THEMIS_ERR_HTTP_UNAUTHORIZED: ${path} needs the bearer token (Authorization: Bearer …, or ?token=… in a browser)\n`, { 'www-authenticate': 'Bearer realm="themis"' });
      // A browser that opened a page with ?token= gets it as a cookie, so the page's scripts and
      // styles (which cannot carry a header) load too. HttpOnly and SameSite: no script and no other
      // site can use it.
      if (inQuery !== undefined && !auth) cookie = { 'set-cookie': `themis_token=${encodeURIComponent(inQuery)}; Path=/; HttpOnly; SameSite=Strict` };
    }
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) if (k !== 'token') query[k] = v;
    const answer =
      path === '/status'
        ? source.status(query).then((s) => send(200, 'application/json', `${JSON.stringify(s, null, 2)}\n`))
        : path === '/metrics'
          ? source.metrics().then((m) => send(200, m.contentType, m.body))
          : path === '/healthz'
            ? Promise.resolve(send(200, 'text/plain', 'ok\n'))
            : (source.route?.({ path, query }) ?? Promise.resolve(undefined)).then(async (r) => {
                if (r) return send(r.status ?? 200, r.type, r.body);
                const plugins = (await source.routes?.()) ?? [];
                send(404, 'text/plain', `not found: try /status, /metrics, /healthz${plugins.length > 0 ? `, ${plugins.join(', ')}` : ''}\n`);
              });
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

/**
 * Where a person opens a path of a status endpoint: `http://127.0.0.1:8441/dashboard` (a wildcard
 * address as loopback, `http://[::1]:8441/…` for IPv6); over a UNIX socket, `/dashboard on unix:/path`.
 */
export function endpointUrl(address: string, path: string): string {
  const spec = parseSocketSpec(address);
  if (spec.kind === 'unix') return `${path} on ${address}`;
  const host = spec.host === '0.0.0.0' ? '127.0.0.1' : spec.host === '::' ? '::1' : spec.host;
  return `http://${spec.family === 6 || host.includes(':') ? `[${host}]` : host}:${spec.port}${path}`;
}

/** Reads a JSON document from a status endpoint (what `themis status` does), with the bearer token when one is set. */
export async function fetchStatus(spec: string, path = '/status', timeoutMs = 5_000, token?: string): Promise<unknown> {
  const parsed = parseSocketSpec(spec);
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(
      { ...(parsed.kind === 'unix' ? { socketPath: parsed.path } : { host: parsed.host, port: parsed.port }), path, timeout: timeoutMs, headers: token ? { authorization: `Bearer ${token}` } : {} },
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
