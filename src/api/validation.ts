import { Kind, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import type { FastifySchemaCompiler } from 'fastify';

/**
 * Fastify's validator: every request schema of a route (body, params, querystring) is a
 * TypeBox schema — the bodies those of src/wire/requests.ts — checked by TypeBox's compiler,
 * the same schema @fastify/swagger writes into doc/openapi.json. Params and query strings
 * arrive as text: they are converted to the schema's numbers and booleans first; a body is
 * taken as sent (a number sent as a string is an error). A plain JSON schema on a route is a
 * mistake found when the API is built, not a route left unchecked.
 */
export const typeboxValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart, method, url }) => {
  if (!(Kind in schema)) {
    throw new Error(`${method} ${url}: the ${httpPart} schema is not a TypeBox schema (define it with Type.* or in src/wire/requests.ts)`);
  }
  const check = TypeCompiler.Compile(schema);
  return (input: unknown) => {
    const value = httpPart === 'body' ? input : Value.Convert(schema, input);
    if (check.Check(value)) return { value };
    const part = httpPart === 'querystring' ? 'query' : (httpPart ?? 'request');
    // The first problem of each field (TypeBox may report a missing field twice), at most three.
    const byPath = new Map<string, string>();
    for (const e of check.Errors(value)) if (!byPath.has(e.path)) byPath.set(e.path, `${part}${e.path} ${describe(e.message, e.schema)}`);
    const problems = [...byPath.values()].slice(0, 3);
    const error = Object.assign(new Error(problems.join('; ')), { validation: problems, statusCode: 400 });
    return { error };
  };
};

/** TypeBox says "Expected kind 'StringEnum'" for an enum of its own kinds: name the values. */
function describe(message: string, schema: TSchema): string {
  if (message === 'Expected required property') return 'is required';
  const values = (schema as { enum?: unknown[] }).enum;
  return Array.isArray(values) ? `must be one of ${values.join(', ')}` : message.charAt(0).toLowerCase() + message.slice(1);
}
