import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from './enum.js';

/** The `error` object of an error answer and of a failed operation (codes: src/errors.ts). */
export const ErrorObjectSchema = Type.Object({
  code: Type.String(),
  message: Type.String(),
  hint: Type.Optional(Type.String()),
  details: Type.Optional(Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true })),
});
export type ErrorObject = Static<typeof ErrorObjectSchema>;

export const OPERATION_STATUSES = ['pending', 'running', 'success', 'failure', 'cancelled'] as const;
export type OperationStatus = (typeof OPERATION_STATUSES)[number];

export const OperationProgressSchema = Type.Object({
  phase: Type.String(),
  percent: Type.Optional(Type.Number()),
  bytesDone: Type.Optional(Type.Number()),
  bytesTotal: Type.Optional(Type.Number()),
  // Live migration: pages the guest dirties per second, QEMU's expected downtime, the measured one.
  dirtyRatePagesPerSec: Type.Optional(Type.Number()),
  expectedDowntimeMs: Type.Optional(Type.Number()),
  downtimeMs: Type.Optional(Type.Number()),
});
export type OperationProgress = Static<typeof OperationProgressSchema>;

/** Long work (202 + /1.0/operations/{id}): progress, wait and cancel. */
export const OperationSchema = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  description: Type.String(),
  target: Type.Optional(Type.String()),
  status: StringEnum(OPERATION_STATUSES),
  progress: OperationProgressSchema,
  mayCancel: Type.Boolean(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(ErrorObjectSchema),
});
export type Operation = Static<typeof OperationSchema>;

/** One message of GET /1.0/events (Server-Sent Events). */
export const VmkitEventSchema = Type.Object({
  type: StringEnum(['lifecycle', 'operation', 'log', 'cluster']),
  timestamp: Type.String(),
  // e.g. instance-started, instance-stopped, instance-crashed, operation-updated.
  action: Type.String(),
  target: Type.Optional(Type.String()),
  metadata: Type.Optional(Type.Unknown()),
});
export type VmkitEvent = Static<typeof VmkitEventSchema>;
