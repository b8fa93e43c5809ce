import { createContext, useContext } from 'react';
import type { Operation } from './lib/types.js';

/** How pages report: an error now, or an operation whose failure should be shown when it ends. */
export interface Feedback {
  error(err: unknown): void;
  watch(op: Operation): void;
}

export const FeedbackContext = createContext<Feedback>({ error: () => undefined, watch: () => undefined });
export const useFeedback = () => useContext(FeedbackContext);
