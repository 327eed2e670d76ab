/**
 * What a daemon tells about itself: the status of a serving process, the cluster's status assembled
 * from its workers', the status endpoint (started so that failing to listen never stops the mail),
 * and what the start line says of the plugins' pages.
 * @module
 */
import { getHeapStatistics } from 'node:v8';
import type { Logger } from 'pino';
import { endpointUrl, startStatusServer, type StatusServer, type StatusSource } from '../http.ts';
import type { PluginPage } from '../../kernel/index.ts';
import { packageVersion } from '../version.ts';

/** Status of one serving process (what `/status` shows, or one entry of `workers` in cluster mode). */
export interface ProcessStatus {
  /** Its process id. */
  pid: number;
  /** Its worker id in a cluster. */
  worker: number | undefined;
  /** Themis's version. */
  version: string;
  /** Node's version. */
  node: string;
  /** When it started, ISO 8601. */
  startedAt: string;
  /** Seconds since. */
  uptimeSeconds: number;
  /** The milter socket's address. */
  listen: string | undefined;
  /** Open MTA connections. */
  connections: number;
  /** The serving runtime's configuration (null with --engine-only). */
  config: { file: string | null; hash: string; loadedAt: string; generation: number; plugins: string[]; policies: number; retiring: number; lastReloadError: unknown } | null;
  /** The store and its state. */
  store: { type: string; status: string };
  /** What the process holds: flat over time in a healthy daemon, whatever its reloads and connections. */
  resources: ProcessResources;
}

/**
 * What a process holds, for watching it over time: memory, the handles keeping its event loop alive
 * and the listeners on its signals. A count that only grows (across reloads, or as connections come
 * and go) is a leak. Documented in docs/reference/cli.md (The status endpoint).
 */
export interface ProcessResources {
  /** V8 heap in use, in bytes (right after a full garbage collection when {@link gc} is true). */
  heapUsedBytes: number;
  /** Total size of the V8 heap (used and free), in bytes. */
  heapTotalBytes: number;
  /** Memory outside the V8 heap held by JavaScript objects (buffers), in bytes. */
  externalBytes: number;
  /** Resident set size, in bytes. */
  rssBytes: number;
  /**
   * Most the V8 heap may grow to, in bytes: `themis start` bounds it (`--max-semi-space-size=16
   * --max-old-space-size=1024` unless NODE_OPTIONS sets them; docs/reference/cli.md, "Memory").
   */
  heapLimitBytes: number;
  /** The heap flags this process runs with, as given to node (`--max-semi-space-size=16`…); empty with V8's own sizing. */
  heapFlags: string[];
  /** True when the heap was measured right after a full garbage collection: `/status?gc=1` of a daemon run with `node --expose-gc`. */
  gc: boolean;
  /** `process.getActiveResourcesInfo()` counted by type: `TCPWrap` (sockets), `TCPServerWrap`/`PipeServerWrap` (listening sockets), `Timeout` (timers), `FSEventWrap` (file watches)… */
  active: Record<string, number>;
  /** Listeners on the process's signals and events (`SIGHUP`, `SIGTERM`, `SIGINT`, `message`, `uncaughtException`, `unhandledRejection`, `warning`). */
  listeners: Record<string, number>;
}

const WATCHED_EVENTS = ['SIGHUP', 'SIGTERM', 'SIGINT', 'message', 'uncaughtException', 'unhandledRejection', 'warning'] as const;

/**
 * This process's {@link ProcessResources}. `collect`: run a full garbage collection first, when the
 * process was started with `--expose-gc` (ignored otherwise: a daemon in production never pays for it).
 */
export function processResources(collect = false): ProcessResources {
  const gc = (globalThis as { gc?: unknown }).gc;
  const collected = collect && typeof gc === 'function';
  if (collected) {
    // Twice: what the first one's finalizers released goes in the second.
    (gc as () => void)();
    (gc as () => void)();
  }
  const active: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo().sort()) active[type] = (active[type] ?? 0) + 1;
  const listeners: Record<string, number> = {};
  for (const event of WATCHED_EVENTS) listeners[event] = process.listenerCount(event);
  const memory = process.memoryUsage();
  return {
    heapUsedBytes: memory.heapUsed,
    heapTotalBytes: memory.heapTotal,
    externalBytes: memory.external,
    rssBytes: memory.rss,
    heapLimitBytes: getHeapStatistics().heap_size_limit,
    heapFlags: heapFlags(),
    gc: collected,
    active,
    listeners,
  };
}

const HEAP_FLAG = /^--max[-_](?:semi[-_]space|old[-_]space|heap)[-_]size(?:=|$)/;

/** The heap-size flags of this process, from node's command line and NODE_OPTIONS. */
function heapFlags(): string[] {
  return [...(process.env.NODE_OPTIONS ?? '').split(/\s+/), ...process.execArgv].filter((a) => HEAP_FLAG.test(a));
}

/** The cluster primary's `/status`: the process's own facts with every worker's status. */
export function clusterStatus(startedAt: Date, listen: string | undefined, workers: ProcessStatus[]): Record<string, unknown> {
  const hashes = [...new Set(workers.map((s) => s.config?.hash).filter(Boolean))];
  return {
    pid: process.pid,
    version: packageVersion(),
    node: process.version,
    mode: 'cluster',
    startedAt: startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000),
    listen,
    connections: workers.reduce((n, s) => n + (s.connections ?? 0), 0),
    // One hash when the workers agree; otherwise the hashes, so a half-applied reload shows.
    config: hashes.length === 1 ? workers[0].config : { hash: 'mixed', hashes },
    store: workers[0]?.store,
    // The primary's own; each worker's is in its entry.
    resources: processResources(),
    workers,
  };
}

/** Starts the status endpoint unless disabled; it is secondary, so failing to listen is logged and mail keeps flowing. */
export async function serveStatus(spec: string | false, logger: Logger, source: StatusSource, token: string | undefined): Promise<StatusServer | undefined> {
  if (spec === false) return undefined;
  try {
    return await startStatusServer(spec, source, (err) => logger.warn({ err }, 'status endpoint error'), { token });
  } catch (err) {
    logger.error({ code: 'THEMIS_ERR_HTTP_LISTEN', err }, `status endpoint cannot listen on ${spec}: ${(err as Error).message}; serving mail without it`);
    return undefined;
  }
}

/**
 * What the start line says of the plugins' pages for a browser (the monitor's dashboard): a `pages`
 * field, page name → URL (`plugin/name` when two plugins use one name), and words for the message.
 * With the status endpoint off, the pages are not served, and the line says so.
 */
export function pagesShown(pages: readonly PluginPage[], statusServer: StatusServer | undefined, token: string | undefined): { fields: { pages?: Record<string, string> }; words: string } {
  if (pages.length === 0) return { fields: {}, words: '' };
  if (!statusServer) return { fields: {}, words: `; no ${pages.map((p) => `${p.plugin} ${p.name}`).join(', ')}: the status endpoint is off` };
  const fields: Record<string, string> = {};
  const words: string[] = [];
  for (const p of pages) {
    const url = endpointUrl(statusServer.address, p.path);
    fields[pages.filter((o) => o.name === p.name).length > 1 ? `${p.plugin}/${p.name}` : p.name] = url;
    words.push(`${p.plugin} ${p.name} at ${url}`);
  }
  return { fields: { pages: fields }, words: `; ${words.join(', ')}${token === undefined ? '' : ' (open it once with ?token=…)'}` };
}
