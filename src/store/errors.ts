/**
 * The store's error registry: every error a store operation rejects with, or its configuration is
 * refused with, has a stable `THEMIS_ERR_STORE_*` code, so a plugin's failure policy and the tests can
 * match on the code rather than on ioredis' message text.
 * @module
 */
import { CodedError } from '../milter/errors.ts';

/** Code → message template; `{name}` placeholders come from the error's details. */
export const STORE_ERRORS = {
  THEMIS_ERR_STORE_CONFIG: 'store configuration: {path}: {reason}',
  THEMIS_ERR_STORE_TLS_FILE: 'store configuration: tls.{option}: cannot read {file}: {reason}',
  THEMIS_ERR_STORE_UNAVAILABLE: 'redis store {target} is unavailable: {reason}',
  THEMIS_ERR_STORE_CONNECT: 'redis store {target} was not ready within {ms} ms: {reason}',
  THEMIS_ERR_STORE_AUTH: 'redis store {target} refused the credentials: {reason}',
  THEMIS_ERR_STORE_TIMEOUT: 'redis store {target}: {command} got no answer within {ms} ms',
  THEMIS_ERR_STORE_COMMAND: 'redis store {target}: {command} failed: {reason}',
  THEMIS_ERR_STORE_CLOSED: 'the store is closed',
  THEMIS_ERR_STORE_SUBSCRIBER: 'store subscriber for {channel} failed: {reason}',
  THEMIS_ERR_STORE_WRONGTYPE: 'store {command}: the key holds another kind of value (a string, a hash, counters or a ranking)',
  THEMIS_ERR_STORE_ARGUMENT: 'store {command}: invalid argument: {reason}',
} as const;

/** A code of the store's error registry. */
export type StoreErrorCode = keyof typeof STORE_ERRORS;

/**
 * An error raised by a store or its configuration. `code` is stable, `details` holds the template's
 * values; `cause` is the underlying ioredis or system error when there is one.
 */
export class StoreError extends CodedError<StoreErrorCode> {
  constructor(code: StoreErrorCode, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(code, STORE_ERRORS[code], details, options);
    this.name = 'StoreError';
  }
}

/** True when `err` is a {@link StoreError}, optionally of the given code. */
export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}
