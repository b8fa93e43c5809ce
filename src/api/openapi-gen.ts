import { buildApi, type ApiContext } from './server.js';

/**
 * The OpenAPI document is generated from the route schemas (never written by hand) and
 * committed as doc/openapi.json; `npm run openapi` regenerates it and a test fails when the
 * committed file is stale.
 */
export async function generateOpenApi(): Promise<string> {
  const unused = (): never => {
    throw new Error('not used while generating the OpenAPI document');
  };
  const ctx = new Proxy({} as ApiContext, { get: unused });
  const app = await buildApi(ctx);
  await app.ready();
  const doc = JSON.stringify(app.swagger(), null, 2) + '\n';
  await app.close();
  return doc;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(await generateOpenApi());
}
