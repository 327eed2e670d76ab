/**
 * The header block as the MTA will deliver it: the headers as received with the pending header
 * modifications applied, the way Postfix and Sendmail apply them. What `finalize` hooks
 * (FinalMessage.headers) sign.
 * @module
 */
import type { HeaderEvent, MessageModifier } from '../milter/index.ts';

/**
 * A {@link MessageModifier} that edits a header list instead of sending packets. The pending
 * modifications' `apply` closures run against it exactly as against the engine's modifier, so the
 * result follows the same order. Envelope, body and quarantine requests change no header: ignored.
 */
export class HeaderListEditor implements MessageModifier {
  readonly headers: HeaderEvent[];
  /** The MTA writes values verbatim (SMFIP_HDR_LEADSPC): the engine's modifier adds the space unless one is there. */
  private readonly verbatim: boolean;

  constructor(received: readonly HeaderEvent[], verbatim: boolean) {
    this.verbatim = verbatim;
    // Plain copies: the engine's header events are views over packets.
    this.headers = received.map((h) => (h.raw === undefined ? { name: h.name, value: h.value } : { name: h.name, value: h.value, raw: h.raw }));
  }

  /** The header as the MTA writes it: `raw` is what follows the colon. */
  private made(name: string, value: string): HeaderEvent {
    const v = value.includes('\r\n') ? value.replaceAll('\r\n', '\n') : value;
    const first = v.charCodeAt(0);
    // Without HDR_LEADSPC the MTA always writes `Name: value`; with it the engine's modifier adds the
    // space unless the value starts with whitespace (src/milter/session.ts, Modifier.headerValue).
    const raw = this.verbatim && (first === 32 || first === 9 || v === '') ? v : ' ' + v;
    return { name, value: raw.charCodeAt(0) === 32 ? raw.slice(1) : raw, raw };
  }

  /** Position in {@link headers} of the `index`-th (1-based) header named `name`, or -1. */
  private find(name: string, index: number): number {
    const lower = name.toLowerCase();
    let seen = 0;
    for (let i = 0; i < this.headers.length; i++) {
      if (this.headers[i].name.toLowerCase() !== lower) continue;
      if (++seen === index) return i;
    }
    return -1;
  }

  addHeader(name: string, value: string): void {
    this.headers.push(this.made(name, value));
  }

  insertHeader(index: number, name: string, value: string): void {
    this.headers.splice(Math.min(Math.max(index, 0), this.headers.length), 0, this.made(name, value));
  }

  changeHeader(name: string, index: number, value: string): void {
    const at = this.find(name, index);
    if (value === '') {
      if (at >= 0) this.headers.splice(at, 1);
      return;
    }
    // Past the count the header is added (libmilter's smfi_chgheader, Postfix's cleanup_milter).
    if (at < 0) this.headers.push(this.made(name, value));
    else this.headers[at] = this.made(name, value);
  }

  deleteHeader(name: string, index: number): void {
    this.changeHeader(name, index, '');
  }

  changeSender(): void {}
  addRecipient(): void {}
  deleteRecipient(): void {}
  replaceBody(): void {}
  quarantine(): void {}
}
