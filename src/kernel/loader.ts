/**
 * Plugin loading: a plugin is named in the configuration by npm package name (`themis-plugin-*`
 * or scoped; resolved from the configuration's directory, then from Themis's own installation, where
 * the built-in plugins are), by a path relative to the configuration file, or given as an imported object.
 * @module
 */
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ThemisError } from './errors.ts';
import type { PluginDefinition } from './plugin.ts';

/** A plugin reference as written in a configuration: a package name, a path, or the object itself. */
export type PluginSpec = string | PluginDefinition<any, any>;

/** Resolves a plugin reference to its definition; relative paths and package names resolve from `baseDir`. */
export async function loadPlugin(spec: PluginSpec, baseDir: string): Promise<PluginDefinition<any, any>> {
  if (typeof spec !== 'string') return spec;
  let url: string;
  if (spec.startsWith('.') || isAbsolute(spec)) {
    url = pathToFileURL(isAbsolute(spec) ? spec : resolve(baseDir, spec)).href;
  } else {
    try {
      url = pathToFileURL(createRequire(join(baseDir, 'noop.js')).resolve(spec)).href;
    } catch (err) {
      // Then from Themis's own installation: the built-in plugins ship with it, wherever the
      // configuration file lives (/etc/themis has no node_modules).
      try {
        url = pathToFileURL(createRequire(import.meta.url).resolve(spec)).href;
      } catch {
        throw new ThemisError('THEMIS_ERR_PLUGIN_NOT_FOUND', { spec, from: `${baseDir} (nor from Themis's own installation)`, reason: (err as Error).message.split('\n')[0] }, { cause: err });
      }
    }
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    throw new ThemisError('THEMIS_ERR_PLUGIN_NOT_FOUND', { spec, from: baseDir, reason: (err as Error).message.split('\n')[0] }, { cause: err });
  }
  const candidate = (mod.default ?? mod.plugin) as PluginDefinition<any, any> | undefined;
  if (!candidate || typeof candidate !== 'object' || typeof candidate.setup !== 'function') {
    throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: spec, reason: 'the module exports no plugin (expected a default export made with definePlugin())' });
  }
  return candidate;
}
