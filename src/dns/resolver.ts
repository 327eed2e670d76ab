// A small caching DNS stub resolver for the plugins that authenticate mail (SPF, DKIM, DMARC).
// node's dns.Resolver cannot report TTLs for TXT, MX or PTR, and these are mostly TXT, so we speak DNS ourselves (dns-packet over UDP, TCP when the
// UDP answer is truncated) and get the TTLs needed to cache correctly. Answers and errors mimic
// `dns.promises.resolve`, because that is the contract mailauth's SPF code is written against.
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import * as packet from 'dns-packet';

/**
 * A DNS lookup as mailauth's SPF, DKIM and DMARC code calls it: `name` and a record type (`TXT`,
 * `A`, `AAAA`, `MX`, `PTR`…), answering what `dns.promises.resolve(name, rrtype)` would (TXT as
 * arrays of strings) and rejecting with its error codes (`ENOTFOUND`, `ENODATA`, `ETIMEOUT`…).
 */
export type DnsResolver = (name: string, rrtype: string) => Promise<unknown>;

/** Cache settings of {@link createResolver}. */
export interface ResolverCacheOptions {
  /** Most entries kept; the least recently used is evicted first (default 10000). */
  maxEntries?: number;
  /** Upper bound on any TTL, in seconds (default 3600). */
  maxTtlSeconds?: number;
  /** Lower bound on any TTL, in seconds (default 0). */
  minTtlSeconds?: number;
}

/** Options of {@link createResolver}. */
export interface ResolverOptions {
  /** Name servers: 'ip', 'ip:port' or '[v6]:port'. Default: the system's (`dns.getServers()`). */
  servers?: string[];
  /** Timeout per query attempt, in milliseconds (default 2000). */
  timeoutMs?: number;
  /** Rounds over the server list before giving up with ETIMEOUT (default 2). */
  tries?: number;
  /** Cache settings, or false for no cache. */
  cache?: ResolverCacheOptions | false;
  /** Clock in milliseconds, for tests of TTL expiry (default `Date.now`). */
  now?: () => number;
}

/** An {@link DnsResolver} with a cache that can be inspected and emptied. */
export type CachingResolver = DnsResolver & {
  /** Number of entries in the cache (expired ones included until they are touched or evicted). */
  cacheSize(): number;
  /** Empties the cache. */
  clear(): void;
};

interface Server {
  host: string;
  port: number;
  family: 4 | 6;
}

type Answer = { ok: true; value: unknown[] } | { ok: false; code: string };

interface CacheEntry {
  expires: number;
  answer: Answer;
}

const SUPPORTED = new Set(['A', 'AAAA', 'TXT', 'MX', 'PTR', 'CNAME', 'NS']);

// Used for negative answers that carry no SOA: short, so a fixed zone is noticed soon.
const DEFAULT_NEGATIVE_TTL = 30;

// node's error-code names for response codes (see dns.NOTFOUND, dns.SERVFAIL, …).
const RCODE_ERRORS: Record<string, string> = {
  NXDOMAIN: 'ENOTFOUND',
  SERVFAIL: 'ESERVFAIL',
  REFUSED: 'EREFUSED',
  FORMERR: 'EFORMERR',
  NOTIMP: 'ENOTIMP',
};

const SYSCALL: Record<string, string> = {
  A: 'queryA', AAAA: 'queryAaaa', TXT: 'queryTxt', MX: 'queryMx', PTR: 'queryPtr', CNAME: 'queryCname', NS: 'queryNs',
};

function dnsError(code: string, name: string, rrtype: string): Error & { code: string; hostname: string; syscall: string } {
  const syscall = SYSCALL[rrtype] ?? 'query';
  return Object.assign(new Error(`${syscall} ${code} ${name}`), { code, hostname: name, syscall });
}

/** Parses 'ip', 'ip:port', '[v6]:port' or a bare IPv6 address. */
function parseServer(spec: string): Server {
  let host = spec.trim();
  let port = 53;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(host);
  if (bracket) {
    host = bracket[1];
    if (bracket[2]) port = Number(bracket[2]);
  } else if (host.split(':').length === 2) {
    const [h, p] = host.split(':');
    host = h;
    port = Number(p);
  }
  const family = net.isIP(host);
  if (!family || !Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`invalid DNS server: ${spec}`);
  return { host, port, family: family as 4 | 6 };
}

/** Validates like c-ares does: no empty labels, labels ≤ 63 octets, name ≤ 253 octets. */
function validName(name: string): boolean {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (!n || Buffer.byteLength(n) > 253) return false;
  return n.split('.').every((l) => l.length > 0 && Buffer.byteLength(l) <= 63);
}

function stripDot(name: string): string {
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/** Converts one answer record to the shape `dns.promises.resolve` returns. */
function convert(rr: packet.Answer): unknown {
  const data = (rr as { data: unknown }).data;
  switch (rr.type) {
    case 'TXT': {
      const chunks = Array.isArray(data) ? data : [data];
      return chunks.map((c) => (Buffer.isBuffer(c) ? c.toString('utf8') : String(c)));
    }
    case 'MX': {
      const mx = data as { exchange: string; preference?: number };
      return { exchange: stripDot(mx.exchange), priority: mx.preference ?? 0 };
    }
    case 'PTR':
    case 'CNAME':
    case 'NS':
      return stripDot(String(data));
    default:
      return String(data);
  }
}

/** Sends one query over UDP; resolves with the response, null on timeout. */
function queryUdp(server: Server, query: Buffer, id: number, timeoutMs: number): Promise<packet.DecodedPacket | null> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(server.family === 6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = (res: packet.DecodedPacket | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      resolve(res);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on('error', () => finish(null));
    socket.on('message', (msg, rinfo) => {
      // Only the server we asked, with our id: a spoofed or stale datagram is ignored.
      if (rinfo.port !== server.port) return;
      try {
        const res = packet.decode(msg);
        if (res.id === id && res.type === 'response') finish(res);
      } catch {
        // malformed datagram: keep waiting for a good one
      }
    });
    socket.send(query, server.port, server.host, (err) => {
      if (err) finish(null);
    });
  });
}

/** Sends one query over TCP (RFC 7766); resolves with the response, null on timeout or error. */
function queryTcp(server: Server, query: Buffer, id: number, timeoutMs: number): Promise<packet.DecodedPacket | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: server.host, port: server.port });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (res: packet.DecodedPacket | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    socket.on('error', () => finish(null));
    socket.on('close', () => finish(null));
    socket.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      socket.write(Buffer.concat([len, query]));
    });
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) return;
      try {
        const res = packet.decode(buf.subarray(2, 2 + len));
        finish(res.id === id ? res : null);
      } catch {
        finish(null);
      }
    });
  });
}

/**
 * Creates a caching DNS resolver with the answers and error codes of `dns.promises.resolve`
 * (TXT → string[][], A/AAAA → string[], MX → {exchange, priority}[], PTR/CNAME/NS → string[];
 * errors carry `.code` ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL, EREFUSED, EBADNAME …).
 * Supports A, AAAA, TXT, MX, PTR, CNAME and NS. Positive answers are cached for their smallest
 * TTL, negative ones (ENOTFOUND/ENODATA) for the SOA minimum (or 30 s without SOA); timeouts and
 * server failures are never cached. Concurrent identical questions share one query.
 */
export function createResolver(options: ResolverOptions = {}): CachingResolver {
  const servers = (options.servers && options.servers.length ? options.servers : dns.getServers()).map(parseServer);
  const timeoutMs = options.timeoutMs ?? 2000;
  const tries = Math.max(1, options.tries ?? 2);
  const now = options.now ?? Date.now;
  const cacheOpts = options.cache === false ? null : (options.cache ?? {});
  const maxEntries = cacheOpts ? Math.max(0, cacheOpts.maxEntries ?? 10000) : 0;
  const maxTtl = cacheOpts?.maxTtlSeconds ?? 3600;
  const minTtl = cacheOpts?.minTtlSeconds ?? 0;
  // Map iteration order is insertion order: re-inserting on every hit makes the first key the
  // least recently used one.
  const cache = new Map<string, CacheEntry>();
  const inflight = new Map<string, Promise<CacheEntry>>();

  const ttlMs = (ttl: number) => Math.min(Math.max(ttl, minTtl), maxTtl) * 1000;

  async function lookup(name: string, rrtype: string): Promise<CacheEntry> {
    const id = randomInt(0, 65536);
    const query = packet.encode({
      type: 'query',
      id,
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: rrtype as packet.RecordType, name, class: 'IN' }],
    });
    for (let round = 0; round < tries; round++) {
      for (const server of servers) {
        let res = await queryUdp(server, query, id, timeoutMs);
        if (res && res.flag_tc) {
          // Truncated: the full answer is only available over TCP.
          res = await queryTcp(server, query, id, timeoutMs);
        }
        if (!res) continue;
        const rcode = (res as { rcode?: string }).rcode ?? 'NOERROR';
        if (rcode === 'SERVFAIL' || rcode === 'REFUSED' || rcode === 'NOTIMP' || rcode === 'FORMERR') {
          // Another server may do better; if none does, report this one's error (not cached).
          if (server === servers[servers.length - 1] && round === tries - 1) {
            return { expires: 0, answer: { ok: false, code: RCODE_ERRORS[rcode] } };
          }
          continue;
        }
        const negativeTtl = () => {
          const soa = (res.authorities ?? []).find((a) => a.type === 'SOA') as { ttl?: number; data?: { minimum?: number } } | undefined;
          // RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM.
          return soa ? Math.min(soa.ttl ?? DEFAULT_NEGATIVE_TTL, soa.data?.minimum ?? DEFAULT_NEGATIVE_TTL) : DEFAULT_NEGATIVE_TTL;
        };
        if (rcode === 'NXDOMAIN') {
          return { expires: now() + ttlMs(negativeTtl()), answer: { ok: false, code: 'ENOTFOUND' } };
        }
        if (rcode !== 'NOERROR') return { expires: 0, answer: { ok: false, code: RCODE_ERRORS[rcode] ?? 'EBADRESP' } };
        // Follow the CNAME chain inside the answer section, as c-ares does.
        const names = new Set([stripDot(name).toLowerCase()]);
        const answers = res.answers ?? [];
        let ttl = Infinity;
        for (let changed = true; changed; ) {
          changed = false;
          for (const rr of answers) {
            if (rr.type === 'CNAME' && rrtype !== 'CNAME' && names.has(rr.name.toLowerCase())) {
              const target = stripDot(String(rr.data)).toLowerCase();
              if (!names.has(target)) {
                names.add(target);
                ttl = Math.min(ttl, (rr as { ttl?: number }).ttl ?? 0);
                changed = true;
              }
            }
          }
        }
        const matching = answers.filter((rr) => rr.type === rrtype && names.has(rr.name.toLowerCase()));
        if (!matching.length) {
          return { expires: now() + ttlMs(negativeTtl()), answer: { ok: false, code: 'ENODATA' } };
        }
        for (const rr of matching) ttl = Math.min(ttl, (rr as { ttl?: number }).ttl ?? 0);
        return { expires: now() + ttlMs(ttl), answer: { ok: true, value: matching.map(convert) } };
      }
    }
    return { expires: 0, answer: { ok: false, code: 'ETIMEOUT' } };
  }

  function deliver(entry: CacheEntry, name: string, rrtype: string): unknown[] {
    if (!entry.answer.ok) throw dnsError(entry.answer.code, name, rrtype);
    // Fresh copies: callers (mailauth sorts MX lists) must not alter what is cached.
    return entry.answer.value.map((v) => (Array.isArray(v) ? v.slice() : v && typeof v === 'object' ? { ...v } : v));
  }

  const resolver = async (name: string, rrtype: string): Promise<unknown> => {
    const type = String(rrtype).toUpperCase();
    if (!SUPPORTED.has(type)) throw Object.assign(new TypeError(`unsupported rrtype: ${rrtype}`), { code: 'ERR_INVALID_ARG_VALUE' });
    if (typeof name !== 'string' || !validName(name)) throw dnsError('EBADNAME', String(name), type);
    const key = `${type} ${stripDot(name).toLowerCase()}`;

    const hit = cache.get(key);
    if (hit) {
      cache.delete(key);
      if (hit.expires > now()) {
        cache.set(key, hit);
        return deliver(hit, name, type);
      }
    }

    let pending = inflight.get(key);
    if (!pending) {
      pending = lookup(name, type).finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    const entry = await pending;
    if (maxEntries > 0 && entry.expires > now()) {
      cache.delete(key);
      cache.set(key, entry);
      while (cache.size > maxEntries) {
        const oldest = cache.keys().next().value as string;
        cache.delete(oldest);
      }
    }
    return deliver(entry, name, type);
  };

  return Object.assign(resolver, {
    cacheSize: () => cache.size,
    clear: () => cache.clear(),
  });
}
