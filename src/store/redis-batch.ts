/**
 * Script calls sent by hand in one socket write ({@link ScriptBatch}) and their deadlines under one
 * timer ({@link Deadlines}): the store's path for every script on a standalone or Sentinel
 * connection, measured faster than ioredis' own pipelines on batches (bench/README.md, "Store
 * pipelining"), on ioredis' public API (its `Command` class, `sendCommand` and pipeline stream type).
 * @module
 */
import { Command, type Redis } from 'ioredis';

/** The pipeline stream `Redis#sendCommand(command, stream)` takes: ioredis' public signature's own type. */
type PipelineWriteableStream = Extract<NonNullable<Parameters<Redis['sendCommand']>[1]>, { isPipeline: true }>;

/**
 * One script call of a batch, as ioredis queues it: a `Command` (ioredis' public class) whose wire
 * form is the RESP the store built, whose reply goes to its batch (raw: bulk strings stay Buffers),
 * and which has no timer of its own (the batch has one deadline).
 */
class ScriptCall extends Command {
  private readonly resp: string;

  constructor(batch: ScriptBatch, resp: string) {
    super(batch.name, []);
    this.resp = resp;
    // ioredis calls these with the call's reply, or its error (a reply error, or the connection's).
    this.resolve = (reply: unknown) => batch.resolve(reply);
    this.reject = (err: Error) => batch.reject(err);
  }

  override toWritable(): string {
    return this.resp;
  }

  override setTimeout(): void {}
}

/**
 * Script calls sent in one socket write and settled together: every script the store sends on a
 * standalone or Sentinel connection (atomic operations, the rate limiter's hot path among them). Each
 * call is an ioredis `Command` queued with `Redis#sendCommand(command, stream)` — public API, the way
 * ioredis' own `Pipeline` queues its commands — and this object is the pipeline stream of that call
 * (ioredis' public `PipelineWriteableStream`): it gathers the calls' RESP and writes them to the
 * connection's socket at once, instead of a `Pipeline` per batch, a promise per call and a timer per
 * call. Its deadline is the store's one timer ({@link Deadlines}); a reply that comes after it, or
 * after the batch failed, is dropped.
 *
 * Replies arrive in order. A NOSCRIPT error is kept in its place for the store to resend the call as
 * EVAL; any other error (a script's, or the connection's: ioredis rejects queued commands when the
 * connection closes) fails the batch at once.
 */
export class ScriptBatch implements PipelineWriteableStream {
  /** The Redis command the calls are (`evalsha`, or `eval` after NOSCRIPT). */
  readonly name: string;
  /** For ioredis: this is the stream of a pipeline. */
  readonly isPipeline = true;
  /** For ioredis: the connection the stream writes to. */
  readonly destination: { redis: Redis };
  /** The calls, RESP. */
  readonly calls: string[];
  /** The store's name for the operation, for errors. */
  readonly command: string;
  /** The replies in order (NOSCRIPT errors in place), or the first other failure. */
  readonly promise: Promise<unknown[]>;
  /** performance.now() after which the batch fails. */
  deadline = 0;
  /** Neighbours in the deadline list. */
  prev: ScriptBatch | undefined;
  next: ScriptBatch | undefined;
  /** Resolved or failed: later replies are dropped. */
  settled = false;
  private readonly replies: unknown[];
  private readonly deadlines: Deadlines;
  private written = 0;
  private data = '';
  private received = 0;
  private done!: (replies: unknown[]) => void;
  private failed!: (err: Error) => void;

  constructor(redis: Redis, name: 'evalsha' | 'eval', command: string, calls: string[], deadlines: Deadlines) {
    this.name = name;
    this.command = command;
    this.destination = { redis };
    this.calls = calls;
    this.replies = new Array(calls.length);
    this.deadlines = deadlines;
    this.promise = new Promise((resolve, reject) => {
      this.done = resolve;
      this.failed = reject;
    });
  }

  /** Queues every call on the connection, written at once; ioredis rejects them when it cannot send. */
  send(): Promise<unknown[]> {
    this.deadlines.add(this);
    const redis = this.destination.redis;
    for (let i = 0; i < this.calls.length && !this.settled; i++) redis.sendCommand(new ScriptCall(this, this.calls[i]), this);
    return this.promise;
  }

  /** ioredis (as the pipeline's stream): one call's RESP; the last one sends them all. */
  write(data: string | Buffer): void {
    this.data += data;
    if (++this.written === this.calls.length) {
      this.destination.redis.stream.write(this.data);
      this.data = '';
    }
  }

  /** The next call's reply. */
  resolve(reply: unknown): void {
    if (this.settled) return;
    this.replies[this.received] = reply;
    if (++this.received === this.calls.length) this.settle(undefined);
  }

  /** The next call's error reply, or the connection's error for every call still queued. */
  reject(err: Error): void {
    if (this.settled) return;
    if (!err.message.startsWith('NOSCRIPT')) return this.settle(err);
    this.replies[this.received] = err;
    if (++this.received === this.calls.length) this.settle(undefined);
  }

  /** Resolves with the replies, or fails with `err`; once. */
  settle(err: Error | undefined): void {
    if (this.settled) return;
    this.settled = true;
    this.deadlines.remove(this);
    if (err) this.failed(err);
    else this.done(this.replies);
  }
}

/**
 * The batches in flight, oldest first, under one timer: they all get the same timeout, so deadlines
 * follow the list's order and the timer only ever waits for the oldest. A settled batch leaves the
 * list at once (usually its head: replies come in order); one arriving on an empty list arms the timer
 * if it is not armed, and the timer re-arms itself for the new head. Unreferenced: it never keeps the
 * process alive (an open connection does).
 */
export class Deadlines {
  private head: ScriptBatch | undefined;
  private tail: ScriptBatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly ms: number;
  private readonly expired: (batch: ScriptBatch) => Error;

  constructor(ms: number, expired: (batch: ScriptBatch) => Error) {
    this.ms = ms;
    this.expired = expired;
  }

  add(batch: ScriptBatch): void {
    batch.deadline = performance.now() + this.ms;
    batch.prev = this.tail;
    batch.next = undefined;
    if (this.tail) this.tail.next = batch;
    else this.head = batch;
    this.tail = batch;
    if (!this.timer) this.arm(this.ms);
  }

  remove(batch: ScriptBatch): void {
    if (batch.prev) batch.prev.next = batch.next;
    else if (this.head === batch) this.head = batch.next;
    else return;
    if (batch.next) batch.next.prev = batch.prev;
    else this.tail = batch.prev;
    batch.prev = batch.next = undefined;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    const now = performance.now();
    while (this.head && this.head.deadline <= now) {
      const batch = this.head;
      batch.settle(this.expired(batch));
    }
    if (this.head) this.arm(this.head.deadline - now);
  };
}
