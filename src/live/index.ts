/**
 * Live policies: policies, groups and pools kept in the store beside the configuration file, edited
 * with `themis policy|group|pool …`, merged over the file by name, and applied by every daemon sharing
 * the store through the resync protocol. This is the module's public face: the store
 * ({@link readLive}, {@link writeLive}, the audit log), the one merge ({@link mergeLive}) and the
 * resync protocol ({@link announceResync}, {@link watchResync}).
 * @module
 */
export { LIVE_AUDIT_KEEP, LIVE_FIELD, LIVE_KEYS, hasLive, readAudit, readLive, writeLive, type AuditEntry, type LiveItems, type LiveKind } from './store.ts';
export { liveOrigin, mergeLive, type PolicySource, type WithLive } from './merge.ts';
export { RESYNC, announceResync, decodeResync, encodeResync, watchResync, type ResyncAnnouncement, type ResyncLogger, type ResyncWatchOptions } from './resync.ts';
