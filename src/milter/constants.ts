/**
 * Wire constants of the Sendmail milter protocol, version 6, as Postfix and Sendmail speak it.
 * Values are those of libmilter's `mfdef.h` / `mfapi.h` (see docs/milter-protocol in the repository).
 * Plain `as const` objects rather than enums: the sources run under Node's type stripping.
 * @module
 */

/** Highest protocol version this engine speaks. */
export const MILTER_VERSION = 6;

/** Largest body chunk, and largest payload we emit without MDS negotiation (libmilter `MILTER_CHUNK_SIZE`). */
export const MILTER_CHUNK_SIZE = 65535;

/** Default cap on incoming packets: Postfix may send one header above 64 KiB (its `header_size_limit` is 102400). */
export const DEFAULT_MAX_PACKET_SIZE = 1024 * 1024;

/** Commands: MTA → filter. */
export const Command = {
  ABORT: 0x41, // 'A'
  BODY: 0x42, // 'B'
  CONNECT: 0x43, // 'C'
  MACRO: 0x44, // 'D'
  BODYEOB: 0x45, // 'E'
  HELO: 0x48, // 'H'
  QUIT_NC: 0x4b, // 'K'
  HEADER: 0x4c, // 'L'
  MAIL: 0x4d, // 'M'
  EOH: 0x4e, // 'N'
  OPTNEG: 0x4f, // 'O'
  QUIT: 0x51, // 'Q'
  RCPT: 0x52, // 'R'
  DATA: 0x54, // 'T'
  UNKNOWN: 0x55, // 'U'
} as const;
/** A command byte. */
export type CommandCode = (typeof Command)[keyof typeof Command];

/** Responses: filter → MTA. */
export const Response = {
  ADDRCPT: 0x2b, // '+'
  DELRCPT: 0x2d, // '-'
  ADDRCPT_PAR: 0x32, // '2'
  SHUTDOWN: 0x34, // '4'
  OPTNEG: 0x4f, // 'O'
  ACCEPT: 0x61, // 'a'
  REPLBODY: 0x62, // 'b'
  CONTINUE: 0x63, // 'c'
  DISCARD: 0x64, // 'd'
  CHGFROM: 0x65, // 'e'
  CONN_FAIL: 0x66, // 'f'
  ADDHEADER: 0x68, // 'h'
  INSHEADER: 0x69, // 'i'
  SETSYMLIST: 0x6c, // 'l'
  CHGHEADER: 0x6d, // 'm'
  PROGRESS: 0x70, // 'p'
  QUARANTINE: 0x71, // 'q'
  REJECT: 0x72, // 'r'
  SKIP: 0x73, // 's'
  TEMPFAIL: 0x74, // 't'
  REPLYCODE: 0x79, // 'y'
} as const;
/** A response byte. */
export type ResponseCode = (typeof Response)[keyof typeof Response];

/** Action flags (SMFIF_*): which modifications the filter may request. */
export const Action = {
  ADDHDRS: 0x01,
  CHGBODY: 0x02,
  ADDRCPT: 0x04,
  DELRCPT: 0x08,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;
/** Every action of protocol version 6 (`SMFI_CURR_ACTS`). */
export const ALL_ACTIONS = 0x1ff;

/** Protocol flags (SMFIP_*): NO* = do not send the event, NR* = the filter will not reply to it. */
export const Protocol = {
  NOCONNECT: 0x01,
  NOHELO: 0x02,
  NOMAIL: 0x04,
  NORCPT: 0x08,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  HDR_LEADSPC: 0x100000,
  MDS_256K: 0x10000000,
  MDS_1M: 0x20000000,
} as const;
/** Every protocol bit of version 6 (`SMFI_CURR_PROT`). */
export const ALL_PROTOCOL = 0x1fffff;

/** Macro stages (SMFIM_*) as used in the OPTNEG macro lists. EOM=5 comes before EOH=6: historical, do not sort. */
export const MacroStage = {
  CONNECT: 0,
  HELO: 1,
  ENVFROM: 2,
  ENVRCPT: 3,
  DATA: 4,
  EOM: 5,
  EOH: 6,
} as const;

/**
 * The SMTP stages an application can listen to. Names follow the SMTP dialogue, not the wire bytes.
 */
export type Stage = 'connect' | 'helo' | 'mailFrom' | 'rcptTo' | 'data' | 'header' | 'endOfHeaders' | 'body' | 'endOfMessage' | 'unknown';

/** Per stage: the command byte, the NO* bit that suppresses it and the NR* bit that silences its reply. */
export const STAGE_BITS: Readonly<Record<Stage, { command: number; no: number; nr: number }>> = {
  connect: { command: Command.CONNECT, no: Protocol.NOCONNECT, nr: Protocol.NR_CONN },
  helo: { command: Command.HELO, no: Protocol.NOHELO, nr: Protocol.NR_HELO },
  mailFrom: { command: Command.MAIL, no: Protocol.NOMAIL, nr: Protocol.NR_MAIL },
  rcptTo: { command: Command.RCPT, no: Protocol.NORCPT, nr: Protocol.NR_RCPT },
  data: { command: Command.DATA, no: Protocol.NODATA, nr: Protocol.NR_DATA },
  header: { command: Command.HEADER, no: Protocol.NOHDRS, nr: Protocol.NR_HDR },
  endOfHeaders: { command: Command.EOH, no: Protocol.NOEOH, nr: Protocol.NR_EOH },
  body: { command: Command.BODY, no: Protocol.NOBODY, nr: Protocol.NR_BODY },
  endOfMessage: { command: Command.BODYEOB, no: 0, nr: 0 },
  unknown: { command: Command.UNKNOWN, no: Protocol.NOUNKNOWN, nr: Protocol.NR_UNKN },
};

/** Every stage, in SMTP order. */
export const STAGES: readonly Stage[] = ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body', 'endOfMessage', 'unknown'];

/** Macro-list stage for each listenable stage that has one. */
export const STAGE_MACRO_LIST: Readonly<Partial<Record<Stage, number>>> = {
  connect: MacroStage.CONNECT,
  helo: MacroStage.HELO,
  mailFrom: MacroStage.ENVFROM,
  rcptTo: MacroStage.ENVRCPT,
  data: MacroStage.DATA,
  endOfHeaders: MacroStage.EOH,
  endOfMessage: MacroStage.EOM,
};

/** Printable name of a command or response byte, for logs and errors. */
export function codeName(code: number): string {
  for (const [name, value] of Object.entries(Command)) if (value === code) return `SMFIC_${name}`;
  for (const [name, value] of Object.entries(Response)) if (value === code) return `SMFIR_${name}`;
  return `0x${code.toString(16).padStart(2, '0')}`;
}
