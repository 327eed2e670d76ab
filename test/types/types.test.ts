// Runs the type tests: tsc -p test/types/tsconfig.json, with the TypeScript of node_modules, under the
// Node running this test. The type-test files (every .ts here but this one) hold positive cases
// (expectTypeOf) and negative ones (a `@ts-expect-error` line that must fail to compile). tsc reports
// an unneeded `@ts-expect-error` as an error, so a clean run proves both kinds. The control run then
// turns every directive into a plain comment: each must leave exactly one error, on the line below it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const files = readdirSync(here).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts')).sort();
const DIRECTIVE = /\/\/ @ts-expect-error\b/;

function runTsc(args: string[]): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [tsc, ...args], { cwd: root, encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

describe('type tests (tsc -p test/types)', () => {
  it('compiles every positive case, and every @ts-expect-error line fails as it must', () => {
    const directives = files.reduce((n, f) => n + readFileSync(join(here, f), 'utf8').split('\n').filter((l) => DIRECTIVE.test(l)).length, 0);
    const { status, output } = runTsc(['-p', join(here, 'tsconfig.json'), '--noEmit']);
    assert.equal(output, '', 'tsc printed errors');
    assert.equal(status, 0);
    assert.ok(files.length >= 3 && directives > 0);
    console.log(`# type tests: ${files.length} files checked (${files.join(', ')}), ${directives} @ts-expect-error cases`);
  });

  it('control: without its directive, each negative case is an error on exactly the line below it', () => {
    // Under node_modules/.cache, so that the copies resolve the same packages and no tsconfig includes them.
    mkdirSync(join(root, 'node_modules/.cache'), { recursive: true });
    const dir = mkdtempSync(join(root, 'node_modules/.cache/themis-type-control-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const expected: string[] = [];
    for (const f of files) {
      const lines = readFileSync(join(here, f), 'utf8').split('\n');
      lines.forEach((l, i) => {
        if (DIRECTIVE.test(l)) expected.push(`${f}:${i + 2}`);
      });
      writeFileSync(join(dir, f), lines.map((l) => l.replace(DIRECTIVE, '// (expected error)')).join('\n'));
    }
    const config = { extends: join(here, 'tsconfig.json'), compilerOptions: { rootDir: root }, include: [], files: files.map((f) => join(dir, f)) };
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(config));
    const { status, output } = runTsc(['-p', join(dir, 'tsconfig.json'), '--noEmit', '--pretty', 'false']);
    assert.notEqual(status, 0);
    const errors = output.split('\n').filter((l) => / error TS\d+:/.test(l));
    const where = (l: string) => {
      const m = /^(.*)\((\d+),\d+\): error/.exec(l);
      return m ? `${m[1].split('/').pop()}:${m[2]}` : l;
    };
    assert.deepEqual([...new Set(errors.map(where))].sort(), [...expected].sort(), `errors:\n${errors.join('\n')}`);
  });
});
