/**
 * The files of a new plugin package, as text. Each is a function of the plugin's names and stages so
 * that the package is complete for any choice: the hooks of the chosen stages, the policy field with
 * the settings those hooks use, tests for each behaviour, a README describing exactly that field.
 *
 * Two stages come with a working behaviour (it is what a new author changes first, and what proves
 * the package end to end): `rcptTo` refuses the recipients a policy lists; `endOfMessage` adds a
 * header naming the policies that matched. The other stages get a hook that logs what it sees, with a
 * comment saying what it may answer.
 * @module
 */
import type { PluginNames } from './names.ts';
import type { Stage } from './stages.ts';

/** What the templates need to know. */
export interface TemplateInput {
  /** The plugin's names. */
  names: PluginNames;
  /** The stages the plugin taps, in milter order. */
  stages: readonly Stage[];
  /** One line saying what the plugin does. */
  description: string;
  /** The version range of `themis-milter` the plugin works with (`peerDependencies`). */
  themisRange: string;
  /** How the plugin's own development install gets `themis-milter` (`devDependencies`): a range, or a tarball. */
  themisDevSpec: string;
}

/** The versions a new package is created with: the ones this release of Themis is built and tested with. */
export const TOOL_VERSIONS = {
  zod: '^4.6.7',
  typescript: '^7.0.2',
  '@types/node': '^24.19.2',
  // The registry's `node` package carries the official Node 24 binary: npm scripts run on it whatever
  // Node the machine has (`npm test` under an old system Node would fail on the TypeScript test files).
  node: '^24.21.0',
} as const;

/** What each stage's hook receives, as it is written in the generated code. */
const HOOK_SIGNATURE: Record<Stage, string> = {
  connect: 'connect(ctx, client)',
  helo: 'helo(ctx, { hostname })',
  mailFrom: 'mailFrom(ctx, sender)',
  rcptTo: 'rcptTo(ctx, rcpt)',
  data: 'data(ctx)',
  header: 'header(ctx, { name, value })',
  endOfHeaders: 'endOfHeaders(ctx)',
  body: 'body(ctx, chunk)',
  endOfMessage: 'endOfMessage(ctx)',
  abort: 'abort(ctx)',
  close: 'close(ctx)',
};

/** The body of a stage's hook when the stage has no built-in behaviour: what it sees, and what it may answer. */
const SKELETON: Record<Stage, string[]> = {
  connect: [
    '// The client: address, family, port, hostname. Return a verdict to refuse the whole connection,',
    "// e.g. { action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'Not here' }, reason: '…' }.",
    "ctx.log.debug({ client: client.address, hostname: client.hostname }, 'connect');",
    'return undefined;',
  ],
  helo: ['// HELO/EHLO. A verdict here refuses the greeting.', "ctx.log.debug({ hostname }, 'helo');", 'return undefined;'],
  mailFrom: [
    '// MAIL FROM (sender.address, sender.args). `ctx.session.auth` (the SASL login) is known from here on.',
    "// A reject or tempfail here refuses the whole transaction; 'continue' or nothing lets it go on.",
    "ctx.log.debug({ sender: sender.address, authenticated: ctx.session.auth !== undefined }, 'mail from');",
    'return undefined;',
  ],
  rcptTo: [],
  data: ['// DATA: every recipient is known (ctx.message.recipients).', "ctx.log.debug({ recipients: ctx.message?.recipients.length }, 'data');", 'return undefined;'],
  header: [
    '// One header at a time, unfolded as the MTA sent it. A verdict here decides for the whole message.',
    "ctx.log.debug({ header: name, length: value.length }, 'header');",
    'return undefined;',
  ],
  endOfHeaders: ['// Every header is in ctx.message.headers now.', "ctx.log.debug({ headers: ctx.message?.headers.length }, 'end of headers');", 'return undefined;'],
  body: [
    '// A chunk of the body (a Buffer). Tapping this stage is what makes the MTA send the body: keep it only',
    '// when the plugin needs it.',
    "ctx.log.debug({ bytes: chunk.length }, 'body chunk');",
    'return undefined;',
  ],
  endOfMessage: [],
  abort: ['// The message was abandoned, or refused by another plugin: undo what this plugin reserved for it.', "ctx.log.debug({ queueId: ctx.message?.queueId }, 'message aborted');"],
  close: ['// The connection ended.', "ctx.log.debug({ client: ctx.session.client?.address }, 'connection closed');"],
};

const has = (input: TemplateInput, stage: Stage): boolean => input.stages.includes(stage);

/** A string literal in the generated code's style (single quotes). */
const q = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

const indent = (lines: readonly string[], by: string): string => lines.map((l) => (l ? by + l : l)).join('\n');

/** `package.json`. */
export function packageJson(input: TemplateInput): string {
  const { names, description, themisRange, themisDevSpec } = input;
  const pkg = {
    name: names.packageName,
    version: '0.1.0',
    description,
    type: 'module',
    license: 'MIT',
    keywords: ['themis-plugin', 'themis', 'milter', 'postfix'],
    engines: { node: '>=22.18' },
    exports: {
      '.': { types: './dist/index.d.ts', default: './dist/index.js' },
      './package.json': './package.json',
    },
    types: './dist/index.d.ts',
    files: ['dist', 'README.md'],
    scripts: {
      build: 'tsc -p tsconfig.build.json',
      typecheck: 'tsc --noEmit',
      test: 'tsc --noEmit && node --test "test/**/*.test.ts"',
      prepack: 'npm run build',
    },
    // Themis loads the plugin into its own process: the plugin uses the Themis that loads it, never a
    // copy of its own (two kernels' classes and registries would not match).
    peerDependencies: { 'themis-milter': themisRange },
    dependencies: { zod: TOOL_VERSIONS.zod },
    devDependencies: {
      '@types/node': TOOL_VERSIONS['@types/node'],
      node: TOOL_VERSIONS.node,
      'themis-milter': themisDevSpec,
      typescript: TOOL_VERSIONS.typescript,
    },
    // npm asks before running install scripts: `node`'s fetches the Node 24 binary the scripts run on.
    allowScripts: { node: true },
  };
  return JSON.stringify(pkg, null, 2) + '\n';
}

/** `tsconfig.json`: type-checks sources and tests as Node runs them (type stripping). */
export function tsconfig(): string {
  return (
    JSON.stringify(
      {
        compilerOptions: {
          target: 'es2023',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          lib: ['es2023'],
          types: ['node'],
          strict: true,
          // Node runs the .ts files as they are: only syntax it can strip.
          erasableSyntaxOnly: true,
          verbatimModuleSyntax: true,
          allowImportingTsExtensions: true,
          rewriteRelativeImportExtensions: true,
          skipLibCheck: true,
          noEmit: true,
        },
        include: ['src', 'test'],
      },
      null,
      2,
    ) + '\n'
  );
}

/** `tsconfig.build.json`: `src/` to JavaScript and declarations in `dist/` (what the tarball carries). */
export function tsconfigBuild(): string {
  return (
    JSON.stringify(
      {
        extends: './tsconfig.json',
        // The tarball carries dist/ only: the maps hold the sources they point at.
        compilerOptions: { noEmit: false, rootDir: 'src', outDir: 'dist', declaration: true, declarationMap: true, sourceMap: true, inlineSources: true },
        include: ['src'],
      },
      null,
      2,
    ) + '\n'
  );
}

/** `.gitignore`. */
export function gitignore(): string {
  return 'node_modules/\ndist/\n*.tgz\n';
}

/** `src/index.ts`: the plugin. */
export function pluginSource(input: TemplateInput): string {
  const { names, stages, description } = input;
  const T = names.typeName;
  const refuses = has(input, 'rcptTo');
  const tags = has(input, 'endOfMessage');
  const fieldProps: string[] = [];
  if (refuses) {
    fieldProps.push(
      '/** Recipients refused at RCPT: full addresses (`postmaster@example.net`) or whole domains (`@example.net`), case-insensitive. */',
      "refuse: z.array(z.string().regex(/^([^@\\s]+@[^@\\s]+|@[^@\\s]+)$/, 'expected user@domain or @domain')).default([]),",
      '/** The text of the 550 reply those recipients get. */',
      "text: z.string().min(1).default('Recipient refused by policy'),",
    );
  }
  if (tags) {
    fieldProps.push(
      '/** The header added to each accepted message; its value names the policies that matched. */',
      `header: z.string().regex(/^[!-9;-~]+$/, 'expected a header name (printable ASCII, no colon)').default(${q(names.header)}),`,
    );
  }
  if (fieldProps.length === 0) fieldProps.push('// The settings a policy gives this plugin: add them here, each with its default and a comment.');

  const hooks: string[] = [];
  for (const stage of stages) {
    if (stage === 'rcptTo') {
      hooks.push(
        [
          'rcptTo(ctx, rcpt) {',
          '  // Every policy that matched this message and sets the field, each with its validated settings.',
          '  for (const policy of ctx.policies) {',
          '    if (!listed(rcpt.address, policy.config.refuse)) continue;',
          '    refused.inc({ policy: policy.name });',
          "    if (options.logRefused) log.info({ policy: policy.name, recipient: rcpt.address }, 'recipient refused');",
          '    // A reject at RCPT refuses this recipient only; the message goes on to the others.',
          "    return { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: policy.config.text }, reason: `listed by policy ${policy.name}` };",
          '  }',
          '  return undefined;',
          '},',
        ].join('\n'),
      );
    } else if (stage === 'endOfMessage') {
      hooks.push(
        [
          'endOfMessage(ctx) {',
          '  // One header per header name, naming every policy that asked for it. Modifications are sent to',
          '  // the MTA only if the message is accepted.',
          '  const byHeader = new Map<string, string[]>();',
          '  for (const policy of ctx.policies) byHeader.set(policy.config.header, [...(byHeader.get(policy.config.header) ?? []), policy.name]);',
          "  for (const [header, policies] of byHeader) ctx.message!.addHeader(header, policies.join(', '));",
          '  return undefined;',
          '},',
        ].join('\n'),
      );
    } else {
      hooks.push([`${HOOK_SIGNATURE[stage]} {`, indent(SKELETON[stage], '  '), '},'].join('\n'));
    }
  }

  // setup's context: the plugin's validated options, its logger, its metrics (and store, http, expose…)
  const setupParam = refuses ? '{ options, log, metrics }' : '';

  return `/**
 * ${names.packageName}: ${description}
 *
 * Policies switch it on with the \`${names.field}\` field; see README.md.
 * @module
 */
import { createRequire } from 'node:module';
import { z } from 'zod';
import { definePlugin } from 'themis-milter';

/** The package's version, which is the plugin's too: one place to change it (read from src/ and dist/ alike). */
const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

/** The policy field this plugin claims: \`${names.field}: { … }\` in a policy turns it on for the mail that policy matches. */
export const ${T}Field = z.strictObject({
${indent(fieldProps, '  ')}
});

/** The field's settings as the hooks see them (defaults filled in). */
export type ${T}Config = z.output<typeof ${T}Field>;

/** The plugin's options: \`{ plugin: '${names.packageName}', options: { … } }\` in themis.config.ts. */
export const ${T}Options = z.strictObject({
${refuses ? "  /** Also log each refused recipient at info level (addresses are personal data: off by default). */\n  logRefused: z.boolean().default(false),\n" : '  // Settings that hold for every policy (where a server is, a timeout) go here.\n'}});
${
  refuses
    ? `
/** Whether \`address\` is one of \`entries\` (an address, or \`@domain\` for a whole domain). */
export function listed(address: string, entries: readonly string[]): boolean {
  const lower = address.toLowerCase();
  const domain = lower.slice(lower.lastIndexOf('@'));
  return entries.some((entry) => {
    const e = entry.toLowerCase();
    return e.startsWith('@') ? e === domain : e === lower;
  });
}
`
    : ''
}
/** The plugin: load it by package name (\`plugins: ['${names.packageName}']\`) or import it. */
export default definePlugin({
  name: ${q(names.pluginName)},
  version,
  // The kernel API this plugin is written against: checked when Themis loads it.
  kernel: '^1',
  claims: { field: ${q(names.field)}, schema: ${T}Field },
  options: ${T}Options,
  // Higher runs first and wins when plugins disagree at the same stage.
  priority: 50,
  // If a hook throws, rejects or misses its deadline: leave this plugin out and let the others decide
  // (fail open). 'tempfail' makes the client retry instead; 'accept' would accept the whole message
  // over every other plugin.
  onError: 'continue',${tags ? "\n  // Postfix is asked only for the modifications some plugin declares.\n  modifies: ['headers']," : ''}
  setup(${setupParam}) {${refuses ? "\n    const refused = metrics.counter({ name: 'refused_total', help: 'Recipients refused', labelNames: ['policy'] as const });" : ''}
    return {
${indent(hooks.join('\n').split('\n'), '      ')}
    };
  },
});
`;
}

/** `test/plugin.test.ts`: the plugin's tests on `themis-milter/testing`. */
export function pluginTest(input: TemplateInput): string {
  const { names } = input;
  const refuses = has(input, 'rcptTo');
  const tags = has(input, 'endOfMessage');
  const f = names.field;
  const tests: string[] = [];
  if (refuses) {
    tests.push(`  it('refuses the listed recipients at RCPT, one at a time, and delivers to the others', async () => {
    const t = await createTestKernel({ plugins: [plugin], policies: [{ name: 'inbound', ${f}: { refuse: ['@blocked.example', 'boss@example.com'] } }] });
    const r = await t.message({ from: 'sender@example.org', rcpt: ['alice@example.net', 'x@BLOCKED.example', 'Boss@example.com'] });
    assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'reject', 'reject']);
    assert.deepEqual(r.recipients[1].reply, { code: 550, enhanced: '5.7.1', text: 'Recipient refused by policy' });
    assert.equal(r.decision.action, 'accept');
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_${names.pluginName.replace(/-/g, '_')}_refused_total'), /policy="inbound"\\} 2/);
    await t.close();
  });`);
  }
  if (tags) {
    tests.push(`  it('adds its header to an accepted message, naming the policies that matched', async () => {
    const t = await createTestKernel({ plugins: [plugin], policies: [{ name: 'inbound', ${f}: {} }, { name: 'tagged', ${f}: { header: 'X-Tagged' } }] });
    const r = await t.message({ from: 'sender@example.org', rcpt: ['alice@example.net'], headers: { Subject: 'hello' } });
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual(r.modifications, [
      { type: 'addHeader', name: ${q(names.header)}, value: 'inbound' },
      { type: 'addHeader', name: 'X-Tagged', value: 'tagged' },
    ]);
    await t.close();
  });`);
  }
  tests.push(`  it('does nothing where no policy sets ${f}', async () => {
    const t = await createTestKernel({ plugins: [plugin], policies: [{ name: 'other' }] });
    const r = await t.message({ from: 'sender@example.org', rcpt: ['alice@example.net'], headers: { Subject: 'hello' }, body: 'Hi.\\r\\n' });
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual(r.recipients.map((x) => x.action), ['continue']);
    assert.deepEqual(r.modifications, []);
    await t.close();
  });`);
  tests.push(`  it('refuses a policy whose ${f} field is wrong, with a coded error naming the field', async () => {
    await assert.rejects(
      createTestKernel({ plugins: [plugin], policies: [{ name: 'broken', ${f}: { unknown: true } as never }] }),
      (err: unknown) => problemsOf(err).some((p) => p.code === 'THEMIS_ERR_POLICY_FIELD' && p.message.includes('${f}')),
    );
  });`);
  return `// ${names.packageName}'s tests: the plugin in a real kernel with the in-memory store, no MTA needed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestKernel, problemsOf } from 'themis-milter/testing';
import plugin from '../src/index.ts';

describe(${q(names.packageName)}, () => {
${tests.join('\n\n')}
});
`;
}

/** `README.md`: install, configure, the field, develop, publish. */
export function readme(input: TemplateInput): string {
  const { names, stages, description } = input;
  const refuses = has(input, 'rcptTo');
  const tags = has(input, 'endOfMessage');
  const rows: string[] = [];
  if (refuses) {
    rows.push('| `refuse` | `[]` | recipients refused at RCPT with 550 5.7.1: full addresses or `@domain`s, case-insensitive |');
    rows.push("| `text` | `'Recipient refused by policy'` | the text of that reply |");
  }
  if (tags) rows.push(`| \`header\` | \`'${names.header}'\` | the header added to each accepted message, naming the policies that matched |`);
  const example: string[] = [];
  if (refuses) example.push("refuse: ['@blocked.example']");
  if (tags) example.push(`header: '${names.header}'`);
  return `# ${names.packageName}

${description}

A [Themis](https://www.npmjs.com/package/themis-milter) plugin. It taps ${stages.map((s) => `\`${s}\``).join(', ')}.

## Install

\`\`\`sh
npm install ${names.packageName}
\`\`\`

in the directory of your \`themis.config.ts\` (or beside a global Themis: \`npm install -g ${names.packageName}\`).

## Configure

\`\`\`ts
import { defineConfig } from 'themis-milter';

export default defineConfig({
  plugins: [${refuses ? `{ plugin: '${names.packageName}', options: { logRefused: false } }` : `'${names.packageName}'`}],
  policies: [
    { name: 'inbound', ${names.field}: { ${example.join(', ')} } },
  ],
});
\`\`\`

The plugin acts on the mail of every policy that sets \`${names.field}\`.

### The \`${names.field}\` field

${rows.length > 0 ? `| setting | default | meaning |\n|---|---|---|\n${rows.join('\n')}` : 'No settings yet: `' + names.field + ': {}` switches the plugin on.'}

A wrong value is refused when Themis loads the configuration (\`themis config check\`), with
\`THEMIS_ERR_POLICY_FIELD\` naming the policy and the field.
${
  refuses
    ? `
### Options

| option | default | meaning |
|---|---|---|
| \`logRefused\` | \`false\` | also log each refused recipient at info level |

### Metrics

\`themis_plugin_${names.pluginName.replace(/-/g, '_')}_refused_total{policy}\`: recipients refused.
`
    : ''
}
## Develop

\`\`\`sh
npm install
npm test          # type-check, then the tests in test/ on Node 24 (the node devDependency)
npm run build     # src/ → dist/ (JavaScript and declarations)
npm pack          # the tarball users install: dist/, README.md, package.json
\`\`\`

The tests run the plugin in a real kernel with the in-memory store through \`themis-milter/testing\`:
\`createTestKernel\`, \`useTestClock\` for time, \`problemsOf\` for refused configurations.

## Publish

\`npm publish\` builds first (\`prepack\`). Themis loads only the compiled JavaScript in \`dist/\`; \`themis-milter\`
is a peer dependency, so the plugin always runs on the Themis that loads it.
`;
}
