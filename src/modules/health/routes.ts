import { Elysia, t } from "elysia";
import type { HealthService } from "./service";

const HealthReport = t.Object(
  {
    status: t.Union([t.Literal("ok"), t.Literal("degraded")]),
    version: t.String(),
    uptime_seconds: t.Integer(),
    checks: t.Object({
      database: t.Object({ ok: t.Boolean(), latency_ms: t.Number() }),
      cache: t.Object({ ok: t.Boolean(), backend: t.Union([t.Literal("redis"), t.Literal("memory")]) }),
      antivirus: t.Optional(
        t.Object(
          { ok: t.Boolean(), latency_ms: t.Number() },
          { description: "clamd answering PING; present when CLAMAV_URL is set" },
        ),
      ),
    }),
  },
  { title: "HealthReport", description: "Status of the service and its dependencies" },
);

const Readiness = t.Object(
  {
    status: t.Union([t.Literal("ready"), t.Literal("not_ready")]),
    checks: t.Object({
      database: t.Boolean(),
      migrations: t.Boolean(),
      antivirus: t.Optional(t.Boolean({ description: "Present when CLAMAV_URL is set and CLAMAV_FAIL_OPEN is false" })),
    }),
  },
  { title: "Readiness", description: "Whether the instance can serve" },
);

export function healthRoutes(health: HealthService) {
  return new Elysia({ prefix: "/health", tags: ["health"] })
    .get(
      "",
      async ({ set }) => {
        const report = await health.report();
        // The database is essential: without it the instance cannot serve, so say so with 503.
        if (!report.checks.database.ok) set.status = 503;
        return report;
      },
      {
        response: {
          200: HealthReport,
          503: t.Composite([HealthReport], { description: "The database is unreachable" }),
        },
        detail: {
          operationId: "health_report",
          summary: "Service health",
          description:
            "Database, cache and (with CLAMAV_URL) virus-scanner status. `degraded` when the cache or the scanner is unreachable; 503 when the database is.",
        },
      },
    )
    .get("/live", () => ({ status: "ok" as const }), {
      response: { 200: t.Object({ status: t.Literal("ok") }, { description: "The process is up" }) },
      detail: { operationId: "health_live", summary: "Liveness: the process is up" },
    })
    .get(
      "/ready",
      async ({ set }) => {
        const readiness = await health.readiness();
        if (readiness.status !== "ready") set.status = 503;
        return readiness;
      },
      {
        response: { 200: Readiness, 503: t.Composite([Readiness], { description: "Not ready" }) },
        detail: { operationId: "health_ready", summary: "Readiness: database reachable and migrations applied" },
      },
    );
}
