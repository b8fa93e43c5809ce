/** The `vmkit` entry point (bin/vmkit.js imports this); all logic lives in program.ts. */
import { run } from './program.js';

process.exitCode = await run(process.argv);
