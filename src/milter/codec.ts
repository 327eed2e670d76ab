/**
 * Frame codec: a streaming decoder for `uint32 length | code | payload` packets and encoders for every
 * command (MTA → filter) and response (filter → MTA). Strings are NUL-terminated; integers big-endian.
 * Byte lengths are always measured on bytes, never on JavaScript strings.
 * @module
 */
import { Command, DEFAULT_MAX_PACKET_SIZE, MILTER_CHUNK_SIZE, Response, codeName } from './constants.ts';
import { MilterError } from './errors.ts';

/** How strings are turned into bytes and back. `latin1` round-trips any byte; `utf8` is what modern mail uses. */
export type StringEncoding = 'utf8' | 'latin1';

/** Called for each whole packet. `payload` is a view into the received bytes, valid until the next push. */
export type FrameHandler = (code: number, payload: Buffer) => void;

/**
 * Called for each whole packet with its payload as the bytes `buf[start, end)`, without making a view
 * of them: a caller that keeps or decodes only some payloads makes a view (`buf.subarray(start, end)`)
 * only for those. `buf` is the chunk that was pushed (or a buffer the decoder allocated for a packet
 * split across chunks, which it never reuses).
 */
export type FrameRangeHandler = (code: number, buf: Buffer, start: number, end: number) => void;

/**
 * Streaming packet decoder. Copes with packets split across reads (down to one byte at a time) and
 * with many packets in one read. Throws {@link MilterError} on a zero length or an oversize packet; the
 * oversize check happens on the length field, before any memory is allocated for the packet.
 */
export class FrameDecoder {
  /** Largest accepted packet (command byte plus payload). */
  readonly maxPacketSize: number;
  private head = Buffer.allocUnsafe(4);
  private headLength = 0;
  private body: Buffer | null = null;
  private bodyLength = 0;

  constructor(maxPacketSize: number = DEFAULT_MAX_PACKET_SIZE) {
    this.maxPacketSize = maxPacketSize;
  }

  /** Bytes of an incomplete packet held back, 0 when the decoder sits on a packet boundary. */
  get pendingBytes(): number {
    return this.headLength + this.bodyLength;
  }

  /** Feeds received bytes; calls `onFrame` for every packet completed by them, in order. */
  push(chunk: Buffer, onFrame: FrameHandler): void {
    this.pushRange(chunk, (code, buf, start, end) => onFrame(code, buf.subarray(start, end)));
  }

  /**
   * Feeds received bytes like {@link push}, but hands each packet's payload over as a byte range
   * ({@link FrameRangeHandler}): the engine's hot path makes no Buffer view for the ~40 packets of a
   * message it never keeps (a view costs a typed-array construction, about as much as the rest of
   * decoding a packet).
   */
  pushRange(chunk: Buffer, onFrame: FrameRangeHandler): void {
    let offset = 0;
    const end = chunk.length;
    if (this.headLength > 0) {
      offset = this.fillPartial(chunk, 0, onFrame);
      if (offset >= end) return;
    }
    while (end - offset >= 5) {
      const length = chunk.readUInt32BE(offset);
      this.checkLength(length);
      if (end - offset - 4 < length) break;
      onFrame(chunk[offset + 4], chunk, offset + 5, offset + 4 + length);
      offset += 4 + length;
    }
    // Whatever is left is the start of a packet that the next reads complete.
    if (offset < end) this.fillPartial(chunk, offset, onFrame);
  }

  /** Throws when the stream ended inside a packet. */
  finish(): void {
    if (this.pendingBytes > 0) {
      const want = this.body !== null ? this.body.length + 4 : 4;
      throw new MilterError('THEMIS_ERR_MILTER_TRUNCATED', { have: this.pendingBytes, want });
    }
  }

  private checkLength(length: number): void {
    if (length === 0) throw new MilterError('THEMIS_ERR_MILTER_ZERO_LENGTH');
    if (length > this.maxPacketSize) throw new MilterError('THEMIS_ERR_MILTER_OVERSIZE', { size: length, limit: this.maxPacketSize });
  }

  /**
   * Copies bytes from `offset` into the packet being assembled. Returns the offset just after the
   * packet when it completed (and was emitted), or `chunk.length` when the chunk ran out first.
   */
  private fillPartial(chunk: Buffer, offset: number, onFrame: FrameRangeHandler): number {
    const end = chunk.length;
    if (this.headLength < 4) {
      const take = Math.min(4 - this.headLength, end - offset);
      chunk.copy(this.head, this.headLength, offset, offset + take);
      this.headLength += take;
      offset += take;
      if (this.headLength < 4) return end;
      const length = this.head.readUInt32BE(0);
      this.checkLength(length);
      this.body = Buffer.allocUnsafe(length);
      this.bodyLength = 0;
    }
    const body = this.body as Buffer;
    const take = Math.min(body.length - this.bodyLength, end - offset);
    chunk.copy(body, this.bodyLength, offset, offset + take);
    this.bodyLength += take;
    offset += take;
    if (this.bodyLength < body.length) return end;
    this.body = null;
    this.headLength = 0;
    this.bodyLength = 0;
    onFrame(body[0], body, 1, body.length);
    return offset;
  }
}

// ---------------------------------------------------------------------------------------------
// Payload readers

/**
 * Reads positional NUL-terminated strings from `payload[start, end)`; a final string without its NUL
 * is kept (tolerance).
 */
export function readStrings(payload: Buffer, encoding: StringEncoding = 'utf8', start = 0, end = payload.length): string[] {
  const out: string[] = [];
  let offset = start;
  while (offset < end) {
    let nul = payload.indexOf(0, offset);
    if (nul < 0 || nul > end) nul = end;
    out.push(payload.toString(encoding, offset, nul));
    offset = nul + 1;
  }
  return out;
}

/** The fixed part of an OPTNEG packet, plus the macro lists a filter may append. */
export interface OptionNegotiation {
  /** Protocol version. */
  version: number;
  /** SMFIF_* bits. */
  actions: number;
  /** SMFIP_* bits. */
  protocol: number;
  /** Macro lists by SMFIM stage (filter answers only). */
  macros?: Map<number, string>;
}

/** Decodes an OPTNEG payload (either direction). */
export function readOptionNegotiation(payload: Buffer): OptionNegotiation {
  if (payload.length < 12) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_OPTNEG', reason: `payload of ${payload.length} bytes, expected at least 12` });
  const result: OptionNegotiation = { version: payload.readUInt32BE(0), actions: payload.readUInt32BE(4), protocol: payload.readUInt32BE(8) };
  let offset = 12;
  while (payload.length - offset >= 5) {
    const stage = payload.readUInt32BE(offset);
    let nul = payload.indexOf(0, offset + 4);
    if (nul < 0) nul = payload.length;
    (result.macros ??= new Map()).set(stage, payload.toString('latin1', offset + 4, nul));
    offset = nul + 1;
  }
  return result;
}

/** Address family of a CONNECT event: IPv4, IPv6, local (UNIX socket) or unknown. */
export type ConnectFamily = '4' | '6' | 'L' | 'U';

/** Decoded CONNECT payload. */
export interface ConnectPayload {
  /** Client host name as the MTA sent it (Postfix sends `[addr]` when the name is unknown). */
  hostname: string;
  /** Address family. */
  family: ConnectFamily;
  /** TCP port; 0 for a local socket; undefined for family `U`. */
  port: number | undefined;
  /** Address with a Sendmail `IPv6:` prefix and brackets removed; a socket path for `L`; undefined for `U`. */
  address: string | undefined;
}

/** Decodes a CONNECT payload, including the 2-byte zero port of UNIX sockets. */
export function readConnect(payload: Buffer, encoding: StringEncoding = 'utf8'): ConnectPayload {
  const nul = payload.indexOf(0);
  if (nul < 0 || nul + 1 >= payload.length) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_CONNECT', reason: 'no family byte after the host name' });
  const hostname = payload.toString(encoding, 0, nul);
  const familyByte = String.fromCharCode(payload[nul + 1]);
  if (familyByte !== '4' && familyByte !== '6' && familyByte !== 'L' && familyByte !== 'U') {
    throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_CONNECT', reason: `unknown family ${JSON.stringify(familyByte)}` });
  }
  if (familyByte === 'U') return { hostname, family: 'U', port: undefined, address: undefined };
  if (payload.length < nul + 4) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_CONNECT', reason: 'no port' });
  const port = payload.readUInt16BE(nul + 2);
  let end = payload.indexOf(0, nul + 4);
  if (end < 0) end = payload.length;
  let address = payload.toString(encoding, nul + 4, end);
  if (familyByte === '6') address = normaliseIPv6(address);
  return { hostname, family: familyByte, port, address };
}

function normaliseIPv6(address: string): string {
  let a = address;
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  if (a.length > 5 && a.slice(0, 5).toLowerCase() === 'ipv6:') a = a.slice(5);
  return a;
}

/** Decoded MACRO payload: the command the macros belong to, and name/value pairs. */
export interface MacroPayload {
  /** The command byte the macros precede (any byte is accepted). */
  command: number;
  /** Flat [name, value, name, value, …]; an odd count is padded with an empty value. */
  pairs: string[];
}

/** Decodes a MACRO payload; an empty list (`D` + cmd only) is valid. */
export function readMacros(payload: Buffer, encoding: StringEncoding = 'utf8'): MacroPayload {
  if (payload.length < 1) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_MACRO', reason: 'no command byte' });
  const pairs = readStrings(payload, encoding, 1);
  if (pairs.length % 2 === 1) pairs.push('');
  return { command: payload[0], pairs };
}

/** Decoded HEADER payload. */
export interface HeaderPayload {
  /** Header name as sent. */
  name: string;
  /** Header value; folded lines are joined by LF plus the original whitespace. May be empty. */
  value: string;
}

/** Decodes a HEADER payload; an empty value is valid. */
export function readHeader(payload: Buffer, encoding: StringEncoding = 'utf8'): HeaderPayload {
  const nul = payload.indexOf(0);
  if (nul < 0) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_HEADER', reason: 'header name is not NUL-terminated' });
  let end = payload.indexOf(0, nul + 1);
  if (end < 0) end = payload.length;
  return { name: payload.toString(encoding, 0, nul), value: payload.toString(encoding, nul + 1, end) };
}

/** Removes one enclosing pair of angle brackets: `<a@b>` → `a@b`, `<>` → ``. */
export function stripAngleBrackets(address: string): string {
  return address.length >= 2 && address.charCodeAt(0) === 60 && address.charCodeAt(address.length - 1) === 62 ? address.slice(1, -1) : address;
}

// ---------------------------------------------------------------------------------------------
// Encoders

/** Pre-encoded packets that carry no payload: answers the engine sends thousands of times. */
export const EMPTY_PACKET: Readonly<Record<number, Buffer>> = (() => {
  const table: Record<number, Buffer> = {};
  for (const code of [...Object.values(Command), ...Object.values(Response)]) {
    const b = Buffer.alloc(5);
    b.writeUInt32BE(1, 0);
    b[4] = code;
    table[code] = b;
  }
  return table;
})();

/** Encodes one packet from a command or response byte and an optional raw payload. */
export function encodePacket(code: number, payload?: Buffer): Buffer {
  if (payload === undefined || payload.length === 0) return EMPTY_PACKET[code] ?? encodeWithHeader(code, 0);
  const out = encodeWithHeader(code, payload.length);
  payload.copy(out, 5);
  return out;
}

function encodeWithHeader(code: number, payloadLength: number): Buffer {
  const out = Buffer.allocUnsafe(5 + payloadLength);
  out.writeUInt32BE(payloadLength + 1, 0);
  out[4] = code;
  return out;
}

/**
 * Encodes a packet whose payload is an optional uint32 followed by NUL-terminated strings,
 * in one allocation. Strings must not contain NUL: they would shift every later field.
 */
export function encodeStrings(code: number, strings: readonly string[], encoding: StringEncoding = 'utf8', leadingUint32?: number): Buffer {
  let length = leadingUint32 === undefined ? 0 : 4;
  for (const s of strings) {
    if (s.includes('\0')) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: codeName(code), reason: 'a string contains NUL' });
    length += Buffer.byteLength(s, encoding) + 1;
  }
  const out = encodeWithHeader(code, length);
  let offset = 5;
  if (leadingUint32 !== undefined) {
    out.writeUInt32BE(leadingUint32 >>> 0, offset);
    offset += 4;
  }
  for (const s of strings) {
    offset += out.write(s, offset, encoding);
    out[offset++] = 0;
  }
  return out;
}

/** Encodes an OPTNEG packet; `macros` (filter side) become `uint32 stage + "names\0"` entries in stage order. */
export function encodeOptionNegotiation(o: OptionNegotiation): Buffer {
  const entries = o.macros ? [...o.macros.entries()].sort((a, b) => a[0] - b[0]) : [];
  let length = 12;
  for (const [, names] of entries) length += 4 + Buffer.byteLength(names, 'latin1') + 1;
  const out = encodeWithHeader(Command.OPTNEG, length);
  out.writeUInt32BE(o.version >>> 0, 5);
  out.writeUInt32BE(o.actions >>> 0, 9);
  out.writeUInt32BE(o.protocol >>> 0, 13);
  let offset = 17;
  for (const [stage, names] of entries) {
    out.writeUInt32BE(stage, offset);
    offset += 4;
    offset += out.write(names, offset, 'latin1');
    out[offset++] = 0;
  }
  return out;
}

/** Encodes a CONNECT packet (MTA side). Family `U` carries no port and no address. */
export function encodeConnect(c: { hostname: string; family: ConnectFamily; port?: number; address?: string }, encoding: StringEncoding = 'utf8'): Buffer {
  if (c.family === 'U') {
    const host = Buffer.from(c.hostname, encoding);
    return encodePacket(Command.CONNECT, Buffer.concat([host, Buffer.from([0, 0x55])]));
  }
  const host = Buffer.from(c.hostname, encoding);
  const address = Buffer.from(c.address ?? '', encoding);
  const payload = Buffer.allocUnsafe(host.length + 1 + 1 + 2 + address.length + 1);
  host.copy(payload, 0);
  let offset = host.length;
  payload[offset++] = 0;
  payload[offset++] = c.family.charCodeAt(0);
  payload.writeUInt16BE(c.port ?? 0, offset);
  offset += 2;
  address.copy(payload, offset);
  payload[offset + address.length] = 0;
  return encodePacket(Command.CONNECT, payload);
}

/** Encodes a MACRO packet for the given command byte; an empty list is valid (Postfix sends `D U`). */
export function encodeMacros(command: number, macros: Readonly<Record<string, string>> | readonly (readonly [string, string])[], encoding: StringEncoding = 'utf8'): Buffer {
  const entries = Array.isArray(macros) ? (macros as readonly (readonly [string, string])[]) : Object.entries(macros);
  const strings: string[] = [];
  for (const [name, value] of entries) strings.push(name, value);
  let length = 1;
  for (const s of strings) length += Buffer.byteLength(s, encoding) + 1;
  const out = encodeWithHeader(Command.MACRO, length);
  out[5] = command;
  let offset = 6;
  for (const s of strings) {
    offset += out.write(s, offset, encoding);
    out[offset++] = 0;
  }
  return out;
}

/** Splits raw body bytes into packets of at most 65535 payload bytes (BODY from the MTA, REPLBODY from the filter). */
export function encodeChunks(code: typeof Command.BODY | typeof Response.REPLBODY, data: Buffer, chunkSize = MILTER_CHUNK_SIZE): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += chunkSize) out.push(encodePacket(code, data.subarray(offset, Math.min(offset + chunkSize, data.length))));
  return out;
}
