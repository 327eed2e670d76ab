/**
 * themis-plugin-recipient-allowlist: an example third-party Themis plugin. In every policy that sets
 * `allowlist`, recipients that match none of its entries are refused at RCPT — one recipient at a
 * time, the rest of the message goes on. Written only against the public `themis` API.
 * @module
 */
import { z } from 'zod';
import { definePlugin } from 'themis-milter';

/** The policy field this plugin claims: `allowlist: { recipients: [...], action?, reply? }`. */
export const AllowlistClaim = z.object({
  /** Entries: a full address (`postmaster@example.net`) or a whole domain (`@example.net`); case-insensitive. */
  recipients: z.array(z.string().regex(/^([^@\s]+@[^@\s]+|@[^@\s]+)$/, 'expected user@domain or @domain')).min(1),
  /** `reject` (5xx, default) or `tempfail` (4xx, e.g. while migrating mailboxes). */
  action: z.enum(['reject', 'tempfail']).default('reject'),
  /** Reply text (default "Recipient not allowed here"). */
  text: z.string().default('Recipient not allowed here'),
});

/** The claim's type, as hooks see it. */
export type AllowlistConfig = z.output<typeof AllowlistClaim>;

/** Plugin-level options. */
export const AllowlistOptions = z.object({
  /** Also log every refused recipient at info level (addresses are personal data: off by default). */
  logRefused: z.boolean().default(false),
});

function allowed(address: string, entries: readonly string[]): boolean {
  const a = address.toLowerCase();
  const domain = a.slice(a.lastIndexOf('@'));
  return entries.some((e) => {
    const entry = e.toLowerCase();
    return entry.startsWith('@') ? domain === entry : a === entry;
  });
}

/** The plugin. Load it by package name (`themis-plugin-recipient-allowlist`) or import it. */
export default definePlugin({
  name: 'recipient-allowlist',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'allowlist', schema: AllowlistClaim },
  // `themis policy add|set NAME --allow @example.net,postmaster@example.com`: the recipients of the field.
  policyFlags: {
    allow: { type: 'string', valueName: 'LIST', help: 'the allowlist field: recipients or @domains, comma-separated', apply: (field, value) => void (field.recipients = String(value).split(',').map((x) => x.trim()).filter(Boolean)) },
  },
  options: AllowlistOptions,
  priority: 50,
  // A lookup in memory cannot fail for outside reasons; if it ever throws, leave this plugin out and let
  // the others decide (`accept` would accept the whole message over them).
  onError: 'continue',
  setup({ options, metrics, log }) {
    const refused = metrics.counter({ name: 'refused_total', help: 'Recipients refused by the allowlist', labelNames: ['policy'] as const });
    return {
      rcptTo(ctx, rcpt) {
        for (const policy of ctx.policies) {
          const config = policy.config as AllowlistConfig;
          if (allowed(rcpt.address, config.recipients)) continue;
          refused.inc({ policy: policy.name });
          if (options.logRefused) log.info({ policy: policy.name, recipient: rcpt.address }, 'recipient refused');
          const reply = config.action === 'reject' ? { code: 550, enhanced: '5.7.1', text: config.text } : { code: 450, enhanced: '4.7.1', text: config.text };
          return { action: config.action, reply, reason: `recipient not on the allowlist of policy ${policy.name}` };
        }
        return undefined;
      },
    };
  },
});
