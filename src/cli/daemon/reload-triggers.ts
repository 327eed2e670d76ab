/**
 * What makes a serving process reload: SIGHUP, a change of the configuration file, and a resync
 * announced through the store (the live store's resync protocol).
 * @module
 */
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { LoadedConfig } from '../../config.ts';
import type { RuntimeManager } from '../../kernel/index.ts';
import { watchResync } from '../../live/index.ts';
import type { Store } from '../../store/index.ts';

/** What the triggers act on. */
export interface TriggerContext {
  /** Reloaded by every trigger. */
  manager: RuntimeManager;
  /** The configuration file to watch, if any. */
  file: string | undefined;
  /** The configuration as loaded at the start: its `reload` settings apply until a restart. */
  config: LoadedConfig | undefined;
  /** The store that carries resync announcements. */
  store: Store;
  /** Where to log. */
  logger: Logger;
}

/** Starts SIGHUP, the file watcher and the store's resync; resolves with a function that stops them. */
export async function startReloadTriggers({ manager, file, config, store, logger }: TriggerContext): Promise<() => void> {
  const { configHash } = await import('../../config.ts');
  const onHup = () => void manager.reload('SIGHUP');
  process.on('SIGHUP', onHup);
  const settings = config?.reload ?? { watch: true, resync: true, pollInterval: 5_000 };
  const stoppers: (() => void)[] = [() => process.off('SIGHUP', onHup)];

  if (file && settings.watch) {
    // The directory is watched, not the file: editors save by writing a new file and renaming it
    // over the old one, which a watch on the old inode never sees.
    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name !== basename(file)) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          let hash: string;
          try {
            hash = configHash(readFileSync(file));
          } catch (err) {
            logger.warn({ file, err: (err as Error).message }, 'configuration file unreadable; still serving the loaded configuration');
            return;
          }
          if (hash !== manager.current.info.hash) void manager.reload('file');
        }, 150);
      });
      watcher.on('error', (err) => logger.warn({ err }, 'configuration watch failed; SIGHUP still reloads'));
      stoppers.push(() => {
        clearTimeout(timer);
        watcher?.close();
      });
    } catch (err) {
      logger.warn({ err, file }, 'cannot watch the configuration file; SIGHUP still reloads');
    }
  }

  if (settings.resync) stoppers.push(await watchResync(store, { pollInterval: settings.pollInterval, logger, onResync: () => void manager.reload('resync') }));
  return () => stoppers.forEach((s) => s());
}
