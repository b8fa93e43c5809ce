import { createContext, useContext, useState } from 'react';
import type { Operation } from './lib/types.js';

/** How pages report: an error now, or an operation whose failure should be shown when it ends. */
export interface Feedback {
  error(err: unknown): void;
  watch(op: Operation): void;
}

export const FeedbackContext = createContext<Feedback>({ error: () => undefined, watch: () => undefined });
export const useFeedback = () => useContext(FeedbackContext);

/**
 * One request of a form at a time: `busy` while `send`'s function runs, what it threw in
 * `error` (for an ErrorBox; `setError` clears it, or says what is wrong before sending).
 */
export function useRequest() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const send = async (fn: () => Promise<void>): Promise<void> => {
    setBusy(true);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, send };
}

/** Starts operations from buttons: `busy` until the daemon accepted one, which is then watched; a refusal is reported. */
export function useOperationStarter() {
  const fb = useFeedback();
  const [busy, setBusy] = useState(false);
  const run = async (start: () => Promise<Operation>): Promise<void> => {
    setBusy(true);
    try {
      fb.watch(await start());
    } catch (err) {
      fb.error(err);
    } finally {
      setBusy(false);
    }
  };
  return { busy, run };
}
