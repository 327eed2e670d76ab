/**
 * What a plugin is called where: its npm package, its name in the kernel (logs, metrics, notes, error
 * codes), the policy field it claims and the names of its TypeScript types — all derived from the one
 * name the author gives, so that they cannot drift apart.
 * @module
 */
import { ScaffoldError } from './errors.ts';

/** The names of one plugin. */
export interface PluginNames {
  /** The npm package: `themis-plugin-greylist`, or the scoped name as given (`@acme/themis-plugin-greylist`). */
  packageName: string;
  /** The plugin's name in the kernel (`definePlugin({ name })`): `greylist`. */
  pluginName: string;
  /** The policy field it claims: `greylist` (`acme-tag` → `acmeTag`). */
  field: string;
  /** The prefix of its TypeScript names: `Greylist` (`GreylistField`, `GreylistConfig`). */
  typeName: string;
  /** The directory a new package goes to by default: the package name without its scope. */
  directory: string;
  /** The header the generated end-of-message hook adds by default: `X-Greylist`. */
  header: string;
}

/** The prefix every unscoped Themis plugin package carries, so that `npm search themis-plugin` finds it. */
export const PACKAGE_PREFIX = 'themis-plugin-';

const SHORT_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const SCOPE = /^@[a-z0-9][a-z0-9._-]*$/;
const FIELD = /^[a-z][a-zA-Z0-9]*$/;

/**
 * The names of a plugin from what the author typed: `greylist`, `themis-plugin-greylist`,
 * `@acme/themis-plugin-greylist` or `@acme/greylist` (a scoped name is kept as given). `field`
 * overrides the derived policy field.
 * @throws ScaffoldError `THEMIS_ERR_SCAFFOLD_NAME` / `THEMIS_ERR_SCAFFOLD_FIELD` for a name npm or the kernel would refuse.
 */
export function pluginNames(input: string, field?: string): PluginNames {
  const given = input.trim();
  let scope: string | undefined;
  let bare = given;
  if (given.startsWith('@')) {
    const slash = given.indexOf('/');
    scope = slash > 0 ? given.slice(0, slash) : given;
    bare = slash > 0 ? given.slice(slash + 1) : '';
    if (!SCOPE.test(scope)) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_NAME', `--name ${JSON.stringify(given)}: ${JSON.stringify(scope)} is not an npm scope (expected @ then lower-case letters, digits, . _ -)`);
  }
  const short = bare.startsWith(PACKAGE_PREFIX) ? bare.slice(PACKAGE_PREFIX.length) : bare;
  if (!SHORT_NAME.test(short)) {
    throw new ScaffoldError(
      'THEMIS_ERR_SCAFFOLD_NAME',
      `--name ${JSON.stringify(given)}: expected a plugin name of lower-case letters and digits joined by single dashes (greylist, max-recipients), optionally as themis-plugin-NAME or @scope/NAME`,
    );
  }
  const packageName = scope ? `${scope}/${bare}` : `${PACKAGE_PREFIX}${short}`;
  const words = short.split('-');
  const derivedField = words[0] + words.slice(1).map((w) => w[0].toUpperCase() + w.slice(1)).join('');
  const chosenField = field?.trim() || derivedField;
  if (!FIELD.test(chosenField)) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_FIELD', `--field ${JSON.stringify(field)}: expected a policy field name (a lower-case letter, then letters and digits: maxRecipients)`);
  const typeName = words.map((w) => w[0].toUpperCase() + w.slice(1)).join('');
  return {
    packageName,
    pluginName: short,
    field: chosenField,
    typeName: /^[0-9]/.test(typeName) ? `P${typeName}` : typeName,
    directory: packageName.replace(/^@[^/]+\//, ''),
    header: `X-${words.map((w) => w[0].toUpperCase() + w.slice(1)).join('-')}`,
  };
}
