/**
 * The MTA side of the milter protocol: negotiates like Postfix, sends events with their macros,
 * honours the filter's NO*, NR* and SKIP choices, collects modifications and decisions, and checks
 * every answer as strictly as Postfix does. Tests, `themis check` and the benchmark use it.
 * @module
 */
import { connect as netConnect, type Socket } from 'node:net';
import { ALL_ACTIONS, ALL_PROTOCOL, Action, Command, MILTER_CHUNK_SIZE, MILTER_VERSION, Protocol, Response, codeName } from './constants.ts';
import {
  FrameDecoder,
  encodeChunks,
  encodeConnect,
  encodeMacros,
  encodeOptionNegotiation,
  encodePacket,
  encodeStrings,
  readOptionNegotiation,
  readStrings,
  type ConnectFamily,
  type OptionNegotiation,
  type StringEncoding,
} from './codec.ts';
import { MilterError } from './errors.ts';
import { parseSocketSpec, type SocketSpec } from './socket-spec.ts';
import type { DecisionAction } from './reply.ts';

/** Macros to send before an event: `{ j: 'mx', '{auth_authen}': 'alice' }`. */
export type MacroMap = Readonly<Record<string, string>>;

/** A filter's answer to one event, as the client read it. */
export interface ClientReply {
  /** The decision; a custom reply code (SMFIR_REPLYCODE) reads as reject (5xx) or tempfail (4xx). */
  action: DecisionAction;
  /** The SMTP reply text of a custom reply code (`550 5.7.1 Denied`). */
  text?: string;
  /** The three-digit SMTP code of a custom reply. */
  smtpCode?: number;
}

/** A modification received at end of message. */
export type Modification =
  | { type: 'addHeader'; name: string; value: string }
  | { type: 'insertHeader'; index: number; name: string; value: string }
  /** `value === ''` deletes the header. */
  | { type: 'changeHeader'; index: number; name: string; value: string }
  | { type: 'changeSender'; address: string; args?: string }
  | { type: 'addRecipient'; address: string; args?: string }
  | { type: 'deleteRecipient'; address: string }
  | { type: 'replaceBody'; data: Buffer }
  | { type: 'quarantine'; reason: string };

/** The answer at end of message: modifications in the order received, then the decision. */
export interface EndOfMessageReply extends ClientReply {
  /** Modifications, with consecutive body chunks joined into one `replaceBody`. */
  modifications: Modification[];
}

/** Client settings. */
export interface MilterClientOptions {
  /** What to offer (default: what Postfix offers, version 6, actions 0x1FF, protocol 0x1FFFFF). */
  offer?: Partial<OptionNegotiation>;
  /** Time to wait for each answer, in ms (default 30,000, Postfix's command timeout). */
  timeout?: number;
  /** String encoding on the wire (default utf8). */
  encoding?: StringEncoding;
  /** Largest packet accepted from the filter (default 1 MiB). */
  maxPacketSize?: number;
}

/** One SMTP transaction to replay through the filter. */
export interface Transaction {
  /** CONNECT event; omitted on later messages of the same session. */
  connect?: { hostname: string; family?: ConnectFamily; port?: number; address?: string; macros?: MacroMap };
  /** HELO/EHLO name. */
  helo?: string | { hostname: string; macros?: MacroMap };
  /** Envelope sender (angle brackets are added when missing). */
  from: string | { address: string; args?: string[]; macros?: MacroMap };
  /** Recipients. */
  to: (string | { address: string; args?: string[]; macros?: MacroMap })[];
  /** Macros for DATA. */
  dataMacros?: MacroMap;
  /** Headers in order. */
  headers?: [string, string][];
  /** Body (CRLF line ends), sent in ≤ 65535-byte chunks. */
  body?: string | Buffer;
  /** Macros for end of headers / each header (Postfix sends the EOH list before each). */
  eohMacros?: MacroMap;
  /** Macros for end of message / each body chunk. */
  eomMacros?: MacroMap;
}

/** What happened to a {@link Transaction}. */
export interface TransactionResult {
  /** The stage that ended the message (`endOfMessage` when the filter let it through to the end). */
  stage: 'connect' | 'helo' | 'mailFrom' | 'rcptTo' | 'data' | 'header' | 'endOfHeaders' | 'body' | 'endOfMessage';
  /** The deciding answer (`continue` at EOM means accept). */
  reply: ClientReply;
  /** Answers per recipient, in order (`undefined` when RCPT was not sent or not answered). */
  recipients: (ClientReply | undefined)[];
  /** Modifications at end of message. */
  modifications: Modification[];
}

interface Pending {
  command: number;
  resolve: (r: EndOfMessageReply) => void;
  reject: (e: Error) => void;
  modifications: Modification[] | null;
  timer: NodeJS.Timeout | undefined;
}

const CONTINUE: ClientReply = Object.freeze({ action: 'continue' }) as ClientReply;
const REPLY_CODE = /^([45])(\d\d)([ -])(?:([245])\.\d{1,3}\.\d{1,3} )?/;

/** An MTA-side milter connection. Create one with {@link MilterClient.connect}. */
export class MilterClient {
  /** What the filter answered to OPTNEG. */
  negotiated!: OptionNegotiation;
  /** Progress keep-alives received so far. */
  progressCount = 0;
  private readonly socket: Socket;
  private readonly decoder: FrameDecoder;
  private readonly timeout: number;
  private readonly encoding: StringEncoding;
  private readonly pending: Pending[] = [];
  private closedError: Error | undefined;
  private bodySkipped = false;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: Socket, options: MilterClientOptions) {
    this.socket = socket;
    this.timeout = options.timeout ?? 30_000;
    this.encoding = options.encoding ?? 'utf8';
    this.decoder = new FrameDecoder(options.maxPacketSize);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk, this.onPacket);
      } catch (err) {
        this.fail(err as Error);
      }
    });
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new MilterError('THEMIS_ERR_MILTER_CLOSED')));
  }

  /** Connects to a filter (`inet:PORT@HOST`, `unix:/path`, …) and negotiates. */
  static async connect(spec: string | SocketSpec, options: MilterClientOptions = {}): Promise<MilterClient> {
    const parsed = typeof spec === 'string' ? parseSocketSpec(spec) : spec;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = parsed.kind === 'unix' ? netConnect(parsed.path) : netConnect({ host: parsed.host, port: parsed.port });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
    const client = new MilterClient(socket, options);
    const offer: OptionNegotiation = { version: options.offer?.version ?? MILTER_VERSION, actions: options.offer?.actions ?? ALL_ACTIONS, protocol: options.offer?.protocol ?? ALL_PROTOCOL };
    try {
      await client.negotiate(offer);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return client;
  }

  private async negotiate(offer: OptionNegotiation): Promise<void> {
    const reply = await this.request(Command.OPTNEG, encodeOptionNegotiation(offer));
    const o = (reply as unknown as { optneg: OptionNegotiation }).optneg;
    if (o.version > offer.version || o.version < 2) throw this.clientError(`filter answered version ${o.version} to an offer of ${offer.version}`);
    if (o.actions & ~offer.actions) throw this.clientError(`filter requested actions 0x${o.actions.toString(16)} beyond the offer 0x${offer.actions.toString(16)}`);
    if (o.protocol & ~offer.protocol) throw this.clientError(`filter requested protocol bits 0x${o.protocol.toString(16)} beyond the offer 0x${offer.protocol.toString(16)}`);
    this.negotiated = o;
  }

  /** Resolves when the filter closed the connection (or it failed). */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  /** True once the connection is gone. */
  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  private has(bit: number): boolean {
    return (this.negotiated.protocol & bit) !== 0;
  }

  // -------------------------------------------------------------------------------------------
  // Events

  /** CONNECT; `undefined` when the filter asked not to see it or not to answer it. */
  connect(hostname: string, family: ConnectFamily = '4', port = 25, address = '192.0.2.1', macros?: MacroMap): Promise<ClientReply | undefined> {
    return this.event(Command.CONNECT, Protocol.NOCONNECT, Protocol.NR_CONN, encodeConnect({ hostname, family, port, address }, this.encoding), macros);
  }

  /** HELO/EHLO. */
  helo(hostname: string, macros?: MacroMap): Promise<ClientReply | undefined> {
    return this.event(Command.HELO, Protocol.NOHELO, Protocol.NR_HELO, encodeStrings(Command.HELO, [hostname], this.encoding), macros);
  }

  /** MAIL FROM (the address is sent as given: include the angle brackets, as Postfix does). */
  mailFrom(sender: string, args: readonly string[] = [], macros?: MacroMap): Promise<ClientReply | undefined> {
    this.bodySkipped = false;
    return this.event(Command.MAIL, Protocol.NOMAIL, Protocol.NR_MAIL, encodeStrings(Command.MAIL, [sender, ...args], this.encoding), macros);
  }

  /** RCPT TO. */
  rcptTo(recipient: string, args: readonly string[] = [], macros?: MacroMap): Promise<ClientReply | undefined> {
    return this.event(Command.RCPT, Protocol.NORCPT, Protocol.NR_RCPT, encodeStrings(Command.RCPT, [recipient, ...args], this.encoding), macros);
  }

  /** DATA (not sent below protocol version 4). */
  data(macros?: MacroMap): Promise<ClientReply | undefined> {
    if (this.negotiated.version < 4) return Promise.resolve(undefined);
    return this.event(Command.DATA, Protocol.NODATA, Protocol.NR_DATA, encodePacket(Command.DATA), macros);
  }

  /** One header. */
  header(name: string, value: string, macros?: MacroMap): Promise<ClientReply | undefined> {
    return this.event(Command.HEADER, Protocol.NOHDRS, Protocol.NR_HDR, encodeStrings(Command.HEADER, [name, value], this.encoding), macros);
  }

  /** End of headers. */
  endOfHeaders(macros?: MacroMap): Promise<ClientReply | undefined> {
    return this.event(Command.EOH, Protocol.NOEOH, Protocol.NR_EOH, encodePacket(Command.EOH), macros);
  }

  /** Body bytes, in ≤ 65535-byte chunks; stops early on `skip` or on a decision other than continue. */
  async body(data: Buffer | string, macros?: MacroMap): Promise<ClientReply | undefined> {
    const bytes = typeof data === 'string' ? Buffer.from(data, this.encoding) : data;
    let last: ClientReply | undefined;
    for (const packet of encodeChunks(Command.BODY, bytes, MILTER_CHUNK_SIZE)) {
      if (this.bodySkipped) break;
      last = await this.event(Command.BODY, Protocol.NOBODY, Protocol.NR_BODY, packet, macros);
      if (last?.action === 'skip') {
        this.bodySkipped = true;
        return last;
      }
      if (last && last.action !== 'continue') return last;
    }
    return last;
  }

  /** End of message: the modifications and the decision. */
  async endOfMessage(macros?: MacroMap): Promise<EndOfMessageReply> {
    if (macros) this.write(encodeMacros(Command.BODYEOB, macros, this.encoding));
    return this.request(Command.BODYEOB, encodePacket(Command.BODYEOB));
  }

  /** An unknown SMTP command (protocol version 3+). */
  unknown(command: string, macros?: MacroMap): Promise<ClientReply | undefined> {
    if (this.negotiated.version < 3) return Promise.resolve(undefined);
    return this.event(Command.UNKNOWN, Protocol.NOUNKNOWN, Protocol.NR_UNKN, encodeStrings(Command.UNKNOWN, [command], this.encoding), macros);
  }

  /** ABORT: forget the current message (no answer). */
  abort(): void {
    this.bodySkipped = false;
    this.write(encodePacket(Command.ABORT));
  }

  /** QUIT, then close the socket once the filter closed it (or after a short grace). */
  async quit(): Promise<void> {
    if (this.isClosed) return;
    this.write(encodePacket(Command.QUIT));
    this.socket.end();
    const grace = setTimeout(() => this.socket.destroy(), 2000);
    await this.closedPromise;
    clearTimeout(grace);
  }

  /** QUIT_NC: end the SMTP session but keep the socket for a new CONNECT. */
  quitNewConnection(): void {
    this.write(encodePacket(Command.QUIT_NC));
  }

  /** Sends raw bytes (tests of malformed input). */
  sendRaw(bytes: Buffer): void {
    this.write(bytes);
  }

  /** Destroys the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Replays a whole transaction, stopping where the filter decides, as Postfix would. */
  async sendMessage(tx: Transaction): Promise<TransactionResult> {
    const result: TransactionResult = { stage: 'endOfMessage', reply: CONTINUE, recipients: [], modifications: [] };
    const decided = (stage: TransactionResult['stage'], r: ClientReply | undefined): boolean => {
      if (!r || r.action === 'continue' || r.action === 'skip') return false;
      result.stage = stage;
      result.reply = r;
      return true;
    };
    if (tx.connect) {
      const c = tx.connect;
      if (decided('connect', await this.connect(c.hostname, c.family ?? '4', c.port ?? 25, c.address ?? '192.0.2.1', c.macros))) return result;
    }
    if (tx.helo !== undefined) {
      const h = typeof tx.helo === 'string' ? { hostname: tx.helo } : tx.helo;
      if (decided('helo', await this.helo(h.hostname, h.macros))) return result;
    }
    const from = typeof tx.from === 'string' ? { address: tx.from } : tx.from;
    if (decided('mailFrom', await this.mailFrom(bracketed(from.address), from.args, from.macros))) return result;
    let accepted = 0;
    for (const r of tx.to) {
      const rcpt = typeof r === 'string' ? { address: r } : r;
      const reply = await this.rcptTo(bracketed(rcpt.address), rcpt.args, rcpt.macros);
      result.recipients.push(reply);
      if (reply && (reply.action === 'reject' || reply.action === 'tempfail')) continue;
      if (reply && reply.action !== 'continue' && reply.action !== 'skip') {
        result.stage = 'rcptTo';
        result.reply = reply;
        return result;
      }
      accepted++;
    }
    if (accepted === 0) {
      result.stage = 'rcptTo';
      result.reply = result.recipients.find((r) => r !== undefined) ?? { action: 'reject' };
      return result;
    }
    if (decided('data', await this.data(tx.dataMacros))) return result;
    for (const [name, value] of tx.headers ?? []) if (decided('header', await this.header(name, value, tx.eohMacros))) return result;
    if (decided('endOfHeaders', await this.endOfHeaders(tx.eohMacros))) return result;
    if (tx.body !== undefined && tx.body.length > 0 && decided('body', await this.body(tx.body, tx.eomMacros))) return result;
    const eom = await this.endOfMessage(tx.eomMacros);
    result.stage = 'endOfMessage';
    result.reply = { action: eom.action, ...(eom.text !== undefined ? { text: eom.text, smtpCode: eom.smtpCode } : {}) };
    result.modifications = eom.modifications;
    return result;
  }

  // -------------------------------------------------------------------------------------------
  // Plumbing

  private event(command: number, noBit: number, nrBit: number, packet: Buffer, macros: MacroMap | undefined): Promise<ClientReply | undefined> {
    // Macros are sent even for a stage the filter switched off, as Postfix does.
    if (macros) this.write(encodeMacros(command, macros, this.encoding));
    if (this.has(noBit)) return Promise.resolve(undefined);
    if (this.has(nrBit)) {
      this.write(packet);
      return Promise.resolve(undefined);
    }
    return this.request(command, packet);
  }

  private request(command: number, packet: Buffer): Promise<EndOfMessageReply> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const p: Pending = { command, resolve, reject, modifications: command === Command.BODYEOB ? [] : null, timer: undefined };
      p.timer = setTimeout(() => this.fail(this.clientError(`no answer to ${codeName(command)} within ${this.timeout} ms`)), this.timeout);
      this.pending.push(p);
      this.write(packet);
    });
  }

  private write(packet: Buffer): void {
    if (!this.closedError) this.socket.write(packet);
  }

  private readonly onPacket = (code: number, payload: Buffer): void => {
    const p = this.pending[0];
    if (code === Response.PROGRESS) {
      if (!p) return this.fail(this.unexpected(code, undefined));
      this.progressCount++;
      p.timer?.refresh();
      return;
    }
    if (!p) return this.fail(this.unexpected(code, undefined));
    if (p.command === Command.OPTNEG) {
      if (code !== Command.OPTNEG) return this.fail(this.unexpected(code, p.command));
      this.settle({ action: 'continue', modifications: [], optneg: readOptionNegotiation(payload) } as EndOfMessageReply);
      return;
    }
    const reply = this.decision(code, payload, p.command);
    if (reply !== null) {
      if (reply === undefined) return;
      // Only end of message carries modifications; other answers stay plain ClientReply objects.
      this.settle(p.modifications ? { ...reply, modifications: mergeBody(p.modifications) } : (reply as EndOfMessageReply));
      return;
    }
    // Not a decision: a modification, legal only while answering end of message.
    if (p.modifications === null) return this.fail(this.clientError(`modification ${codeName(code)} in answer to ${codeName(p.command)} (only allowed at end of message)`));
    try {
      p.modifications.push(this.modification(code, payload));
    } catch (err) {
      this.fail(err as Error);
    }
  };

  /** A decision, `null` when the packet is no decision, or `undefined` after failing the connection. */
  private decision(code: number, payload: Buffer, command: number): ClientReply | null | undefined {
    switch (code) {
      case Response.CONTINUE:
        return CONTINUE;
      case Response.ACCEPT:
        return { action: 'accept' };
      case Response.REJECT:
        return { action: 'reject' };
      case Response.TEMPFAIL:
        return { action: 'tempfail' };
      case Response.DISCARD:
        if (command === Command.CONNECT || command === Command.HELO) {
          this.fail(this.clientError(`SMFIR_DISCARD is not allowed in answer to ${codeName(command)}`));
          return undefined;
        }
        return { action: 'discard' };
      case Response.SKIP:
        if (!this.has(Protocol.SKIP)) {
          this.fail(this.clientError('SMFIR_SKIP without SMFIP_SKIP negotiated'));
          return undefined;
        }
        return { action: 'skip' };
      case Response.REPLYCODE: {
        const text = readStrings(payload, this.encoding)[0] ?? '';
        const problem = checkReplyText(text);
        if (problem) {
          this.fail(this.clientError(`malformed reply ${JSON.stringify(text)}: ${problem}`));
          return undefined;
        }
        const smtpCode = Number(text.slice(0, 3));
        return { action: smtpCode >= 500 ? 'reject' : 'tempfail', text, smtpCode };
      }
      case Response.SHUTDOWN:
        return { action: 'tempfail', text: '421 4.7.0 filter shutdown', smtpCode: 421 };
      default:
        return null;
    }
  }

  private modification(code: number, payload: Buffer): Modification {
    const need = MODIFICATION_ACTION[code];
    if (need === undefined) throw this.unexpected(code, Command.BODYEOB);
    if ((this.negotiated.actions & need.flag) === 0) throw this.clientError(`${codeName(code)} without ${need.name} negotiated`);
    return decodeModification(code, payload, this.encoding);
  }

  private settle(reply: EndOfMessageReply): void {
    const p = this.pending.shift()!;
    clearTimeout(p.timer);
    p.resolve(reply);
  }

  private fail(err: Error): void {
    if (!this.closedError) this.closedError = err;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.socket.destroy();
  }

  private unexpected(code: number, command: number | undefined): MilterError {
    return new MilterError('THEMIS_ERR_MILTER_UNEXPECTED_RESPONSE', { code: codeName(code), command: command === undefined ? 'nothing (no answer was expected)' : codeName(command) });
  }

  private clientError(reason: string): MilterError {
    return new MilterError('THEMIS_ERR_MILTER_CLIENT', { reason });
  }
}

/** Checks an SMFIR_REPLYCODE text the way Postfix does; returns the problem or undefined. */
export function checkReplyText(text: string): string | undefined {
  const lines = text.split('\r\n');
  const first = REPLY_CODE.exec(lines[0]);
  if (!first) return 'does not start with a 4xx/5xx code';
  for (let i = 0; i < lines.length; i++) {
    const m = REPLY_CODE.exec(lines[i]);
    if (!m) return `line ${i + 1} has no valid code`;
    if (m[1] + m[2] !== first[1] + first[2]) return `line ${i + 1} changes the reply code`;
    if (m[3] !== (i === lines.length - 1 ? ' ' : '-')) return `line ${i + 1} has the wrong continuation mark`;
    if (m[4] !== undefined && m[4] !== m[1]) return `enhanced status code class ${m[4]} does not match reply class ${m[1]}`;
  }
  return undefined;
}

/** The action bit each modification response needs. */
const MODIFICATION_ACTION: Readonly<Record<number, { flag: number; name: string }>> = {
  [Response.ADDHEADER]: { flag: Action.ADDHDRS, name: 'SMFIF_ADDHDRS' },
  [Response.INSHEADER]: { flag: Action.ADDHDRS, name: 'SMFIF_ADDHDRS' },
  [Response.CHGHEADER]: { flag: Action.CHGHDRS, name: 'SMFIF_CHGHDRS' },
  [Response.CHGFROM]: { flag: Action.CHGFROM, name: 'SMFIF_CHGFROM' },
  [Response.ADDRCPT]: { flag: Action.ADDRCPT, name: 'SMFIF_ADDRCPT' },
  [Response.ADDRCPT_PAR]: { flag: Action.ADDRCPT_PAR, name: 'SMFIF_ADDRCPT_PAR' },
  [Response.DELRCPT]: { flag: Action.DELRCPT, name: 'SMFIF_DELRCPT' },
  [Response.REPLBODY]: { flag: Action.CHGBODY, name: 'SMFIF_CHGBODY' },
  [Response.QUARANTINE]: { flag: Action.QUARANTINE, name: 'SMFIF_QUARANTINE' },
};

/**
 * Decodes one end-of-message modification packet (code and payload) into a {@link Modification}.
 * Throws `THEMIS_ERR_MILTER_CLIENT` for a malformed payload or a code that is no modification.
 */
export function decodeModification(code: number, payload: Buffer, encoding: StringEncoding = 'utf8'): Modification {
  const bad = (reason: string) => new MilterError('THEMIS_ERR_MILTER_CLIENT', { reason });
  const strings = (start = 0) => readStrings(payload, encoding, start);
  switch (code) {
    case Response.ADDHEADER: {
      const [name, value] = strings();
      return { type: 'addHeader', name: name ?? '', value: value ?? '' };
    }
    case Response.INSHEADER:
    case Response.CHGHEADER: {
      if (payload.length < 4) throw bad(`short ${codeName(code)}`);
      const [name, value] = strings(4);
      return { type: code === Response.INSHEADER ? 'insertHeader' : 'changeHeader', index: payload.readUInt32BE(0), name: name ?? '', value: value ?? '' };
    }
    case Response.CHGFROM:
    case Response.ADDRCPT_PAR: {
      const [address, args] = strings();
      const type = code === Response.CHGFROM ? 'changeSender' : 'addRecipient';
      return args !== undefined ? { type, address: address ?? '', args } : { type, address: address ?? '' };
    }
    case Response.ADDRCPT:
      return { type: 'addRecipient', address: strings()[0] ?? '' };
    case Response.DELRCPT:
      return { type: 'deleteRecipient', address: strings()[0] ?? '' };
    case Response.REPLBODY:
      return { type: 'replaceBody', data: Buffer.from(payload) };
    case Response.QUARANTINE: {
      const reason = strings()[0] ?? '';
      if (reason === '') throw bad('SMFIR_QUARANTINE with an empty reason');
      return { type: 'quarantine', reason };
    }
    default:
      throw bad(`${codeName(code)} is not a modification`);
  }
}

/** Joins consecutive body-replacement chunks into one `replaceBody`. */
export function mergeBody(mods: Modification[]): Modification[] {
  const out: Modification[] = [];
  for (const m of mods) {
    const prev = out[out.length - 1];
    if (m.type === 'replaceBody' && prev?.type === 'replaceBody') prev.data = Buffer.concat([prev.data, m.data]);
    else out.push(m);
  }
  return out;
}

function bracketed(address: string): string {
  return address.startsWith('<') ? address : `<${address}>`;
}
