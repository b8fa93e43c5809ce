import { Type, type TUnsafe } from '@sinclair/typebox';

/**
 * A string enum as OpenAPI 3.0 spells it (`{type: string, enum: […]}`): TypeBox's own
 * union of literals becomes `anyOf`/`const`, which the generated document and most
 * OpenAPI tools read worse.
 */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description?: string } = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** The same with `null` allowed (OpenAPI 3.0 has `nullable`, not a `null` type). */
export function NullableStringEnum<const T extends readonly string[]>(values: T): TUnsafe<T[number] | null> {
  return Type.Unsafe<T[number] | null>({ type: 'string', enum: [...values], nullable: true });
}
