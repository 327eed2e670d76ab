/**
 * Test helper: build and pack every package of the checkout (the root `themis-milter` and every
 * workspace: built-in plugins and the example third-party plugin), then install the tarballs the way a
 * user does — into a fresh project or a global prefix that has no path back to the checkout.
 *
 * npm runs with the same Node as the test (its directory first in PATH), with no npm_* / NODE_OPTIONS
 * variables inherited from an enclosing `npm test`, so that neither the checkout's prefix nor
 * `--conditions=themis-source` leaks into what is installed or run.
 */
import { spawn } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join, relative, isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root directory. */
export const CHECKOUT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Environment for commands run against installed copies: this Node first in PATH, nothing from npm or NODE_OPTIONS. */
export function isolatedEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    // NODE_TEST_CONTEXT would make a `node --test` run inside report to this test run instead of its output
    if (/^npm_/i.test(k) || k === 'NODE_OPTIONS' || k === 'NODE_TEST_CONTEXT' || k === 'NODE_PATH' || k === 'INIT_CWD' || /^THEMIS_/.test(k)) continue;
    env[k] = v;
  }
  env.PATH = [dirname(process.execPath), process.env.PATH ?? ''].filter(Boolean).join(delimiter);
  env.npm_config_update_notifier = 'false';
  return { ...env, ...extra };
}

/** Runs a command; never throws on a non-zero exit (the result says). */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? isolatedEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[pack helper] ${cmd} ${args.join(' ')} timed out after ${opts.timeoutMs ?? 120_000} ms, killed\n`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}[pack helper] cannot run ${cmd}: ${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** npm with this Node (npm's own `#!/usr/bin/env node` picks it up from PATH). */
export function npm(args: string[], cwd: string, timeoutMs = 180_000): Promise<RunResult> {
  return run('npm', args, { cwd, timeoutMs });
}

function check(what: string, r: RunResult): RunResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  return r;
}

/** Package name → tarball path. */
export type Tarballs = Map<string, string>;

/**
 * `npm run build`, then `npm pack` of the root and every workspace into `dest` — or of the root and the
 * named `workspaces` only (each built by its own prepack). Resolves with the
 * tarball of every package, by package name (from npm's JSON report).
 */
export async function buildAndPack(dest: string, workspaces?: readonly string[]): Promise<Tarballs> {
  await mkdir(dest, { recursive: true });
  // Every package's prepack builds it; `npm run build` first builds the plugins before anything is packed.
  if (!workspaces) check('npm run build', await npm(['run', 'build'], CHECKOUT));
  const which = workspaces ? workspaces.flatMap((w) => ['--workspace', w]) : ['--workspaces'];
  const r = check('npm pack', await npm(['pack', '--json', '--pack-destination', dest, ...which, '--include-workspace-root'], CHECKOUT));
  // lifecycle scripts (prepack) may print before the JSON report
  const json = r.stdout.slice(r.stdout.indexOf('\n[') >= 0 ? r.stdout.indexOf('\n[') + 1 : r.stdout.indexOf('['));
  const report = JSON.parse(json) as { name: string; filename: string }[];
  const out: Tarballs = new Map();
  for (const p of report) out.set(p.name, join(dest, p.filename.replace(/^@/, '').replace(/\//, '-')));
  return out;
}

/** The paths inside a tarball (`package/…`). */
export async function tarList(tgz: string): Promise<string[]> {
  const r = check(`tar tzf ${tgz}`, await run('tar', ['tzf', tgz], { env: process.env }));
  return r.stdout.split('\n').filter(Boolean).sort();
}

/** One member of a tarball, as text. */
export async function tarRead(tgz: string, member: string): Promise<string> {
  return check(`tar xzOf ${tgz} ${member}`, await run('tar', ['xzOf', tgz, member], { env: process.env })).stdout;
}

/** A fresh npm project in `dir` (`private`, ESM) with `tarballs` installed from their files. */
export async function installProject(dir: string, tarballs: string[]): Promise<RunResult> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'themis-install-test', version: '0.0.0', private: true, type: 'module' }, null, 2) + '\n');
  return check(`npm install in ${dir}`, await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--no-save', ...tarballs], dir));
}

/** `npm install -g --prefix PREFIX tarballs…`: a global install that touches nothing outside `prefix`. */
export async function installGlobal(prefix: string, tarballs: string[]): Promise<RunResult> {
  await mkdir(prefix, { recursive: true });
  return check(`npm install -g --prefix ${prefix}`, await npm(['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', ...tarballs], prefix));
}

const inside = (root: string, p: string): boolean => {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

/**
 * Every problem that would tie an installed tree to something outside `root` (the checkout above
 * all): a symbolic link whose target is outside `root`, or any link at all where npm should have put
 * a copy (a package directory). Walks every node_modules below `nodeModules`. [] = isolated.
 */
export function linksOutside(root: string, nodeModules: string): string[] {
  const problems: string[] = [];
  const realRoot = realpathSync(root);
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = realpathSync(p);
        } catch {
          problems.push(`${p}: dangling link`);
          continue;
        }
        if (!inside(realRoot, target)) problems.push(`${p} -> ${target} (outside ${realRoot})`);
        else if (!/\/\.bin$/.test(dir)) problems.push(`${p} -> ${target}: a link, not a copy`);
      } else if (st.isDirectory()) {
        walk(p);
      }
    }
  };
  walk(nodeModules);
  return problems;
}

/** The lockfile npm wrote into a node_modules (`.package-lock.json`), as text ('' if none). */
export function hiddenLockfile(nodeModules: string): string {
  try {
    return readFileSync(join(nodeModules, '.package-lock.json'), 'utf8');
  } catch {
    return '';
  }
}
