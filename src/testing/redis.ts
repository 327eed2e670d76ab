/**
 * Runs a real `redis-server` (and a real Cluster of them) for tests: loopback, a random free port, a
 * temporary directory, nothing persisted. Plugin authors use it to prove an atomic operation's twin
 * against Redis (`atomicOperationContract`); it needs `redis-server` (and `redis-cli` for a Cluster)
 * on PATH. `kill()`/`start()` simulate an outage and the recovery on the same port; `pause()`/
 * `resume()` a server that hangs with its connections open. Every server still running when the test
 * process exits is killed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A free TCP port on 127.0.0.1 (the kernel picks it; it is released before use). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** Path of `redis-server` on PATH, or undefined. */
export function redisServerPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, 'redis-server');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True when `redis-server` is installed. */
export function redisAvailable(): boolean {
  return redisServerPath() !== undefined;
}

/** True when `redis-cli` is installed (for `redis-cli --cluster create`). */
export function redisCliAvailable(): boolean {
  return spawnSync('redis-cli', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A running test Redis. */
export interface RedisServer {
  /** Its TCP port on 127.0.0.1. */
  readonly port: number;
  /** `redis://127.0.0.1:PORT` (without the password). */
  readonly url: string;
  /** Its temporary directory. */
  readonly dir: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** The process id while it runs (the benchmark reads its CPU time). */
  readonly pid: number | undefined;
  /** Everything the server printed. */
  output(): string;
  /** SIGKILL (a crash: connections reset), wait for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory, waits until it answers. */
  start(): Promise<void>;
  /** SIGSTOP: the server hangs, connections stay open. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Kills it and removes its directory. */
  stop(): Promise<void>;
}

/** Options of {@link startRedis}. */
export interface StartRedisOptions {
  /** `--requirepass`. */
  password?: string;
  /** More `redis-server` arguments (`['--cluster-enabled', 'yes']`). */
  args?: string[];
  /** Port to use (default: a free one). */
  port?: number;
  /** Run as a Sentinel monitoring this master (quorum 1); `password` is then the sentinel's own. */
  sentinel?: { name: string; masterPort: number; masterPassword?: string };
}

const running = new Set<ChildProcess>();
const dirs = new Set<string>();
// A failing test must not leave redis-server running (nor its directory behind).
process.once('exit', () => {
  for (const c of running) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Resolves when something answers PING on the port (PONG, or NOAUTH when a password is required). */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    let data = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      data += d;
      if (data.includes('\r\n')) done(data.startsWith('+PONG') || data.startsWith('-NOAUTH'));
    });
  });
}

/** Starts `redis-server` on 127.0.0.1 with a random free port and waits until it answers PING. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const bin = redisServerPath();
  if (!bin) throw new Error('redis-server is not installed');
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'themis-redis-'));
  dirs.add(dir);
  const args: string[] = [];
  if (options.sentinel) {
    const { name, masterPort, masterPassword } = options.sentinel;
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(conf, `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1\n${masterPassword ? `sentinel auth-pass ${name} ${masterPassword}\n` : ''}`);
    args.push(conf, '--sentinel');
  }
  args.push('--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', '', '--daemonize', 'no');
  if (options.password !== undefined) args.push('--requirepass', options.password);
  args.push(...(options.args ?? []));
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let out = '';

  const launch = async () => {
    const c = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    running.add(c);
    exited = new Promise((resolve) =>
      c.once('exit', () => {
        running.delete(c);
        resolve();
      }),
    );
    c.stdout!.on('data', (d) => (out += d));
    c.stderr!.on('data', (d) => (out += d));
    const deadline = Date.now() + 10_000;
    while (!(await answersPing(port))) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`redis-server exited (${c.exitCode ?? c.signalCode}): ${out}`);
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(`redis-server did not answer on port ${port}: ${out}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  };

  try {
    await launch();
  } catch (err) {
    await kill();
    rmSync(dir, { recursive: true, force: true });
    dirs.delete(dir);
    throw err;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    get pid() {
      return child?.pid;
    },
    output: () => out,
    kill,
    start: async () => {
      await kill();
      await launch();
    },
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
}

/** Polls `fn` until it resolves truthy (errors count as "not yet"); rejects after `ms`. */
export async function eventually<T>(fn: () => Promise<T> | T, ms = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A free port whose cluster bus port (port + 10000) is free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10000 > 65535) continue;
    const busFree = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port + 10000, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (busFree) return port;
  }
}

/** A running test Redis Cluster. */
export interface RedisClusterServers {
  /** Seed nodes, `127.0.0.1:PORT`. */
  readonly nodes: string[];
  /** The masters. */
  readonly servers: RedisServer[];
  /** Stops every node. */
  stop(): Promise<void>;
}

/**
 * Starts `masters` cluster-enabled redis-servers, joins them with `redis-cli --cluster create` (no
 * replicas) and waits until the cluster state is ok (about 2 s: redis-cli waits for the join).
 */
export async function startRedisCluster(masters = 3): Promise<RedisClusterServers> {
  const servers: RedisServer[] = [];
  const stop = async () => void (await Promise.all(servers.map((s) => s.stop())));
  try {
    for (let i = 0; i < masters; i++) servers.push(await startRedis({ port: await clusterPort(), args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000', '--cluster-config-file', 'nodes.conf'] }));
    const nodes = servers.map((s) => `127.0.0.1:${s.port}`);
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...nodes, '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 30_000 });
    if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
    await eventually(() => servers.every((s) => spawnSync('redis-cli', ['-p', String(s.port), 'cluster', 'info'], { encoding: 'utf8' }).stdout.includes('cluster_state:ok')), 15_000, 'cluster_state:ok');
    return { nodes, servers, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

