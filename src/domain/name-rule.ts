/**
 * The name grammar alone, with no imports: the daemon (names.ts) and the web console's form
 * checks (web/src/lib/validate.ts) read the very same rule.
 */
export const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const NAME_MAX_LENGTH = 63;
