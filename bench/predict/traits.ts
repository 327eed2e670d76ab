/**
 * The traits every simulated message carries besides its time and recipients — what the new signals of
 * issue 23 read: the client network the login connects from (a /24 or a /64), the mail client (its
 * `User-Agent`/`X-Mailer` header, the SASL method and the TLS parameters it brings), the `From` display
 * name and a `Reply-To` that differs from `From`. When a message is sent is the event's time; each
 * sender's hours and weekdays are those of {@link SenderProfile}.
 *
 * Traits are drawn after the traffic, from streams of their own: stream 6 (a sender's habits), 7 (its
 * messages, in time order) and 12 (an attacker's, per compromise). The legacy draws (streams 1 to 5) are
 * untouched, so the times, counts, kinds and recipients of the messages are exactly those of the model
 * without traits. bench/predict/README.md ("Traits") gives every distribution and why.
 * @module
 */
import { Rng, subSeed } from './rng.ts';
import type { Compromise, SenderProfile, Traffic } from './traffic.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

// ---------------------------------------------------------------------------------------------
// Networks.

/** Where a network is: the company's own (offices, VPN, webmail, servers), a home, a mobile carrier, a trip (hotel, customer), an attacker's. */
export type NetworkKind = 'office' | 'vpn' | 'webmail' | 'server' | 'home' | 'mobile' | 'trip' | 'attacker';

/** A client network: an IPv4 /24 or an IPv6 /64. */
export interface Network {
  kind: NetworkKind;
  family: 4 | 6;
  /** `198.18.3` (the /24 without its last byte) or `2001:db8:1a2b:3c4d` (the /64's first four groups). */
  prefix: string;
}

/**
 * Individual IPv4 networks (homes, carriers, trips, attackers) are /24s of 100.64.0.0/10 (RFC 6598:
 * 16,384 /24s); legitimate ones take slots from 0 up, attackers' from 8,192 up, and the slot is
 * scrambled (an odd multiplier mod 2^14, a bijection) so that neither kind sits in a recognisable range.
 * IPv6 networks are /64s of 2001:db8::/32 (RFC 3849), scrambled the same way mod 2^32. The company's
 * own networks are /24s of 198.18.0.0/15 (RFC 2544).
 */
const V4_SLOTS = 1 << 14;
const V4_ATTACKER = 1 << 13;
const V6_ATTACKER = 2 ** 31;

/** The networks of one traffic, in allocation order: the legitimate ones first, then the attackers'. */
export class NetworkTable {
  readonly list: Network[] = [];
  private v4 = 0;
  private v4a = V4_ATTACKER;
  private v6 = 0;
  private v6a = V6_ATTACKER;

  /** A company network, 198.18.x.0/24. */
  company(kind: NetworkKind, third: number): number {
    this.list.push({ kind, family: 4, prefix: `198.18.${third}` });
    return this.list.length - 1;
  }

  /** A new individual network (a home, a carrier's, a trip's, an attacker's). */
  add(kind: NetworkKind, family: 4 | 6): number {
    const attacker = kind === 'attacker';
    let prefix: string;
    if (family === 4) {
      const slot = attacker ? this.v4a++ : this.v4++;
      if (attacker ? slot >= V4_SLOTS : slot >= V4_ATTACKER) throw new Error(`the simulation ran out of IPv4 /24s for ${attacker ? 'attackers' : 'legitimate clients'} (fewer senders?)`);
      const x = Math.imul(slot, 5853) & (V4_SLOTS - 1);
      prefix = `100.${64 + (x >>> 8)}.${x & 255}`;
    } else {
      const slot = attacker ? this.v6a++ : this.v6++;
      const x = Math.imul(slot, 0x9e3779b1) >>> 0;
      prefix = `2001:db8:${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}`;
    }
    this.list.push({ kind, family, prefix });
    return this.list.length - 1;
  }

  /** The client address of a message: its network and a host number (0–65535). */
  address(net: number, host: number): string {
    const n = this.list[net];
    if (n.family === 4) return `${n.prefix}.${1 + (host % 254)}`;
    // An interface identifier of four 16-bit groups derived from the host number.
    return `${n.prefix}:${(0x200 + (host >>> 4)).toString(16)}:${(Math.imul(host, 0x9e3779b1) >>> 16).toString(16)}:${(host & 0xff).toString(16)}:${(host ^ 0x5a5a).toString(16)}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Mail clients.

/** A mail client: the header it writes, the SASL method it uses and the TLS it negotiates (Postfix's `{auth_type}`, `{tls_version}`, `{cipher}`, `{cipher_bits}`). */
export interface MailClient {
  id: string;
  header?: 'User-Agent' | 'X-Mailer';
  value?: string;
  sasl: 'PLAIN' | 'LOGIN';
  tls: string;
  cipher: string;
  bits: number;
  /** The client after an update (another version string), as an index into {@link CLIENTS}. */
  next?: number;
}

const TLS13 = { tls: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', bits: 256 };
const TLS13_128 = { tls: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256', bits: 128 };
const TLS12 = { tls: 'TLSv1.2', cipher: 'ECDHE-RSA-AES256-GCM-SHA384', bits: 256 };

/** Every mail client of the simulation; the index is what a message's `client` column holds. */
export const CLIENTS: readonly MailClient[] = [
  /* 0 */ { id: 'outlook', header: 'X-Mailer', value: 'Microsoft Outlook 16.0', sasl: 'LOGIN', ...TLS12 },
  /* 1 */ { id: 'thunderbird', header: 'User-Agent', value: 'Mozilla Thunderbird', sasl: 'PLAIN', ...TLS13 },
  /* 2 */ { id: 'apple-mail', header: 'X-Mailer', value: 'Apple Mail (2.3776.700.51)', sasl: 'PLAIN', ...TLS13_128, next: 3 },
  /* 3 */ { id: 'apple-mail', header: 'X-Mailer', value: 'Apple Mail (2.3826.300.87.4.3)', sasl: 'PLAIN', ...TLS13_128 },
  /* 4 */ { id: 'roundcube', header: 'User-Agent', value: 'Roundcube Webmail/1.6.9', sasl: 'PLAIN', ...TLS13 },
  /* 5 */ { id: 'evolution', header: 'X-Mailer', value: 'Evolution 3.52.3-0ubuntu1', sasl: 'PLAIN', ...TLS13, next: 6 },
  /* 6 */ { id: 'evolution', header: 'X-Mailer', value: 'Evolution 3.52.3-0ubuntu1.1', sasl: 'PLAIN', ...TLS13 },
  /* 7 */ { id: 'mutt', header: 'User-Agent', value: 'Mutt/2.2.12 (2023-09-09)', sasl: 'PLAIN', ...TLS13 },
  /* 8 */ { id: 'em-client', header: 'X-Mailer', value: 'eM_Client/10.0.3530.0', sasl: 'LOGIN', ...TLS12, next: 9 },
  /* 9 */ { id: 'em-client', header: 'X-Mailer', value: 'eM_Client/10.1.4588.0', sasl: 'LOGIN', ...TLS12 },
  /* 10 */ { id: 'iphone', header: 'X-Mailer', value: 'iPhone Mail (21H16)', sasl: 'PLAIN', ...TLS13_128, next: 11 },
  /* 11 */ { id: 'iphone', header: 'X-Mailer', value: 'iPhone Mail (22B91)', sasl: 'PLAIN', ...TLS13_128 },
  /* 12 */ { id: 'android', header: 'User-Agent', value: 'K-9 Mail for Android', sasl: 'PLAIN', ...TLS13, next: 13 },
  /* 13 */ { id: 'android', header: 'User-Agent', value: 'Thunderbird for Android', sasl: 'PLAIN', ...TLS13 },
  /* 14 */ { id: 'phpmailer', header: 'X-Mailer', value: 'PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)', sasl: 'LOGIN', ...TLS12 },
  /* 15 */ { id: 'script', sasl: 'PLAIN', ...TLS13 },
  /* 16 */ { id: 'helpdesk', header: 'User-Agent', value: 'Zammad Mail Service', sasl: 'LOGIN', ...TLS12 },
  /* 17 */ { id: 'thunderbird-legacy', header: 'User-Agent', value: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:102.0) Gecko/20100101 Thunderbird/102.15.1', sasl: 'PLAIN', ...TLS13 },
];
const C = { outlook: 0, thunderbird: 1, apple: 2, roundcube: 4, evolution: 5, mutt: 7, emclient: 8, iphone: 10, android: 12, phpmailer: 14, script: 15, helpdesk: 16, tbLegacy: 17 } as const;

/** Desktop clients of ordinary senders and their shares. */
const DESKTOP = [C.outlook, C.roundcube, C.apple, C.thunderbird, C.evolution, C.mutt, C.emclient];
const DESKTOP_WEIGHTS = [0.5, 0.18, 0.12, 0.12, 0.03, 0.02, 0.03];
/** What an attacker's own tool looks like: no header (a script), PHPMailer, a generic Outlook, an old Thunderbird, or the victim's own client copied from a stolen message. */
const ATTACKER_TOOLS: readonly (number | 'victim')[] = [C.script, C.phpmailer, C.outlook, C.tbLegacy, 'victim'];
const ATTACKER_TOOL_WEIGHTS = [0.3, 0.15, 0.25, 0.1, 0.2];

// ---------------------------------------------------------------------------------------------
// Names and addresses.

const FIRST = ['Anna', 'Ben', 'Clara', 'David', 'Elena', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas', 'Karin', 'Luca', 'Maya', 'Nils', 'Olga', 'Paul', 'Rosa', 'Sami', 'Tara', 'Umar', 'Vera', 'Wei', 'Yara', 'Zoe', 'Marc', 'Julie', 'Priya', 'Kenji', 'Lea', 'Tomas'];
const LAST = ['Meyer', 'Dubois', 'Rossi', 'Novak', 'Smith', 'Garcia', 'Kowalski', 'Berg', 'Costa', 'Nguyen', 'Haddad', 'Jensen', 'Moreau', 'Sato', 'Weber', 'Silva', 'Olsen', 'Fischer', 'Kumar', 'Lopez', 'Martin', 'Brown', 'Keller', 'Varga', 'Ito', 'Laurent', 'Horvat', 'Bianchi', 'Petit', 'Young'];
const ROLE_NAMES = ['Support', 'Orders', 'Billing', 'Notifications', 'Service Desk', 'Careers', 'Press Office', 'Accounts'];
const CHANGED_NAMES = ['IT Service Desk', 'Payroll', 'Document Share', 'Microsoft 365', 'HR Department'];

/** A message's display name: the sender's usual one, the phone's shorter one, none (the bare address), or one the attacker changed. */
export const NAME = { usual: 0, short: 1, bare: 2, changed: 3 } as const;
/** A message's `Reply-To`: none, the sender's shared mailbox, the newsletter's list address, an attacker's outside address. */
export const REPLY_TO = { none: 0, shared: 1, list: 2, attacker: 3 } as const;

/** A sender's habits of client, network and identity, drawn once (stream 6). */
export interface SenderTraits {
  /** Display name (`''`: the client sends the bare address). */
  name: string;
  /** The phone shows the first name only. */
  shortName: boolean;
  /** Office network, or −1 (works remotely). */
  office: number;
  /** Home network, or −1. */
  home: number;
  /** A fixed host number at home (a home router's one address). */
  homeHost: number;
  /** Chance that a working day is worked from home (1 for remote workers). */
  remoteDay: number;
  /** Connects through the company VPN when away from the office. */
  vpn: boolean;
  /** Desktop client (an index into {@link CLIENTS}); `roundcube`: everything goes through the webmail. */
  desktop: number;
  /** Phone client, or −1 (no phone set up). */
  phone: number;
  /** Carrier of the phone (an index into the carriers). */
  carrier: number;
  /** Share of the phone among messages sent from the office in working hours (three times as much elsewhere, at most 80 %). */
  phoneShare: number;
  /** Chance that a working day is a trip (a hotel's or a customer's network, new each trip). */
  tripDay: number;
  /** Sets a Reply-To (a shared mailbox) on desktop mail. */
  replyTo: boolean;
  /** An announcer sets a list Reply-To on newsletters. */
  listReplyTo: boolean;
  /** When the desktop and the phone clients are updated (another version string), ms; Infinity: not in the simulation. */
  desktopUpdate: number;
  phoneUpdate: number;
  /** Role accounts: a client certificate (`{cert_subject}`). */
  cert: string;
  /** Role accounts: the server's network and host. */
  server: number;
  serverHost: number;
}

/** A mobile carrier: a pool of IPv4 /24s behind carrier-grade NAT (one drawn per session), or IPv6 with a new /64 every day the phone is used. */
interface Carrier {
  family: 4 | 6;
  pool: number[];
}

/** The company's sites, one per timezone of {@link SenderProfile.tz}, each with an office /24. */
const SITE_TZ = [0, 1, 2, -5, -8, 5.5, 8];

/** Per event: network, host, client, display name and Reply-To ({@link NAME}, {@link REPLY_TO}). */
export interface TraitColumns {
  net: Int32Array;
  host: Uint16Array;
  client: Uint8Array;
  name: Uint8Array;
  replyTo: Uint8Array;
}

/** The traits of a whole traffic. */
export interface Traits {
  networks: NetworkTable;
  senders: SenderTraits[];
  /** The company's shared networks. */
  vpn: number;
  webmail: number;
  /** Per compromise id: how its attacker connects. */
  attackers: AttackerTraits[];
}

/** An attacker's traits, per compromise (stream 12). */
export interface AttackerTraits {
  /** From the victim's own usual network with the victim's client (malware on the victim's PC, or the attacker in the webmail). */
  victimNetwork: boolean;
  /** The networks the attacker rotates over (one for most). */
  nets: number[];
  client: number;
  name: number;
  replyTo: boolean;
}

// ---------------------------------------------------------------------------------------------
// Drawing them.

/** What the legitimate pass needs of an event list (sorted by time). */
interface EventsView {
  n: number;
  t: Float64Array;
  sender: Int32Array;
  kind: Uint8Array;
  compromise: Int32Array;
}

function makeSenderTraits(seed: number, p: SenderProfile, nets: NetworkTable, offices: Map<number, number>, server: number, start: number, span: number): SenderTraits {
  const rng = new Rng(subSeed(seed, 6, p.index));
  const first = FIRST[rng.int(0, FIRST.length - 1)];
  const last = LAST[rng.int(0, LAST.length - 1)];
  if (p.cls === 'role') {
    // Role accounts: an application on a server in the company's data centre — one network, one client, always.
    const app = rng.weighted([0.5, 0.3, 0.2]);
    return {
      name: ROLE_NAMES[rng.int(0, ROLE_NAMES.length - 1)],
      shortName: false,
      office: -1,
      home: -1,
      homeHost: 0,
      remoteDay: 0,
      vpn: false,
      desktop: [C.phpmailer, C.script, C.helpdesk][app],
      phone: -1,
      carrier: 0,
      phoneShare: 0,
      tripDay: 0,
      replyTo: rng.chance(0.4),
      listReplyTo: false,
      desktopUpdate: Infinity,
      phoneUpdate: Infinity,
      cert: rng.chance(0.5) ? `CN=app${p.index}.example.com` : '',
      server,
      serverHost: 10 + (p.index % 200),
    };
  }
  const heavy = p.cls === 'heavy';
  const remote = rng.chance(0.15);
  const hasHome = remote || rng.chance(heavy ? 0.7 : 0.6);
  const home = hasHome ? nets.add('home', rng.chance(0.35) ? 6 : 4) : -1;
  const hybrid = rng.next();
  const remoteDay = remote ? 1 : !hasHome ? 0 : hybrid < 0.4 ? 0 : hybrid < 0.85 ? rng.uniform(0.1, 0.4) : rng.uniform(0.4, 0.8);
  const desktop = DESKTOP[rng.weighted(DESKTOP_WEIGHTS)];
  const hasPhone = rng.chance(heavy ? 0.5 : 0.25);
  const phone = hasPhone ? (rng.chance(0.65) ? C.iphone : C.android) : -1;
  const carrier = rng.weighted([0.35, 0.25, 0.25, 0.15]);
  const roamer = rng.chance(heavy ? 0.3 : 0.06);
  return {
    name: rng.chance(0.92) ? `${first} ${last}` : '',
    shortName: rng.chance(0.4),
    office: remote ? -1 : offices.get(p.tz)!,
    home,
    homeHost: rng.int(0, 65535),
    remoteDay,
    vpn: rng.chance(0.25),
    desktop,
    phone,
    carrier,
    phoneShare: hasPhone ? rng.uniform(0.03, 0.2) : 0,
    tripDay: roamer ? (heavy ? rng.uniform(0.1, 0.4) : rng.uniform(0.05, 0.2)) : 0,
    replyTo: rng.chance(0.015),
    listReplyTo: rng.chance(0.7),
    desktopUpdate: CLIENTS[desktop].next !== undefined && rng.chance(0.1) ? start + rng.next() * span : Infinity,
    phoneUpdate: hasPhone && rng.chance(0.3) ? start + rng.next() * span : Infinity,
    cert: '',
    server: -1,
    serverHost: 0,
  };
}

/** A sender's state in the legitimate pass: its day (home, trip) and its device session. */
interface DeviceState {
  rng: Rng;
  day: number;
  atHome: boolean;
  trip: boolean;
  tripNet: number;
  /** Today's /64 of an IPv6 phone. */
  phoneNet: number;
  last: number;
  net: number;
  host: number;
  client: number;
  name: number;
  onPhone: boolean;
}

/**
 * Draws every sender's habits (stream 6) and the traits of every legitimate message of `ev` (stream 7,
 * per sender, in time order). The compromises' messages are left to {@link attackTraits}.
 */
export function legitimateTraits(seed: number, senders: SenderProfile[], ev: EventsView, start: number, end: number): { traits: Traits; columns: TraitColumns } {
  const nets = new NetworkTable();
  const offices = new Map<number, number>();
  SITE_TZ.forEach((tz, i) => offices.set(tz, nets.company('office', 10 + i)));
  const vpn = nets.company('vpn', 100);
  const webmail = nets.company('webmail', 101);
  const server = nets.company('server', 102);
  // Carriers: two IPv4 ones behind CGNAT (a pool of /24s, one drawn per session), two IPv6 ones (a new /64 per session).
  const carriers: Carrier[] = [
    { family: 4, pool: [] },
    { family: 4, pool: [] },
    { family: 6, pool: [] },
    { family: 6, pool: [] },
  ];
  for (const [c, size] of [[0, 6], [1, 4]] as const) for (let k = 0; k < size; k++) carriers[c].pool.push(nets.add('mobile', 4));
  const traits = senders.map((p) => makeSenderTraits(seed, p, nets, offices, server, start, end - start));
  const columns: TraitColumns = { net: new Int32Array(ev.n), host: new Uint16Array(ev.n), client: new Uint8Array(ev.n), name: new Uint8Array(ev.n), replyTo: new Uint8Array(ev.n) };
  const state: (DeviceState | undefined)[] = [];
  for (let i = 0; i < ev.n; i++) {
    if (ev.compromise[i] >= 0) continue; // the attackers' messages: attackTraits
    const s = ev.sender[i];
    const p = senders[s];
    const tr = traits[s];
    const t = ev.t[i];
    const st = (state[s] ??= { rng: new Rng(subSeed(seed, 7, s)), day: NaN, atHome: false, trip: false, tripNet: -1, phoneNet: -1, last: -Infinity, net: -1, host: 0, client: 0, name: 0, onPhone: false });
    const rng = st.rng;
    if (p.cls === 'role') {
      columns.net[i] = tr.server;
      columns.host[i] = tr.serverHost;
      columns.client[i] = tr.desktop;
      columns.replyTo[i] = tr.replyTo ? REPLY_TO.shared : REPLY_TO.none;
      continue;
    }
    const local = t + p.tz * HOUR;
    const day = Math.floor((local - start) / DAY);
    const hour = (local - start - day * DAY) / HOUR;
    const weekend = ((day % 7) + 7) % 7 >= 5;
    const working = !weekend && hour >= p.workStart && hour < p.workEnd;
    if (day !== st.day) {
      // A new local day: where the sender works today.
      st.day = day;
      st.trip = !weekend && tr.tripDay > 0 && rng.chance(tr.tripDay);
      st.atHome = !weekend && !st.trip && tr.remoteDay > 0 && rng.chance(tr.remoteDay);
      st.tripNet = -1;
      st.phoneNet = -1;
    }
    if (t - st.last > 15 * MINUTE) {
      // A new device session: phone or computer, and where from.
      const atOffice = working && !st.atHome && !st.trip && tr.office >= 0;
      const phoneShare = atOffice ? tr.phoneShare : Math.min(0.8, 3 * tr.phoneShare);
      if (tr.phone >= 0 && rng.chance(phoneShare)) {
        const carrier = carriers[tr.carrier];
        if (carrier.family === 4) st.net = carrier.pool[rng.int(0, carrier.pool.length - 1)];
        else st.net = st.phoneNet >= 0 ? st.phoneNet : (st.phoneNet = nets.add('mobile', 6));
        st.host = rng.int(0, 65535);
        st.client = tr.phone;
        st.name = tr.shortName ? NAME.short : NAME.usual;
        st.onPhone = true;
        if (t >= tr.phoneUpdate && CLIENTS[st.client].next !== undefined) st.client = CLIENTS[st.client].next!;
      } else {
        // At the office in working hours (or when working late); otherwise at home, or on a trip.
        let where: number;
        let host: number;
        if (st.trip) {
          if (st.tripNet < 0) st.tripNet = nets.add('trip', rng.chance(0.2) ? 6 : 4);
          where = st.tripNet;
          host = rng.int(0, 65535);
        } else if (atOffice || tr.home < 0) {
          where = tr.office >= 0 ? tr.office : tr.home;
          host = rng.int(1, 4); // the office's NAT addresses
        } else {
          where = tr.home;
          host = nets.list[tr.home].family === 6 ? (tr.homeHost + day) & 0xffff : tr.homeHost; // IPv6 privacy addresses change daily
        }
        st.client = tr.desktop;
        if (tr.desktop === C.roundcube || (where !== tr.office && rng.chance(0.03))) {
          // Through the webmail: the webmail server is the client Postfix sees.
          st.net = webmail;
          st.host = 10;
          st.client = C.roundcube;
        } else if (where !== tr.office && tr.vpn) {
          st.net = vpn;
          st.host = rng.int(1, 8);
        } else {
          st.net = where;
          st.host = host;
        }
        if (st.client === tr.desktop && t >= tr.desktopUpdate && CLIENTS[st.client].next !== undefined) st.client = CLIENTS[st.client].next!;
        st.name = NAME.usual;
        st.onPhone = false;
      }
    }
    st.last = t;
    columns.net[i] = st.net;
    columns.host[i] = st.host;
    columns.client[i] = st.client;
    columns.name[i] = st.name;
    columns.replyTo[i] = ev.kind[i] === 3 && tr.listReplyTo ? REPLY_TO.list : tr.replyTo && !st.onPhone ? REPLY_TO.shared : REPLY_TO.none;
  }
  return { traits: { networks: nets, senders: traits, vpn, webmail, attackers: [] }, columns };
}

/** What a victim uses most before an attack: its network (and host there) and its mail client, from its legitimate messages. */
export interface UsualTraits {
  net: number;
  host: number;
  client: number;
}

/** The most frequent network, host and client among `indices` (a sender's legitimate messages before an attack). */
export function usualTraits(columns: TraitColumns, indices: readonly number[], fallback: SenderTraits): UsualTraits {
  if (indices.length === 0) return { net: fallback.server >= 0 ? fallback.server : fallback.office >= 0 ? fallback.office : fallback.home, host: 1, client: fallback.desktop };
  const most = (key: (i: number) => number) => {
    const count = new Map<number, number>();
    for (const i of indices) count.set(key(i), (count.get(key(i)) ?? 0) + 1);
    return [...count.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
  };
  const net = most((i) => columns.net[i]);
  const host = most((i) => (columns.net[i] === net ? columns.host[i] : -1 - columns.host[i]));
  return { net, host: host < 0 ? 1 : host, client: most((i) => columns.client[i]) };
}

/**
 * Draws an attacker's traits for one compromise (stream 12, by compromise id) and applies them to its
 * messages (`indices`, in time order). `victimNetworkShare` of the attacks come from the victim's usual
 * network with its usual client and name (`usual`: malware on the victim's PC, or the attacker in the webmail);
 * the others from networks the login never used — one for 65 % of the attacks, a rotation over 2–8
 * (residential proxies) for the others, a quarter of them IPv6 — with an attacker's client and,
 * `replyToShare` of the time, a Reply-To to an outside address on every message.
 */
export function attackTraits(seed: number, traits: Traits, c: Compromise, indices: number[], columns: TraitColumns, usual: UsualTraits, victimNetworkShare: number, replyToShare: number): AttackerTraits {
  const rng = new Rng(subSeed(seed, 12, c.id));
  const victim = traits.senders[c.sender];
  const viaVictim = rng.chance(victimNetworkShare);
  let a: AttackerTraits;
  if (viaVictim) {
    a = { victimNetwork: true, nets: [usual.net], client: usual.client, name: NAME.usual, replyTo: rng.chance(replyToShare) };
    for (const i of indices) {
      columns.net[i] = usual.net;
      columns.host[i] = usual.host;
    }
  } else {
    const count = rng.chance(0.65) ? 1 : rng.int(2, 8);
    const nets: number[] = [];
    for (let k = 0; k < count; k++) nets.push(traits.networks.add('attacker', rng.chance(0.25) ? 6 : 4));
    const tool = ATTACKER_TOOLS[rng.weighted(ATTACKER_TOOL_WEIGHTS)];
    const nameDraw = rng.next();
    a = { victimNetwork: false, nets, client: tool === 'victim' ? usual.client : tool, name: nameDraw < 0.7 ? NAME.usual : nameDraw < 0.85 ? NAME.bare : NAME.changed, replyTo: rng.chance(replyToShare) };
    const hosts = nets.map(() => rng.int(0, 65535));
    for (const i of indices) {
      const k = count === 1 ? 0 : rng.int(0, count - 1);
      columns.net[i] = nets[k];
      columns.host[i] = hosts[k];
    }
  }
  for (const i of indices) {
    columns.client[i] = a.client;
    columns.name[i] = a.name;
    columns.replyTo[i] = a.replyTo ? REPLY_TO.attacker : REPLY_TO.none;
  }
  traits.attackers[c.id] = a;
  return a;
}

// ---------------------------------------------------------------------------------------------
// What the MTA and the plugin see.

/** A message's traits as Postfix would hand them to a milter. */
export interface MessageTraits {
  /** Client address (the connect event, `{client_addr}`), its network (`198.18.3.0/24`, `2001:db8:…::/64`) and kind. */
  address: string;
  network: string;
  networkKind: NetworkKind;
  /** `{auth_type}`. */
  authType: string;
  /** `{tls_version}`, `{cipher}`, `{cipher_bits}`, and `{cert_subject}` when the client presents a certificate. */
  tlsVersion: string;
  cipher: string;
  cipherBits: number;
  certSubject?: string;
  /** Mail client id and its header. */
  client: string;
  /** Headers as the message carries them: From (with the display name), Reply-To when set, User-Agent/X-Mailer when the client writes one. */
  headers: [string, string][];
}

/** Builds a message's traits; `login` is the SASL login (and the From address). */
export function messageTraits(traits: Traits, columns: TraitColumns, i: number, sender: number, login: string, compromise: number): MessageTraits {
  const st = traits.senders[sender];
  const net = columns.net[i];
  const n = traits.networks.list[net];
  const client = CLIENTS[columns.client[i]];
  const nameCode = columns.name[i];
  const display = nameCode === NAME.usual ? st.name : nameCode === NAME.short ? st.name.split(' ')[0] : nameCode === NAME.changed ? CHANGED_NAMES[compromise % CHANGED_NAMES.length] : '';
  const headers: [string, string][] = [['From', display ? `"${display}" <${login}>` : login]];
  const r = columns.replyTo[i];
  if (r === REPLY_TO.shared) headers.push(['Reply-To', `team${sender % 50}@example.com`]);
  else if (r === REPLY_TO.list) headers.push(['Reply-To', 'news@example.com']);
  else if (r === REPLY_TO.attacker) headers.push(['Reply-To', `${login.split('@')[0]}.${compromise}@mail${compromise % 7}.example.org`]);
  if (client.header) headers.push([client.header, client.value!]);
  const out: MessageTraits = {
    address: traits.networks.address(net, columns.host[i]),
    network: n.family === 4 ? `${n.prefix}.0/24` : `${n.prefix}::/64`,
    networkKind: n.kind,
    authType: client.sasl,
    tlsVersion: client.tls,
    cipher: client.cipher,
    cipherBits: client.bits,
    client: client.id,
    headers,
  };
  if (st.cert && n.kind === 'server') out.certSubject = st.cert;
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the report says of them.

/** Counts of the traits, for the report. */
export interface TraitSummary {
  /** Distinct client networks per sender over the learning days (senders with a message then), % of senders: `1`, `2`, `3-5`, `6-10`, `11+`. */
  networksPerSender: Record<string, number>;
  /** Distinct mail clients (ignoring versions) per sender over the learning days, % of senders: `1`, `2`, `3+`. */
  clientsPerSender: Record<string, number>;
  /** Legitimate messages by network kind, %. */
  legitimateByNetwork: Record<string, number>;
  /** Legitimate messages: IPv6, with a Reply-To, with a display name other than the usual one, outside the sender's working hours or on a weekend (local time; role accounts left out), %. */
  legitimateIpv6: number;
  legitimateReplyTo: number;
  legitimateOtherName: number;
  legitimateOffHours: number;
  /** Per compromise kind: incidents, median messages and recipients and duration (minutes), and shares (%): from the victim's usual network, from a network the login had used before the attack, over several networks, with another client than the login's usual one, with a Reply-To, with another display name, starting in the victim's working hours. */
  attacks: Record<string, { incidents: number; medianMessages: number; medianRecipients: number; medianMinutes: number; victimNetwork: number; knownNetwork: number; rotating: number; otherClient: number; replyTo: number; otherName: number; inHours: number }>;
}

function inWorkingHours(p: SenderProfile, t: number, start: number): boolean {
  const local = t + p.tz * HOUR;
  const day = Math.floor((local - start) / DAY);
  const hour = (local - start - day * DAY) / HOUR;
  return ((day % 7) + 7) % 7 < 5 && hour >= p.workStart && hour < p.workEnd;
}

/** Summarizes the traits of a traffic. */
export function summarizeTraits(tr: Traffic): TraitSummary {
  const nets: Set<number>[] = tr.senders.map(() => new Set());
  const clients: Set<string>[] = tr.senders.map(() => new Set());
  const clientUse: Map<string, number>[] = tr.senders.map(() => new Map());
  const byNet: Record<string, number> = {};
  let legit = 0;
  let v6 = 0;
  let replyTo = 0;
  let otherName = 0;
  let offHours = 0;
  let people = 0;
  const usedBefore: Map<number, number>[] = tr.senders.map(() => new Map()); // net → first use
  for (let i = 0; i < tr.n; i++) {
    if (tr.compromise[i] >= 0) continue;
    const s = tr.sender[i];
    const net = tr.traits.networks.list[tr.net[i]];
    if (!usedBefore[s].has(tr.net[i])) usedBefore[s].set(tr.net[i], tr.t[i]);
    const id = CLIENTS[tr.client[i]].id;
    clientUse[s].set(id, (clientUse[s].get(id) ?? 0) + 1);
    if (tr.t[i] < tr.learnEnd) {
      nets[s].add(tr.net[i]);
      clients[s].add(id);
    }
    legit++;
    byNet[net.kind] = (byNet[net.kind] ?? 0) + 1;
    if (net.family === 6) v6++;
    if (tr.replyTo[i] !== REPLY_TO.none) replyTo++;
    if (tr.name[i] !== NAME.usual) otherName++;
    const p = tr.senders[s];
    if (p.cls !== 'role') {
      people++;
      if (!inWorkingHours(p, tr.t[i], tr.start)) offHours++;
    }
  }
  const pct = (x: number, of: number) => (of === 0 ? 0 : (100 * x) / of);
  const bins = (sets: Set<unknown>[], edges: [string, number, number][]) => {
    const active = sets.filter((x) => x.size > 0);
    return Object.fromEntries(edges.map(([label, lo, hi]) => [label, pct(active.filter((x) => x.size >= lo && x.size <= hi).length, active.length)]));
  };
  const median = (xs: number[]) => {
    const a = [...xs].sort((x, y) => x - y);
    return a.length === 0 ? 0 : a[Math.floor((a.length - 1) / 2)];
  };
  const attacks: TraitSummary['attacks'] = {};
  const first = new Map<number, number>();
  const netsOf = new Map<number, Set<number>>();
  for (let i = 0; i < tr.n; i++) {
    const c = tr.compromise[i];
    if (c < 0) continue;
    if (!first.has(c)) first.set(c, i);
    (netsOf.get(c) ?? netsOf.set(c, new Set()).get(c)!).add(tr.net[i]);
  }
  const groups = new Map<string, Compromise[]>();
  for (const c of tr.compromises) (groups.get(c.kind) ?? groups.set(c.kind, []).get(c.kind)!).push(c);
  for (const [kind, cs] of groups) {
    let victimNetwork = 0;
    let known = 0;
    let rotating = 0;
    let otherClient = 0;
    let withReplyTo = 0;
    let withOtherName = 0;
    let inHours = 0;
    for (const c of cs) {
      const i = first.get(c.id)!;
      const a = tr.traits.attackers[c.id];
      if (a.victimNetwork) victimNetwork++;
      const firstUse = usedBefore[c.sender].get(tr.net[i]);
      if (firstUse !== undefined && firstUse < c.start) known++;
      if (netsOf.get(c.id)!.size > 1) rotating++;
      const usual = [...clientUse[c.sender].entries()].sort((x, y) => y[1] - x[1])[0]?.[0];
      if (CLIENTS[tr.client[i]].id !== usual) otherClient++;
      if (tr.replyTo[i] !== REPLY_TO.none) withReplyTo++;
      if (tr.name[i] !== NAME.usual) withOtherName++;
      if (inWorkingHours(tr.senders[c.sender], c.start, tr.start)) inHours++;
    }
    attacks[kind] = {
      incidents: cs.length,
      medianMessages: median(cs.map((c) => c.messages)),
      medianRecipients: median(cs.map((c) => c.recipients)),
      medianMinutes: Math.round(median(cs.map((c) => (c.end - c.start) / MINUTE))),
      victimNetwork: pct(victimNetwork, cs.length),
      knownNetwork: pct(known, cs.length),
      rotating: pct(rotating, cs.length),
      otherClient: pct(otherClient, cs.length),
      replyTo: pct(withReplyTo, cs.length),
      otherName: pct(withOtherName, cs.length),
      inHours: pct(inHours, cs.length),
    };
  }
  return {
    networksPerSender: bins(nets, [['1', 1, 1], ['2', 2, 2], ['3-5', 3, 5], ['6-10', 6, 10], ['11+', 11, Infinity]]),
    clientsPerSender: bins(clients, [['1', 1, 1], ['2', 2, 2], ['3+', 3, Infinity]]),
    legitimateByNetwork: Object.fromEntries(Object.entries(byNet).map(([k, v]) => [k, pct(v, legit)])),
    legitimateIpv6: pct(v6, legit),
    legitimateReplyTo: pct(replyTo, legit),
    legitimateOtherName: pct(otherName, legit),
    legitimateOffHours: pct(offHours, people),
    attacks,
  };
}
