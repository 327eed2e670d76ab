/**
 * Option negotiation: from the MTA's offer and what the application needs, the OPTNEG answer.
 * Never requests a bit the MTA did not offer (Sendmail and Postfix drop a filter that does).
 * @module
 */
import { Action, MILTER_VERSION, Protocol, STAGES, STAGE_BITS, STAGE_MACRO_LIST, type Stage } from './constants.ts';
import type { OptionNegotiation } from './codec.ts';
import { MilterError } from './errors.ts';

/** Names of the macro-list stages, for {@link NegotiationOptions.macros}. */
export type MacroListStage = 'connect' | 'helo' | 'mailFrom' | 'rcptTo' | 'data' | 'endOfHeaders' | 'endOfMessage';

/** What an application asks of the MTA. */
export interface NegotiationOptions {
  /**
   * Stages the application listens to; every other stage is switched off with its NO* bit where
   * offered — except DATA, which is negotiated and answered unless {@link answerData} is false.
   */
  stages: Iterable<Stage>;
  /** Stages whose events the application never answers (NR* bits): the MTA then streams them without waiting. DATA stays answered unless {@link answerData} is false. */
  noReply?: Iterable<Stage>;
  /** SMFIF_* bits ({@link Action}) for the modifications the application may request at end of message. */
  actions?: number;
  /** Macros to request per stage (SMFIF_SETSYMLIST). Replaces the MTA's list for that stage. */
  macros?: Partial<Record<MacroListStage, readonly string[]>>;
  /** Ask for SMFIP_SKIP: the application may answer body chunks with `skip`. */
  skip?: boolean;
  /** Ask for SMFIP_RCPT_REJ: also see recipients the MTA itself rejected. */
  rejectedRecipients?: boolean;
  /**
   * Ask for SMFIP_HDR_LEADSPC: header events then also carry their exact value (`HeaderEvent.raw`, the
   * leading whitespace kept), and edits are sent with a leading space added unless they start with one.
   */
  headerLeadingSpace?: boolean;
  /**
   * Answer DATA even when the application does not listen to it (default true). Behind Postfix over
   * TCP, leaving DATA switched off or unanswered makes every message wait for a delayed ACK (~40 ms):
   * smtpd flushes the DATA-stage packets before handing the connection to cleanup, and nothing in
   * that flush is answered. Set false only for an MTA known not to do that, or to reproduce an
   * exchange byte for byte.
   */
  answerData?: boolean;
}

/** The result of negotiation, kept for the whole milter connection. */
export interface Negotiated {
  /** What the MTA offered. */
  readonly offer: Readonly<OptionNegotiation>;
  /** The version, actions, protocol bits and macro lists answered. */
  readonly reply: Readonly<OptionNegotiation>;
  /** Stages the application listens to that the MTA will actually send. */
  readonly stages: ReadonlySet<Stage>;
  /** Stages for which the MTA expects an answer; for the others no packet may be sent. */
  readonly replyExpected: ReadonlySet<Stage>;
  /** Actions the application was granted (subset of the offer). */
  readonly actions: number;
  /** Actions the application asked for but the MTA did not offer. */
  readonly refusedActions: number;
}

/** Computes the OPTNEG answer. Throws `THEMIS_ERR_MILTER_VERSION` for an MTA below version 2. */
export function negotiate(offer: OptionNegotiation, options: NegotiationOptions): Negotiated {
  if (offer.version < 2) throw new MilterError('THEMIS_ERR_MILTER_VERSION', { version: offer.version });
  const version = Math.min(MILTER_VERSION, offer.version);
  // libmilter's reading of a zero mask: version-1 actions and events.
  const offeredActions = offer.actions === 0 ? 0x0f : offer.actions;
  const offeredProtocol = offer.protocol === 0 ? 0x3f : offer.protocol;

  const wanted = new Set(options.stages);
  wanted.add('endOfMessage');
  const noReply = new Set(options.noReply ?? []);
  // DATA is asked for and answered unless the application opts out (answerData: false). Postfix
  // buffers its milter writes and flushes them only when it waits for a reply — except at DATA,
  // where smtpd flushes what it holds and hands the socket to cleanup (milter8_send). If nothing in
  // that flush expects a reply (the DATA macros alone, or NR/NO events), the filter's kernel delays
  // its ACK (~40 ms on Linux), and Nagle on Postfix's side holds cleanup's first write until that
  // ACK: every message waited ~40 ms. Answering DATA makes the last packet smtpd flushes one that
  // is answered at once, so the answer carries the ACK. Measured in bench/README.md ("Postfix end
  // to end"); the invariant is tested through a real Postfix in test/e2e/postfix-flush.test.ts.
  if (options.answerData !== false) {
    wanted.add('data');
    noReply.delete('data');
  }
  let protocol = 0;
  const stages = new Set<Stage>();
  const replyExpected = new Set<Stage>();
  for (const stage of STAGES) {
    const bits = STAGE_BITS[stage];
    if (!versionHas(version, stage)) continue;
    if (!wanted.has(stage)) {
      if (bits.no !== 0 && (offeredProtocol & bits.no) !== 0) {
        protocol |= bits.no;
        continue;
      }
      // Not offered as skippable: it will come; answer nothing if NR is offered, else `continue`.
      if (bits.nr !== 0 && (offeredProtocol & bits.nr) !== 0) protocol |= bits.nr;
      else if (stage !== 'endOfMessage') replyExpected.add(stage);
      continue;
    }
    stages.add(stage);
    if (noReply.has(stage) && bits.nr !== 0 && (offeredProtocol & bits.nr) !== 0) protocol |= bits.nr;
    else replyExpected.add(stage);
  }
  replyExpected.add('endOfMessage');
  if (options.skip && (offeredProtocol & Protocol.SKIP)) protocol |= Protocol.SKIP;
  if (options.rejectedRecipients && (offeredProtocol & Protocol.RCPT_REJ)) protocol |= Protocol.RCPT_REJ;
  if (options.headerLeadingSpace && (offeredProtocol & Protocol.HDR_LEADSPC)) protocol |= Protocol.HDR_LEADSPC;

  const requested = (options.actions ?? 0) & ~Action.SETSYMLIST;
  let actions = requested & offeredActions;
  const refusedActions = requested & ~offeredActions;

  let macros: Map<number, string> | undefined;
  if (options.macros && version >= 6 && (offeredActions & Action.SETSYMLIST)) {
    for (const [name, list] of Object.entries(options.macros) as [MacroListStage, readonly string[] | undefined][]) {
      if (!list || list.length === 0) continue;
      const stage = STAGE_MACRO_LIST[name];
      if (stage === undefined) continue;
      (macros ??= new Map()).set(stage, list.join(' '));
    }
    if (macros) actions |= Action.SETSYMLIST;
  }
  const reply: OptionNegotiation = { version, actions, protocol };
  if (macros) reply.macros = macros;
  return { offer, reply, stages, replyExpected, actions: actions & ~Action.SETSYMLIST, refusedActions };
}

/** Whether a protocol version has an event at all (v2 has no DATA/UNKNOWN, v3 no DATA). */
function versionHas(version: number, stage: Stage): boolean {
  if (stage === 'unknown') return version >= 3;
  if (stage === 'data') return version >= 4;
  return true;
}
