import { t } from "elysia";
import type { AuditEventRow } from "../../db/schema";
import type { RequestMeta } from "../../http/request-meta";
import { SingleLine } from "../../http/text";

/** The actions this server records (the contract's list, plus `passkey.clone_detected`). */
export const AUDIT_ACTIONS = [
  "login.succeeded",
  "login.failed",
  "logout",
  "session.revoked",
  "refresh.reuse_detected",
  "password.changed",
  "password.reset",
  "email.verified",
  "email.changed",
  "mfa.enabled",
  "mfa.disabled",
  "mfa.failed",
  "passkey.added",
  "passkey.removed",
  "passkey.clone_detected",
  "user.created",
  "user.updated",
  "user.deleted",
  "file.deleted",
  "file.downloaded",
  "share_link.created",
  "share_link.revoked",
  "malware.detected",
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];
export type AuditTargetType = "user" | "session" | "passkey" | "file" | "share_link";

/** One event to record. `details` must never hold a secret (keys naming one are masked anyway). */
export interface AuditEntry {
  action: AuditAction;
  /** Who did it: the signed-in user, or null (an anonymous login attempt, a reset link). */
  actorId: string | null;
  target?: { type: AuditTargetType; id: string };
  details?: Record<string, unknown>;
  meta: RequestMeta;
}

const Uuid = t.String({ format: "uuid", error: "Must be a UUID" });
const DateTime = t.String({ format: "date-time", error: "Must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z" });

export const AuditEvent = t.Object(
  {
    id: t.String({ format: "uuid" }),
    at: t.String({ format: "date-time" }),
    action: t.String({ examples: ["login.succeeded"] }),
    actor_id: t.Nullable(t.String({ format: "uuid" })),
    target_type: t.Nullable(t.String({ examples: ["user"] })),
    target_id: t.Nullable(t.String({ format: "uuid" })),
    ip: t.Nullable(t.String()),
    user_agent: t.Nullable(t.String()),
    request_id: t.Nullable(t.String()),
    details: t.Record(t.String(), t.Unknown(), { description: "What changed (e.g. `before`/`after`); never a secret" }),
  },
  { title: "AuditEvent", description: "A security event" },
);
export type PublicAuditEvent = typeof AuditEvent.static;

const AuditFilters = t.Object({
  actor_id: t.Optional(Uuid),
  target_id: t.Optional(Uuid),
  action: t.Optional(SingleLine({ maxLength: 64, examples: ["login.failed"] })),
  since: t.Optional(DateTime),
  until: t.Optional(DateTime),
});
export type AuditFilter = typeof AuditFilters.static;
export const AuditExportQuery = AuditFilters;
export const AuditListQuery = t.Composite([
  AuditFilters,
  t.Object({
    offset: t.Integer({ minimum: 0, maximum: 2_147_483_647, default: 0 }),
    limit: t.Integer({ minimum: 1, maximum: 100, default: 20 }),
  }),
]);
export type AuditListParams = typeof AuditListQuery.static;

export const AuditList = t.Object(
  { items: t.Array(AuditEvent), total: t.Integer(), offset: t.Integer(), limit: t.Integer() },
  { title: "AuditList", description: "One page of events, newest first, with the total of all matches" },
);

export function toPublicAuditEvent(row: AuditEventRow): PublicAuditEvent {
  return {
    id: row.id,
    at: row.at.toISOString(),
    action: row.action,
    actor_id: row.actorId,
    target_type: row.targetType,
    target_id: row.targetId,
    ip: row.ip,
    user_agent: row.userAgent,
    request_id: row.requestId,
    details: row.details,
  };
}
