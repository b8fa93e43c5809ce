import { Command } from 'commander';
import { instancePath, mutate } from './common.js';

/** `vmkit publish INSTANCE --name IMAGE`: a stopped instance becomes an image. */
export function publishCommand(): Command {
  const cmd = new Command('publish')
    .description('Publish a stopped instance as a new image (its disk is flattened)')
    .argument('<instance>', 'instance to publish (must be stopped)')
    .requiredOption('-n, --name <image>', 'name of the new image')
    .option('-d, --description <text>', 'description of the image')
    .option('--image-version <version>', 'version string (default: a timestamp)')
    .option('--no-wait', 'return once the operation is accepted, print its id')
    .action(async (instance: string, opts: { name: string; description?: string; imageVersion?: string; wait: boolean }, self: Command) => {
      const body: Record<string, unknown> = { name: opts.name };
      if (opts.description) body.description = opts.description;
      if (opts.imageVersion) body.version = opts.imageVersion;
      await mutate(self, 'POST', instancePath(instance, 'publish'), body, {
        wait: opts.wait,
        done: `Image ${opts.name} published from ${instance}.`,
      });
    });
  cmd.addHelpText(
    'after',
    `
Examples:
  vmkit stop app1 && vmkit publish app1 --name app-v2 --description "app with config"
  vmkit launch app-v2 app2`,
  );
  return cmd;
}
