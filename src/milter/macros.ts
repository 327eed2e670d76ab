/**
 * Macro storage scoped per stage, as libmilter does it: one bucket per stage, a MACRO packet replaces
 * its bucket, the command of a stage clears the buckets of every later stage, and a lookup searches
 * from the latest stage back to CONNECT so later stages shadow earlier ones.
 * @module
 */
import { Command } from './constants.ts';
import { readStrings, type StringEncoding } from './codec.ts';

/** Bucket order follows the SMTP timeline (not the SMFIM numbering, where EOM=5 precedes EOH=6). */
const enum_ = { CONNECT: 0, HELO: 1, MAIL: 2, RCPT: 3, DATA: 4, EOH: 5, EOM: 6 } as const;
const BUCKETS = 7;

/** A MACRO packet that is ignored, as libmilter ignores it. */
const DROPPED = -1;

/**
 * Which bucket a MACRO packet for the given command byte fills. Postfix also sends `D L` before each
 * header, `D B` before each body chunk (with the EOH and EOM lists) and `D U` before each unknown
 * command (milter_unknown_command_macros); libmilter drops those (its st_macros stores only C, H, M,
 * R, T, N and E), and so does the engine, so that handlers see the same macros as under libmilter
 * (test/milter/libmilter-macros.test.ts). `D N` and `D E` carry the same lists. A `D U` kept would also
 * outlive its command when UNKNOWN is switched off (Sendmail sends the macros anyway).
 */
function bucketOf(command: number): number {
  switch (command) {
    case Command.CONNECT: return enum_.CONNECT;
    case Command.HELO: return enum_.HELO;
    case Command.MAIL: return enum_.MAIL;
    case Command.RCPT: return enum_.RCPT;
    case Command.DATA: return enum_.DATA;
    case Command.EOH: return enum_.EOH;
    case Command.BODYEOB: return enum_.EOM;
    default: return DROPPED; // `D L`, `D B`, `D U`
  }
}

/** `{auth_authen}` and `auth_authen` name the same macro, as do `i` and `{i}` (libmilter's tolerance). */
function canonical(name: string): string {
  return name.length > 2 && name.charCodeAt(0) === 123 && name.charCodeAt(name.length - 1) === 125 ? name.slice(1, -1) : name;
}

/** Read-only view of the macros visible at the current point of a session. */
export interface MacroReader {
  /** The value of a macro (`j`, `{auth_authen}` or `auth_authen`), or undefined when the MTA did not send it. */
  get(name: string): string | undefined;
  /** Every visible macro, later stages shadowing earlier ones; names in braces when longer than one character. */
  toObject(): Record<string, string>;
}

/**
 * The per-session macro store. Postfix sends a MACRO packet before every event (about 20 per
 * message) and most are never read, so packets are kept as raw bytes and decoded on first lookup.
 */
export class MacroStore implements MacroReader {
  /** Per bucket: the decoded macros, or the undecoded packet `buckets[i][starts[i], ends[i])`, or null. */
  private readonly buckets: (Map<string, string> | Buffer | null)[] = new Array(BUCKETS).fill(null);
  private readonly starts = new Int32Array(BUCKETS);
  private readonly ends = new Int32Array(BUCKETS);
  private readonly encoding: StringEncoding;

  constructor(encoding: StringEncoding = 'utf8') {
    this.encoding = encoding;
  }

  /** Stores the pairs of a MACRO packet, replacing what that stage had. */
  set(command: number, pairs: readonly string[]): void {
    const map = new Map<string, string>();
    for (let i = 0; i + 1 < pairs.length; i += 2) map.set(canonical(pairs[i]), pairs[i + 1]);
    const bucket = bucketOf(command);
    if (bucket !== DROPPED) this.buckets[bucket] = map;
  }

  /** Stores a MACRO packet's payload (command byte first) undecoded; it must not change afterwards. */
  setPacket(payload: Buffer): void {
    this.setRange(payload, 0, payload.length);
  }

  /** Stores a MACRO packet's payload, the bytes `buf[start, end)` (command byte first), undecoded; they must not change afterwards. */
  setRange(buf: Buffer, start: number, end: number): void {
    const i = bucketOf(buf[start]);
    if (i === DROPPED) return;
    if (end - start > 1) {
      this.buckets[i] = buf;
      this.starts[i] = start;
      this.ends[i] = end;
    } else this.buckets[i] = null;
  }

  private bucket(i: number): Map<string, string> | null {
    const b = this.buckets[i];
    if (b === null || b instanceof Map) return b;
    const strings = readStrings(b, this.encoding, this.starts[i] + 1, this.ends[i]);
    const map = new Map<string, string>();
    for (let k = 0; k < strings.length; k += 2) map.set(canonical(strings[k]), strings[k + 1] ?? '');
    this.buckets[i] = map;
    return map;
  }

  /**
   * Called when a command arrives. As in libmilter (engine.c), CONNECT, HELO, MAIL and RCPT clear the
   * buckets of every stage after theirs; DATA, headers, EOH, body chunks and EOM clear nothing (their
   * macro packets only replace their own bucket), and neither does ABORT.
   */
  enterStage(command: number): void {
    const bucket = bucketOf(command);
    if (bucket === DROPPED || bucket > enum_.RCPT) return;
    for (let i = bucket + 1; i < BUCKETS; i++) this.buckets[i] = null;
  }

  /** Forgets everything (QUIT_NC starts a new connection on the same socket). */
  clearAll(): void {
    this.buckets.fill(null);
  }

  get(name: string): string | undefined {
    const key = canonical(name);
    for (let i = BUCKETS - 1; i >= 0; i--) {
      if (this.buckets[i] === null) continue;
      const value = this.bucket(i)!.get(key);
      if (value !== undefined) return value;
    }
    return undefined;
  }

  toObject(): Record<string, string> {
    const out: Record<string, string> = {};
    for (let i = 0; i < BUCKETS; i++) {
      const bucket = this.bucket(i);
      if (bucket) for (const [k, v] of bucket) out[k.length > 1 ? `{${k}}` : k] = v;
    }
    return out;
  }
}
