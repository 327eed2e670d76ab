/**
 * The scaffold's errors: one class, one code per kind of mistake, a message that says which flag was
 * wrong and what was expected. The scaffold runs before Themis is installed, so it does not use
 * Themis's error registry; its codes follow the same `THEMIS_ERR_…` naming.
 * @module
 */

/** Every code the scaffold raises. */
export const SCAFFOLD_ERROR_CODES = {
  /** An unknown flag, a flag without its value, or a positional argument where none is expected. */
  THEMIS_ERR_SCAFFOLD_ARG: 'a command-line argument the scaffold does not understand',
  /** The plugin name is missing or is not a valid npm/plugin name. */
  THEMIS_ERR_SCAFFOLD_NAME: 'a plugin name npm or the kernel would refuse',
  /** `--field` is not a valid policy field name. */
  THEMIS_ERR_SCAFFOLD_FIELD: 'a policy field name the kernel would refuse',
  /** `--stages` names a stage that is not a milter stage hook, or none at all. */
  THEMIS_ERR_SCAFFOLD_STAGE: 'a stage that is not a hook',
  /** The target directory exists and is not empty (and `--force` was not given). */
  THEMIS_ERR_SCAFFOLD_DIR: 'a target directory that is not empty',
} as const;

/** A scaffold error code. */
export type ScaffoldErrorCode = keyof typeof SCAFFOLD_ERROR_CODES;

/** A mistake in what the scaffold was asked to do; nothing has been written when it is thrown. */
export class ScaffoldError extends Error {
  /** The stable code a script or test can test for. */
  readonly code: ScaffoldErrorCode;

  constructor(code: ScaffoldErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.name = 'ScaffoldError';
    this.code = code;
  }
}
