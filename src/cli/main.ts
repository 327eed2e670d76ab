/**
 * The `themis` command line.
 * @module
 */
import { parseArgs } from 'node:util';
import { check } from './check.ts';
import { packageVersion } from './version.ts';
import { envConfigPath } from './env.ts';

const USAGE = `Usage: themis <command> [options]      (themis <command> --help for each)

Commands:
  start          run the milter daemon (foreground; SIGHUP reloads, SIGTERM drains and stops)
  status         ask a running daemon what it serves: configuration hash, load time, connections
  config check   validate the configuration without starting
  config resync  make every daemon sharing the store reload its configuration
  policy list    the policies in evaluation order
  policy test    which policies apply to a sender, recipients and client, and why
  policy add|set|get|delete|history
                 live policies in the shared store, applied by every daemon at once
  group …, pool …  live groups and pools (themis group --help)
  export         the live policies, groups and pools as a themis.config.ts fragment
  plugins        per stage, which plugins run in which order with which priority
  check          send a test message (or a .eml file) to a running Themis or an in-process kernel
  init           write a commented starter themis.config.ts
  <plugin cmd>   commands of the configured plugins, e.g. themis limits (ratelimit)
                 (each accepts --config PATH, --redis-url URL, --redis-password PW)

Other:
  themis --version     print the version
  themis --help        print this text

Exit codes: 0 success, 1 failure, 2 bad usage (check: 3 when the message was refused).
`;

/** Exit codes: 0 success, 1 runtime failure, 2 bad usage. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    // What `<plugin cmd>` stands for here: the commands of the plugins this configuration loads.
    const lines = await (await import('./plugin-command.ts')).pluginCommandLines(envConfigPath());
    if (lines.length > 0) process.stdout.write(`\nCommands of the configured plugins:\n${lines.join('\n')}\n`);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  switch (command) {
    case 'start':
      return (await import('./start.ts')).start(rest);
    case 'check':
      return check(rest);
    case 'plugins':
      return plugins(rest);
    case 'config':
      return (await import('./config-cmd.ts')).configCommand(rest);
    case 'status':
      return (await import('./config-cmd.ts')).statusCommand(rest);
    case 'policy':
      return (await import('./policy.ts')).policyCommand(rest);
    case 'group':
    case 'pool':
      return (await import('./live-cmd.ts')).liveSetCommand(command, rest[0], rest.slice(1));
    case 'export':
      return (await import('./live-cmd.ts')).exportCommand(rest);
    case 'init':
      return (await import('./init.ts')).init(rest);
  }
  const fromPlugin = await (await import('./plugin-command.ts')).runPluginCommand(command, rest);
  if (fromPlugin !== undefined) return fromPlugin;
  process.stderr.write(`themis: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  return 2;
}

const PLUGINS_USAGE = `Usage: themis plugins [--config PATH] [--json]

Per stage, which plugins run in which order with which priority.
`;

async function plugins(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    process.stderr.write(`themis plugins: ${(err as Error).message}\n\n${PLUGINS_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(PLUGINS_USAGE);
    return 0;
  }
  const { Kernel, isThemisError } = await import('../kernel/index.ts');
  const { findConfig, loadConfig, kernelOptionsOf } = await import('../config.ts');
  try {
    const file = findConfig((values.config as string | undefined) ?? envConfigPath());
    const config = file ? await loadConfig(file) : undefined;
    const kernel = await Kernel.create(kernelOptionsOf(config));
    const table = kernel.describe();
    await kernel.shutdown();
    if (values.json) process.stdout.write(`${JSON.stringify({ config: file ?? null, stages: table }, null, 2)}\n`);
    else {
      process.stdout.write(`configuration: ${file ?? '(none)'}\n`);
      if (table.length === 0) process.stdout.write('no plugin taps any stage: every message is accepted\n');
      for (const row of table) process.stdout.write(`${row.stage.padEnd(14)} ${row.plugins.map((p) => `${p.name} (${p.priority})`).join(' → ')}\n`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`themis plugins: ${isThemisError(err) ? `${err.code}: ` : ''}${(err as Error).message}\n`);
    return 1;
  }
}
