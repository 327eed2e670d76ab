// Every fenced code block of README.md and docs/**/*.md is exercised, so that no sample silently rots. The info
// string says what a block is (docs/README.md, "Conventions of these files"):
//   ts / typescript         type-checked against the sources with the repository's tsconfig (a whole module;
//                           `config`: the inside of defineConfig({ … }), also validated by `themis config check`
//                           with the built-in plugins; `config each-line`: one alternative per line;
//                           `file=PATH`: a file of a small project shared by the page's blocks)
//   sh / bash               every `themis`, `npx themis`, `npm`, `node` and `bash` command: the command exists
//                           (`themis … --help` exits 0, the npm script or package exists, the file exists) and
//                           takes every flag written; `npm init NAME … -- FLAGS` runs the repository's own
//                           create-NAME as written (into a temporary directory); a block with no such command
//                           must say `sh nocheck`
//   ini main.cf             Postfix parameters: `postconf -n` knows every one; the values are those the
//                           end-to-end tests use (test/helpers/postfix.ts) or Postfix's defaults
//   m4 sendmail.mc          the lines test/helpers/sendmail.ts writes for the Sendmail end-to-end test
//   jsonc package.json      a subset of examples/recipient-allowlist/package.json
//   text                    not run (output, a layout); every THEMIS_ code in it exists in docs/errors.md
// Any other block fails the first test.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseSocketSpec, DEFAULT_LISTEN } from '../../src/milter/socket-spec.ts';
import { SENDMAIL_MILTER_MACROS } from '../helpers/sendmail.ts';
import { ROOT, ROOT_PATH, codeBlocks, docFiles, type CodeBlock } from './blocks.ts';

type Kind = 'ts' | 'sh' | 'postfix' | 'sendmail' | 'package.json' | 'text' | 'nocheck';

function kindOf(b: CodeBlock): Kind | undefined {
  if (b.lang === 'ts' || b.lang === 'typescript') return 'ts';
  if (b.lang === 'sh' || b.lang === 'bash' || b.lang === 'shell') return b.attrs.has('nocheck') ? 'nocheck' : 'sh';
  if (b.lang === 'ini' && b.attrs.has('main.cf')) return 'postfix';
  if (b.lang === 'm4' && b.attrs.has('sendmail.mc')) return 'sendmail';
  if ((b.lang === 'jsonc' || b.lang === 'json') && b.attrs.has('package.json')) return 'package.json';
  if (b.lang === 'text') return 'text';
  return undefined;
}

const where = (b: CodeBlock, offset = 0) => `${b.file}:${b.line + offset}`;
const blocks = docFiles().flatMap((f) => codeBlocks(f));
const byKind = (k: Kind) => blocks.filter((b) => kindOf(b) === k);
const checked = new Map<string, number>();
const count = (what: string, n = 1) => checked.set(what, (checked.get(what) ?? 0) + n);

const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { scripts: Record<string, string>; workspaces: string[] };
const NODE = process.execPath;
const THEMIS = join(ROOT_PATH, 'bin/themis.js');

function run(cmd: string, args: string[], cwd = ROOT_PATH, timeout = 60_000): Promise<{ code: number; out: string }> {
  return new Promise((done) => {
    execFile(cmd, args, { cwd, timeout, env: { ...process.env, NO_COLOR: '1' }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      done({ code, out: `${stdout}${stderr}` });
    });
  });
}

let work: string;
before(() => {
  mkdirSync(join(ROOT_PATH, '.tmp'), { recursive: true });
  // inside the repository, so that 'themis-milter', zod and pino resolve as they do for the sources
  work = mkdtempSync(join(ROOT_PATH, '.tmp', 'docs-samples-'));
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
  const lines = [...checked].map(([k, n]) => `  ${k}: ${n}`).join('\n');
  console.log(`documentation samples: ${blocks.length} code blocks in ${docFiles().length} files\n${lines}`);
});

describe('documentation samples (README.md, docs/**/*.md)', () => {
  it('every code block is of a kind that a check exercises (or is marked text / sh nocheck)', () => {
    const unknown = blocks.filter((b) => kindOf(b) === undefined).map((b) => `${where(b)}: \`\`\`${b.info}`);
    assert.deepEqual(unknown, [], 'blocks no test exercises: give them an info string of docs/README.md ("Conventions")');
    for (const k of ['ts', 'sh', 'postfix', 'sendmail', 'package.json', 'text', 'nocheck'] as const) count(`blocks ${k}`, byKind(k).length);
    assert.ok(byKind('ts').length > 0 && byKind('sh').length > 0 && byKind('postfix').length > 0 && byKind('sendmail').length > 0);
  });

  // ---------------------------------------------------------------------------------------------------------
  // TypeScript

  const BUILT_INS = ['themis-plugin-ratelimit', 'themis-plugin-spf', 'themis-plugin-headers', 'themis-plugin-monitor', 'themis-plugin-predict'];
  const configHead = (text: string) =>
    `import { defineConfig } from 'themis-milter';\nexport default defineConfig({\n${/^\s*plugins\s*:/m.test(text) ? '' : `plugins: ${JSON.stringify(BUILT_INS)},\n`}`;
  interface Generated { path: string; block: CodeBlock; offset: number; config: boolean }
  const generated: Generated[] = [];

  function generate(): void {
    for (const b of byKind('ts')) {
      const page = join(work, b.file.replace(/\.md$/, '').replace(/[^\w-]+/g, '_'));
      if (b.attrs.has('file')) {
        const path = join(page, b.attrs.get('file')!);
        assert.ok(!existsSync(path), `${where(b)}: file=${b.attrs.get('file')} twice on one page`);
        generated.push({ path, block: b, offset: 0, config: false });
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, b.text);
      } else if (b.attrs.has('config')) {
        const parts = b.attrs.has('each-line')
          ? b.text.split('\n').map((l, i) => ({ text: `${l}\n`, line: i })).filter((p) => p.text.trim() && !p.text.trim().startsWith('//'))
          : [{ text: b.text, line: 0 }];
        for (const p of parts) {
          const head = configHead(p.text);
          const path = join(page, `config-L${b.line + p.line}.ts`);
          generated.push({ path, block: b, offset: p.line - (head.split('\n').length - 1), config: true });
          mkdirSync(page, { recursive: true });
          writeFileSync(path, `${head}${p.text}});\n`);
        }
      } else {
        const path = join(page, `sample-L${b.line}.ts`);
        generated.push({ path, block: b, offset: 0, config: false });
        mkdirSync(page, { recursive: true });
        writeFileSync(path, b.text);
      }
    }
  }

  it('ts blocks type-check against the sources (the repository tsconfig)', { timeout: 180_000 }, async () => {
    generate();
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({ extends: join(ROOT_PATH, 'tsconfig.json'), compilerOptions: { noEmit: true, rootDir: ROOT_PATH }, include: ['**/*.ts'] }, null, 2),
    );
    const tsc = join(ROOT_PATH, 'node_modules/typescript/bin/tsc');
    const r = await run(NODE, [tsc, '-p', join(work, 'tsconfig.json'), '--pretty', 'false'], work, 170_000);
    // Report each error at its place in the Markdown file. Errors inside the sources themselves are the
    // repository's `tsc --noEmit`'s business, not the documentation's: only the samples' count here.
    const errors: string[] = [];
    for (const l of r.out.split('\n')) {
      const m = /^(.+?)\((\d+),(\d+)\): (error .*)$/.exec(l);
      const g = m && generated.find((x) => resolve(work, m[1]) === x.path);
      if (m && g) errors.push(`${g.block.file}:${g.block.line + Number(m[2]) - 1 + g.offset} (${relative(work, g.path)}): ${m[4]}`);
    }
    assert.deepEqual(errors, [], 'tsc on the documentation\'s TypeScript');
    assert.ok(r.code === 0 || /error TS\d+/.test(r.out), `tsc did not run:\n${r.out}`);
    count('ts files type-checked', generated.length);
  });

  it('ts file=….test.ts blocks run: each is a node:test file of its page\'s small project', { timeout: 240_000 }, async () => {
    if (generated.length === 0) generate();
    const tests = generated.filter((g) => /\.test\.ts$/.test(g.path));
    assert.ok(tests.length >= 1, 'the docs show at least one test');
    for (const g of tests) {
      const r = await run(NODE, ['--conditions=themis-source', '--test', '--test-reporter=dot', g.path], dirname(g.path), 230_000);
      assert.equal(r.code, 0, `${where(g.block)}: the sample test failed:\n${r.out}`);
    }
    console.log(`# documentation samples: ${tests.length} test files run (${tests.map((g) => `${g.block.file}:${g.block.line}`).join(', ')})`);
  });

  it('ts config blocks pass themis config check (with the built-in plugins)', { timeout: 180_000 }, async () => {
    if (generated.length === 0) generate();
    const configs = generated.filter((g) => g.config);
    const results = await Promise.all(configs.map((g) => run(NODE, [THEMIS, 'config', 'check', '--config', g.path], ROOT_PATH)));
    const failed = configs.flatMap((g, i) => (results[i].code === 0 ? [] : [`${where(g.block)} (${relative(work, g.path)}):\n${results[i].out}`]));
    assert.deepEqual(failed, []);
    count('ts config fragments validated by themis config check', configs.length);
  });

  // ---------------------------------------------------------------------------------------------------------
  // Shell

  /** The simple commands of one shell line (words, quotes removed; redirections, comments and operators dropped). */
  function shellCommands(line: string): string[][] {
    const cmds: string[][] = [[]];
    let word: string | null = null;
    let redirect = false;
    const end = () => {
      if (word === null) return;
      if (redirect) redirect = false;
      else cmds.at(-1)!.push(word);
      word = null;
    };
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (c === "'") {
        const j = line.indexOf("'", i + 1);
        word = (word ?? '') + line.slice(i + 1, j < 0 ? line.length : j);
        i = j < 0 ? line.length : j;
      } else if (c === '"') {
        let j = i + 1;
        let s = '';
        for (; j < line.length && line[j] !== '"'; j++) s += line[j] === '\\' ? line[++j] : line[j];
        word = (word ?? '') + s;
        i = j;
      } else if (c === '$' && line[i + 1] === '(') {
        let depth = 0;
        let j = i + 1;
        for (; j < line.length; j++) if (line[j] === '(') depth++; else if (line[j] === ')' && --depth === 0) break;
        word = (word ?? '') + line.slice(i, j + 1);
        i = j;
      } else if (c === '\\') {
        word = (word ?? '') + (line[++i] ?? '');
      } else if (/\s/.test(c)) {
        end();
      } else if (c === '#' && word === null) {
        break;
      } else if ((c === '&' && line[i + 1] === '&') || c === '|' || c === ';') {
        end();
        if (line[i + 1] === c) i++;
        cmds.push([]);
      } else if (c === '>' || c === '<') {
        if (word !== null && /^\d$/.test(word)) word = null;
        else end();
        if (line[i + 1] === '>') i++;
        if (line[i + 1] === '&') {
          i++;
          while (/\d/.test(line[i + 1] ?? '')) i++;
        } else redirect = true;
      } else {
        word = (word ?? '') + c;
      }
    }
    end();
    return cmds.filter((c) => c.length > 0);
  }

  const help = new Map<string, Promise<{ code: number; out: string }>>();
  const helpOf = (words: string[]) => {
    const key = words.join(' ');
    if (!help.has(key)) help.set(key, run(NODE, [THEMIS, ...words, '--help']));
    return help.get(key)!;
  };
  const TWO_WORDS = new Set(['config', 'policy', 'group', 'pool', 'limits', 'predict']);
  const flagsOf = (args: string[]) => args.filter((a) => /^--[a-z]/.test(a)).map((a) => a.split('=')[0]);
  const inHelp = (text: string, flag: string) => new RegExp(`(^|[\\s\\[(,|/])${flag.replace(/[-]/g, '\\-')}(?![\\w-])`, 'm').test(text);

  async function checkThemis(args: string[], at: string): Promise<string[]> {
    const problems: string[] = [];
    const words = args[0] === undefined || args[0].startsWith('-') ? [] : TWO_WORDS.has(args[0]) && args[1] && !args[1].startsWith('-') ? args.slice(0, 2) : args.slice(0, 1);
    const h = await helpOf(words);
    if (h.code !== 0) return [`${at}: themis ${words.join(' ')} --help exits ${h.code}: ${h.out.slice(0, 300)}`];
    for (const f of flagsOf(args)) if (f !== '--help' && !inHelp(h.out, f)) problems.push(`${at}: themis ${words.join(' ')}: ${f} is not in its --help`);
    for (let i = 0; i < args.length - 1; i++) {
      if (args[i] === '--config' && !args[i + 1].startsWith('/') && !existsSync(join(ROOT_PATH, args[i + 1]))) problems.push(`${at}: --config ${args[i + 1]} does not exist`);
    }
    return problems;
  }

  const NPM_BUILTINS = new Set(['install', 'i', 'init', 'pack', 'pkg', 'root', 'ci', 'run', 'start', 'test', 'publish', 'exec', 'ls']);
  interface WorkspacePackage { dir: string; bin?: string | Record<string, string> }
  /** Every package of the repository by name: the root (themis-milter) and its workspaces. */
  const workspacePackages = (): Map<string, WorkspacePackage> => {
    const packages = new Map<string, WorkspacePackage>([['themis-milter', { dir: ROOT_PATH }]]);
    for (const w of pkg.workspaces) {
      const base = w.replace(/\/\*$/, '');
      for (const d of execFileSync('ls', [join(ROOT_PATH, base)], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
        const p = join(ROOT_PATH, base, d, 'package.json');
        if (!existsSync(p)) continue;
        const json = JSON.parse(readFileSync(p, 'utf8')) as { name: string; bin?: string | Record<string, string> };
        packages.set(json.name, { dir: join(ROOT_PATH, base, d), bin: json.bin });
      }
    }
    return packages;
  };
  const workspaceNames = (): Set<string> => new Set(workspacePackages().keys());

  /**
   * `npm init NAME [ARGS] [-- FLAGS]` runs the bin of the package create-NAME: it must be one of the
   * repository's packages, every flag must be in its --help, and the command must succeed as written (run
   * with --yes, writing into a temporary --dir), so a stage or field name it refuses fails here too.
   * `npm init -y` (a bare package.json) is npm's own.
   */
  async function checkNpmInit(rest: string[], at: string): Promise<string[]> {
    if (rest.length === 0 || rest[0].startsWith('-')) return [];
    const [initializer, ...given] = rest;
    const name = initializer.startsWith('@') ? initializer.replace(/^(@[^/]+)(?:\/(.+))?$/, (_, scope: string, n?: string) => `${scope}/create${n ? `-${n}` : ''}`) : `create-${initializer}`;
    const found = workspacePackages().get(name);
    if (!found) return [`${at}: npm init ${initializer}: ${name} is not one of Themis's packages`];
    const binName = name.replace(/^@[^/]+\//, '');
    const bin = typeof found.bin === 'string' ? found.bin : found.bin?.[binName];
    if (!bin) return [`${at}: npm init ${initializer}: ${name} has no bin ${binName}`];
    const binPath = join(found.dir, bin);
    const args = given.filter((a) => a !== '--');
    const h = await run(NODE, [binPath, '--help']);
    if (h.code !== 0) return [`${at}: ${name} --help exits ${h.code}: ${h.out.slice(0, 300)}`];
    const problems = flagsOf(args).filter((f) => !inHelp(h.out, f)).map((f) => `${at}: npm init ${initializer}: ${f} is not in ${name}'s --help`);
    const dir = join(mkdtempSync(join(work, 'npm-init-')), 'out');
    const withDir = args.flatMap((a, i) => (args[i - 1] === '--dir' ? [dir] : [a]));
    const r = await run(NODE, [binPath, ...withDir, ...(withDir.includes('--dir') ? [] : ['--dir', dir]), ...(args.some((a) => a === '--yes' || a === '-y') ? [] : ['--yes'])], work);
    if (r.code !== 0) problems.push(`${at}: npm init ${rest.join(' ')} fails (exit ${r.code}): ${r.out.slice(0, 300)}`);
    else if (!existsSync(join(dir, 'package.json'))) problems.push(`${at}: npm init ${rest.join(' ')} wrote no package.json`);
    return problems;
  }

  async function checkCommand(words: string[], at: string): Promise<string[] | undefined> {
    while (words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0])) words = words.slice(1);
    const [cmd, ...args] = words;
    if (cmd === 'themis') return checkThemis(args, at);
    if (cmd === 'npx' && args[0] === 'themis') return checkThemis(args.slice(1), at);
    if (cmd === 'npm') {
      const [sub, ...rest] = args;
      if (!NPM_BUILTINS.has(sub)) return [`${at}: npm ${sub} is not a command the docs may use`];
      if (sub === 'init') return checkNpmInit(rest, at);
      if (sub === 'run') return pkg.scripts[rest[0]] ? [] : [`${at}: npm run ${rest[0]}: no such script in package.json`];
      if (sub === 'start' || sub === 'test') {
        if (!pkg.scripts[sub]) return [`${at}: npm ${sub}: no such script`];
        const dd = rest.indexOf('--');
        return sub === 'start' && dd >= 0 ? checkThemis(['start', ...rest.slice(dd + 1)], at) : [];
      }
      if (sub === 'install' || sub === 'i') {
        const names = workspaceNames();
        const named = rest.filter((a, i) => !a.startsWith('-') && !a.startsWith('.') && !a.startsWith('/') && !a.includes('…') && rest[i - 1] !== '--prefix');
        return named.filter((n) => !names.has(n)).map((n) => `${at}: npm install ${n}: not one of Themis's packages (${[...names].join(', ')})`);
      }
      return [];
    }
    if (cmd === 'node' || cmd === 'bash') {
      const file = args.find((a) => !a.startsWith('-'));
      return file && !file.startsWith('/') && !existsSync(join(ROOT_PATH, file)) ? [`${at}: ${cmd} ${file}: no such file`] : [];
    }
    return undefined; // a system command: not checked here
  }

  it('sh blocks: every themis, npm, node and bash command exists and takes the flags written', { timeout: 180_000 }, async () => {
    const problems: string[] = [];
    await Promise.all(
      byKind('sh').map(async (b) => {
        const results = await Promise.all(
          b.text.split('\n').flatMap((line, i) => shellCommands(line).map(async (words) => ({ words, p: await checkCommand(words, where(b, i)) }))),
        );
        let commands = 0;
        for (const { words, p } of results) {
          if (p === undefined) {
            count('sh system commands (not run)');
            continue;
          }
          commands++;
          const name = words.find((w) => !/^[A-Za-z_][A-Za-z0-9_]*=/.test(w));
          count(`sh ${name === 'npx' ? 'themis' : name} commands checked`);
          problems.push(...p);
        }
        if (commands === 0) problems.push(`${where(b)}: no themis, npm, node or bash command to check: mark it \`\`\`sh nocheck`);
      }),
    );
    assert.deepEqual(problems, []);
  });

  // ---------------------------------------------------------------------------------------------------------
  // Postfix main.cf

  const postconf = ['/usr/sbin/postconf', '/usr/bin/postconf'].find((p) => existsSync(p));
  const helperPostfix = readFileSync(new URL('test/helpers/postfix.ts', ROOT), 'utf8');

  it('ini main.cf blocks: Postfix knows every parameter; values are what the end-to-end tests use or Postfix defaults', { skip: postconf ? false : 'postconf not installed' }, () => {
    const problems: string[] = [];
    const themisPort = (parseSocketSpec(DEFAULT_LISTEN) as { port: number }).port;
    for (const b of byKind('postfix')) {
      const params: [string, string, number][] = [];
      b.text.split('\n').forEach((l, i) => {
        if (!l.trim() || l.trimStart().startsWith('#')) return;
        const m = /^([a-z_]+)\s*=\s*(.*)$/.exec(l);
        if (!m) problems.push(`${where(b, i)}: not a main.cf parameter line: ${l}`);
        else params.push([m[1], m[2].trim(), i]);
      });
      const dir = mkdtempSync(join(work, 'postfix-'));
      writeFileSync(join(dir, 'main.cf'), b.text);
      writeFileSync(join(dir, 'master.cf'), '');
      const pc = spawnSync(postconf!, ['-c', dir, '-n'], { encoding: 'utf8' });
      const r = pc.stdout;
      const stderr = pc.stderr;
      if (/warning|unused|unknown/i.test(stderr)) problems.push(`${where(b)}: postconf: ${stderr}`);
      for (const [name, value, i] of params) {
        const at = where(b, i);
        if (!r.includes(`${name} = `)) problems.push(`${at}: postconf -n does not show ${name}`);
        if (name.endsWith('_milters')) {
          for (const v of value.split(/[\s,]+/)) {
            try {
              const spec = parseSocketSpec(v);
              if (spec.kind === 'inet' && !(spec.host === '127.0.0.1' && spec.port === themisPort && /^inet:127\.0\.0\.1:\d+$/.test(v))) {
                problems.push(`${at}: ${v}: the tests hook Postfix to Themis as inet:127.0.0.1:PORT, Themis listening on ${DEFAULT_LISTEN}`);
              }
            } catch (e) {
              problems.push(`${at}: ${v}: ${(e as Error).message}`);
            }
          }
        } else if (name === 'milter_protocol' || name === 'milter_default_action') {
          const used = name === 'milter_protocol' ? /\['milter_protocol', '(\d+)'\]/.exec(helperPostfix)?.[1] : /milterDefaultAction \?\? '(\w+)'/.exec(helperPostfix)?.[1];
          if (value !== used) problems.push(`${at}: ${name} = ${value}, the end-to-end tests use ${used} (test/helpers/postfix.ts)`);
        } else if (name === 'milter_connect_macros' || name === 'milter_mail_macros') {
          const def = execFileSync(postconf!, ['-d', '-h', name], { encoding: 'utf8' }).trim();
          if (value !== def) problems.push(`${at}: ${name} = ${value}, Postfix's default is ${def}`);
          const needed = name === 'milter_connect_macros' ? 'j' : '{auth_authen}';
          if (!value.split(/\s+/).includes(needed)) problems.push(`${at}: ${name} lacks ${needed}, which Themis reads`);
        } else {
          problems.push(`${at}: ${name}: no check knows this parameter (add one to test/docs/samples.test.ts)`);
        }
        count('main.cf parameters checked');
      }
    }
    assert.deepEqual(problems, []);
  });

  // ---------------------------------------------------------------------------------------------------------
  // Sendmail .mc

  it('m4 sendmail.mc blocks: the lines the Sendmail end-to-end test writes', () => {
    const helper = readFileSync(new URL('test/helpers/sendmail.ts', ROOT), 'utf8');
    const flags = /opts\.milterFlags \?\? '(\w*)'/.exec(helper)?.[1];
    const timeouts = /opts\.milterTimeouts \?\? '([^']+)'/.exec(helper)?.[1];
    assert.ok(flags !== undefined && timeouts, 'test/helpers/sendmail.ts has its default F= and T=');
    const problems: string[] = [];
    for (const b of byKind('sendmail')) {
      const filters = new Set<string>();
      b.text.split('\n').forEach((l, i) => {
        const at = where(b, i);
        let m: RegExpExecArray | null;
        if (!l.trim() || /^dnl\b/.test(l)) return;
        if ((m = /^INPUT_MAIL_FILTER\(`(\w+)', `S=([^,]+), F=(\w*), T=([^']+)'\)dnl$/.exec(l))) {
          filters.add(m[1]);
          if (!/^inet6?:\d+@[\w.:[\]]+$|^(unix|local):\//.test(m[2])) problems.push(`${at}: S=${m[2]} is not a spec the test helper accepts`);
          else if (m[2].startsWith('inet') && JSON.stringify(parseSocketSpec(m[2])) !== JSON.stringify(parseSocketSpec(DEFAULT_LISTEN))) problems.push(`${at}: S=${m[2]} is not Themis's default ${DEFAULT_LISTEN}`);
          if (m[3] !== flags) problems.push(`${at}: F=${m[3]}, the test uses F=${flags}`);
          if (m[4] !== timeouts) problems.push(`${at}: T=${m[4]}, the test uses T=${timeouts}`);
        } else if ((m = /^define\(`confINPUT_MAIL_FILTERS', `([\w, ]+)'\)dnl$/.exec(l))) {
          for (const f of m[1].split(/,\s*/)) if (!filters.has(f)) problems.push(`${at}: ${f} is not a filter defined above`);
        } else if ((m = /^define\(`confMILTER_MACROS_(\w+)', ``(.*)''\)dnl$/.exec(l))) {
          const used = (SENDMAIL_MILTER_MACROS as Record<string, string>)[m[1]];
          if (m[2] !== used) problems.push(`${at}: confMILTER_MACROS_${m[1]} differs from test/helpers/sendmail.ts: ${used}`);
        } else {
          problems.push(`${at}: a line no check knows: ${l}`);
        }
        count('sendmail.mc lines checked');
      });
    }
    assert.deepEqual(problems, []);
  });

  // ---------------------------------------------------------------------------------------------------------
  // package.json, text

  /** JSON with // comments. */
  function parseJsonc(text: string): unknown {
    let out = '';
    for (let i = 0, str = false; i < text.length; i++) {
      const c = text[i];
      if (str) {
        out += c;
        if (c === '\\') out += text[++i];
        else if (c === '"') str = false;
      } else if (c === '"') {
        str = true;
        out += c;
      } else if (c === '/' && text[i + 1] === '/') {
        while (i < text.length && text[i] !== '\n') i++;
        out += '\n';
      } else out += c;
    }
    return JSON.parse(out);
  }
  function subset(shown: unknown, real: unknown, path: string, problems: string[]): void {
    if (shown && typeof shown === 'object' && !Array.isArray(shown)) {
      if (!real || typeof real !== 'object') return void problems.push(`${path}: not an object in the real file`);
      for (const [k, v] of Object.entries(shown)) subset(v, (real as Record<string, unknown>)[k], `${path}.${k}`, problems);
    } else if (JSON.stringify(shown) !== JSON.stringify(real)) problems.push(`${path}: ${JSON.stringify(shown)} shown, ${JSON.stringify(real)} in the example`);
  }

  it('jsonc package.json blocks: what examples/recipient-allowlist/package.json says', () => {
    const real = JSON.parse(readFileSync(new URL('examples/recipient-allowlist/package.json', ROOT), 'utf8'));
    const problems: string[] = [];
    for (const b of byKind('package.json')) {
      subset(parseJsonc(b.text), real, where(b), problems);
      count('package.json blocks compared');
    }
    assert.deepEqual(problems, []);
  });

  it('text blocks: every error code they show exists (docs/errors.md)', () => {
    const reference = readFileSync(new URL('docs/errors.md', ROOT), 'utf8');
    const missing: string[] = [];
    for (const b of byKind('text')) {
      for (const m of b.text.matchAll(/\bTHEMIS_[A-Z0-9_]*[A-Z0-9]\b/g)) {
        count('text blocks: error codes checked');
        if (!reference.includes(`| \`${m[0]}\` |`)) missing.push(`${where(b)}: ${m[0]}`);
      }
    }
    assert.deepEqual(missing, []);
  });
});
