#!/usr/bin/env node
// `npm init themis-plugin` runs this. Installed, it runs the compiled JavaScript in dist/; inside a git
// checkout of Themis it runs the TypeScript sources (Node's type stripping).
//
// Only syntax every Node since 12 understands comes before the version check, so that an old Node says
// which Node is needed instead of failing on a .ts file.
const NEEDS = [22, 18];
const found = process.versions.node.split('.').map(Number);
if (found[0] < NEEDS[0] || (found[0] === NEEDS[0] && found[1] < NEEDS[1])) {
  process.stderr.write(
    `create-themis-plugin: THEMIS_ERR_NODE_VERSION: needs Node.js ${NEEDS.join('.')} or later (24 LTS recommended); ` +
      `this is Node.js ${process.versions.node} (${process.execPath}).\n`,
  );
  process.exit(1);
}
const { existsSync } = await import('node:fs');
const checkout = existsSync(new URL('../src/main.ts', import.meta.url)) && !import.meta.url.includes('/node_modules/');
const entry = new URL(checkout ? '../src/main.ts' : '../dist/main.js', import.meta.url);
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
