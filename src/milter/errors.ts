/**
 * The milter engine's error registry. Every error the engine raises or logs carries one of these
 * codes, so tests and operators can match on a stable string rather than on message text.
 * @module
 */

/** Code → message template. `{name}` placeholders are filled from the error's details. */
export const MILTER_ERRORS = {
  THEMIS_ERR_MILTER_ZERO_LENGTH: 'packet with length 0 (a packet holds at least its command byte)',
  THEMIS_ERR_MILTER_OVERSIZE: 'packet of {size} bytes exceeds the limit of {limit} bytes',
  THEMIS_ERR_MILTER_TRUNCATED: 'connection ended inside a packet ({have} of {want} bytes received)',
  THEMIS_ERR_MILTER_UNKNOWN_COMMAND: 'unknown command byte {code}',
  THEMIS_ERR_MILTER_MALFORMED: 'malformed {command} packet: {reason}',
  THEMIS_ERR_MILTER_OUT_OF_ORDER: '{command} is not allowed in state {state}',
  THEMIS_ERR_MILTER_VERSION: 'MTA speaks milter protocol version {version}; at least 2 is required',
  THEMIS_ERR_MILTER_ACTION_NOT_NEGOTIATED: '{action} needs action flag {flag}, which was not negotiated',
  THEMIS_ERR_MILTER_MODIFY_OUTSIDE_EOM: '{action} is only allowed while answering end of message',
  THEMIS_ERR_MILTER_BAD_REPLY: 'invalid SMTP reply: {reason}',
  THEMIS_ERR_MILTER_BAD_HEADER: 'invalid header {what}: {reason}',
  THEMIS_ERR_MILTER_BAD_ADDRESS: 'invalid address {address}: {reason}',
  THEMIS_ERR_MILTER_BAD_DECISION: '{decision} is not a valid answer to {stage}',
  THEMIS_ERR_MILTER_HANDLER: 'handler for {stage} failed: {reason}',
  THEMIS_ERR_MILTER_HANDLER_TIMEOUT: 'handler for {stage} did not answer within {ms} ms',
  THEMIS_ERR_MILTER_TIMEOUT: 'connection {kind} timeout after {ms} ms',
  THEMIS_ERR_MILTER_LISTEN_SPEC: 'invalid socket spec {spec}: {reason} (expected inet:PORT@HOST, inet6:PORT@[ADDR] or unix:/path)',
  THEMIS_ERR_MILTER_CLIENT: 'milter client: {reason}',
  THEMIS_ERR_MILTER_UNEXPECTED_RESPONSE: 'unexpected response {code} to {command}',
  THEMIS_ERR_MILTER_CLOSED: 'connection closed',
  THEMIS_ERR_MILTER_CONNECTION_LIMIT: 'connection limit of {limit} reached',
} as const;

/** A code of the milter error registry. */
export type MilterErrorCode = keyof typeof MILTER_ERRORS;

/**
 * An error with a stable code and the values its message was built from. The base of the engine's
 * and the kernel's errors, so both registries read and print the same way.
 */
export class CodedError<TCode extends string> extends Error {
  /** Stable code. */
  readonly code: TCode;
  /** The values the message was built from. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: TCode, template: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(template.replace(/\{(\w+)\}/g, (whole, key: string) => (key in details ? String(details[key]) : whole)), options);
    this.code = code;
    this.details = details;
  }
}

/** An error raised by the milter engine. `code` is stable; `details` holds the template's values. */
export class MilterError extends CodedError<MilterErrorCode> {
  constructor(code: MilterErrorCode, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(code, MILTER_ERRORS[code], details, options);
    this.name = 'MilterError';
  }
}

/** True when `err` is a {@link MilterError}, optionally of the given code. */
export function isMilterError(err: unknown, code?: MilterErrorCode): err is MilterError {
  return err instanceof MilterError && (code === undefined || err.code === code);
}
