// Derives the .deb's systemd unit and /etc/default/themis from contrib/systemd/ (the files of the
// manual install), so that the two never drift apart: the unit runs /usr/bin/themis (the package's
// own Node.js 24) and may write the socket directory /var/spool/postfix/themis that postinst creates.
// Every replacement must match exactly once, so that an edit of contrib/systemd/ that breaks one
// fails the build instead of shipping the generic text.
//   node adapt.mjs SRC_UNIT SRC_DEFAULT OUT_UNIT OUT_DEFAULT
import { readFileSync, writeFileSync } from 'node:fs';

const [srcUnit, srcDefault, outUnit, outDefault] = process.argv.slice(2);
if (!outDefault) {
  process.stderr.write('usage: node adapt.mjs SRC_UNIT SRC_DEFAULT OUT_UNIT OUT_DEFAULT\n');
  process.exit(2);
}

function replaceOnce(text, file, pattern, replacement) {
  const matches = text.match(new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`));
  if (!matches || matches.length !== 1) {
    process.stderr.write(`adapt.mjs: ${file}: expected exactly one match of ${pattern} (found ${matches?.length ?? 0})\n`);
    process.exit(1);
  }
  return text.replace(pattern, replacement);
}

let unit = readFileSync(srcUnit, 'utf8');
unit = replaceOnce(unit, srcUnit, /^(?:#[^\n]*\n|\n)+(?=\[Unit\]\n)/, `# systemd unit for Themis, the plugin-based milter for Postfix, from the themis .deb.
#
# Installing the package starts nothing. Configure /etc/themis/themis.config.ts (and the socket in
# /etc/default/themis), check it with \`themis config check --config /etc/themis/themis.config.ts\`,
# then: systemctl enable --now themis
#
# Customise with \`systemctl edit themis\` (a drop-in survives upgrades) rather than editing this file.

`);
unit = replaceOnce(
  unit,
  srcUnit,
  /^# `themis` is the npm bin:[^\n]*\n(?:#[^\n]*\n)*ExecStart=[^\n]*\n/m,
  `# /usr/bin/themis runs Themis on the Node.js 24 runtime of the package (/usr/lib/themis/node).
ExecStart=/usr/bin/themis start --config /etc/themis/themis.config.ts
`,
);
unit = replaceOnce(
  unit,
  srcUnit,
  /^# For a socket any Postfix \(chrooted or not\)[^\n]*\n(?:#[^\n]*\n)*#ReadWritePaths=\/var\/spool\/postfix\/themis\n/m,
  `# For a socket any Postfix (chrooted or not) reaches as unix:themis/themis.sock, i.e.
# THEMIS_LISTEN=unix:/var/spool/postfix/themis/themis.sock: postinst created that directory
# (owner themis, group postfix, setgid) if Postfix was installed; otherwise:
#   install -d -o themis -g postfix -m 2750 /var/spool/postfix/themis
# ("-": no error while the directory does not exist)
ReadWritePaths=-/var/spool/postfix/themis
`,
);

let defaults = readFileSync(srcDefault, 'utf8');
defaults = replaceOnce(
  defaults,
  srcDefault,
  /^# Each variable overrides[^\n]*\n(?:#[^\n]*\n)*?# Syntax:[^\n]*\n/m,
  `# Each variable overrides the configuration file; the command-line options of ExecStart win over
# both. From the themis .deb: a conffile (upgrades keep your edits), root:themis, mode 0640, so it
# may hold a password. \`systemctl restart themis\` applies a change.
# Syntax: KEY=value, one a line, no \`export\`, no shell expansion; quote values with spaces.
`,
);
defaults = replaceOnce(
  defaults,
  srcDefault,
  /^# UNIX sockets: see the comments[^\n]*\n/m,
  `# The UNIX socket every Postfix reaches, chrooted (Debian's default) or not: in main.cf
#   smtpd_milters = unix:themis/themis.sock
#   non_smtpd_milters = unix:themis/themis.sock
# (relative to Postfix's queue directory /var/spool/postfix). The package created the directory.
`,
);
defaults = replaceOnce(defaults, srcDefault, /^#THEMIS_LISTEN=unix:\/run\/themis\/themis\.sock\n/m, '');

writeFileSync(outUnit, unit);
writeFileSync(outDefault, defaults);
