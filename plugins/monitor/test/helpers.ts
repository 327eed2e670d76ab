// Shared by the monitor's daemon tests: a configuration, a known traffic run through the milter
// client (as Postfix would send it), and reading the status endpoint with a token.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startThemis, type ThemisProcess } from '../../../test/helpers/themis.ts';
import { request } from 'node:http';
import { MilterClient } from 'themis-milter/milter';

/** The bearer token the test daemons require. */
export const TOKEN = 'test-token-0123456789abcdef';

/** Writes a configuration: monitor + ratelimit, a limited policy for @busy.example and a catch-all. */
export function writeConfig(file: string, extra: object = {}): void {
  writeFileSync(
    file,
    JSON.stringify({
      http: { token: TOKEN },
      plugins: [{ plugin: 'themis-plugin-monitor', options: { flushIntervalMs: 200 } }, 'themis-plugin-ratelimit'],
      policies: [
        { name: 'limited', priority: 1, match: { source: '@busy.example' }, ratelimit: { windows: '3/1h', by: 'sender' } },
        { name: 'catchall', priority: 2, ratelimit: { windows: '1000/1h', by: 'clientIp' } },
      ],
      ...extra,
    }),
  );
}

/** One message on a connection of its own, from `ip` through the MTA `mta`. */
export async function send(port: number, m: { from: string; to: string[]; ip: string; mta: string; subject: string }): Promise<string> {
  const client = await MilterClient.connect(`inet:${port}@127.0.0.1`);
  try {
    const r = await client.sendMessage({ connect: { hostname: 'client.example', address: m.ip, macros: { j: m.mta } }, helo: 'client.example', from: m.from, to: m.to, headers: [['Subject', m.subject]], body: 'hi\r\n' });
    return r.reply.action;
  } finally {
    await client.quit();
  }
}

/**
 * The known traffic run: 5 messages from a@busy.example (the limit lets 3 through, refuses 2), 4
 * from b@quiet.example with 2 recipients each from 2 client IPs; two MTAs; "hello" 6 times.
 */
export const TRAFFIC = [
  ...Array.from({ length: 5 }, (_, i) => ({ from: 'a@busy.example', to: ['r@example.test'], ip: '192.0.2.10', mta: 'mx1.test', subject: i < 4 ? 'hello' : 'other 1' })),
  ...Array.from({ length: 4 }, (_, i) => ({ from: 'b@quiet.example', to: ['r1@example.test', 'r2@example.test'], ip: i % 2 === 0 ? '192.0.2.20' : '192.0.2.21', mta: 'mx2.test', subject: i < 2 ? 'hello' : `other ${i}` })),
];

/** GETs a path of a status endpoint (`inet:PORT@HOST`); resolves with the status code and body. */
export function get(spec: string, path: string, token: string | null = TOKEN): Promise<{ status: number; body: string; type: string }> {
  const m = /^inet:(\d+)@(.+)$/.exec(spec)!;
  return new Promise((resolve, reject) => {
    const req = request({ host: m[2], port: Number(m[1]), path, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** GETs JSON (status 200 asserted by the caller through the thrown error). */
export async function getJson<T = any>(spec: string, path: string): Promise<T> {
  const r = await get(spec, path);
  if (r.status !== 200) throw new Error(`${path} answered ${r.status}: ${r.body}`);
  return JSON.parse(r.body) as T;
}

/** A daemon with {@link writeConfig}'s configuration and its status endpoint, stopped and cleaned up after the test. */
export async function startMonitored(t: { after(fn: () => unknown): void }): Promise<{ themis: ThemisProcess; http: string; file: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'themis-monitor-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'themis.config.json');
  writeConfig(file);
  const themis = await startThemis(['--config', file], {}, { http: true });
  t.after(() => themis.stop());
  return { themis, http: themis.http!, file };
}
