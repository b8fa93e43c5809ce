import { ERROR_CODES, VmkitError, type ErrorCode } from '../errors.js';
import type { AsyncAnswer, Operation, SyncAnswer } from '../wire/types.js';
import type { RawResponse } from './transport.js';

/** The two answers callers get back; error answers are thrown (doc/api.md). */
export type ApiAnswer = SyncAnswer | AsyncAnswer;

/** True once an operation can no longer change. */
export function isFinished(op: Operation): boolean {
  return op.status === 'success' || op.status === 'failure' || op.status === 'cancelled';
}

/** The error a failed operation carries, as a VmkitError. */
export function operationError(op: Operation): VmkitError {
  const e = op.error ?? { code: 'VMKIT_INTERNAL', message: `${op.description} failed.` };
  return toVmkitError(e.code, e.message, e.hint);
}

/**
 * Rebuilds a VmkitError from the wire. A code this client does not know (newer daemon) keeps
 * the HTTP status and is kept in details.code so it can still be shown.
 */
export function toVmkitError(code: string, message: string, hint?: string, status?: number): VmkitError {
  if (code in ERROR_CODES) return new VmkitError(code as ErrorCode, message, { hint, status });
  const fallback: ErrorCode = status === undefined || status >= 500 ? 'VMKIT_INTERNAL' : 'VMKIT_BAD_REQUEST';
  return new VmkitError(fallback, message, { hint, status, details: { code } });
}

function jsonOf(res: RawResponse): { text: string; json: unknown } {
  const text = res.body.toString('utf8');
  try {
    return { text, json: text === '' ? undefined : JSON.parse(text) };
  } catch {
    return { text, json: undefined };
  }
}

const asRecord = (v: unknown): Record<string, unknown> => (typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {});

/**
 * The error of an error answer, or of any HTTP failure that is not one (a proxy's 502, a
 * plain 401): its code, message and hint when the body has them, else from the status.
 */
export function errorOfAnswer(res: RawResponse): VmkitError {
  const { text, json } = jsonOf(res);
  const obj = asRecord(json);
  const err = asRecord(obj.error);
  const status = typeof obj.status_code === 'number' ? obj.status_code : res.status;
  const message =
    typeof err.message === 'string'
      ? err.message
      : typeof obj.message === 'string'
        ? obj.message
        : `The daemon answered HTTP ${res.status}${text && json === undefined ? `: ${text.slice(0, 200)}` : '.'}`;
  const hint = typeof err.hint === 'string' ? err.hint : status === 401 ? "Pass the daemon's token with --token or VMKIT_TOKEN." : undefined;
  const code = typeof err.code === 'string' ? err.code : statusCode(status);
  return toVmkitError(code, message, hint, status);
}

/**
 * Turns a raw response into an answer envelope. Error answers are thrown, as `errorOf` makes
 * them (by default errorOfAnswer); anything that is not an envelope is VMKIT_INTERNAL.
 */
export function parseAnswer(res: RawResponse, errorOf: (res: RawResponse) => VmkitError = errorOfAnswer, errorStatus = 400): ApiAnswer {
  const obj = asRecord(jsonOf(res).json);
  if (res.status >= errorStatus || obj.type === 'error') throw errorOf(res);
  if (obj.type === 'async') {
    return { type: 'async', status_code: res.status, operation: String(obj.operation ?? ''), metadata: obj.metadata as Operation };
  }
  if (obj.type === 'sync') return { type: 'sync', status_code: res.status, metadata: obj.metadata };
  throw new VmkitError('VMKIT_INTERNAL', `The daemon answered something that is not a vmkit API answer (HTTP ${res.status}).`, {
    hint: 'Check that --remote / VMKIT_DIR point at a vmkit daemon of a compatible version.',
  });
}

function statusCode(status: number): string {
  if (status === 401) return 'VMKIT_UNAUTHORIZED';
  if (status === 404) return 'VMKIT_NOT_FOUND';
  if (status >= 400 && status < 500) return 'VMKIT_BAD_REQUEST';
  return 'VMKIT_INTERNAL';
}
