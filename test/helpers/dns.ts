// A tiny authoritative DNS server for tests: UDP and TCP on 127.0.0.1 (same random port), built on
// dns-packet. Tests exercise real sockets and real timeouts this way, without touching the system
// resolver or the network.
import dgram from 'node:dgram';
import net from 'node:net';
import * as packet from 'dns-packet';

/** Records of one name in a test zone. */
export interface DnsZoneEntry {
  /** Each a full TXT string; strings longer than 255 bytes are split into 255-byte chunks. */
  TXT?: string[];
  /** IPv4 addresses. */
  A?: string[];
  /** IPv6 addresses. */
  AAAA?: string[];
  /** Mail exchangers. */
  MX?: { exchange: string; priority: number }[];
  /** Reverse-mapping targets. */
  PTR?: string[];
}

/** A test zone: owner name (case-insensitive, no trailing dot) → records. */
export type DnsZone = Record<string, DnsZoneEntry>;

/** Options of {@link startDnsServer}. */
export interface DnsServerOptions {
  /** Never answer queries for these names (the client times out). */
  timeoutNames?: string[];
  /** Answer SERVFAIL for these names. */
  servfailNames?: string[];
  /** TTL of every record and of the SOA (default 300). */
  ttl?: number;
}

/** A running test DNS server. */
export interface DnsServer {
  /** The UDP/TCP port. */
  port: number;
  /** '127.0.0.1:PORT', ready for a resolver's server list. */
  address: string;
  /** Number of queries received so far (UDP and TCP, answered or not). */
  queries(): number;
  /** Stops the server. */
  close(): Promise<void>;
}

// A classic (non-EDNS) UDP answer is limited to 512 bytes (RFC 1035 §4.2.1); larger ones are sent
// truncated so that clients retry over TCP.
const UDP_LIMIT = 512;

function txtChunks(s: string): Buffer[] {
  const b = Buffer.from(s, 'utf8');
  const chunks: Buffer[] = [];
  for (let i = 0; i < b.length; i += 255) chunks.push(b.subarray(i, i + 255));
  return chunks.length ? chunks : [Buffer.alloc(0)];
}

/**
 * Starts a DNS server answering from `zone`: NXDOMAIN (with SOA) for unknown names, NODATA (with
 * SOA) for known names without the asked type, TTL 300 unless `options.ttl` says otherwise.
 * The sockets are unref'd and closed on process exit, so a forgotten server never hangs a test run.
 */
export async function startDnsServer(zone: DnsZone, options: DnsServerOptions = {}): Promise<DnsServer> {
  const ttl = options.ttl ?? 300;
  const names = new Map<string, DnsZoneEntry>();
  for (const [name, entry] of Object.entries(zone)) names.set(name.toLowerCase().replace(/\.$/, ''), entry);
  const timeouts = new Set((options.timeoutNames ?? []).map((n) => n.toLowerCase()));
  const servfails = new Set((options.servfailNames ?? []).map((n) => n.toLowerCase()));
  let count = 0;

  const soa = (): packet.Answer => ({
    type: 'SOA', name: 'test', ttl,
    data: { mname: 'ns.test', rname: 'hostmaster.test', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: ttl },
  });

  /** Builds the response, or null when the query must go unanswered. */
  function answer(query: packet.DecodedPacket): packet.Packet | null {
    count++;
    const q = query.questions?.[0];
    const base = { type: 'response' as const, id: query.id, questions: query.questions, flags: packet.AUTHORITATIVE_ANSWER | (query.flags ?? 0) & packet.RECURSION_DESIRED };
    if (!q) return { ...base, flags: base.flags | 1 /* FORMERR */ };
    const name = q.name.toLowerCase().replace(/\.$/, '');
    if (timeouts.has(name)) return null;
    if (servfails.has(name)) return { ...base, flags: base.flags | 2 /* SERVFAIL */ };
    const entry = names.get(name);
    if (!entry) return { ...base, flags: base.flags | 3 /* NXDOMAIN */, authorities: [soa()] };
    const answers: packet.Answer[] = [];
    switch (q.type) {
      case 'TXT':
        for (const s of entry.TXT ?? []) answers.push({ type: 'TXT', name: q.name, ttl, data: txtChunks(s) });
        break;
      case 'A':
      case 'AAAA':
      case 'PTR':
        for (const v of entry[q.type] ?? []) answers.push({ type: q.type, name: q.name, ttl, data: v });
        break;
      case 'MX':
        for (const mx of entry.MX ?? []) answers.push({ type: 'MX', name: q.name, ttl, data: { exchange: mx.exchange, preference: mx.priority } });
        break;
    }
    return answers.length ? { ...base, answers } : { ...base, authorities: [soa()] };
  }

  function onUdp(udp: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    let query: packet.DecodedPacket;
    try {
      query = packet.decode(msg);
    } catch {
      return;
    }
    const res = answer(query);
    if (!res) return;
    let out = packet.encode(res);
    if (out.length > UDP_LIMIT) {
      out = packet.encode({ type: 'response', id: res.id, questions: res.questions, flags: (res.flags ?? 0) | packet.TRUNCATED_RESPONSE });
    }
    udp.send(out, rinfo.port, rinfo.address);
  }

  function onTcp(socket: net.Socket): void {
    let buf = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        let query: packet.DecodedPacket;
        try {
          query = packet.decode(msg);
        } catch {
          socket.destroy();
          return;
        }
        const res = answer(query);
        if (res) socket.write(packet.streamEncode(res));
      }
    });
  }

  // UDP first on a random port, then TCP on the same number; another process may hold that TCP
  // port, so retry a few times with fresh sockets.
  let udp: dgram.Socket | undefined;
  let tcp: net.Server | undefined;
  let port = 0;
  for (let attempt = 0; attempt < 20 && !tcp; attempt++) {
    const u = dgram.createSocket('udp4');
    u.on('message', (msg, rinfo) => onUdp(u, msg, rinfo));
    await new Promise<void>((resolve, reject) => {
      u.once('error', reject);
      u.bind(0, '127.0.0.1', () => {
        u.off('error', reject);
        resolve();
      });
    });
    const p = u.address().port;
    const t = net.createServer(onTcp);
    const ok = await new Promise<boolean>((resolve) => {
      const onError = () => resolve(false);
      t.once('error', onError);
      t.listen(p, '127.0.0.1', () => {
        t.off('error', onError);
        resolve(true);
      });
    });
    if (ok) {
      udp = u;
      tcp = t;
      port = p;
    } else {
      await new Promise<void>((resolve) => u.close(() => resolve()));
    }
  }
  if (!udp || !tcp) throw new Error('startDnsServer: no free UDP+TCP port pair on 127.0.0.1');
  const udpSocket = udp;
  const tcpServer = tcp;
  udpSocket.unref();
  tcpServer.unref();

  let closed = false;
  const closeSync = () => {
    if (closed) return;
    closed = true;
    udpSocket.close();
    tcpServer.close();
  };
  process.once('exit', closeSync);

  return {
    port,
    address: `127.0.0.1:${port}`,
    queries: () => count,
    close: async () => {
      if (closed) return;
      closed = true;
      process.off('exit', closeSync);
      await Promise.all([
        new Promise<void>((resolve) => udpSocket.close(() => resolve())),
        new Promise<void>((resolve) => tcpServer.close(() => resolve())),
      ]);
    },
  };
}
