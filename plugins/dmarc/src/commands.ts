/**
 * `themis dmarc report`: writes the RFC 7489 aggregate reports (Appendix C XML) of a range of UTC days
 * from the data the daemons recorded in the shared store (`reports: { enabled: true }`), one file per
 * header-from domain. Sending them (to the domains' `rua=`) is the administrator's choice: the command
 * prints where each domain asks for them and sends nothing.
 * @module
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { PluginCommand, PluginCommandContext } from 'themis-milter';
import { normalizeDomain } from './dmarc.ts';
import { DAY_MS, daysBetween, readReports, reportXml, type DomainReport, type ReportOptions } from './report.ts';

/** Usage text of `themis dmarc`. */
export const DMARC_USAGE = `Usage: themis dmarc report --from YYYY-MM-DD --to YYYY-MM-DD [options]

  --from YYYY-MM-DD   first UTC day of the report (inclusive)
  --to YYYY-MM-DD     last UTC day of the report (inclusive)
  --domain D          only this header-from domain (default: every domain with data)
  --org-name NAME     report_metadata/org_name (default: this host's name)
  --email ADDR        report_metadata/email, the reporter's contact (default: postmaster@<org-name>)
  --out DIR           where the files go (default: the current directory)
  --json              print what was written as JSON

Writes one RFC 7489 aggregate report per header-from domain, named receiver!domain!begin!end.xml,
from the data the daemons recorded (dmarc option reports.enabled). Nothing is sent: mail each file
(gzip it if you like) to the rua= address the command prints for its domain, if you choose to.
Every command also takes --config PATH, --redis-url URL, --redis-password PW.
`;

type Ctx = PluginCommandContext<unknown, { reports?: ReportOptions }>;

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;
/** A real calendar day `YYYY-MM-DD`, else undefined. */
function parseDay(v: string): number | undefined {
  if (!DAY.test(v)) return undefined;
  const t = Date.parse(`${v}T00:00:00Z`);
  return Number.isFinite(t) && new Date(t).toISOString().slice(0, 10) === v ? t : undefined;
}

/** A file name part: what the RFC's convention allows (letters, digits, dots, hyphens). */
const namePart = (v: string) => v.replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 200) || '_';

/** The `themis dmarc` command. */
export const dmarcCommand: PluginCommand<unknown, unknown> = {
  summary: 'DMARC aggregate reports (RFC 7489) from the recorded data: report --from --to [--domain] [--out]',
  async run(args: string[], raw) {
    const ctx = raw as Ctx;
    const usage = (why: string) => {
      ctx.err(`themis dmarc: ${why}\n\n${DMARC_USAGE}`);
      return 2;
    };
    let values: Record<string, string | boolean | undefined>;
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: { from: { type: 'string' }, to: { type: 'string' }, domain: { type: 'string' }, 'org-name': { type: 'string' }, email: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      }) as { values: Record<string, string | boolean | undefined>; positionals: string[] });
    } catch (err) {
      return usage((err as Error).message);
    }
    const [command, ...rest] = positionals;
    if (values.help || command === 'help') {
      ctx.out(DMARC_USAGE);
      return 0;
    }
    if (!command) return usage('which command? (report)');
    if (command !== 'report') return usage(`unknown command ${JSON.stringify(command)}`);
    if (rest.length > 0) return usage(`unexpected argument ${JSON.stringify(rest[0])}`);
    if (values.from === undefined) return usage('--from YYYY-MM-DD is required');
    if (values.to === undefined) return usage('--to YYYY-MM-DD is required');
    const from = parseDay(String(values.from));
    if (from === undefined) return usage(`--from expects a day YYYY-MM-DD, got ${JSON.stringify(values.from)}`);
    const to = parseDay(String(values.to));
    if (to === undefined) return usage(`--to expects a day YYYY-MM-DD, got ${JSON.stringify(values.to)}`);
    if (to < from) return usage(`--to (${String(values.to)}) is before --from (${String(values.from)})`);
    const retention = ctx.options?.reports?.retentionDays ?? 31;
    if ((to - from) / DAY_MS + 1 > retention + 1) return usage(`--from to --to spans ${(to - from) / DAY_MS + 1} days; the data is kept ${retention} days (reports.retentionDays)`);
    let domain: string | undefined;
    if (values.domain !== undefined) {
      domain = normalizeDomain(String(values.domain));
      if (!domain) return usage(`--domain expects a domain name, got ${JSON.stringify(values.domain)}`);
    }
    const orgName = values['org-name'] !== undefined ? String(values['org-name']).trim() : hostname();
    if (!orgName) return usage('--org-name must not be empty');
    const email = values.email !== undefined ? String(values.email).trim() : `postmaster@${orgName}`;
    if (!/^[^\s@<>]+@[^\s@<>]+$/.test(email)) return usage(`--email expects an address such as dmarc-reports@example.net, got ${JSON.stringify(values.email)}`);
    const outDir = resolve(values.out !== undefined ? String(values.out) : '.');

    if (ctx.options?.reports && !ctx.options.reports.enabled) ctx.err('themis dmarc: note: reports.enabled is false in this configuration; only data recorded while it was on is reported\n');
    if (ctx.storeType === 'memory') ctx.err('themis dmarc: note: the configuration uses the in-memory store, whose data lives inside each daemon process; configure the Redis store (or give --redis-url) to report what the daemons recorded\n');

    let reports: DomainReport[];
    try {
      reports = await readReports(ctx.store, daysBetween(String(values.from), String(values.to)), domain);
    } catch (err) {
      ctx.err(`themis dmarc: cannot read the store: ${(err as Error).message}\n`);
      return 1;
    }

    const begin = Math.floor(from / 1000);
    const end = Math.floor((to + DAY_MS) / 1000) - 1;
    // The receiver (RFC 7489 §7.2.1.1): the reporting organization's domain, from its contact address.
    const receiver = namePart(email.slice(email.lastIndexOf('@') + 1));
    const written: Record<string, unknown>[] = [];
    let droppedTotal = 0;
    try {
      if (reports.length > 0) await mkdir(outDir, { recursive: true });
      for (const r of reports) {
        const messages = r.rows.reduce((a, x) => a + x.count, 0);
        droppedTotal += r.dropped;
        if (r.rows.length === 0) {
          written.push({ domain: r.domain, file: null, rows: 0, messages: 0, dropped: r.dropped, rua: r.policy.rua ?? null });
          continue;
        }
        const name = `${receiver}!${namePart(r.domain)}!${begin}!${end}.xml`;
        const reportId = `${r.domain}.${begin}.${end}@${orgName}`;
        const file = join(outDir, name);
        await writeFile(file, reportXml(r, { orgName, email, reportId, begin, end }));
        written.push({ domain: r.domain, file, rows: r.rows.length, messages, dropped: r.dropped, rua: r.policy.rua ?? null });
      }
    } catch (err) {
      ctx.err(`themis dmarc: cannot write the reports in ${outDir}: ${(err as Error).message}\n`);
      return 1;
    }

    if (values.json) {
      ctx.out(`${JSON.stringify({ from: values.from, to: values.to, begin, end, reports: written, dropped: droppedTotal }, null, 2)}\n`);
      return 0;
    }
    if (written.length === 0) {
      ctx.out(`no DMARC report data from ${String(values.from)} to ${String(values.to)}${domain ? ` for ${domain}` : ''}\n`);
      return 0;
    }
    const lines = written.map((w) => {
      const head = w.file ? `wrote ${String(w.file)}: ${String(w.domain)}, ${String(w.rows)} rows, ${String(w.messages)} messages` : `${String(w.domain)}: no row to report`;
      const dropped = (w.dropped as number) > 0 ? `\n  ${String(w.dropped)} messages beyond the cap of ${ctx.options?.reports?.maxRowsPerDay ?? 10_000} rows per day are not in the report (counted without source IP; raise reports.maxRowsPerDay)` : '';
      const rua = w.rua ? `\n  the domain asks for aggregate reports at ${String(w.rua)}` : w.file ? '\n  the domain publishes no rua=: it asks for no report' : '';
      return `${head}${dropped}${rua}`;
    });
    ctx.out(`${lines.join('\n')}\nNothing was sent: mailing the reports is up to you.\n`);
    return 0;
  },
};
