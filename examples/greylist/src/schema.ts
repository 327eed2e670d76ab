/**
 * The `greylist` policy field: the three durations of the state machine, who is exempt, how the
 * client's network is cut, and the reply. Durations are written as the built-in rate limiter writes
 * them — `'30s'`, `'5m'`, `'2h'`, `'36d'`, `'500ms'`, or a whole number of ms — and normalized to ms
 * once, when the policy is loaded.
 * @module
 */
import { z } from 'zod';
import { parseNetwork, replyConfigSchema, type Network } from 'themis-milter';

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `'90s'`, `'5m'`, `'1h'`, `'2d'`, `'500ms'` (or a whole number of ms) into ms; undefined when malformed or not > 0. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNITS[m[2]];
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

/** Formats ms the way it was most likely written (`300000` → `5m`), for messages and logs. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/** A duration as the field takes it, in ms after parsing. */
const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `expected a duration such as '30s', '5m', '1h' or '2d' (or a whole number of ms > 0), found ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return ms;
});

/** A client network to exempt: `192.0.2.0/24`, `2001:db8::/32`, or one address. */
const cidr = z.string().transform((text, ctx): Network => {
  const network = parseNetwork(text.trim());
  if (network === undefined || network instanceof Error) {
    ctx.addIssue({ code: 'custom', message: network instanceof Error ? network.message : `${JSON.stringify(text)} is not an IP address or CIDR (such as 192.0.2.0/24 or 2001:db8::/32)` });
    return z.NEVER;
  }
  return network;
});

/** The default reply: `{wait}` is the whole seconds left before a retry can pass. */
export const DEFAULT_REPLY = { code: 451, enhanced: '4.7.1', text: 'Greylisted, try again in {wait} seconds' } as const;

/**
 * The policy field. Every key is optional; `greylist: {}` greylists with the defaults.
 */
export const greylistField = z
  .strictObject({
    /** How long a new triplet must wait before a retry passes (default 5 minutes). */
    delay: duration.default(300_000),
    /** How long after the first attempt a retry still counts; a later one starts over (default 2 days). */
    retryWindow: duration.default(2 * 86_400_000),
    /** How long a passed triplet stays known after its last use (default 36 days). */
    expiry: duration.default(36 * 86_400_000),
    /** Never greylist a client that authenticated with SMTP AUTH (default true). */
    exemptAuthenticated: z.boolean().default(true),
    /** Client addresses and networks never greylisted (default none). */
    exemptClients: z.array(cidr).default([]),
    /** The IPv4 prefix length that makes one client network (default 24: a /24 shares its triplets). */
    ipv4Prefix: z.number().int().min(0).max(32).default(24),
    /** The IPv6 prefix length that makes one client network (default 64). */
    ipv6Prefix: z.number().int().min(0).max(128).default(64),
    /** The reply to a greylisted recipient: parts left out come from 451 4.7.1 `Greylisted, try again in {wait} seconds`. */
    reply: replyConfigSchema
      .refine((r) => r.code === undefined || r.code < 500, 'greylisting answers with a 4xx code: a 5xx would refuse the mail for good')
      .refine((r) => r.enhanced === undefined || r.enhanced.startsWith('4.'), 'greylisting answers with a 4.x.x enhanced code')
      .default({}),
    /** What a recipient gets when the store cannot answer: `pass` (no objection, the default) or `tempfail` (the reply, without a wait). */
    onStoreError: z.enum(['pass', 'tempfail']).default('pass'),
  })
  .superRefine((g, ctx) => {
    if (g.retryWindow <= g.delay) {
      ctx.addIssue({ code: 'custom', path: ['retryWindow'], message: `retryWindow (${formatDuration(g.retryWindow)}) must be longer than delay (${formatDuration(g.delay)}): no retry could ever pass` });
    }
  });

/** The field as a policy writes it (before defaults and parsing). */
export type GreylistInput = z.input<typeof greylistField>;

/** The field as the hooks see it: durations in ms, networks parsed, defaults filled in. */
export type GreylistConfig = z.output<typeof greylistField>;
