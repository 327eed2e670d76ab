// docs/errors.md is generated from the one error registry (scripts/error-reference.ts): it must be up to
// date, list every built-in plugin's codes, and every code the sources use must be registered.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { THEMIS_ERRORS, errorRegistry } from '../../src/index.ts';
import { errorPrefix } from '../../src/kernel/errors.ts';
import { BUILT_IN_PLUGINS, REFERENCE_FILE, currentErrorReference } from '../../scripts/error-reference.ts';

const root = new URL('../../', import.meta.url);

/** Every `THEMIS_…` token of the files under `dir` (relative to the repository) with one of the extensions. */
function tokensIn(dir: string, exts = ['.ts', '.js']): Map<string, string> {
  const found = new Map<string, string>();
  const base = new URL(dir.endsWith('/') ? dir : `${dir}/`, root);
  for (const f of readdirSync(base, { recursive: true, encoding: 'utf8' })) {
    if (!exts.some((e) => f.endsWith(e))) continue;
    for (const m of readFileSync(new URL(f, base), 'utf8').matchAll(/\bTHEMIS_[A-Z0-9_]*[A-Z0-9]\b/g)) if (!found.has(m[0])) found.set(m[0], `${dir}/${f}`);
  }
  return found;
}

describe('error reference (docs/errors.md)', () => {
  it('is what the registry renders now (regenerate: node --conditions=themis-source scripts/error-reference.ts)', () => {
    assert.equal(readFileSync(REFERENCE_FILE, 'utf8'), currentErrorReference());
  });

  it('lists every code of the registry — core and each built-in plugin — once, under its owner', () => {
    const text = readFileSync(REFERENCE_FILE, 'utf8');
    const registry = errorRegistry(BUILT_IN_PLUGINS);
    for (const code of registry.keys()) assert.equal(text.split(`| \`${code}\` |`).length, 2, `${code} once in the reference`);
    for (const p of BUILT_IN_PLUGINS) {
      for (const code of Object.keys(p.errors ?? {})) {
        const section = text.slice(text.indexOf(`## Plugin \`${p.name}\``));
        assert.ok(text.includes(`## Plugin \`${p.name}\``) && section.includes(`\`${code}\``), `${code} under plugin ${p.name}`);
      }
    }
    // The codes the issue was about.
    assert.equal(registry.get('THEMIS_HEADERS_BUDGET')?.owner, 'headers');
    assert.equal(registry.get('THEMIS_RATELIMIT_STORE_TIMEOUT')?.owner, 'ratelimit');
    for (const code of ['THEMIS_ERR_MILTER_OVERSIZE', 'THEMIS_ERR_STORE_TIMEOUT', 'THEMIS_ERR_PLUGIN_INVALID', 'THEMIS_HEADERS_BUDGET', 'THEMIS_RATELIMIT_STORE_TIMEOUT']) assert.ok(text.includes(`| \`${code}\` |`), code);
  });

  it('every code the sources use is registered', () => {
    const registry = errorRegistry(BUILT_IN_PLUGINS);
    const missing: string[] = [];
    // The core and the launcher: THEMIS_ERR_* are codes (other THEMIS_* are environment variables).
    for (const dir of ['src', 'bin']) {
      for (const [token, file] of tokensIn(dir)) if (token.startsWith('THEMIS_ERR_') && !(token in THEMIS_ERRORS)) missing.push(`${token} (${file})`);
    }
    // A plugin's sources: every THEMIS_* is a code, the core's or a plugin's.
    const plugins = readdirSync(new URL('plugins/', root));
    assert.deepEqual(plugins.slice().sort(), BUILT_IN_PLUGINS.map((p) => p.name).sort(), 'every built-in plugin is in the reference');
    for (const dir of plugins) {
      for (const [token, file] of tokensIn(`plugins/${dir}/src`)) if (!registry.has(token)) missing.push(`${token} (${file})`);
    }
    assert.deepEqual(missing, []);
  });

  it('each built-in plugin names its codes after itself', () => {
    for (const p of BUILT_IN_PLUGINS) for (const code of Object.keys(p.errors ?? {})) assert.ok(code.startsWith(`THEMIS_${errorPrefix(p.name)}_`), code);
  });
});
