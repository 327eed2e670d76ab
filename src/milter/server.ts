/**
 * The milter server: listens on TCP, TCP6 or a UNIX socket and runs one {@link MilterConnection}
 * per accepted socket. A failure on one connection never touches the others.
 * @module
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { MilterError } from './errors.ts';
import { silentLogger, type MilterLogger } from './logger.ts';
import { MilterConnection, resolveSessionOptions, type MilterApplication, type ResolvedSessionOptions, type SessionOptions } from './session.ts';
import { formatSocketSpec, parseSocketSpec, type SocketSpec } from './socket-spec.ts';

/** Server settings: per-connection settings plus listener-wide ones. */
export interface MilterServerOptions extends SessionOptions {
  /** Most simultaneous MTA connections; more are closed at once and logged (default 10,000; 0 = no limit). */
  maxConnections?: number;
  /** Where the engine logs (pino-compatible); silent by default. */
  logger?: MilterLogger;
  /** File mode for a UNIX socket (default 0o660: the MTA's group must be able to connect). */
  socketMode?: number;
  /**
   * Whether this server removes a stale UNIX socket file before listening and unlinks it on close
   * (default true). Processes that share one listening socket (`node:cluster` workers) set false
   * and leave the file to the process that owns it.
   */
  manageSocketFile?: boolean;
}

/** Options for {@link MilterServer.close}. */
export interface CloseOptions {
  /** How long to let open connections finish before cutting them, in ms (default 10,000). */
  drainTimeout?: number;
}

/** A listening (or ready to listen) milter server. */
export class MilterServer {
  /** Per-connection settings with defaults applied. */
  readonly sessionOptions: ResolvedSessionOptions;
  private app: MilterApplication;
  private readonly log: MilterLogger;
  private readonly server: Server;
  private readonly connections = new Set<MilterConnection>();
  private readonly socketMode: number;
  private readonly manageSocketFile: boolean;
  private spec: SocketSpec | undefined;
  private closing: Promise<void> | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(app: MilterApplication, options: MilterServerOptions = {}) {
    this.app = app;
    this.sessionOptions = resolveSessionOptions(options);
    this.log = options.logger ?? silentLogger;
    this.socketMode = options.socketMode ?? 0o660;
    this.manageSocketFile = options.manageSocketFile ?? true;
    // allowHalfOpen: when the MTA closes its side while a handler still runs, the answer can still be
    // written; the session ends the socket itself once it is done.
    this.server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.onSocket(socket));
    const max = options.maxConnections ?? 10_000;
    if (max > 0) this.server.maxConnections = max;
    this.server.on('drop', (data?: { remoteAddress?: string }) => {
      this.log.warn({ code: 'THEMIS_ERR_MILTER_CONNECTION_LIMIT', limit: max, remote: data?.remoteAddress }, 'connection limit reached; new MTA connection closed');
    });
    this.server.on('error', (err) => this.log.error({ err }, 'milter listener error'));
  }

  /** Number of open MTA connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** The application new connections are served by. */
  get application(): MilterApplication {
    return this.app;
  }

  /**
   * Serves connections accepted from now on with `app`. Open connections finish with the application
   * they started with: one SMTP session never sees two configurations, and negotiation stays valid.
   */
  setApplication(app: MilterApplication): void {
    this.app = app;
  }

  /** Number of open connections served by `app`. */
  connectionsUsing(app: MilterApplication): number {
    let n = 0;
    for (const c of this.connections) if (c.app === app) n++;
    return n;
  }

  /** The bound address in socket-spec syntax (with the real port when 0 was asked for). */
  get address(): string | undefined {
    if (!this.spec) return undefined;
    if (this.spec.kind === 'unix') return formatSocketSpec(this.spec);
    const a = this.server.address();
    const port = a && typeof a === 'object' ? a.port : this.spec.port;
    return formatSocketSpec({ ...this.spec, port });
  }

  /** The bound TCP port, if listening on TCP. */
  get port(): number | undefined {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  /** Starts listening; resolves once bound. Throws a coded error for a bad spec or a busy address. */
  async listen(spec: string | SocketSpec): Promise<string> {
    const parsed = typeof spec === 'string' ? parseSocketSpec(spec) : spec;
    if (parsed.kind === 'unix' && this.manageSocketFile) await removeStaleSocket(parsed.path);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      const done = () => {
        this.server.off('error', onError);
        resolve();
      };
      if (parsed.kind === 'unix') this.server.listen(parsed.path, done);
      else this.server.listen({ host: parsed.host, port: parsed.port, ipv6Only: parsed.family === 6 }, done);
    });
    if (parsed.kind === 'unix') await chmod(parsed.path, this.socketMode);
    this.spec = parsed;
    this.startSweep();
    this.log.info({ listen: this.address }, 'milter listening');
    return this.address!;
  }

  /**
   * Stops accepting, lets open connections finish up to `drainTimeout`, then cuts the rest.
   * Resolves when every connection is closed and the listener is down. Safe to call twice.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.closing ??= this.doClose(options.drainTimeout ?? 10_000);
    return this.closing;
  }

  /** One timer checks every connection's idle and read timeouts, a few times per timeout period. */
  private startSweep(): void {
    if (this.sweepTimer) return;
    const { idleTimeout, readTimeout } = this.sessionOptions;
    const shortest = Math.min(idleTimeout > 0 ? idleTimeout : Infinity, readTimeout > 0 ? readTimeout : Infinity);
    if (shortest === Infinity) return;
    const period = Math.max(10, Math.min(1000, Math.floor(shortest / 4)));
    this.sweepTimer = setInterval(() => {
      const now = Date.now();
      for (const c of this.connections) c.checkTimeouts(now);
    }, period);
    this.sweepTimer.unref();
  }

  private async doClose(drainTimeout: number): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const listenerClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.connections.size > 0) {
      this.log.info({ open: this.connections.size, drainTimeout }, 'draining milter connections');
      const deadline = Date.now() + drainTimeout;
      while (this.connections.size > 0 && Date.now() < deadline) await sleep(Math.min(50, Math.max(1, deadline - Date.now())));
      for (const c of this.connections) c.destroy('server shutdown');
    }
    await listenerClosed;
    if (this.spec?.kind === 'unix' && this.manageSocketFile) await unlink(this.spec.path).catch(() => {});
  }

  private onSocket(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new MilterConnection(socket, this.app, this.sessionOptions, this.log, (c) => this.connections.delete(c));
    this.connections.add(conn);
  }
}

/** Creates a milter server for an application (see {@link MilterApplication}). */
export function createMilterServer(app: MilterApplication, options?: MilterServerOptions): MilterServer {
  return new MilterServer(app, options);
}

/** Removes a UNIX socket file left by a dead process; refuses to touch a live socket or a non-socket. */
/**
 * Removes a UNIX socket file left by a process that is gone; throws a coded error when the path is
 * not a socket or another process still listens on it.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new MilterError('THEMIS_ERR_MILTER_LISTEN_SPEC', { spec: JSON.stringify(`unix:${path}`), reason: 'the path exists and is not a socket' });
  const alive = await new Promise<boolean>((resolve) => {
    const s = netConnect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new MilterError('THEMIS_ERR_MILTER_LISTEN_SPEC', { spec: JSON.stringify(`unix:${path}`), reason: 'another process is listening on it' });
  await unlink(path);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
