/**
 * Runs the real `themis` command (bin/themis.js) as a child process, the way a user does,
 * on a random loopback port, and stops it with SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/testing/redis.ts';

/** Path of the `themis` bin. */
export const THEMIS_BIN = fileURLToPath(new URL('../../bin/themis.js', import.meta.url));

/**
 * A configuration with no plugin and no policy (test/fixtures/none.config.ts), for a daemon that needs
 * none: the repository's themis.config.ts, found in the working directory otherwise, loads plugins
 * (SPF would query the system's DNS).
 */
export const NO_PLUGIN_CONFIG = fileURLToPath(new URL('../fixtures/none.config.ts', import.meta.url));

/** A running `themis start`. */
export interface ThemisProcess {
  port: number;
  /** The status endpoint (`inet:PORT@127.0.0.1`), when started with `{ http: true }`. */
  http: string | undefined;
  child: ChildProcess;
  /** Everything it printed so far (JSON log lines). */
  output(): string;
  /** SIGTERM, wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** A free TCP port on loopback. */
export { freePort };

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/**
 * Starts `themis start --listen inet:PORT@127.0.0.1 …args` and waits until it listens. The status
 * endpoint is off unless `http` is set (then on a free port), so that daemons never fight over 8441;
 * `http: 'config'` passes no `--http` at all, leaving the endpoint to the configuration.
 */
export async function startThemis(args: string[] = [], env: NodeJS.ProcessEnv = {}, options: { http?: boolean | 'config'; ready?: string } = {}): Promise<ThemisProcess> {
  const port = await freePort();
  const http = options.http === true ? `inet:${await freePort()}@127.0.0.1` : undefined;
  const httpArgs = args.includes('--http') || options.http === 'config' ? [] : ['--http', http ?? 'off'];
  const child = spawn(process.execPath, [THEMIS_BIN, 'start', '--listen', `inet:${port}@127.0.0.1`, ...httpArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // A failing test must not leave the daemon running (it would keep the test file alive).
  running.add(child);
  child.once('exit', () => running.delete(child));
  const deadline = Date.now() + 15_000;
  while (!out.includes(options.ready ?? '"msg":"themis started')) {
    if (child.exitCode !== null) throw new Error(`themis exited with ${child.exitCode}: ${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`themis did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    http,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
