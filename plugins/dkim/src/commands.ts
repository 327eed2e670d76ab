/**
 * `themis dkim keygen DOMAIN SELECTOR` makes a signing key (the private key PEM, mode 0600, and the
 * DNS record to publish); `themis dkim test DOMAIN SELECTOR --key FILE` looks the record up and says
 * whether it publishes that key.
 * @module
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { PluginCommand } from 'themis-milter';
import { createResolver } from 'themis-milter/dns';
import { KeyProblem, algorithmOf, loadKey, publicKeyTags, validDomain, validSelector, zoneLine } from './keys.ts';
import { getPublicKey } from './mailauth.ts';
import type { DkimOptions, DkimPolicy } from './index.ts';

const USAGE = `Usage: themis dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits 2048] [--out FILE] [--force]
       themis dkim test DOMAIN SELECTOR --key FILE [--dns-server IP:PORT]

keygen  writes a new private key (PEM, mode 0600) to FILE (default SELECTOR.DOMAIN.key) and prints the
        TXT record to publish at SELECTOR._domainkey.DOMAIN (strings of at most 255 bytes).
        RSA (default, --bits 2048; 1024 to 4096) or Ed25519 (RFC 8463). Refuses to overwrite FILE unless --force.
test    looks up SELECTOR._domainkey.DOMAIN (through --dns-server, else the plugin's dnsServers, else the
        system's resolvers) and says whether it publishes the public key of FILE: exit 0 when it does, 1 when not.
`;

/** The `themis dkim` command. */
export const dkimCommand: PluginCommand<DkimPolicy, DkimOptions> = {
  summary: 'make a DKIM key and its DNS record (keygen), or check a published record against a key (test)',
  async run(args, ctx) {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        options: {
          type: { type: 'string' },
          bits: { type: 'string' },
          out: { type: 'string' },
          force: { type: 'boolean' },
          key: { type: 'string' },
          'dns-server': { type: 'string', multiple: true },
          help: { type: 'boolean', short: 'h' },
        },
        allowPositionals: true,
        strict: true,
      });
    } catch (err) {
      ctx.err(`themis dkim: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    const { values, positionals } = parsed;
    if (values.help) {
      ctx.out(USAGE);
      return 0;
    }
    const [sub, rawDomain, selector] = positionals;
    if ((sub !== 'keygen' && sub !== 'test') || !rawDomain || !selector || positionals.length > 3) {
      ctx.err(USAGE);
      return 2;
    }
    const domain = rawDomain.toLowerCase().replace(/\.$/, '');
    if (!validDomain(domain) || !validSelector(selector)) {
      ctx.err(`themis dkim: ${!validDomain(domain) ? `"${rawDomain}" is not a domain name` : `"${selector}" is not a selector`}\n`);
      return 2;
    }

    if (sub === 'keygen') {
      const type = values.type ?? 'rsa';
      if (type !== 'rsa' && type !== 'ed25519') {
        ctx.err(`themis dkim keygen: --type is rsa or ed25519, not ${type}\n`);
        return 2;
      }
      const bits = values.bits === undefined ? 2048 : Number(values.bits);
      if (type === 'rsa' && (!Number.isInteger(bits) || bits < 1024 || bits > 4096)) {
        ctx.err(`themis dkim keygen: --bits is 1024 to 4096 (2048 recommended), not ${values.bits}\n`);
        return 2;
      }
      const { privateKey } = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: bits }) : generateKeyPairSync('ed25519');
      const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
      const out = values.out ?? `${selector}.${domain}.key`;
      try {
        await writeFile(out, pem, { mode: 0o600, flag: values.force ? 'w' : 'wx' });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        ctx.err(`themis dkim keygen: cannot write ${out}: ${code === 'EEXIST' ? 'it exists (--force to overwrite)' : (code ?? (err as Error).message)}\n`);
        return 1;
      }
      ctx.out(`Private key written to ${out} (mode 0600). Publish this record:\n\n${zoneLine(domain, selector, privateKey)}\n\n`);
      ctx.out(`Then sign with it: keys: [{ domain: '${domain}', selector: '${selector}', keyFile: '${out}' }] in the dkim plugin's options.\n`);
      return 0;
    }

    if (!values.key) {
      ctx.err(`themis dkim test: --key FILE is required\n${USAGE}`);
      return 2;
    }
    let expected;
    try {
      expected = loadKey({ domain, selector, keyFile: values.key });
    } catch (err) {
      ctx.err(`themis dkim test: key ${values.key}: ${err instanceof KeyProblem ? err.message : (err as Error).message}\n`);
      return 1;
    }
    const servers = values['dns-server'] ?? ctx.options.dnsServers;
    const resolver = createResolver({ servers, timeoutMs: ctx.options.dnsTimeout, cache: false });
    const name = `${selector}._domainkey.${domain}`;
    let published;
    try {
      published = await getPublicKey('DKIM', name, 1024, resolver, { strict: true });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { rr?: string };
      const why = e.code === 'ENOTFOUND' || e.code === 'ENODATA' ? 'no TXT record' : e.message;
      ctx.err(`${name}: ${why}${e.rr ? ` (record: ${e.rr})` : ''}\nexpected: ${zoneLine(domain, selector, expected.privateKey)}\n`);
      return 1;
    }
    const mine = publicKeyTags(expected.privateKey);
    const theirs = publicKeyTags(createPublicKey(published.publicKey));
    if (mine.k === theirs.k && mine.p === theirs.p && algorithmOf(expected.privateKey)) {
      ctx.out(`${name}: OK, publishes the ${mine.k === 'rsa' ? `RSA-${expected.privateKey.asymmetricKeyDetails?.modulusLength}` : 'Ed25519'} public key of ${values.key}\n`);
      return 0;
    }
    ctx.err(`${name}: MISMATCH, the record publishes another key than ${values.key}\npublished: ${published.rr}\nexpected:  ${zoneLine(domain, selector, expected.privateKey)}\n`);
    return 1;
  },
};
