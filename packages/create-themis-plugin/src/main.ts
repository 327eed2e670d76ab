/**
 * The command line: `npm init themis-plugin [NAME] [--stages LIST] …` (npm runs `create-themis-plugin`).
 * Flags answer every question; on a terminal, what the flags leave open is asked for, with the
 * defaults shown; without a terminal (CI, scripts) the defaults are taken and only the name is required.
 * @module
 */
import { createInterface } from 'node:readline/promises';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import { ScaffoldError, STAGES, DEFAULT_STAGES, VERSION, planScaffold, writeScaffold, type ScaffoldOptions } from './index.ts';

const USAGE = `Usage: npm init themis-plugin [NAME] -- [options]
       create-themis-plugin [NAME] [options]

Writes a complete Themis plugin package: definePlugin with a policy field and its zod schema, hooks
for the chosen stages, tests on themis-milter/testing, a build to JavaScript with declarations,
Node 24 pinned for its npm scripts, a README.

Options:
  --name NAME          the plugin: greylist, themis-plugin-greylist or @scope/themis-plugin-greylist
  --stages LIST        comma-separated stages to tap (default ${DEFAULT_STAGES.join(',')}); any of
                       ${STAGES.join(', ')}
  --field FIELD        the policy field it claims (default: NAME in camelCase)
  --description TEXT   one line saying what it does
  --dir DIR            where to write it (default: ./themis-plugin-NAME)
  --themis SPEC        the themis-milter its development install uses (default: the published release;
                       a tarball or directory path for an unpublished Themis)
  --force              write into a directory that is not empty
  -y, --yes            ask nothing: defaults for whatever the flags leave open
  -h, --help           this text
  -v, --version        the scaffold's version
`;

/** Runs the command with `argv` (without node and script); resolves with the exit code. */
export async function main(argv: readonly string[], io: { stdout?: NodeJS.WritableStream; stderr?: NodeJS.WritableStream; stdin?: NodeJS.ReadableStream & { isTTY?: boolean } } = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const stdin = io.stdin ?? process.stdin;
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: [...argv],
        allowPositionals: true,
        strict: true,
        options: {
          name: { type: 'string' },
          stages: { type: 'string' },
          field: { type: 'string' },
          description: { type: 'string' },
          dir: { type: 'string' },
          themis: { type: 'string' },
          force: { type: 'boolean' },
          yes: { type: 'boolean', short: 'y' },
          help: { type: 'boolean', short: 'h' },
          version: { type: 'boolean', short: 'v' },
        },
      });
    } catch (err) {
      throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_ARG', `${(err as Error).message} (see --help)`);
    }
    const { values, positionals } = parsed;
    if (values.help) {
      stdout.write(USAGE);
      return 0;
    }
    if (values.version) {
      stdout.write(`${VERSION}\n`);
      return 0;
    }
    if (positionals.length > 1) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_ARG', `one NAME expected, got ${positionals.map((p) => JSON.stringify(p)).join(' ')} (see --help)`);
    if (positionals.length === 1 && values.name) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_ARG', `NAME given twice: ${JSON.stringify(positionals[0])} and --name ${JSON.stringify(values.name)}`);

    const options: ScaffoldOptions = {
      name: values.name ?? positionals[0] ?? '',
      stages: values.stages,
      field: values.field,
      description: values.description,
      dir: values.dir,
      themis: values.themis,
      force: values.force,
    };
    if (!values.yes && stdin.isTTY) await ask(options, stdin, stdout);
    const plan = planScaffold(options);
    const written = await writeScaffold(plan, { force: options.force });
    const where = relative(process.cwd(), plan.dir) || '.';
    stdout.write(
      `Created ${plan.names.packageName} in ${where} (${written.length} files): plugin ${JSON.stringify(plan.names.pluginName)}, ` +
        `policy field ${JSON.stringify(plan.names.field)}, stages ${plan.stages.join(', ')}.\n\nNext:\n` +
        (where === '.' ? '' : `  cd ${where}\n`) +
        '  npm install\n  npm test        # type-check and run the tests (on Node 24)\n  npm pack        # build the tarball Themis installs\n',
    );
    return 0;
  } catch (err) {
    if (err instanceof ScaffoldError) {
      stderr.write(`create-themis-plugin: ${err.message}\n`);
      return 2;
    }
    stderr.write(`create-themis-plugin: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

/** Asks, on a terminal, for what the flags left open. */
async function ask(options: ScaffoldOptions, stdin: NodeJS.ReadableStream, stdout: NodeJS.WritableStream): Promise<void> {
  const rl = createInterface({ input: stdin, output: stdout });
  try {
    while (!options.name) options.name = (await rl.question('Plugin name (greylist, max-recipients): ')).trim();
    if (options.stages === undefined) {
      const answer = (await rl.question(`Stages to tap, comma-separated [${DEFAULT_STAGES.join(',')}]\n  (${STAGES.join(', ')}): `)).trim();
      if (answer) options.stages = answer;
    }
    if (options.description === undefined) {
      const answer = (await rl.question('One line saying what it does: ')).trim();
      if (answer) options.description = answer;
    }
  } finally {
    rl.close();
  }
}
