/**
 * Socket specifications in the syntax mail administrators already write: libmilter's
 * `inet:PORT@HOST`, `inet6:PORT@[ADDR]`, `unix:/path` (also `local:/path`), and Postfix's
 * `inet:HOST:PORT` form of the same thing.
 * @module
 */
import { MilterError } from './errors.ts';

/** A parsed socket specification. */
export type SocketSpec =
  | { readonly kind: 'inet'; readonly host: string; readonly port: number; readonly family: 4 | 6 }
  | { readonly kind: 'unix'; readonly path: string };

/** The default listener: loopback port 8440. */
export const DEFAULT_LISTEN = 'inet:8440@127.0.0.1';

/** Parses a socket spec; throws `THEMIS_ERR_MILTER_LISTEN_SPEC` naming what is wrong. */
export function parseSocketSpec(spec: string): SocketSpec {
  const fail = (reason: string): never => {
    throw new MilterError('THEMIS_ERR_MILTER_LISTEN_SPEC', { spec: JSON.stringify(spec), reason });
  };
  const colon = spec.indexOf(':');
  const scheme = colon < 0 ? (spec.startsWith('/') ? 'unix' : '') : spec.slice(0, colon).toLowerCase();
  const rest = colon < 0 ? spec : spec.slice(colon + 1);
  if (scheme === 'unix' || scheme === 'local') {
    if (rest === '') fail('no socket path');
    return { kind: 'unix', path: rest };
  }
  if (scheme !== 'inet' && scheme !== 'inet6') fail(`unknown scheme ${JSON.stringify(scheme)}`);
  const family: 4 | 6 = scheme === 'inet6' ? 6 : 4;
  let host: string;
  let portText: string;
  const at = rest.indexOf('@');
  if (at >= 0) {
    portText = rest.slice(0, at);
    host = rest.slice(at + 1);
  } else {
    // Postfix form inet:host:port (or a bare port: every interface, as libmilter does).
    const last = rest.lastIndexOf(':');
    if (last < 0) {
      portText = rest;
      host = family === 6 ? '::' : '0.0.0.0';
    } else {
      host = rest.slice(0, last);
      portText = rest.slice(last + 1);
    }
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '') fail('no host');
  if (!/^\d+$/.test(portText)) fail(`port ${JSON.stringify(portText)} is not a number`);
  const port = Number(portText);
  if (port > 65535) fail(`port ${port} is out of range`);
  if (family === 6 && !host.includes(':') && host !== 'localhost') fail('inet6 needs an IPv6 address');
  return { kind: 'inet', host, port, family };
}

/** Formats a spec back into libmilter syntax (used in logs and by the client). */
export function formatSocketSpec(spec: SocketSpec): string {
  if (spec.kind === 'unix') return `unix:${spec.path}`;
  return spec.family === 6 ? `inet6:${spec.port}@[${spec.host}]` : `inet:${spec.port}@${spec.host}`;
}
