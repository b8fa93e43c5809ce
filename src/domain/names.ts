import { vmkitError } from '../errors.js';
import { NAME_MAX_LENGTH, NAME_PATTERN } from './name-rule.js';

/**
 * One grammar for every name a user gives (instances, images, forwards' owners, snapshots,
 * networks): it becomes part of file paths, QEMU argv and later interface names, so it is
 * ASCII only — no path separators, shell metacharacters, whitespace or lookalike letters.
 * The pattern itself lives in name-rule.ts, which the web console imports too.
 */
export { NAME_MAX_LENGTH, NAME_PATTERN };

export function validateName(name: unknown, what = 'name'): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw vmkitError('VMKIT_NAME_INVALID', `The ${what} is empty.`, {
      hint: 'Use 1-63 characters: lowercase letters a-z, digits and "-", starting and ending with a letter or digit.',
    });
  }
  if (name.length > NAME_MAX_LENGTH) {
    throw vmkitError('VMKIT_NAME_INVALID', `The ${what} is ${name.length} characters long; at most ${NAME_MAX_LENGTH} are allowed.`, {
      hint: 'Choose a shorter name.',
    });
  }
  if (!NAME_PATTERN.test(name)) {
    const shown = JSON.stringify(name);
    throw vmkitError('VMKIT_NAME_INVALID', `The ${what} ${shown} is not valid.`, {
      hint: 'Use lowercase ASCII letters a-z, digits and "-" only, starting and ending with a letter or digit (no dots, slashes, spaces or non-ASCII characters).',
    });
  }
  return name;
}
