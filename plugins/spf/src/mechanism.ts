/**
 * Which mechanism of the domain's record decided an SPF result. mailauth evaluates the record but
 * does not say which term matched, so this walks the top-level terms again, in order, with the same
 * resolver (its cache makes the repeated lookups free) and answers only when it can be sure: a term
 * it cannot re-evaluate (`ptr`, `exists`, macros) before the match makes the answer unknown rather
 * than wrong.
 * @module
 */
import { BlockList, isIP } from 'node:net';

/** The resolver shape (`dns.promises.resolve`). */
export type Resolve = (name: string, rrtype: string) => Promise<unknown>;

const QUALIFIER_RESULT: Record<string, string> = { '+': 'pass', '-': 'fail', '~': 'softfail', '?': 'neutral' };

function inNetwork(ip: string, network: string, bits: number | undefined): boolean {
  const family = isIP(ip);
  const netFamily = isIP(network);
  if (family === 0 || family !== netFamily) return false;
  const list = new BlockList();
  const type = family === 6 ? 'ipv6' : 'ipv4';
  list.addSubnet(network, bits ?? (family === 6 ? 128 : 32), type);
  return list.check(ip, type);
}

async function addresses(resolve: Resolve, name: string, family: number): Promise<string[]> {
  try {
    return (await resolve(name, family === 6 ? 'AAAA' : 'A')) as string[];
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOTFOUND' || (err as { code?: string }).code === 'ENODATA') return [];
    throw err;
  }
}

async function exchanges(resolve: Resolve, name: string): Promise<string[]> {
  try {
    return ((await resolve(name, 'MX')) as { exchange: string }[]).map((m) => m.exchange);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOTFOUND' || (err as { code?: string }).code === 'ENODATA') return [];
    throw err;
  }
}

function cidrs(spec: string): { target: string | undefined; v4: number | undefined; v6: number | undefined } {
  const m = /^([^/]*)(?:\/(\d+))?(?:\/\/(\d+))?$/.exec(spec);
  if (!m) return { target: undefined, v4: undefined, v6: undefined };
  return { target: m[1] || undefined, v4: m[2] === undefined ? undefined : Number(m[2]), v6: m[3] === undefined ? undefined : Number(m[3]) };
}

/**
 * The term of `record` (an SPF record of `domain`) that gave `result` for `ip`, or undefined when
 * that cannot be told for sure. `includePasses(domain)` evaluates an `include:` target.
 */
export async function findMechanism(record: string, domain: string, ip: string, result: string, resolve: Resolve, includePasses: (domain: string) => Promise<boolean>): Promise<string | undefined> {
  if (!['pass', 'fail', 'softfail', 'neutral'].includes(result)) return undefined;
  const family = isIP(ip);
  const terms = record.trim().split(/\s+/).slice(1);
  let redirect: string | undefined;
  try {
    for (const term of terms) {
      if (/^[a-z][a-z0-9_.-]*=/i.test(term)) {
        if (term.toLowerCase().startsWith('redirect=')) redirect = term;
        continue;
      }
      const qualifier = /^[+\-~?]/.test(term) ? term[0] : '+';
      const body = qualifier === term[0] ? term.slice(1) : term;
      const name = (/^[a-z0-9]+/i.exec(body)?.[0] ?? '').toLowerCase();
      const tail = body.slice(name.length);
      const arg = tail.startsWith(':') ? tail.slice(1) : '';
      if (body.includes('%')) return undefined;
      let matched = false;
      if (name === 'all') matched = true;
      else if (name === 'ip4' || name === 'ip6') {
        const [net, bits] = arg.split('/');
        matched = inNetwork(ip, net, bits === undefined ? undefined : Number(bits));
      } else if (name === 'a' || name === 'mx') {
        // a[:domain][/v4][//v6], mx likewise.
        const c = cidrs(tail.startsWith(':') ? tail.slice(1) : tail);
        const target = c.target ?? domain;
        const hosts = name === 'a' ? [target] : await exchanges(resolve, target);
        for (const host of hosts) if ((await addresses(resolve, host, family)).some((a) => inNetwork(ip, a, family === 6 ? c.v6 : c.v4))) matched = true;
      } else if (name === 'include') matched = await includePasses(arg);
      // ptr and exists: not re-evaluated; anything before a sure match stays unknown.
      else return undefined;
      if (matched) return QUALIFIER_RESULT[qualifier] === result ? term : undefined;
    }
  } catch {
    return undefined;
  }
  return redirect;
}
