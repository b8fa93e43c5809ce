import { Kind, Type, TypeRegistry, type TUnsafe } from '@sinclair/typebox';

// TypeBox's compiler checks a schema by its kind: these two kinds are checked here (the API
// validates request bodies with it; see src/api/validation.ts).
TypeRegistry.Set<{ enum: unknown[] }>('StringEnum', (schema, value) => typeof value === 'string' && schema.enum.includes(value));
TypeRegistry.Set<{ enum: unknown[] }>('NullableStringEnum', (schema, value) => value === null || (typeof value === 'string' && schema.enum.includes(value)));

/**
 * A string enum as OpenAPI 3.0 spells it (`{type: string, enum: […]}`): TypeBox's own
 * union of literals becomes `anyOf`/`const`, which the generated document and most
 * OpenAPI tools read worse.
 */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description?: string } = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ [Kind]: 'StringEnum', type: 'string', enum: [...values], ...options });
}

/** The same with `null` allowed (OpenAPI 3.0 has `nullable`, not a `null` type). */
export function NullableStringEnum<const T extends readonly string[]>(values: T): TUnsafe<T[number] | null> {
  return Type.Unsafe<T[number] | null>({ [Kind]: 'NullableStringEnum', type: 'string', enum: [...values], nullable: true });
}
