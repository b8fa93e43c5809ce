import type { ApiContext } from './context.js';
import { buildApi } from './server.js';

/**
 * The OpenAPI document is generated from the route schemas (never written by hand) and
 * committed as doc/openapi.json; `npm run openapi` regenerates it and a test fails when the
 * committed file is stale.
 */
export async function generateOpenApi(): Promise<string> {
  const unused = (): never => {
    throw new Error('not used while generating the OpenAPI document');
  };
  // Closing the app stops the repository server (an onClose hook): the one call made here.
  const services = { images: { stopServing: async () => undefined } };
  const ctx = new Proxy({} as ApiContext, { get: (_target, prop) => (prop === 'services' ? services : unused()) });
  const app = await buildApi(ctx);
  await app.ready();
  const doc = JSON.stringify(app.swagger(), null, 2) + '\n';
  await app.close();
  return doc;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(await generateOpenApi());
}
