import { clusterCommand } from './cluster.js';
import { migrateCommand } from './migrate.js';
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { EXIT_CODES_HELP, reportError } from './common.js';
import { cloneCommand } from './clone.js';
import { consoleCommand } from './console.js';
import { daemonCommand } from './daemon.js';
import { deleteCommand } from './delete.js';
import { diskCommand } from './disk.js';
import { execCommand, fileCommand, shellCommand } from './agent.js';
import { cloudInitCommand } from './cloud-init.js';
import { doctorCommand } from './doctor.js';
import { forwardCommand } from './forward.js';
import { imageCommand } from './image.js';
import { infoCommand } from './info.js';
import { createCommand, launchCommand } from './launch.js';
import { listCommand } from './list.js';
import { logsCommand } from './logs.js';
import { networkCommand } from './network.js';
import { nicCommand } from './nic.js';
import { operationCommand } from './operation.js';
import { publishCommand } from './publish.js';
import { repoCommand } from './repo.js';
import { remoteCommand } from './remote.js';
import { tokenCommand } from './token.js';
import { FORMATS, type Format } from './output.js';
import { snapshotCommand } from './snapshot.js';
import { applyCommand, stackCommand } from './stack.js';
import { stateCommands } from './state.js';
import { typesCommand } from './types.js';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Builds the whole command tree; separate from main.ts so tests can drive it. */
export function buildProgram(): Command {
  const program = new Command('vmkit')
    .description('Run real QEMU virtual machines: a thin client for the vmkit daemon')
    .version(version(), '-V, --version')
    .option('--dir <path>', 'data folder holding vmkit.sock (env VMKIT_DIR, default /var/lib/vmkit)')
    .option('--remote <name|url>', 'talk to a remote daemon (a name from "vmkit remote add", or https://HOST:PORT) instead of the socket (env VMKIT_REMOTE)')
    .option('--token-file <file>', "a file holding the token for --remote (env VMKIT_TOKEN_FILE; default: the remote's own)")
    .option('--token <token>', 'the token for --remote (env VMKIT_TOKEN; visible to other users in ps: prefer --token-file)')
    .addOption(new Option('--format <format>', 'output format (lists default to table, info to a key: value view)').choices(FORMATS))
    .showSuggestionAfterError(true);
  program.addCommand(launchCommand());
  program.addCommand(createCommand());
  program.addCommand(listCommand());
  program.addCommand(infoCommand());
  for (const c of stateCommands()) program.addCommand(c);
  program.addCommand(deleteCommand());
  program.addCommand(snapshotCommand());
  program.addCommand(forwardCommand());
  program.addCommand(networkCommand());
  program.addCommand(applyCommand());
  program.addCommand(stackCommand());
  program.addCommand(nicCommand());
  program.addCommand(diskCommand());
  program.addCommand(cloudInitCommand());
  program.addCommand(consoleCommand());
  program.addCommand(execCommand());
  program.addCommand(shellCommand());
  program.addCommand(fileCommand());
  program.addCommand(logsCommand());
  program.addCommand(imageCommand());
  program.addCommand(cloneCommand());
  program.addCommand(publishCommand());
  program.addCommand(repoCommand());
  program.addCommand(typesCommand());
  program.addCommand(doctorCommand());
  program.addCommand(operationCommand());
  program.addCommand(clusterCommand());
  program.addCommand(migrateCommand());
  program.addCommand(tokenCommand());
  program.addCommand(remoteCommand());
  program.addCommand(daemonCommand());
  program.addHelpText(
    'after',
    `
Examples:
  vmkit launch appliance web1 --forward 8080:80
  vmkit list
  vmkit console web1
  vmkit snapshot create web1 before-upgrade && vmkit snapshot restore web1 before-upgrade
  vmkit suspend web1 && vmkit start web1
  vmkit stop web1 && vmkit delete web1
  vmkit remote add lab https://host:8443 --token-file lab.token && vmkit --remote lab list

Errors are printed as "Error: …", "Hint: …" and "(code VMKIT_…)" on stderr
(as {"error":{code,message,hint}} with --format json).

${EXIT_CODES_HELP}`,
  );
  // Throw instead of process.exit() so run() owns the exit code (commander's own usage
  // errors carry exitCode 1, help/version 0).
  const walk = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(walk);
  };
  walk(program);
  return program;
}

function formatOf(program: Command, argv: string[]): Format | undefined {
  const fromOpts = program.opts<{ format?: Format }>().format;
  if (fromOpts) return fromOpts;
  const i = argv.indexOf('--format');
  const value = i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith('--format='))?.slice('--format='.length);
  return FORMATS.find((f) => f === value);
}

/** Runs the CLI and returns the process exit code (see EXIT_CODES_HELP); never throws. */
export async function run(argv: string[] = process.argv): Promise<number> {
  const program = buildProgram();
  const jsonErrors = formatOf(program, argv) === 'json';
  if (jsonErrors) {
    // commander's own usage errors are reported below as JSON instead of as text.
    const quiet = (c: Command): void => {
      c.configureOutput({ outputError: () => {} });
      c.commands.forEach(quiet);
    };
    quiet(program);
  }
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (jsonErrors && err.exitCode !== 0) {
        const message = err.message.replace(/^error: /, '');
        process.stderr.write(JSON.stringify({ error: { code: 'VMKIT_INVALID_ARGUMENT', message, hint: 'Run "vmkit --help" for usage.' } }) + '\n');
      }
      return err.exitCode;
    }
    return reportError(err, formatOf(program, argv));
  }
}
