/**
 * The messages between the cluster primary and its workers (`themis start --workers N`): one typed
 * definition that both sides send and read, and the decoding that turns whatever arrives on the IPC
 * channel into one of them — or into a logged, coded rejection.
 * @module
 */
import { ThemisError } from '../../kernel/errors.ts';
import type { HttpRequest, HttpResponse } from '../../kernel/index.ts';
import type { ProcessStatus } from './status.ts';

/** What the primary sends a worker. `id` pairs an answer with its question. */
export type PrimaryMessage =
  /** Asks for the worker's {@link ProcessStatus}. */
  | { themis: 'status'; id: number }
  /** Asks the worker to answer a plugin route of the status endpoint. */
  | { themis: 'http'; id: number; request: HttpRequest }
  /** Asks the worker to drain its connections and exit. */
  | { themis: 'stop' };

/** What a worker sends the primary. */
export type WorkerMessage =
  /** The worker listens on the shared socket (sent once, after its start). */
  | { themis: 'listening'; address: string | undefined }
  /** The answer to a status question. */
  | { themis: 'status'; id: number; status: ProcessStatus }
  /** The answer to a route question (`response` null: no plugin serves the path), with the served paths. */
  | { themis: 'http'; id: number; response: HttpResponse | null; routes: string[] };

/** Where a message was read, for the rejection's `channel`. */
type Side = 'worker' | 'primary';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

function reject(side: Side, msg: Record<string, unknown>, reason: string): never {
  const kind = typeof msg.themis === 'string' ? msg.themis : JSON.stringify(msg.themis);
  throw new ThemisError('THEMIS_ERR_IPC_MESSAGE', { channel: side === 'worker' ? 'the worker IPC channel (from the primary)' : 'the primary IPC channel (from a worker)', reason: `${kind} message: ${reason}` });
}

/**
 * Reads a message that arrived at a worker. Undefined when it is not Themis's (no `themis` field:
 * prom-client's metrics requests share the channel); a `THEMIS_ERR_IPC_MESSAGE` when it is, but its
 * kind is unknown or its fields are wrong.
 */
export function decodePrimaryMessage(raw: unknown): PrimaryMessage | undefined {
  if (!isObject(raw) || !('themis' in raw)) return undefined;
  switch (raw.themis) {
    case 'status':
      if (!isId(raw.id)) reject('worker', raw, 'id is not a positive whole number');
      return { themis: 'status', id: raw.id };
    case 'http': {
      if (!isId(raw.id)) reject('worker', raw, 'id is not a positive whole number');
      const r = raw.request;
      if (!isObject(r) || typeof r.path !== 'string' || !isObject(r.query) || !Object.values(r.query).every((v) => typeof v === 'string')) reject('worker', raw, 'request is not { path, query }');
      return { themis: 'http', id: raw.id, request: r as unknown as HttpRequest };
    }
    case 'stop':
      return { themis: 'stop' };
    default:
      return reject('worker', raw, 'unknown kind');
  }
}

/**
 * Reads a message that arrived at the primary from a worker. Undefined when it is not Themis's;
 * a `THEMIS_ERR_IPC_MESSAGE` when its kind is unknown or its fields are wrong.
 */
export function decodeWorkerMessage(raw: unknown): WorkerMessage | undefined {
  if (!isObject(raw) || !('themis' in raw)) return undefined;
  switch (raw.themis) {
    case 'listening':
      if (raw.address !== undefined && typeof raw.address !== 'string') reject('primary', raw, 'address is not a string');
      return { themis: 'listening', address: raw.address };
    case 'status':
      if (!isId(raw.id)) reject('primary', raw, 'id is not a positive whole number');
      if (!isObject(raw.status) || typeof raw.status.pid !== 'number') reject('primary', raw, 'status is not a process status');
      return { themis: 'status', id: raw.id, status: raw.status as unknown as ProcessStatus };
    case 'http': {
      if (!isId(raw.id)) reject('primary', raw, 'id is not a positive whole number');
      const r = raw.response;
      if (r !== null && (!isObject(r) || typeof r.type !== 'string' || typeof r.body !== 'string' || (r.status !== undefined && typeof r.status !== 'number'))) reject('primary', raw, 'response is neither null nor { status, type, body }');
      if (!isStringArray(raw.routes)) reject('primary', raw, 'routes is not a list of paths');
      return { themis: 'http', id: raw.id, response: r as HttpResponse | null, routes: raw.routes };
    }
    default:
      return reject('primary', raw, 'unknown kind');
  }
}

/** What {@link receive} logs a rejection through (a pino logger fits). */
export interface MessageLogger {
  /** Logs the rejected message's code and reason. */
  error(fields: Record<string, unknown>, message: string): void;
}

/**
 * Decodes with `decode`; a rejected message is logged with its code and dropped, so that a stray
 * message never takes a process down. Undefined for a dropped or foreign message.
 */
export function receive<T>(raw: unknown, decode: (raw: unknown) => T | undefined, logger: MessageLogger): T | undefined {
  try {
    return decode(raw);
  } catch (err) {
    logger.error({ code: (err as ThemisError).code ?? 'THEMIS_ERR_IPC_MESSAGE' }, (err as Error).message);
    return undefined;
  }
}

/** Sends a message from a worker to the primary (nothing when this process is not a worker). */
export function sendToPrimary(message: WorkerMessage): void {
  process.send?.(message);
}

/** Sends a message from the primary to a worker. */
export function sendToWorker(worker: { send(message: PrimaryMessage): unknown }, message: PrimaryMessage): void {
  worker.send(message);
}
