/**
 * The package's version, as `themis --version`, the start line and `/status` report it.
 * @module
 */
import { readFileSync } from 'node:fs';

/** Reads the package version from package.json (two levels up in a checkout and in dist alike). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
