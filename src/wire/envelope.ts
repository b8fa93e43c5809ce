import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { StringEnum } from './enum.js';
import { ErrorObjectSchema, OperationSchema, type Operation } from './operation.js';

// The three answer shapes of the API (Incus-style, doc/api.md): every answer is one of them.

/** `{type: "sync"}` around `metadata` (200/201). */
export function SyncAnswerSchema<T extends TSchema>(metadata: T) {
  return Type.Object({ type: StringEnum(['sync']), status_code: Type.Integer(), metadata });
}
export interface SyncAnswer<T = unknown> {
  type: 'sync';
  status_code: number;
  metadata: T;
}

/**
 * 202: long work started; `operation` is its URL. `metadata` is a schema reference where
 * the API registers Operation once (its $id), the schema itself elsewhere.
 */
export function AsyncAnswerSchema(operation: TSchema = OperationSchema) {
  return Type.Object({ type: StringEnum(['async']), status_code: Type.Integer(), operation: Type.String(), metadata: operation });
}
export interface AsyncAnswer {
  type: 'async';
  status_code: number;
  operation: string;
  metadata: Operation;
}

/** 4xx/5xx: a stable code, a message and a hint (src/errors.ts, doc/errors.md). */
export const ErrorAnswerSchema = Type.Object({ type: StringEnum(['error']), status_code: Type.Integer(), error: ErrorObjectSchema });
export type ErrorAnswer = Static<typeof ErrorAnswerSchema>;

export type Answer<T = unknown> = SyncAnswer<T> | AsyncAnswer | ErrorAnswer;
