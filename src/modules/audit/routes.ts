import { Elysia, t } from "elysia";
import { type Authenticated, type AuthGuard, requirePermission, secured } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import { AuditExportQuery, AuditList, AuditListQuery } from "./model";
import type { AuditLog } from "./service";

export function auditRoutes<P extends Authenticated>(deps: { audit: AuditLog; guard: AuthGuard<P> }) {
  const { audit, guard } = deps;
  return new Elysia({ prefix: "/admin/audit", detail: { tags: ["audit"] } })
    .use(guard)
    .get("", ({ query }) => audit.list(query), {
      auth: requirePermission("audit:read"),
      query: AuditListQuery,
      response: { 200: AuditList, ...errorResponses(401, 403, 422) },
      detail: {
        ...secured(
          "audit_list",
          "List security events (admin)",
          "Newest first. Filters: `actor_id`, `target_id`, `action`, `since`, `until` (inclusive). Kept `AUDIT_RETENTION_DAYS` days.",
        ),
      },
    })
    .get(
      "/export",
      async ({ query }) =>
        new Response(await audit.export(query), { headers: { "content-type": "application/x-ndjson; charset=utf-8" } }),
      {
        auth: requirePermission("audit:read"),
        query: AuditExportQuery,
        response: {
          200: t.String({ description: "One AuditEvent per line (JSON lines), newest first, streamed" }),
          ...errorResponses(401, 403, 422),
        },
        detail: {
          ...secured(
            "audit_export",
            "Export security events (admin)",
            "Every event matching the filters, as JSON lines, with no row cap.",
          ),
          "x-response-media-types": { 200: ["application/x-ndjson"] },
        },
      },
    );
}
