/**
 * A throwaway Cyrus SASL setup for the test Postfix: an `smtpd.conf` and a sasldb with test users,
 * in a temporary directory Postfix's smtpd (running as `postfix`) can read. Needs Debian's sasl2-bin
 * (saslpasswd2) and libsasl2-modules (the sasldb auxprop plugin).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { startPostfix, type PostfixInstance } from './postfix.ts';

/** Why SASL cannot be set up here, or undefined when it can. */
export function saslUnavailableReason(): string | undefined {
  if (userInfo().uid !== 0) return 'needs root (the sasldb must belong to the postfix user)';
  const r = spawnSync('saslpasswd2', ['-v'], { encoding: 'utf8' });
  if (r.error) return `saslpasswd2 not installed (Debian package sasl2-bin): ${r.error.message}`;
  return undefined;
}

/** A SASL configuration for Postfix's `cyrus_sasl_config_path`. */
export interface SaslSetup {
  /** Directory holding smtpd.conf and the sasldb. */
  configDir: string;
  /** main.cf settings that enable SMTP AUTH with it. */
  mainCf: Record<string, string>;
  /**
   * Copies smtpd.conf into `<postfix config dir>/sasl/`: Debian's Postfix reads it there and ignores
   * cyrus_sasl_config_path. smtpd reads it when it starts, i.e. at the first SMTP connection.
   */
  installInto(postfixConfigDir: string): void;
  /** Removes the directory. */
  remove(): void;
}

/** Creates the SASL configuration with the given users (`login` is `user@realm`). */
export function createSasl(users: { login: string; password: string }[]): SaslSetup {
  const dir = mkdtempSync(join(tmpdir(), 'themis-sasl-'));
  chmodSync(dir, 0o755);
  const db = join(dir, 'sasldb2');
  for (const u of users) {
    const at = u.login.lastIndexOf('@');
    execFileSync('saslpasswd2', ['-f', db, '-c', '-p', '-u', u.login.slice(at + 1), u.login.slice(0, at)], { input: u.password });
  }
  const postfix = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  chownSync(db, postfix, 0);
  chmodSync(db, 0o600);
  const conf = `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: ${db}\n`;
  writeFileSync(join(dir, 'smtpd.conf'), conf, { mode: 0o644 });
  return {
    configDir: dir,
    mainCf: {
      cyrus_sasl_config_path: dir,
      smtpd_sasl_auth_enable: 'yes',
      smtpd_sasl_type: 'cyrus',
      smtpd_sasl_path: 'smtpd',
      smtpd_sasl_security_options: 'noanonymous',
      smtpd_relay_restrictions: 'permit_sasl_authenticated, reject_unauth_destination',
    },
    installInto: (postfixConfigDir: string) => {
      mkdirSync(join(postfixConfigDir, 'sasl'), { recursive: true, mode: 0o755 });
      writeFileSync(join(postfixConfigDir, 'sasl', 'smtpd.conf'), conf, { mode: 0o644 });
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A test Postfix whose clients can authenticate as `users`, with `milter` as its milter (tempfail
 * when it cannot be reached); both are removed after the test.
 */
export async function startSaslPostfix(t: { after(fn: () => unknown): void }, milter: string, users: { login: string; password: string }[]): Promise<PostfixInstance> {
  const sasl = createSasl(users);
  t.after(() => sasl.remove());
  const pf = await startPostfix({ milter, milterDefaultAction: 'tempfail', extraMainCf: sasl.mainCf });
  t.after(() => pf.stop());
  sasl.installInto(pf.configDir);
  return pf;
}
