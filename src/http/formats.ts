// Imported first on purpose: @elysiajs/openapi replaces TypeBox's string formats when it loads.
import "@elysiajs/openapi";
import { FormatRegistry } from "@sinclair/typebox";
import { fullFormats } from "elysia/type-system/format";

// @elysiajs/openapi's formats build a valibot/zod schema on every check, which made each validated
// request several times slower. Put Elysia's own (regex) checks back; the generator does not need them.
for (const [name, check] of Object.entries(fullFormats)) {
  if (check instanceof RegExp) FormatRegistry.Set(name, (value) => check.test(value));
  else if (typeof check === "function") FormatRegistry.Set(name, check as (value: string) => boolean);
}

// Plain UUIDs only: the stock check also takes `urn:uuid:…`, which Postgres then refuses (a 500).
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string) => UUID.test(value);
FormatRegistry.Set("uuid", isUuid);

const DATE_TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,9})?(Z|[+-](\d\d):(\d\d))$/i;

/**
 * RFC 3339 date-times that both JavaScript and Postgres represent exactly: no leap second (`:60`),
 * no year 0000, no February 30th, and an offset with minutes (`+05:00`, not `+05`).
 */
function isDateTime(value: string): boolean {
  const match = DATE_TIME.exec(value);
  if (!match) return false;
  const [year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0] = match.slice(1, 7).map(Number);
  const [offsetHours, offsetMinutes] = [Number(match[9] ?? 0), Number(match[10] ?? 0)];
  if (year < 1 || hour > 23 || minute > 59 || second > 59 || offsetHours > 23 || offsetMinutes > 59) return false;
  const calendar = new Date(Date.UTC(2000, month - 1, day));
  // The offset can carry the instant out of the years Postgres accepts here (9999-12-31T23:00:00-01:00).
  const utcYear = new Date(Date.parse(value)).getUTCFullYear();
  return month >= 1 && month <= 12 && calendar.getUTCDate() === day && utcYear >= 1 && utcYear <= 9999;
}
FormatRegistry.Set("date-time", isDateTime);
