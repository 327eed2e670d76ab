/**
 * create-themis-plugin: writes a complete Themis plugin package. `npm init themis-plugin` runs its
 * command line (src/main.ts); this module is the same thing as functions, for tools and tests.
 * @module
 */
import { readFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ScaffoldError } from './errors.ts';
import { pluginNames, type PluginNames } from './names.ts';
import { DEFAULT_STAGES, parseStages, type Stage } from './stages.ts';
import { gitignore, packageJson, pluginSource, pluginTest, readme, tsconfig, tsconfigBuild, type TemplateInput } from './templates.ts';

export { ScaffoldError, SCAFFOLD_ERROR_CODES, type ScaffoldErrorCode } from './errors.ts';
export { pluginNames, PACKAGE_PREFIX, type PluginNames } from './names.ts';
export { STAGES, DEFAULT_STAGES, parseStages, type Stage } from './stages.ts';
export { TOOL_VERSIONS } from './templates.ts';

/** This package's version: a new plugin is written for the Themis release it comes with. */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The `themis-milter` range a new plugin declares: this release's minor line (`^0.1.0`). */
export const THEMIS_RANGE = `^${VERSION.split('.').slice(0, 2).join('.')}.0`;

/** What to create. */
export interface ScaffoldOptions {
  /** The plugin's name: `greylist`, `themis-plugin-greylist`, `@acme/themis-plugin-greylist`. */
  name: string;
  /** The stages it taps (default `rcptTo`, `endOfMessage`). */
  stages?: string | readonly string[];
  /** The policy field it claims (default: the name in camelCase). */
  field?: string;
  /** One line saying what it does. */
  description?: string;
  /** Where to write the package (default: `./<package name without scope>`), relative to `cwd`. */
  dir?: string;
  /** The directory `dir` is relative to (default `process.cwd()`). */
  cwd?: string;
  /**
   * How the package's development install gets `themis-milter` (default: {@link THEMIS_RANGE} from the
   * registry). A path to a tarball or a checkout (`file:…`) for a Themis that is not published.
   */
  themis?: string;
  /** Write into a directory that is not empty (files of the same name are overwritten). */
  force?: boolean;
}

/** A package ready to be written. */
export interface ScaffoldPlan {
  /** The absolute directory. */
  dir: string;
  /** The plugin's names. */
  names: PluginNames;
  /** The stages it taps, in milter order. */
  stages: Stage[];
  /** Every file, by path relative to `dir`. */
  files: Map<string, string>;
}

/**
 * The files of a new plugin package, without writing anything.
 * @throws ScaffoldError for a bad name, field or stage.
 */
export function planScaffold(options: ScaffoldOptions): ScaffoldPlan {
  if (!options.name?.trim()) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_NAME', '--name: a plugin name is needed (greylist, max-recipients)');
  const names = pluginNames(options.name, options.field);
  const stages = options.stages === undefined ? [...DEFAULT_STAGES] : parseStages(options.stages);
  const input: TemplateInput = {
    names,
    stages,
    description: options.description?.trim() || `A Themis plugin (${stages.join(', ')}).`,
    themisRange: THEMIS_RANGE,
    themisDevSpec: devSpec(options.themis, options.cwd),
  };
  const dir = resolve(options.cwd ?? process.cwd(), options.dir ?? names.directory);
  const files = new Map<string, string>([
    ['package.json', packageJson(input)],
    ['tsconfig.json', tsconfig()],
    ['tsconfig.build.json', tsconfigBuild()],
    ['.gitignore', gitignore()],
    ['README.md', readme(input)],
    ['src/index.ts', pluginSource(input)],
    ['test/plugin.test.ts', pluginTest(input)],
  ]);
  return { dir, names, stages, files };
}

/** A local path (tarball or directory) becomes an absolute `file:` spec; a range or `file:` spec is kept. */
function devSpec(themis: string | undefined, cwd: string | undefined): string {
  if (!themis) return THEMIS_RANGE;
  if (/^(\.{0,2}\/|~)/.test(themis) || themis.endsWith('.tgz')) return `file:${resolve(cwd ?? process.cwd(), themis)}`;
  return themis;
}

/**
 * Writes a planned package.
 * @throws ScaffoldError `THEMIS_ERR_SCAFFOLD_DIR` when the directory holds anything and `force` is not set.
 * @returns the paths written, relative to the package's directory.
 */
export async function writeScaffold(plan: ScaffoldPlan, options: { force?: boolean } = {}): Promise<string[]> {
  let existing: string[] = [];
  try {
    existing = await readdir(plan.dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing.length > 0 && !options.force) {
    throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_DIR', `${plan.dir} is not empty (${existing.slice(0, 5).join(', ')}${existing.length > 5 ? ', …' : ''}): choose another --dir, or --force to write into it`);
  }
  for (const [path, text] of plan.files) {
    const target = join(plan.dir, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, text);
  }
  return [...plan.files.keys()];
}

/** Plans and writes a new plugin package in one step. */
export async function scaffold(options: ScaffoldOptions): Promise<ScaffoldPlan> {
  const plan = planScaffold(options);
  await writeScaffold(plan, { force: options.force });
  return plan;
}
