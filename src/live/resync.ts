/**
 * The resync protocol: how a change to the live store (or `themis config resync`) makes every daemon
 * sharing the store reload. A version counter in the store is bumped and the new version announced
 * on a channel; a daemon reloads on each version it has not seen, and polls the counter so that one
 * that was disconnected when the announcement went out still catches up.
 * @module
 */
import { ThemisError } from '../kernel/errors.ts';
import type { Store } from '../store/store.ts';

/** Key of the version counter and channel of the announcements (under the store's key prefix). */
export const RESYNC = { versionKey: 'config:version', channel: 'config:resync' } as const;

/** One announcement on {@link RESYNC}.channel: the version the counter reached. */
export interface ResyncAnnouncement {
  /** The version, a decimal number as the counter holds it. */
  readonly version: string;
}

/**
 * The announcement as it travels: the bare decimal version. Kept that plain so that daemons of
 * every release sharing one store understand each other.
 */
export function encodeResync(announcement: ResyncAnnouncement): string {
  return announcement.version;
}

/** Reads an announcement; anything but a decimal version is a `THEMIS_ERR_IPC_MESSAGE`. */
export function decodeResync(payload: unknown): ResyncAnnouncement {
  if (typeof payload !== 'string' || !/^\d+$/.test(payload)) {
    throw new ThemisError('THEMIS_ERR_IPC_MESSAGE', { channel: RESYNC.channel, reason: `expected a version number, got ${JSON.stringify(payload)?.slice(0, 80)}` });
  }
  return { version: payload };
}

/**
 * Makes every daemon sharing the store reload: bumps the version (which a daemon that missed the
 * announcement finds by polling) and announces it. Resolves with the new version.
 */
export async function announceResync(store: Store): Promise<number> {
  const version = await store.increment(RESYNC.versionKey, 1);
  await store.publish(RESYNC.channel, encodeResync({ version: String(version) }));
  return version;
}

/** What {@link watchResync} logs through (a pino logger fits). */
export interface ResyncLogger {
  /** A resync is acted on. */
  info(fields: Record<string, unknown>, message: string): void;
  /** The store is unreachable, or an announcement was malformed. */
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Settings of {@link watchResync}. */
export interface ResyncWatchOptions {
  /** How often the version counter is read, in ms. */
  pollInterval: number;
  /** Where to log. */
  logger: ResyncLogger;
  /** Called once per version not seen before (the daemon reloads). */
  onResync(version: string): void;
}

/**
 * Follows the protocol on the daemon's side: subscribes to the announcements (retrying while the
 * store is unreachable) and polls the counter; resolves, once the current version is known, with a
 * function that stops both. The version found at the start counts as seen: the daemon has just
 * built its runtime from what the store holds.
 */
export async function watchResync(store: Store, options: ResyncWatchOptions): Promise<() => void> {
  const { logger } = options;
  let seen: string | undefined;
  let subscribed: (() => Promise<void>) | undefined;
  let closed = false;
  const check = (version: string | undefined) => {
    if (version === undefined || version === seen) return;
    seen = version;
    logger.info({ version }, 'resync requested through the store');
    options.onResync(version);
  };
  const onAnnouncement = (payload: string) => {
    let announcement: ResyncAnnouncement;
    try {
      announcement = decodeResync(payload);
    } catch (err) {
      // Someone else's message on our channel: the counter, still polled, says whether to reload.
      logger.warn({ code: (err as ThemisError).code, channel: RESYNC.channel }, (err as Error).message);
      return;
    }
    check(announcement.version);
  };
  const subscribe = async () => {
    if (subscribed || closed) return;
    try {
      const off = await store.subscribe(RESYNC.channel, onAnnouncement);
      subscribed = off;
      if (closed) void off();
    } catch (err) {
      logger.warn({ code: (err as { code?: string }).code ?? 'THEMIS_ERR_STORE_UNAVAILABLE', err: (err as Error).message }, 'cannot subscribe to resync messages yet; retrying');
    }
  };
  seen = await store.get(RESYNC.versionKey).catch(() => undefined);
  await subscribe();
  const poll = setInterval(() => {
    void subscribe();
    store.get(RESYNC.versionKey).then(check, () => undefined);
  }, options.pollInterval);
  poll.unref();
  return () => {
    closed = true;
    clearInterval(poll);
    void subscribed?.().catch(() => undefined);
  };
}
