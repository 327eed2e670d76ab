/**
 * Atomic operations plugins define on the store: one key, a Lua script Redis runs, and an in-memory
 * twin the {@link MemoryStore} runs, computing the same result. This is how a plugin adds what the
 * general primitives cannot do in one round trip (a rate limit over several windows, a set-if-absent
 * with a TTL and a count, a learned profile) without changing the core: the rate limiter and predict's
 * profiles are built this way.
 *
 * **One key, by construction.** A call names one key (`KEYS[1]`, `numkeys = 1`), so any Cluster node
 * can run it without hash tags, and every call of a batch is independent.
 *
 * **One round trip per batch.** {@link Store.atomic} takes several calls: standalone and Sentinel
 * connections send them all in one socket write (EVALSHA; EVAL after NOSCRIPT, so a restarted or
 * failed-over server that lost its script cache costs one more round trip, never an error); a Cluster
 * sends them all at once, one round trip per node involved.
 *
 * **The twin.** `memory(key, args, now)` sees the key as a script does through `redis.call`: a hash
 * ({@link AtomicHashKey}) or a string ({@link AtomicStringKey}), with its expiry. It runs synchronously,
 * so atomically. What it leaves is stored the way Redis would: an emptied hash is deleted, a string
 * written with `set` loses its expiry unless the twin sets one again. Prove the twin equal to the
 * script with `atomicOperationContract` from `themis-milter/testing` (memory, a real redis-server and a
 * real Cluster).
 * @module
 */
import { createHash } from 'node:crypto';
import { StoreError } from './errors.ts';

/** What an operation's key holds: the kind of value its script reads and writes. */
export type AtomicKeyType = 'hash' | 'string';

/** The expiry of the key an operation's twin runs on, as the script's `PTTL`/`PEXPIRE`/`PERSIST` see it. */
export interface AtomicKeyExpiry {
  /** True when the key exists now (a non-empty hash, a string that was not deleted). */
  readonly exists: boolean;
  /** Redis `PTTL`: ms left, -1 when the key has no expiry, -2 when it does not exist. */
  pttl(): number;
  /** Redis `PEXPIRE`: expire in `ms` (rounded up; ≤ 0 deletes). Does nothing when the key does not exist, as in Redis. */
  pexpire(ms: number): void;
  /** Redis `PERSIST`: no expiry. */
  persist(): void;
  /** Redis `DEL`. */
  del(): void;
}

/**
 * A hash key for the twin: `fields` is the hash itself (empty when the key is absent); changes made
 * to it are kept. An empty hash after the twin ran is deleted, as Redis deletes an emptied hash.
 */
export interface AtomicHashKey extends AtomicKeyExpiry {
  /** The hash's fields; write through it (Redis `HSET`/`HDEL`). */
  readonly fields: Map<string, string>;
}

/** A string key for the twin. */
export interface AtomicStringKey extends AtomicKeyExpiry {
  /** Redis `GET`: the value, or undefined when absent. */
  get(): string | undefined;
  /** Redis `SET` without options: sets the value and drops the expiry. */
  set(value: string): void;
}

/** The twin's view of its key, by the operation's key type. */
export type AtomicKey<T extends AtomicKeyType> = T extends 'hash' ? AtomicHashKey : AtomicStringKey;

/** An argument of a script call, as sent to Redis (a number is sent as its decimal text). */
export type AtomicArgument = string | number;

/**
 * The definition of an atomic one-key operation: what {@link defineAtomicOperation} takes.
 * @typeParam Args what a caller passes for one call.
 * @typeParam Result what one call gives back.
 * @typeParam Type the kind of value the key holds.
 */
export interface AtomicOperationDefinition<Args, Result, Type extends AtomicKeyType = AtomicKeyType> {
  /**
   * Names the operation in errors and logs (`THEMIS_ERR_STORE_COMMAND … RATELIMIT.DECIDE failed`): the
   * plugin's name, a dot, the operation, in capitals (`/^[A-Z][A-Z0-9_]*\.[A-Z][A-Z0-9_]*$/`).
   */
  name: string;
  /** The kind of value the key holds; any other kind there is `THEMIS_ERR_STORE_WRONGTYPE` (checked before anything runs). */
  type: Type;
  /**
   * The Lua script: `KEYS[1]` is the key (the store's prefix added), `ARGV` what {@link encode} gives.
   * Keep it deterministic apart from `redis.call('TIME')`, and touch no other key.
   */
  lua: string;
  /**
   * Checks one call's arguments before anything of the batch is sent or run.
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` (use {@link invalidAtomicArgument}).
   */
  validate?(args: Args, index: number): void;
  /**
   * The script's `ARGV` for a validated call. `now` is the caller's clock only on a store built with
   * `testClock` (tests), else undefined: the script then reads Redis' `TIME`, one clock for a pool.
   */
  encode(args: Args, now: number | undefined): readonly AtomicArgument[];
  /**
   * The call's result from the script's reply, as Redis gives it (integers as numbers, bulk strings as
   * strings or Buffers — use {@link replyText}, arrays as arrays). Throw for a reply of the wrong shape.
   */
  decode(reply: unknown, args: Args): Result;
  /** The in-memory twin: the same computation on the key's value, synchronously. `now`: ms since the epoch. */
  memory(key: AtomicKey<Type>, args: Args, now: number): Result;
}

/** An atomic one-key operation, ready for {@link Store.atomic}: made by {@link defineAtomicOperation}. */
export interface AtomicOperation<Args, Result, Type extends AtomicKeyType = AtomicKeyType> extends Readonly<AtomicOperationDefinition<Args, Result, Type>> {
  /** The script's SHA-1, hex (what EVALSHA sends). */
  readonly sha: string;
}

/** One call of an operation in a {@link Store.atomic} batch. */
export interface AtomicCall<Args> {
  /** The key (namespaced by the caller: `plugin:…`; the store adds its prefix). */
  key: string;
  /** The call's arguments. */
  args: Args;
  /** The clock, ms since the epoch: honoured only by stores created with `testClock: true`. */
  now?: number;
}

const OPERATION_NAME = /^[A-Z][A-Z0-9_]*\.[A-Z][A-Z0-9_]*$/;

/**
 * An atomic operation from its definition, checked once: its name, its key type, and the script's
 * SHA-1 computed.
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when the definition is malformed.
 */
export function defineAtomicOperation<Args, Result, Type extends AtomicKeyType>(definition: AtomicOperationDefinition<Args, Result, Type>): AtomicOperation<Args, Result, Type> {
  const bad = (reason: string) => new StoreError('THEMIS_ERR_STORE_ARGUMENT', { command: 'DEFINE', reason });
  const d = definition as Partial<AtomicOperationDefinition<Args, Result, Type>>;
  if (typeof d.name !== 'string' || !OPERATION_NAME.test(d.name)) throw bad(`operation name ${JSON.stringify(d.name)} must be PLUGIN.OPERATION in capitals (e.g. GREYLIST.TRIPLET)`);
  if (d.type !== 'hash' && d.type !== 'string') throw bad(`${d.name}: type must be "hash" or "string"`);
  if (typeof d.lua !== 'string' || d.lua.trim() === '') throw bad(`${d.name}: lua must be the script's text`);
  for (const fn of ['encode', 'decode', 'memory'] as const) if (typeof d[fn] !== 'function') throw bad(`${d.name}: ${fn} must be a function`);
  return Object.freeze({ ...definition, sha: createHash('sha1').update(definition.lua).digest('hex') });
}

/**
 * Every call of a batch checked before anything runs: the operation's `validate`, then the key.
 * Shared by the stores.
 * @internal
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function checkAtomicCalls<Args>(op: AtomicOperation<Args, unknown>, calls: readonly AtomicCall<Args>[]): void {
  for (let i = 0; i < calls.length; i++) {
    const call = calls[i];
    if (op.validate) op.validate(call?.args, i);
    if (typeof call?.key !== 'string') throw invalidAtomicArgument(op.name, `calls[${i}].key must be a string`);
  }
}

/** The error an operation's `validate` throws for a bad argument. */
export function invalidAtomicArgument(operation: string, reason: string): StoreError {
  return new StoreError('THEMIS_ERR_STORE_ARGUMENT', { command: operation, reason });
}

/** A reply element as text: bulk strings come as Buffers on the store's batched path, as strings elsewhere. */
export function replyText(x: unknown): string {
  return Buffer.isBuffer(x) ? x.toString('utf8') : String(x);
}

/**
 * A comma-separated list as a script reads it with `cjson.decode('[' .. text .. ']')`, or undefined
 * when absent or unreadable: for twins, which must agree with their script on what is corrupt.
 */
export function parseStoredList(text: string | undefined): unknown[] | undefined {
  if (text === undefined) return undefined;
  try {
    const list: unknown = JSON.parse(`[${text}]`);
    return Array.isArray(list) ? list : undefined;
  } catch {
    return undefined;
  }
}

/** A RESP bulk string. */
const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

/**
 * A script as the Redis store sends it: an atomic operation, or one of the store's own primitives.
 * @internal
 */
export interface ScriptText {
  /** For errors. */
  readonly name: string;
  /** The Lua text (EVAL after NOSCRIPT). */
  readonly lua: string;
  /** Its SHA-1, hex (EVALSHA). */
  readonly sha: string;
}

/**
 * A script of the store's own, ready to send.
 * @internal
 */
export function scriptText(name: string, lua: string): ScriptText {
  return { name, lua, sha: createHash('sha1').update(lua).digest('hex') };
}

/**
 * One EVALSHA of `op` on the (prefixed) `key` in RESP, as the store writes it itself.
 * @internal
 */
export function evalshaCall(op: ScriptText, key: string, args: readonly AtomicArgument[]): string {
  let out = `*${4 + args.length}\r\n$7\r\nevalsha\r\n$40\r\n${op.sha}\r\n$1\r\n1\r\n${bulk(key)}`;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    out += typeof a === 'number' ? bulk(String(a)) : bulk(a);
  }
  return out;
}

/**
 * The same call as EVAL with the script's text: for a server that answered NOSCRIPT.
 * @internal
 */
export function asEvalCall(op: ScriptText, call: string): string {
  const at = call.indexOf('\r\n') + 2;
  const head = `$7\r\nevalsha\r\n$40\r\n${op.sha}\r\n`;
  if (!call.startsWith(head, at)) throw new Error(`not an EVALSHA of ${op.name}`);
  return `${call.slice(0, at)}$4\r\neval\r\n${bulk(op.lua)}${call.slice(at + head.length)}`;
}
