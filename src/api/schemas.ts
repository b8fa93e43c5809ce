/** The schemas routes name: they validate requests and generate doc/openapi.json. */
import { Type, type TSchema } from '@sinclair/typebox';
import { StringEnum } from '../wire/enum.js';
import { AsyncAnswerSchema, ErrorAnswerSchema, SyncAnswerSchema } from '../wire/envelope.js';
import { ImageViewSchema } from '../wire/image.js';
import { InstanceViewSchema, SnapshotSchema } from '../wire/instance.js';
import { NetworkViewSchema } from '../wire/network.js';
import { OperationSchema } from '../wire/operation.js';

// The resources' schemas come from src/wire/ (their TypeScript types are the same
// definitions); the API registers each once under an $id that routes reference.
export const operationSchema: TSchema = { $id: 'Operation', ...OperationSchema };
export const instanceSchema: TSchema = { $id: 'Instance', ...InstanceViewSchema };
export const imageSchema: TSchema = { $id: 'Image', ...ImageViewSchema };
export const snapshotSchema: TSchema = { $id: 'Snapshot', ...SnapshotSchema };
export const networkSchema: TSchema = { $id: 'Network', ...NetworkViewSchema };

export function syncResponse(metadata: object): object {
  return SyncAnswerSchema(Type.Unsafe(metadata));
}

export const asyncResponse = AsyncAnswerSchema(Type.Unsafe({ $ref: 'Operation#' }));

export const errorResponse = ErrorAnswerSchema;

// Path parameters and query strings: TypeBox too (src/api/validation.ts checks every part
// of a request with TypeBox's compiler). The request bodies are in src/wire/requests.ts.
export const nameParam = Type.Object({ name: Type.String() });

export const snapshotParams = Type.Object({ name: Type.String(), snapshot: Type.String() });

/** `/…/forwards/{port}` of an instance. */
export const portParams = Type.Object({ name: Type.String(), port: Type.Integer() });

/** `?proto=tcp|udp`. */
export const protoField = StringEnum(['tcp', 'udp']);
