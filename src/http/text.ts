import type { StringOptions } from "@sinclair/typebox";
import { t } from "elysia";

// C0 controls and DEL: a NUL makes Postgres refuse the text (a 500), the others hide in logs and UIs.
const NO_CONTROLS = "^[^\\u0000-\\u001f\\u007f]*$";
// The same, but tab, newline and carriage return are fine in multi-line text and passwords.
export const MULTI_LINE_CHARS = "[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]";

const limitMessage = (options: StringOptions, what: string) =>
  options.maxLength ? `At most ${options.maxLength} characters, ${what}` : `Text ${what}`;

/** A text field or query value on one line: no control characters at all. */
export const SingleLine = (options: StringOptions = {}) =>
  t.String({ pattern: NO_CONTROLS, error: limitMessage(options, "with no control characters"), ...options });

/** Multi-line text (a bio): tab and newlines allowed, other control characters not. */
export const MultiLine = (options: StringOptions = {}) =>
  t.String({
    pattern: `^${MULTI_LINE_CHARS}*$`,
    error: limitMessage(options, "with no control characters but tab and newline"),
    ...options,
  });
