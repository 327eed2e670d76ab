#!/usr/bin/env node
// The `themis` command.
//
// Installed (npm, global, .deb) it runs the compiled JavaScript in dist/. Inside a git checkout it runs
// the TypeScript sources directly (Node's type stripping), with the `themis-source` export condition
// switched on, so that `themis-milter` and the workspace plugins resolve to their sources too.
//
// Only syntax and APIs every Node since 12 understands come before the version check: an old Node must
// be able to say which Node Themis needs instead of dying on a `.ts` file or a missing API.
const NEEDS = [22, 18];
const found = process.versions.node.split('.').map(Number);
if (found[0] < NEEDS[0] || (found[0] === NEEDS[0] && found[1] < NEEDS[1])) {
  process.stderr.write(
    `themis: THEMIS_ERR_NODE_VERSION: Themis needs Node.js ${NEEDS.join('.')} or later (24 LTS recommended); ` +
      `this is Node.js ${process.versions.node} (${process.execPath}).\n` +
      'Install Node.js 24 (https://nodejs.org, or your distribution\'s nodejs 24 package), or the Themis .deb, which carries its own.\n',
  );
  process.exit(1);
}

// `themis start` runs for months. V8 sizes its heap for the machine, not for a daemon: on a 16 GB box
// it lets the young generation grow to 128 MiB and the old one collect garbage up to four times its
// live size before marking, so a milter with 40–60 MB of live objects settles at ~400 MB resident
// (bench/README.md, "Soak"). The daemon therefore runs with a bounded heap, set before V8 starts —
// these flags cannot change afterwards — by replacing this process with itself (same pid, so systemd,
// signals and the pid file are unaffected) with the flags added. A flag the administrator gave (in
// NODE_OPTIONS or on node's command line) is never overridden; THEMIS_NODE_HEAP=v8 keeps V8's sizing.
const DAEMON_HEAP_FLAGS = [
  ['--max-semi-space-size', '16'],
  ['--max-old-space-size', '1024'],
];
if (process.argv[2] === 'start' && process.platform !== 'win32' && typeof process.execve === 'function' && process.env.THEMIS_NODE_HEAP !== 'v8') {
  const flagName = (arg) => arg.split('=')[0].replace(/_/g, '-');
  const given = new Set([...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].map(flagName));
  // --max-heap-size sizes both spaces: with it, V8 refuses a third heap flag.
  const missing = given.has('--max-heap-size') ? [] : DAEMON_HEAP_FLAGS.filter(([flag]) => !given.has(flag));
  if (missing.length > 0) {
    const { fileURLToPath } = await import('node:url');
    const args = [process.execPath, ...missing.map(([flag, value]) => `${flag}=${value}`), ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)];
    try {
      process.execve(process.execPath, args, process.env);
    } catch (err) {
      process.stderr.write(`themis: THEMIS_ERR_NODE_HEAP: could not restart Node with ${missing.map(([f, v]) => `${f}=${v}`).join(' ')} (${err?.message ?? err}); running with V8's own heap sizing\n`);
    }
  }
}

const { existsSync } = await import('node:fs');
const { registerHooks } = await import('node:module');

const checkout = existsSync(new URL('../src/cli/main.ts', import.meta.url)) && !import.meta.url.includes('/node_modules/');
const SELF = 'themis-milter';

// Module resolution for everything this process loads (configurations, plugins, their imports):
// - `themis-milter` and `themis-milter/…` resolve to this very package, whoever asks. A configuration in
//   /etc/themis, or a plugin installed beside a global Themis, finds it without a node_modules of its own,
//   and no plugin ever gets a second copy of the kernel (whose classes and registries would not match).
// - In a checkout, the `themis-source` condition selects the TypeScript sources in every package's exports.
registerHooks({
  resolve(specifier, context, next) {
    const conditions = checkout ? [...(context.conditions ?? []), 'themis-source'] : context.conditions;
    if (specifier === SELF || specifier.startsWith(`${SELF}/`)) return next(specifier, { ...context, conditions, parentURL: import.meta.url });
    return checkout ? next(specifier, { ...context, conditions }) : next(specifier, context);
  },
});

const entry = new URL(checkout ? '../src/cli/main.ts' : '../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write(`themis: THEMIS_ERR_NOT_BUILT: ${entry.pathname} is missing: this copy of Themis was not built (npm run build).\n`);
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
