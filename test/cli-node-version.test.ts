// The `themis` bin on a Node.js too old for Themis says which Node it needs (and exits 1) instead of
// dying on a `.ts` file or a missing API. Run with the system's Node when it is older than 22.18.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/themis.js', import.meta.url));

/** An installed Node older than 22.18, with its version; undefined when the machine has none. */
function oldNode(): { path: string; version: string } | undefined {
  for (const path of ['/usr/bin/node', '/usr/local/bin/node', '/usr/bin/nodejs']) {
    if (!existsSync(path)) continue;
    const r = spawnSync(path, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    const version = r.stdout?.trim();
    if (!version) continue;
    const [major, minor] = version.split('.').map(Number);
    if (major < 22 || (major === 22 && minor < 18)) return { path, version };
  }
  return undefined;
}

const old = oldNode();
if (!old) console.log('# no Node.js older than 22.18 on this machine (/usr/bin/node, /usr/local/bin/node, /usr/bin/nodejs): the version check is not run against one');

describe('themis on a Node.js that is too old', { skip: old ? false : 'no Node.js older than 22.18 here' }, () => {
  it('exits 1 and names the Node it needs and the one it found, for any command', () => {
    for (const args of [['--version'], ['start'], ['config', 'check']]) {
      const r = spawnSync(old!.path, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1, `exit status for ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /THEMIS_ERR_NODE_VERSION: Themis needs Node\.js 22\.18 or later \(24 LTS recommended\)/);
      assert.ok(r.stderr.includes(`this is Node.js ${old!.version} (${old!.path})`), r.stderr);
      assert.doesNotMatch(r.stderr, /ERR_UNKNOWN_FILE_EXTENSION|SyntaxError/);
      assert.equal(r.stdout, '');
    }
  });
});
