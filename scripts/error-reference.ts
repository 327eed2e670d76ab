/**
 * Writes docs/errors.md, the error reference, from the one error registry: the core codes (milter
 * engine, store, kernel) and the codes each built-in plugin declares in its definition's `errors`.
 *
 *     node --conditions=themis-source scripts/error-reference.ts           # writes docs/errors.md
 *     node --conditions=themis-source scripts/error-reference.ts --check   # exits 1 when it is out of date
 *
 * test/docs/errors-reference.test.ts fails when docs/errors.md differs from what this renders.
 * @module
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorRegistry, type RegisteredError } from 'themis-milter';
import dkim from 'themis-plugin-dkim';
import dmarc from 'themis-plugin-dmarc';
import headers from 'themis-plugin-headers';
import monitor from 'themis-plugin-monitor';
import predict from 'themis-plugin-predict';
import ratelimit from 'themis-plugin-ratelimit';
import spf from 'themis-plugin-spf';

/** The built-in plugins, as the reference lists them. */
export const BUILT_IN_PLUGINS = [ratelimit, spf, dkim, dmarc, headers, monitor, predict].sort((a, b) => a.name.localeCompare(b.name));

/** Where the reference is written. */
export const REFERENCE_FILE = new URL('../docs/errors.md', import.meta.url);

const CORE: Readonly<Record<string, { title: string; where: string }>> = {
  milter: { title: 'Milter engine', where: '`MILTER_ERRORS` in `src/milter/errors.ts`' },
  store: { title: 'Store', where: '`STORE_ERRORS` in `src/store/errors.ts`' },
  kernel: { title: 'Kernel, configuration and command line', where: '`KERNEL_ERRORS` in `src/kernel/errors.ts`' },
};

/** A message template as a table cell: placeholders as code, pipes escaped. */
function cell(template: string): string {
  return template.replace(/\|/g, '\\|').replace(/\{(\w+)\}/g, '`{$1}`');
}

/** The reference's Markdown for a registry (core codes first, then each plugin's, in registry order). */
export function renderErrorReference(registry: ReadonlyMap<string, RegisteredError>): string {
  const owners = new Map<string, RegisteredError[]>();
  for (const e of registry.values()) {
    let list = owners.get(e.owner);
    if (!list) owners.set(e.owner, (list = []));
    list.push(e);
  }
  const out: string[] = [
    '# Error reference',
    '',
    '<!-- Generated from the error registry by scripts/error-reference.ts: do not edit by hand. test/docs/errors-reference.test.ts fails when it is out of date. -->',
    '',
    'Every error Themis raises or logs carries a stable code: match on the code, not on the message text. The',
    'message is the template below with its `{placeholders}` filled from the error\'s details (the same values are',
    'in the log line). Core codes begin `THEMIS_ERR_`; a plugin\'s begin `THEMIS_` and its name upper-cased',
    '(`THEMIS_HEADERS_…`): plugins declare them in their definition\'s `errors`, and a plugin loaded with the',
    'daemon adds its codes to the same registry (`kernel.errors`, `errorRegistry(plugins)`).',
    '',
  ];
  for (const [owner, errors] of owners) {
    const core = CORE[owner];
    out.push(core ? `## ${core.title}` : `## Plugin \`${owner}\``, '');
    out.push(core ? `Defined in ${core.where}.` : `Declared in the \`errors\` of the \`${owner}\` plugin's definition.`, '');
    out.push('| code | message |', '|---|---|');
    for (const e of errors) out.push(`| \`${e.code}\` | ${cell(e.template)} |`);
    out.push('');
  }
  return out.join('\n');
}

/** The reference as it should be now. */
export function currentErrorReference(): string {
  return renderErrorReference(errorRegistry(BUILT_IN_PLUGINS));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = currentErrorReference();
  const file = fileURLToPath(REFERENCE_FILE);
  if (process.argv.includes('--check')) {
    let old = '';
    try {
      old = readFileSync(file, 'utf8');
    } catch {
      // missing: out of date
    }
    if (old !== text) {
      process.stderr.write(`${file} is out of date: run node --conditions=themis-source scripts/error-reference.ts\n`);
      process.exit(1);
    }
  } else {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
    process.stdout.write(`wrote ${file}\n`);
  }
}
