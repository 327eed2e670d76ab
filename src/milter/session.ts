/**
 * The filter side of one milter connection: decodes packets, keeps the session state machine and the
 * macro scopes, calls the application's stage handlers one at a time and writes exactly one answer
 * per event that expects one — in command order, whether handlers answer synchronously or not.
 * @module
 */
import type { Socket } from 'node:net';
import { Action, Command, DEFAULT_MAX_PACKET_SIZE, MILTER_CHUNK_SIZE, Protocol, Response, STAGES, STAGE_BITS, codeName, type Stage } from './constants.ts';
import {
  EMPTY_PACKET,
  FrameDecoder,
  encodeChunks,
  encodeOptionNegotiation,
  encodePacket,
  encodeStrings,
  readConnect,
  readHeader,
  readOptionNegotiation,
  readStrings,
  stripAngleBrackets,
  type ConnectPayload,
  type StringEncoding,
} from './codec.ts';
import { MilterError, isMilterError } from './errors.ts';
import type { MilterLogger } from './logger.ts';
import { MacroStore, type MacroReader } from './macros.ts';
import { negotiate, type Negotiated, type NegotiationOptions } from './negotiate.ts';
import { Decisions, checkHeaderName, formatSmtpReply, normaliseHeaderValue, type Decision } from './reply.ts';

/** The CONNECT event. */
export type ConnectEvent = ConnectPayload;

/** The HELO/EHLO event. */
export interface HeloEvent {
  /** The HELO/EHLO argument. */
  hostname: string;
}

/** A MAIL FROM or RCPT TO event. */
export interface EnvelopeEvent {
  /** The address without its enclosing angle brackets; `''` for the null sender. */
  address: string;
  /** The address exactly as the MTA sent it (usually with brackets; DELRCPT must use this form). */
  raw: string;
  /** ESMTP parameters (`SIZE=1024`, `NOTIFY=NEVER`), one per element. */
  args: string[];
}

/** One header of the message. */
export interface HeaderEvent {
  /** Name as written in the message. */
  name: string;
  /**
   * Value; folded lines joined by LF plus their whitespace. Always as an MTA sends it without
   * SMFIP_HDR_LEADSPC: the one space after the colon removed (a tab stays).
   */
  value: string;
  /**
   * Exactly what followed the colon, leading whitespace included: present only when SMFIP_HDR_LEADSPC
   * was negotiated (`NegotiationOptions.headerLeadingSpace`). Byte-exact uses need it — DKIM `simple`
   * header canonicalisation cannot tell `Name:value` from `Name: value` by {@link value} alone.
   */
  raw?: string | undefined;
}

/** An SMTP command the MTA did not recognise or implement (for example `HELP`). */
export interface UnknownEvent {
  /** The whole command line. */
  command: string;
}

/** A value or a promise of it: handlers may answer synchronously, which keeps the hot path free of microtasks. */
export type MaybePromise<T> = T | Promise<T>;

/** A stage handler's result: a decision, or nothing for "continue". */
export type HandlerResult = MaybePromise<Decision | void | undefined>;

/** What the application sees of a milter connection. */
export interface MilterSession {
  /** Process-unique connection number. */
  readonly id: number;
  /** The socket peer (the MTA process), for logs. */
  readonly peer: string;
  /** Negotiated options, once OPTNEG is done. */
  readonly negotiated: Negotiated | undefined;
  /** Macros visible now, with libmilter's stage scoping. */
  readonly macros: MacroReader;
  /** The last CONNECT event of this session. */
  readonly client: ConnectEvent | undefined;
  /** The last HELO/EHLO name. */
  readonly helo: string | undefined;
  /** The current message's envelope sender, once MAIL was seen. */
  readonly sender: EnvelopeEvent | undefined;
  /** Recipients of the current message that this filter saw (including ones it rejected). */
  readonly recipients: readonly EnvelopeEvent[];
  /** True between MAIL (or the first message event) and the end of that message. */
  readonly inMessage: boolean;
  /** Free slot for the application's per-session state. */
  state: unknown;
  /** The logger bound to this connection. */
  readonly log: MilterLogger;
  /**
   * Sends a progress keep-alive now, while a handler is pending. Postfix honours it at any stage,
   * Sendmail only at end of message; the engine also sends them itself (see `progressInterval`).
   */
  progress(): void;
}

/** Modifications, available only to the end-of-message handler, sent before its decision. */
export interface MessageModifier {
  /** Appends a header (SMFIF_ADDHDRS). */
  addHeader(name: string, value: string): void;
  /** Inserts a header at `index` (0 = top; Postfix: before its own Received:) (SMFIF_ADDHDRS). */
  insertHeader(index: number, name: string, value: string): void;
  /** Replaces the `index`-th (1-based, per name) header of that name; past the count it is added (SMFIF_CHGHDRS). */
  changeHeader(name: string, index: number, value: string): void;
  /** Deletes the `index`-th (1-based, per name) header of that name (SMFIF_CHGHDRS). Delete from the highest index down. */
  deleteHeader(name: string, index: number): void;
  /** Replaces the envelope sender, with optional ESMTP arguments (Postfix honours RET and ENVID) (SMFIF_CHGFROM). */
  changeSender(address: string, args?: readonly string[]): void;
  /** Adds a recipient; with arguments it needs SMFIF_ADDRCPT_PAR (Postfix honours NOTIFY and ORCPT), else SMFIF_ADDRCPT. */
  addRecipient(address: string, args?: readonly string[]): void;
  /** Removes a recipient, matched against the address exactly as received (SMFIF_DELRCPT). */
  deleteRecipient(address: string): void;
  /** Replaces the body (CRLF line ends); several calls append. Sent in ≤ 65535-byte chunks (SMFIF_CHGBODY). */
  replaceBody(data: Buffer | string): void;
  /** Puts the message on hold with a reason (Postfix: the hold queue) (SMFIF_QUARANTINE). */
  quarantine(reason: string): void;
}

/**
 * The application the engine serves: a handler per stage it listens to. Stages without a handler
 * are not requested from the MTA. `abort` and `close` never answer.
 */
export interface MilterHandlers {
  /** SMTP connection. `accept`/`reject`/`tempfail` here decide the whole connection. */
  connect?(session: MilterSession, event: ConnectEvent): HandlerResult;
  /** HELO/EHLO (may repeat, for example after STARTTLS). */
  helo?(session: MilterSession, event: HeloEvent): HandlerResult;
  /** MAIL FROM: a new message. */
  mailFrom?(session: MilterSession, event: EnvelopeEvent): HandlerResult;
  /** RCPT TO: `reject`/`tempfail` refuse this recipient only. */
  rcptTo?(session: MilterSession, event: EnvelopeEvent): HandlerResult;
  /** DATA. */
  data?(session: MilterSession): HandlerResult;
  /** One header. */
  header?(session: MilterSession, event: HeaderEvent): HandlerResult;
  /** End of headers. */
  endOfHeaders?(session: MilterSession): HandlerResult;
  /** A body chunk (raw bytes, CRLF line ends; a line may span chunks). Only requested when this handler exists. */
  body?(session: MilterSession, chunk: Buffer): HandlerResult;
  /** End of message: request modifications through `modifier`, then decide (`continue` means accept). */
  endOfMessage?(session: MilterSession, modifier: MessageModifier): HandlerResult;
  /** An SMTP command the MTA did not know. */
  unknown?(session: MilterSession, event: UnknownEvent): HandlerResult;
  /** The open message was abandoned (RSET, a new MAIL or HELO, a rejected transaction, a lost connection). */
  abort?(session: MilterSession): void | Promise<void>;
  /** The milter connection ended (QUIT, QUIT_NC, EOF, error or shutdown). Called once. */
  close?(session: MilterSession): void | Promise<void>;
}

/** A milter application: handlers, plus what to negotiate beyond "the stages that have a handler". */
export interface MilterApplication extends MilterHandlers {
  /**
   * Negotiation wishes. `stages` defaults to the stages with a handler. A function receives the MTA's
   * offer, for applications that adapt to it.
   */
  negotiation?: Partial<NegotiationOptions> | ((offer: Readonly<import('./codec.ts').OptionNegotiation>) => Partial<NegotiationOptions>);
}

/** Engine settings for each connection. */
export interface SessionOptions {
  /** Largest incoming packet in bytes (default 1 MiB). */
  maxPacketSize?: number;
  /** Close a connection that sends nothing for this long while no handler runs, in ms (default 3,600,000). */
  idleTimeout?: number;
  /** Close a connection that starts a packet and does not finish it within this time, in ms (default 30,000). */
  readTimeout?: number;
  /** Answer a handler that has not decided within this time with `onHandlerError`, in ms (0 = never; default 0). */
  handlerTimeout?: number;
  /** Send a progress keep-alive every this many ms while a handler is pending (0 = never; default 10,000). */
  progressInterval?: number;
  /** Stages at which automatic keep-alives are sent: `eom` (safe with Sendmail, the default) or `all` (Postfix). */
  progressStages?: 'eom' | 'all';
  /** The answer when a handler throws, rejects or times out (default tempfail). `discard` is not allowed. */
  onHandlerError?: Decision;
  /** How strings on the wire are decoded and encoded (default `utf8`; `latin1` round-trips any byte). */
  encoding?: StringEncoding;
}

/** Resolved defaults, shared by all connections of a server. */
export interface ResolvedSessionOptions {
  /** See {@link SessionOptions.maxPacketSize}. */
  readonly maxPacketSize: number;
  /** See {@link SessionOptions.idleTimeout}. */
  readonly idleTimeout: number;
  /** See {@link SessionOptions.readTimeout}. */
  readonly readTimeout: number;
  /** See {@link SessionOptions.handlerTimeout}. */
  readonly handlerTimeout: number;
  /** See {@link SessionOptions.progressInterval}. */
  readonly progressInterval: number;
  /** See {@link SessionOptions.progressStages}. */
  readonly progressStages: 'eom' | 'all';
  /** See {@link SessionOptions.onHandlerError}. */
  readonly onHandlerError: Decision;
  /** See {@link SessionOptions.encoding}. */
  readonly encoding: StringEncoding;
}

/** Fills in the defaults of {@link SessionOptions}. */
export function resolveSessionOptions(o: SessionOptions = {}): ResolvedSessionOptions {
  const onHandlerError = o.onHandlerError ?? Decisions.tempfail;
  if (onHandlerError.action === 'discard' || onHandlerError.action === 'skip') {
    throw new MilterError('THEMIS_ERR_MILTER_BAD_DECISION', { decision: onHandlerError.action, stage: 'onHandlerError (must be continue, accept, reject or tempfail)' });
  }
  return {
    maxPacketSize: o.maxPacketSize ?? DEFAULT_MAX_PACKET_SIZE,
    idleTimeout: o.idleTimeout ?? 3_600_000,
    readTimeout: o.readTimeout ?? 30_000,
    handlerTimeout: o.handlerTimeout ?? 0,
    progressInterval: o.progressInterval ?? 10_000,
    progressStages: o.progressStages ?? 'eom',
    onHandlerError,
    encoding: o.encoding ?? 'utf8',
  };
}

/** Message phases, in the order the MTA sends them; a message never goes back to an earlier one. */
const Phase = { NONE: 0, MAIL: 1, RCPT: 2, DATA: 3, HEADER: 4, EOH: 5, BODY: 6 } as const;

const enum_State = { INIT: 0, NEGOTIATED: 1, CONNECTED: 2, DECIDED: 3, CLOSED: 4 } as const;
const STATE_NAMES = ['INIT', 'NEGOTIATED', 'CONNECTED', 'CONNECTION_DECIDED', 'CLOSED'];

/** Queue depth at which the engine stops reading from a pipelining MTA until it catches up. */
const MAX_QUEUED_PACKETS = 1024;

const NO_ARGS: string[] = [];
const NO_RECIPIENTS: EnvelopeEvent[] = [];

/** One bit per stage (its index in {@link STAGES}), for the per-connection "answer expected" mask. */
const BIT: Readonly<Record<Stage, number>> = Object.fromEntries(STAGES.map((stage, i) => [stage, 1 << i])) as Record<Stage, number>;
const B_CONNECT = BIT.connect;
const B_HELO = BIT.helo;
const B_MAIL = BIT.mailFrom;
const B_RCPT = BIT.rcptTo;
const B_DATA = BIT.data;
const B_HEADER = BIT.header;
const B_EOH = BIT.endOfHeaders;
const B_BODY = BIT.body;
const B_UNKNOWN = BIT.unknown;
const CONTINUE_PACKET = EMPTY_PACKET[Response.CONTINUE];

/** A packet that arrived while a handler was pending: its payload is `buf[start, end)`. */
interface QueuedPacket {
  code: number;
  buf: Buffer;
  start: number;
  end: number;
}

let nextSessionId = 1;

/** One milter connection, filter side. Created by the server for each accepted socket. */
export class MilterConnection implements MilterSession {
  readonly id: number = nextSessionId++;
  readonly peer: string;
  readonly macros: MacroStore;
  negotiated: Negotiated | undefined;
  client: ConnectEvent | undefined;
  helo: string | undefined;
  sender: EnvelopeEvent | undefined;
  recipients: EnvelopeEvent[] = NO_RECIPIENTS;
  state: unknown = undefined;

  private readonly socket: Socket;
  /** The application this connection is served by, for its whole life (a server may switch applications for new connections). */
  readonly app: MilterApplication;
  private readonly opts: ResolvedSessionOptions;
  private readonly decoder: FrameDecoder;
  private readonly onClosed: (c: MilterConnection) => void;
  private readonly baseLog: MilterLogger;
  private childLog: MilterLogger | undefined;
  private connState: number = enum_State.INIT;
  private phase: number = Phase.NONE;
  private bodySkipped = false;
  private busy = false;
  private queue: QueuedPacket[] = [];
  private queueHead = 0;
  /** Answers waiting for the next flush: the first, then any more (most wake-ups write exactly one). */
  private out: Buffer | null = null;
  private outMore: Buffer[] | null = null;
  private readingPaused = false;
  /** Stages whose events the MTA waits an answer for ({@link BIT} mask), from the negotiation. */
  private replyMask = 0;
  /**
   * When bytes last arrived or a handler last finished (ms since epoch), as of the server's last sweep:
   * the hot path only sets {@link touched}, and the sweep turns that into a time (no clock read per packet).
   */
  private lastActivity = Date.now();
  /** Set when bytes arrive or a handler finishes; the sweep clears it and moves {@link lastActivity}. */
  private touched = false;
  /** When the packet still being received started, 0 on a packet boundary. */
  private partialSince = 0;
  private progressTimer: NodeJS.Timeout | undefined;
  private closeHandled = false;
  private handlerToken = 0;

  constructor(socket: Socket, app: MilterApplication, opts: ResolvedSessionOptions, log: MilterLogger, onClosed: (c: MilterConnection) => void) {
    this.socket = socket;
    this.app = app;
    this.opts = opts;
    this.onClosed = onClosed;
    this.peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'local';
    this.baseLog = log;
    this.decoder = new FrameDecoder(opts.maxPacketSize);
    this.macros = new MacroStore(opts.encoding);
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: Error) => this.onSocketError(err));
    socket.on('close', () => this.finish('socket closed'));
    socket.on('drain', () => this.onDrain());
  }

  /** The connection's logger, made on first use: most connections never log (pino children are not free). Debug lines use the base logger with a `conn` field for the same reason. */
  get log(): MilterLogger {
    return (this.childLog ??= this.baseLog.child({ conn: this.id }));
  }

  get inMessage(): boolean {
    return this.phase !== Phase.NONE;
  }

  /** Closes the connection (server shutdown or a fatal error); runs the close handler once. */
  destroy(reason: string): void {
    if (this.connState === enum_State.CLOSED) return;
    this.baseLog.debug({ conn: this.id, reason }, 'closing milter connection');
    this.finish(reason);
    this.socket.destroy();
  }

  /** True while a handler is running or packets wait: the server's drain waits for these. */
  get active(): boolean {
    return this.busy || this.queueHead < this.queue.length || this.phase !== Phase.NONE;
  }

  progress(): void {
    if (!this.busy || this.connState === enum_State.CLOSED) return;
    this.send(EMPTY_PACKET[Response.PROGRESS]);
    this.flush();
  }

  // -------------------------------------------------------------------------------------------
  // Input

  /** One read: usually one event with its macro packet, answered by one write. */
  private readonly onData = (chunk: Buffer): void => {
    this.touched = true;
    try {
      this.decoder.pushRange(chunk, this.onFrame);
    } catch (err) {
      this.protocolError(err);
      return;
    }
    this.flush();
    if (this.decoder.pendingBytes === 0) this.partialSince = 0;
    else if (this.partialSince === 0) this.partialSince = Date.now();
  };

  private readonly onFrame = (code: number, buf: Buffer, start: number, end: number): void => {
    if (this.connState === enum_State.CLOSED) return;
    if (this.busy || this.queueHead < this.queue.length) {
      this.queue.push({ code, buf, start, end });
      if (this.queue.length - this.queueHead > MAX_QUEUED_PACKETS && !this.readingPaused) {
        this.readingPaused = true;
        this.socket.pause();
      }
      return;
    }
    this.dispatch(code, buf, start, end);
  };

  private drainQueue(): void {
    while (!this.busy && this.queueHead < this.queue.length && this.connState !== enum_State.CLOSED) {
      const p = this.queue[this.queueHead];
      this.queue[this.queueHead++] = undefined as never;
      try {
        this.dispatch(p.code, p.buf, p.start, p.end);
      } catch (err) {
        this.protocolError(err);
        return;
      }
    }
    if (this.queueHead >= this.queue.length) {
      if (this.queue.length !== 0) this.queue.length = 0;
      this.queueHead = 0;
      if (this.readingPaused && this.socket.writableLength === 0) {
        this.readingPaused = false;
        this.socket.resume();
      }
    }
    this.flush();
  }

  private onEnd(): void {
    try {
      this.decoder.finish();
    } catch (err) {
      this.log.warn({ err: errorFields(err), code: (err as MilterError).code }, 'MTA closed the connection inside a packet');
    }
    // EOF is a normal end (Postfix closes without QUIT after a CONNECT/HELO decision).
    if (!this.busy && this.queueHead >= this.queue.length) this.endSocket();
  }

  private onSocketError(err: Error): void {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') this.baseLog.debug({ conn: this.id, err: errorFields(err) }, 'milter connection reset');
    else this.log.warn({ err: errorFields(err) }, 'milter socket error');
    this.finish('socket error');
  }

  /**
   * Called by the server's periodic sweep. One coarse timer for all connections instead of a
   * socket timer re-armed on every read and write, which showed in profiles of the hot path.
   */
  checkTimeouts(now: number): void {
    if (this.touched) {
      // Activity since the last sweep: counted from now, so a timeout never fires early (at most one sweep period late).
      this.touched = false;
      this.lastActivity = now;
    }
    if (this.busy || this.connState === enum_State.CLOSED) return; // a pending handler has its own deadline
    let kind: 'read' | 'idle' | undefined;
    if (this.partialSince !== 0 && this.opts.readTimeout > 0 && now - this.partialSince >= this.opts.readTimeout) kind = 'read';
    else if (this.opts.idleTimeout > 0 && now - this.lastActivity >= this.opts.idleTimeout) kind = 'idle';
    if (kind === undefined) return;
    const err = new MilterError('THEMIS_ERR_MILTER_TIMEOUT', { kind, ms: kind === 'read' ? this.opts.readTimeout : this.opts.idleTimeout });
    this.log.warn({ code: err.code, state: STATE_NAMES[this.connState] }, err.message);
    this.destroy(`${kind} timeout`);
  }

  private onDrain(): void {
    if (this.readingPaused && this.queueHead >= this.queue.length) {
      this.readingPaused = false;
      this.socket.resume();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Output

  private send(packet: Buffer): void {
    if (this.out === null) this.out = packet;
    else (this.outMore ??= []).push(packet);
  }

  private flush(): void {
    const first = this.out;
    if (first === null) return;
    const more = this.outMore;
    this.out = null;
    this.outMore = null;
    if (this.connState === enum_State.CLOSED) return;
    let ok: boolean;
    if (more === null) ok = this.socket.write(first);
    else {
      this.socket.cork();
      ok = this.socket.write(first);
      for (const b of more) ok = this.socket.write(b) && ok;
      this.socket.uncork();
    }
    if (!ok && !this.readingPaused) {
      // The MTA is not reading; stop reading from it until our answers drain.
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  // -------------------------------------------------------------------------------------------
  // State machine

  /**
   * One packet, its payload being `buf[start, end)`. A Buffer view of the payload is made only where
   * one is kept or handed to the application (an event's bytes, a body chunk), not for the macro
   * packets and payload-less commands that make up most of a message.
   */
  private dispatch(code: number, buf: Buffer, start: number, end: number): void {
    const enc = this.opts.encoding;
    if (this.connState === enum_State.INIT && code !== Command.OPTNEG) throw this.outOfOrder(code);
    switch (code) {
      case Command.OPTNEG:
        return this.onOptionNegotiation(buf.subarray(start, end));
      case Command.MACRO:
        if (end - start < 1) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_MACRO', reason: 'no command byte' });
        this.macros.setRange(buf, start, end);
        return;
      case Command.CONNECT: {
        if (this.connState !== enum_State.NEGOTIATED) throw this.outOfOrder(code);
        const event = readConnect(buf.subarray(start, end), enc);
        this.macros.enterStage(code);
        this.client = event;
        this.connState = enum_State.CONNECTED;
        return this.run('connect', B_CONNECT, this.app.connect, event);
      }
      case Command.HELO: {
        this.requireConnected(code);
        const hostname = readStrings(buf, enc, start, end)[0] ?? '';
        this.endMessage(true);
        this.macros.enterStage(code);
        this.helo = hostname;
        return this.run('helo', B_HELO, this.app.helo, { hostname });
      }
      case Command.MAIL: {
        this.requireConnected(code);
        const event = new EnvelopeView(buf, start, end, enc);
        this.endMessage(true);
        this.macros.enterStage(code);
        this.phase = Phase.MAIL;
        this.sender = event;
        this.recipients = [];
        return this.run('mailFrom', B_MAIL, this.app.mailFrom, event);
      }
      case Command.RCPT: {
        this.enterPhase(code, Phase.RCPT);
        const event = new EnvelopeView(buf, start, end, enc);
        if (this.recipients === NO_RECIPIENTS) this.recipients = [];
        this.recipients.push(event);
        return this.run('rcptTo', B_RCPT, this.app.rcptTo, event);
      }
      case Command.DATA:
        this.enterPhase(code, Phase.DATA);
        return this.run('data', B_DATA, this.app.data, undefined);
      case Command.HEADER:
        this.enterPhase(code, Phase.HEADER);
        // Decoding is lazy, but a malformed packet is still refused here, not in the handler.
        if (!hasNul(buf, start, end)) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIC_HEADER', reason: 'header name is not NUL-terminated' });
        if (this.app.header === undefined) return this.autoReply(B_HEADER);
        return this.run('header', B_HEADER, this.app.header, new HeaderView(buf, start, end, enc, (this.negotiated!.reply.protocol & Protocol.HDR_LEADSPC) !== 0));
      case Command.EOH:
        this.enterPhase(code, Phase.EOH);
        return this.run('endOfHeaders', B_EOH, this.app.endOfHeaders, undefined);
      case Command.BODY:
        this.enterPhase(code, Phase.BODY);
        if (this.bodySkipped) return this.autoReply(B_BODY);
        return this.run('body', B_BODY, this.app.body, buf.subarray(start, end));
      case Command.BODYEOB:
        this.enterPhase(code, Phase.BODY);
        return this.onEndOfMessage(end > start ? buf.subarray(start, end) : EMPTY_PAYLOAD);
      case Command.UNKNOWN: {
        this.requireConnected(code);
        const command = readStrings(buf, enc, start, end)[0] ?? '';
        this.run('unknown', B_UNKNOWN, this.app.unknown, { command });
        return;
      }
      case Command.ABORT:
        this.endMessage(true);
        return;
      case Command.QUIT_NC:
        this.endMessage(true);
        this.runClose();
        this.closeHandled = false;
        this.resetConnection();
        return;
      case Command.QUIT:
        this.endMessage(true);
        this.endSocket();
        return;
      default:
        throw new MilterError('THEMIS_ERR_MILTER_UNKNOWN_COMMAND', { code: codeName(code) });
    }
  }

  private onOptionNegotiation(payload: Buffer): void {
    if (this.connState !== enum_State.INIT) throw this.outOfOrder(Command.OPTNEG);
    const offer = readOptionNegotiation(payload);
    const app = this.app;
    const wishes = typeof app.negotiation === 'function' ? app.negotiation(offer) : (app.negotiation ?? {});
    const stages = wishes.stages ?? handlerStages(app);
    const negotiated = negotiate(offer, { ...wishes, stages });
    if (negotiated.refusedActions !== 0) {
      this.log.warn({ refused: `0x${negotiated.refusedActions.toString(16)}`, offered: `0x${offer.actions.toString(16)}` }, 'MTA does not offer some actions the application may use; those modifications will fail');
    }
    this.negotiated = negotiated;
    let mask = 0;
    for (const stage of negotiated.replyExpected) mask |= BIT[stage];
    this.replyMask = mask;
    this.connState = enum_State.NEGOTIATED;
    this.baseLog.debug({ conn: this.id, version: negotiated.reply.version, actions: negotiated.reply.actions, protocol: negotiated.reply.protocol }, 'negotiated');
    this.send(encodeOptionNegotiation(negotiated.reply));
  }

  private requireConnected(code: number): void {
    if (this.connState === enum_State.CONNECTED) return;
    // With NOCONNECT negotiated no CONNECT comes: the first SMTP event opens the session.
    if (this.connState === enum_State.NEGOTIATED && (this.negotiated!.reply.protocol & Protocol.NOCONNECT)) {
      this.connState = enum_State.CONNECTED;
      return;
    }
    throw this.outOfOrder(code);
  }

  private enterPhase(code: number, phase: number): void {
    this.requireConnected(code);
    if (this.phase === Phase.NONE) {
      // A message event with no open message is in order only when MAIL itself is switched off.
      if (!(this.negotiated!.reply.protocol & Protocol.NOMAIL)) throw this.outOfOrder(code);
      this.phase = Phase.MAIL;
      this.sender = undefined;
      this.recipients = [];
    }
    if (phase < this.phase) throw this.outOfOrder(code);
    if (phase !== this.phase) this.macros.enterStage(code);
    else if (phase === Phase.RCPT) this.macros.enterStage(code);
    this.phase = phase;
  }

  private outOfOrder(code: number): MilterError {
    const phaseName = Object.keys(Phase).find((k) => Phase[k as keyof typeof Phase] === this.phase);
    return new MilterError('THEMIS_ERR_MILTER_OUT_OF_ORDER', { command: codeName(code), state: this.phase === Phase.NONE ? STATE_NAMES[this.connState] : `MESSAGE/${phaseName}` });
  }

  /** Ends the open message; `aborted` calls the application's abort handler. Idempotent. */
  private endMessage(aborted: boolean): void {
    if (this.phase === Phase.NONE) return;
    this.phase = Phase.NONE;
    this.bodySkipped = false;
    // Macros are not cleared here, as libmilter does not: ending a message (ABORT, a decision, or a
    // new MAIL or HELO that abandons it) leaves them to the next command that clears (see
    // MacroStore.enterStage). Sendmail sends no ABORT after RSET to a filter that does not answer
    // MAIL: the new MAIL's macro packet has already arrived when the old message is closed here.
    if (aborted && this.app.abort) {
      try {
        const r = this.app.abort(this);
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(undefined, (err: unknown) => this.handlerFailed('abort', err));
      } catch (err) {
        this.handlerFailed('abort', err);
      }
    }
    this.sender = undefined;
    this.recipients = NO_RECIPIENTS;
  }

  private resetConnection(): void {
    this.macros.clearAll();
    this.client = undefined;
    this.helo = undefined;
    this.state = undefined;
    this.connState = enum_State.NEGOTIATED;
  }

  // -------------------------------------------------------------------------------------------
  // Handlers

  /**
   * Runs a stage handler (or answers for a stage nobody listens to) and sends its answer. `bit` is the
   * stage's {@link BIT}.
   */
  private run<E>(stage: Stage, bit: number, handler: ((s: MilterSession, e: E) => HandlerResult) | undefined, event: E): void {
    if (handler === undefined) return this.autoReply(bit);
    let result: HandlerResult;
    try {
      result = handler.call(this.app, this, event);
    } catch (err) {
      this.handlerFailed(stage, err);
      return this.answer(stage, this.opts.onHandlerError);
    }
    if (result === undefined) {
      // "continue" from a synchronous handler, the common case: what answer() would do with it.
      if ((this.replyMask & bit) !== 0) this.send(CONTINUE_PACKET);
      return;
    }
    if (typeof (result as Promise<unknown>).then === 'function') {
      this.await(stage, result as Promise<Decision | void>, undefined);
      return;
    }
    this.answer(stage, (result as Decision | null) ?? Decisions.continue);
  }

  /** Answers an event the application does not handle: `continue` when the MTA waits for an answer. */
  private autoReply(bit: number): void {
    if ((this.replyMask & bit) !== 0) this.send(CONTINUE_PACKET);
  }

  private await(stage: Stage, promise: Promise<Decision | void>, modifier: Modifier | undefined): void {
    this.busy = true;
    const token = ++this.handlerToken;
    let deadline: NodeJS.Timeout | undefined;
    if (this.opts.handlerTimeout > 0) {
      deadline = setTimeout(() => {
        if (token !== this.handlerToken || !this.busy) return;
        const err = new MilterError('THEMIS_ERR_MILTER_HANDLER_TIMEOUT', { stage, ms: this.opts.handlerTimeout });
        this.log.error({ code: err.code, stage }, err.message);
        this.settle(stage, this.opts.onHandlerError, modifier, true);
      }, this.opts.handlerTimeout);
    }
    if (this.opts.progressInterval > 0 && (stage === 'endOfMessage' || this.opts.progressStages === 'all')) {
      this.progressTimer = setInterval(() => this.progress(), this.opts.progressInterval);
    }
    promise.then(
      (decision) => {
        if (deadline) clearTimeout(deadline);
        if (token === this.handlerToken && this.busy) this.settle(stage, decision ?? Decisions.continue, modifier, false);
      },
      (err: unknown) => {
        if (deadline) clearTimeout(deadline);
        if (token !== this.handlerToken || !this.busy) return;
        this.handlerFailed(stage, err);
        this.settle(stage, this.opts.onHandlerError, modifier, true);
      },
    );
  }

  private settle(stage: Stage, decision: Decision, modifier: Modifier | undefined, failed: boolean): void {
    this.busy = false;
    this.touched = true;
    if (this.progressTimer) {
      clearInterval(this.progressTimer);
      this.progressTimer = undefined;
    }
    if (this.connState === enum_State.CLOSED) return;
    try {
      if (stage === 'endOfMessage') this.answerEndOfMessage(modifier!, decision, failed);
      else this.answer(stage, decision);
    } catch (err) {
      this.protocolError(err);
      return;
    }
    if (this.socket.readableEnded && this.queueHead >= this.queue.length) {
      this.flush();
      this.endSocket();
      return;
    }
    this.drainQueue();
  }

  private handlerFailed(stage: string, err: unknown): void {
    const e = new MilterError('THEMIS_ERR_MILTER_HANDLER', { stage, reason: err instanceof Error ? err.message : String(err) }, { cause: err });
    this.log.error({ code: e.code, stage, err: errorFields(err) }, e.message);
  }

  /** Turns a decision into the answer packet for `stage`, enforcing what each stage allows. */
  private answer(stage: Stage, decision: Decision): void {
    const negotiated = this.negotiated!;
    if (!negotiated.replyExpected.has(stage)) {
      if (decision.action !== 'continue') this.log.warn({ stage, action: decision.action }, 'decision dropped: this stage was negotiated as no-reply');
      return;
    }
    let d = decision;
    if (d.action === 'skip' && !(stage === 'body' && (negotiated.reply.protocol & Protocol.SKIP))) d = Decisions.continue;
    if (d.action === 'discard' && (stage === 'connect' || stage === 'helo')) {
      this.log.error({ code: 'THEMIS_ERR_MILTER_BAD_DECISION', stage }, `discard is not a valid answer to ${stage}`);
      d = this.opts.onHandlerError;
    }
    if (stage === 'unknown' && (d.action === 'accept' || d.action === 'discard' || d.action === 'skip')) d = Decisions.continue;
    this.send(this.decisionPacket(stage, d));
    switch (d.action) {
      case 'continue':
        return;
      case 'skip':
        this.bodySkipped = true;
        return;
      case 'reject':
      case 'tempfail':
        if (stage === 'rcptTo' || stage === 'unknown') return; // one recipient / one command only
        break;
    }
    if (stage === 'connect' || stage === 'helo') {
      this.connState = enum_State.DECIDED;
      return;
    }
    this.endMessage(false);
  }

  private decisionPacket(stage: Stage, d: Decision): Buffer {
    switch (d.action) {
      case 'continue':
        return EMPTY_PACKET[Response.CONTINUE];
      case 'accept':
        return EMPTY_PACKET[Response.ACCEPT];
      case 'discard':
        return EMPTY_PACKET[Response.DISCARD];
      case 'skip':
        return EMPTY_PACKET[Response.SKIP];
      case 'reject':
      case 'tempfail': {
        const plain = EMPTY_PACKET[d.action === 'reject' ? Response.REJECT : Response.TEMPFAIL];
        if (!d.reply) return plain;
        try {
          const text = formatSmtpReply(d.reply, d.action === 'reject' ? 5 : 4);
          return encodeStrings(Response.REPLYCODE, [text], this.opts.encoding);
        } catch (err) {
          // Never send a malformed reply: Postfix would drop the filter for the whole session.
          this.log.error({ code: isMilterError(err) ? err.code : undefined, stage, err: errorFields(err) }, 'invalid custom reply; sending the plain decision');
          return plain;
        }
      }
    }
  }

  private onEndOfMessage(payload: Buffer): void {
    // libmilter hands data carried by EOM to the body handler first.
    if (payload.length > 0 && this.app.body && !this.bodySkipped) {
      try {
        const r = this.app.body(this, payload);
        if (r && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, (err: unknown) => this.handlerFailed('body', err));
      } catch (err) {
        this.handlerFailed('body', err);
      }
    }
    const modifier = new Modifier(this.negotiated!, this.opts.encoding);
    const handler = this.app.endOfMessage;
    if (handler === undefined) return this.answerEndOfMessage(modifier, Decisions.continue, false);
    let result: HandlerResult;
    try {
      result = handler.call(this.app, this, modifier);
    } catch (err) {
      this.handlerFailed('endOfMessage', err);
      return this.answerEndOfMessage(modifier, this.opts.onHandlerError, true);
    }
    if (result !== undefined && typeof (result as Promise<unknown>).then === 'function') {
      this.await('endOfMessage', result as Promise<Decision | void>, modifier);
      return;
    }
    this.answerEndOfMessage(modifier, (result as Decision | undefined) ?? Decisions.continue, false);
  }

  private answerEndOfMessage(modifier: Modifier, decision: Decision, failed: boolean): void {
    // After a handler failure, half-made edits are dropped: the fallback decision stands alone.
    if (!failed) for (const packet of modifier.close()) this.send(packet);
    else modifier.close();
    let d = decision;
    if (d.action === 'skip') d = Decisions.continue;
    this.send(this.decisionPacket('endOfMessage', d));
    this.endMessage(false);
  }

  private runClose(): void {
    if (this.closeHandled) return;
    this.closeHandled = true;
    if (!this.app.close) return;
    try {
      const r = this.app.close(this);
      if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(undefined, (err: unknown) => this.handlerFailed('close', err));
    } catch (err) {
      this.handlerFailed('close', err);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Ending

  private protocolError(err: unknown): void {
    const code = isMilterError(err) ? err.code : 'THEMIS_ERR_MILTER_MALFORMED';
    this.log.warn({ code, err: errorFields(err), state: STATE_NAMES[this.connState] }, `milter protocol error; closing this connection: ${err instanceof Error ? err.message : String(err)}`);
    this.destroy('protocol error');
  }

  private endSocket(): void {
    if (this.connState === enum_State.CLOSED) return;
    this.flush();
    this.finish('quit');
    this.socket.end();
  }

  private finish(reason: string): void {
    if (this.connState === enum_State.CLOSED) return;
    this.endMessage(true);
    this.connState = enum_State.CLOSED;
    this.handlerToken++;
    this.busy = false;
    if (this.progressTimer) clearInterval(this.progressTimer);
    this.queue.length = 0;
    this.queueHead = 0;
    this.runClose();
    this.baseLog.debug({ conn: this.id, reason }, 'milter connection ended');
    this.onClosed(this);
  }
}

/**
 * A MAIL/RCPT event over the packet's bytes, decoded on first access: an application that does not
 * read an address does not pay for turning it into a string.
 */
class EnvelopeView implements EnvelopeEvent {
  /** The packet's payload is `buf[start, end)`. */
  private readonly buf: Buffer;
  private readonly start: number;
  private readonly end: number;
  private readonly encoding: StringEncoding;
  private argv: string[] | undefined;

  constructor(buf: Buffer, start: number, end: number, encoding: StringEncoding) {
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.encoding = encoding;
  }

  private decoded(): string[] {
    return (this.argv ??= readStrings(this.buf, this.encoding, this.start, this.end));
  }

  get raw(): string {
    return this.decoded()[0] ?? '';
  }

  get address(): string {
    return stripAngleBrackets(this.raw);
  }

  get args(): string[] {
    const argv = this.decoded();
    return argv.length > 1 ? argv.slice(1) : NO_ARGS;
  }

  toJSON(): EnvelopeEvent {
    return { address: this.address, raw: this.raw, args: this.args };
  }
}

/** A HEADER event over the packet's bytes, decoded on first access. */
class HeaderView implements HeaderEvent {
  /** The packet's payload is `buf[start, end)`. */
  private readonly buf: Buffer;
  private readonly start: number;
  private readonly end: number;
  private readonly encoding: StringEncoding;
  /** SMFIP_HDR_LEADSPC was negotiated: the packet's value is verbatim. */
  private readonly verbatim: boolean;
  private decoded: HeaderEvent | undefined;

  constructor(buf: Buffer, start: number, end: number, encoding: StringEncoding, verbatim: boolean) {
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.encoding = encoding;
    this.verbatim = verbatim;
  }

  private decode(): HeaderEvent {
    if (this.decoded) return this.decoded;
    const h: HeaderEvent = readHeader(this.buf.subarray(this.start, this.end), this.encoding);
    if (this.verbatim) {
      // What the MTA would have sent without HDR_LEADSPC, so that `value` means the same either way.
      h.raw = h.value;
      if (h.value.charCodeAt(0) === 32) h.value = h.value.slice(1);
    }
    return (this.decoded = h);
  }

  get name(): string {
    return this.decode().name;
  }

  get value(): string {
    return this.decode().value;
  }

  get raw(): string | undefined {
    return this.decode().raw;
  }

  toJSON(): HeaderEvent {
    const h = this.decode();
    return h.raw === undefined ? { name: h.name, value: h.value } : { name: h.name, value: h.value, raw: h.raw };
  }
}

const EMPTY_PAYLOAD = Buffer.alloc(0);

/** Whether `buf[start, end)` holds a NUL byte (a header name is short: a loop beats a native call). */
function hasNul(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === 0) return true;
  return false;
}

function handlerStages(app: MilterHandlers): Stage[] {
  const stages: Stage[] = [];
  for (const stage of Object.keys(STAGE_BITS) as Stage[]) if (typeof app[stage] === 'function') stages.push(stage);
  return stages;
}

function errorFields(err: unknown): object {
  if (err instanceof Error) return { type: err.name, message: err.message, code: (err as { code?: unknown }).code, stack: err.stack };
  return { message: String(err) };
}

/**
 * A modifier exactly as the engine gives it to an end-of-message handler, for code that must apply
 * the same checks without a socket (the `themis/testing` harness): `close()` ends its life and
 * returns the packets it would send, in order.
 */
export function createMessageModifier(negotiated: Negotiated, encoding: StringEncoding = 'utf8'): MessageModifier & { close(): Buffer[] } {
  return new Modifier(negotiated, encoding);
}

/** Collects end-of-message modifications, checking each against the negotiated actions as it is requested. */
class Modifier implements MessageModifier {
  private packets: (Buffer | null)[] = [];
  private body: Buffer[] | null = null;
  private bodyIndex = -1;
  private closed = false;
  private readonly negotiated: Negotiated;
  private readonly encoding: StringEncoding;
  private readonly leadingSpace: boolean;

  constructor(negotiated: Negotiated, encoding: StringEncoding) {
    this.negotiated = negotiated;
    this.encoding = encoding;
    this.leadingSpace = (negotiated.reply.protocol & Protocol.HDR_LEADSPC) !== 0;
  }

  private check(action: string, flag: number, flagName: string): void {
    if (this.closed) throw new MilterError('THEMIS_ERR_MILTER_MODIFY_OUTSIDE_EOM', { action });
    if ((this.negotiated.actions & flag) === 0) throw new MilterError('THEMIS_ERR_MILTER_ACTION_NOT_NEGOTIATED', { action, flag: flagName });
  }

  private headerValue(name: string, value: string): string {
    checkHeaderName(name);
    const v = normaliseHeaderValue(name, value);
    // With HDR_LEADSPC the MTA writes `Name:value` verbatim, so the space must come from us.
    return this.leadingSpace && v.length > 0 && v[0] !== ' ' && v[0] !== '\t' ? ' ' + v : v;
  }

  addHeader(name: string, value: string): void {
    this.check('addHeader', Action.ADDHDRS, 'SMFIF_ADDHDRS');
    this.packets.push(encodeStrings(Response.ADDHEADER, [name, this.headerValue(name, value)], this.encoding));
  }

  insertHeader(index: number, name: string, value: string): void {
    this.check('insertHeader', Action.ADDHDRS, 'SMFIF_ADDHDRS');
    checkIndex('insertHeader', index, 0);
    this.packets.push(encodeStrings(Response.INSHEADER, [name, this.headerValue(name, value)], this.encoding, index));
  }

  changeHeader(name: string, index: number, value: string): void {
    this.check('changeHeader', Action.CHGHDRS, 'SMFIF_CHGHDRS');
    checkIndex('changeHeader', index, 1);
    this.packets.push(encodeStrings(Response.CHGHEADER, [name, value === '' ? '' : this.headerValue(name, value)], this.encoding, index));
  }

  deleteHeader(name: string, index: number): void {
    this.check('deleteHeader', Action.CHGHDRS, 'SMFIF_CHGHDRS');
    checkHeaderName(name);
    checkIndex('deleteHeader', index, 1);
    this.packets.push(encodeStrings(Response.CHGHEADER, [name, ''], this.encoding, index));
  }

  changeSender(address: string, args?: readonly string[]): void {
    this.check('changeSender', Action.CHGFROM, 'SMFIF_CHGFROM');
    const strings = [bracket(address)];
    if (args && args.length > 0) strings.push(joinArgs(args));
    this.packets.push(encodeStrings(Response.CHGFROM, strings, this.encoding));
  }

  addRecipient(address: string, args?: readonly string[]): void {
    if (args && args.length > 0) {
      this.check('addRecipient with arguments', Action.ADDRCPT_PAR, 'SMFIF_ADDRCPT_PAR');
      this.packets.push(encodeStrings(Response.ADDRCPT_PAR, [bracket(address), joinArgs(args)], this.encoding));
    } else {
      this.check('addRecipient', Action.ADDRCPT, 'SMFIF_ADDRCPT');
      this.packets.push(encodeStrings(Response.ADDRCPT, [bracket(address)], this.encoding));
    }
  }

  deleteRecipient(address: string): void {
    this.check('deleteRecipient', Action.DELRCPT, 'SMFIF_DELRCPT');
    checkAddress(address);
    this.packets.push(encodeStrings(Response.DELRCPT, [address], this.encoding));
  }

  replaceBody(data: Buffer | string): void {
    this.check('replaceBody', Action.CHGBODY, 'SMFIF_CHGBODY');
    const bytes = typeof data === 'string' ? Buffer.from(data, this.encoding) : data;
    // Postfix needs every REPLBODY packet in one uninterrupted run: keep the place of the first call.
    if (this.body === null) {
      this.body = [];
      this.bodyIndex = this.packets.length;
      this.packets.push(null);
    }
    this.body.push(bytes);
  }

  quarantine(reason: string): void {
    this.check('quarantine', Action.QUARANTINE, 'SMFIF_QUARANTINE');
    if (reason.length === 0 || /[\0\r\n]/.test(reason)) throw new MilterError('THEMIS_ERR_MILTER_MALFORMED', { command: 'SMFIR_QUARANTINE', reason: 'the reason must be non-empty, without NUL, CR or LF' });
    this.packets.push(encodeStrings(Response.QUARANTINE, [reason], this.encoding));
  }

  /** Ends the modifier's life and returns the packets in request order. */
  close(): Buffer[] {
    this.closed = true;
    const out: Buffer[] = [];
    for (let i = 0; i < this.packets.length; i++) {
      if (i === this.bodyIndex) {
        const body = Buffer.concat(this.body!);
        if (body.length === 0) out.push(encodePacket(Response.REPLBODY, Buffer.alloc(0)));
        else for (const p of encodeChunks(Response.REPLBODY, body, MILTER_CHUNK_SIZE)) out.push(p);
      } else out.push(this.packets[i]!);
    }
    this.packets = [];
    this.body = null;
    return out;
  }
}

function checkIndex(action: string, index: number, min: number): void {
  if (!Number.isInteger(index) || index < min || index > 0xffffffff) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: `index for ${action}`, reason: `${index} is not an integer ≥ ${min}` });
}

function checkAddress(address: string): void {
  if (/[\0\r\n]/.test(address)) throw new MilterError('THEMIS_ERR_MILTER_BAD_ADDRESS', { address: JSON.stringify(address), reason: 'contains NUL, CR or LF' });
}

function bracket(address: string): string {
  checkAddress(address);
  return address.startsWith('<') && address.endsWith('>') ? address : `<${address}>`;
}

function joinArgs(args: readonly string[]): string {
  for (const a of args) if (/[\0\r\n ]/.test(a) || a === '') throw new MilterError('THEMIS_ERR_MILTER_BAD_ADDRESS', { address: JSON.stringify(a), reason: 'an ESMTP argument must be non-empty, without spaces, NUL, CR or LF' });
  return args.join(' ');
}
