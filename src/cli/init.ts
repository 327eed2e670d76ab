/**
 * `themis init`: writes a commented starter `themis.config.ts` and says what to do next.
 * @module
 */
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { STARTER_CONFIG } from './init-template.ts';

/** Usage text of `themis init`. */
export const INIT_USAGE = `Usage: themis init [--force] [--path FILE]

Writes a commented starter configuration: a loopback socket, the in-memory store, no plugin and
no policy, with every other section as a commented example.

Options:
  --path FILE   where to write it (default ./themis.config.ts)
  --force       overwrite FILE if it exists
  --help        print this text
`;

/** Runs `themis init`; returns the exit code (0 written, 1 not written, 2 bad usage). */
export async function init(args: string[]): Promise<number> {
  let values: { path?: string; force?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: { path: { type: 'string' }, force: { type: 'boolean' }, help: { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`themis init: ${(err as Error).message}\n\n${INIT_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(INIT_USAGE);
    return 0;
  }
  if (values.path === '') {
    process.stderr.write(`themis init: --path expects a file name\n\n${INIT_USAGE}`);
    return 2;
  }
  const file = resolve(values.path ?? 'themis.config.ts');
  const existed = existsSync(file);
  if (existed && statSync(file).isDirectory()) {
    process.stderr.write(`themis init: ${file} is a directory; give the file to write, e.g. --path ${resolve(file, 'themis.config.ts')}\n`);
    return 1;
  }
  if (existed && !values.force) {
    process.stderr.write(`themis init: ${file} already exists; not overwriting it (use --force to replace it)\n`);
    return 1;
  }
  try {
    // 'wx' unless --force: never clobber a file that appeared since the check above.
    writeFileSync(file, STARTER_CONFIG, { encoding: 'utf8', flag: values.force ? 'w' : 'wx' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EEXIST' ? 'already exists; not overwriting it (use --force to replace it)' : `cannot be written: ${e.message}`;
    process.stderr.write(`themis init: ${file} ${why}\n`);
    return 1;
  }
  const dir = dirname(file);
  const configArg = file === resolve('themis.config.ts') ? '' : ` --config ${file}`;
  process.stdout.write(`${existed ? 'Replaced' : 'Wrote'} ${file}: a starter configuration (loopback socket inet:8440@127.0.0.1,
in-memory store; its comments say what each section does).

Next steps:
  1. Edit it: uncomment the sections you need (plugins, groups, policies; Redis for several MTAs).
     It imports 'themis-milter', which the themis command resolves to itself wherever the file is.
     The plugins it names must be installed in ${dir} (npm install themis-plugin-…)
     or beside Themis itself (the same global install, or the .deb, which carries the built-in ones).
  2. Check it:   themis config check${configArg}
  3. Run it:     themis start${configArg}
  4. Hook it into Postfix (main.cf), then \`postfix reload\`:
       smtpd_milters = inet:127.0.0.1:8440
       non_smtpd_milters = inet:127.0.0.1:8440
       milter_protocol = 6
       milter_default_action = tempfail
`);
  return 0;
}
