/**
 * What the benchmark scripts share: child processes and temporary folders that are always cleaned up,
 * and the C libmilter null milter (the reference) found or built.
 * @module
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** Tracks a child process so that {@link killAll} kills it if it still runs. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Tracks a temporary folder so that {@link killAll} removes it; returns it. */
export function trackTempDir(dir: string): string {
  tempDirs.add(dir);
  return dir;
}

/** Removes a tracked temporary folder now. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Synchronous, for the way out (also from an exit handler): SIGKILLs every tracked child still running, removes every tracked folder. */
export function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

/** True for an executable regular file. */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The C null milter: a built one in $THEMIS_BENCH_BIN (default /tmp/themis-bench), else built into a
 * tracked temporary folder by the shared harness's `baselines/build.sh` (gcc, libmilter-dev).
 */
export function findOrBuildC(sharedDir: string): { bin: string } | { skip: string } {
  const existing = join(process.env.THEMIS_BENCH_BIN ?? '/tmp/themis-bench', 'null_milter');
  if (isExecutable(existing)) return { bin: existing };
  if (!existsSync(join(sharedDir, 'baselines'))) return { skip: `no reference milters folder at ${join(sharedDir, 'baselines')} (set THEMIS_SHARED_BENCH)` };
  const build = join(sharedDir, 'baselines', 'build.sh');
  if (!existsSync(build)) return { skip: `${existing} is missing and there is no ${build} to build it` };
  const dir = trackTempDir(mkdtempSync(join(tmpdir(), 'themis-bench-c-')));
  try {
    execFileSync('bash', [build], { env: { ...process.env, THEMIS_BENCH_BIN: dir }, stdio: 'pipe', timeout: 300_000 });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    const why = (e.stderr?.toString('utf8').trim().split('\n').slice(-3).join(' | ') || e.message).slice(0, 300);
    return { skip: `building it with ${build} failed: ${why}` };
  }
  const bin = join(dir, 'null_milter');
  return isExecutable(bin) ? { bin } : { skip: `${build} did not produce ${bin}` };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Whether something accepts a connection on 127.0.0.1:port or on a UNIX socket path right now. */
export function canConnect(to: { port: number } | { path: string }): Promise<boolean> {
  return new Promise((res) => {
    const s = 'port' in to ? connect({ host: '127.0.0.1', port: to.port }) : connect({ path: to.path });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}
