import { createHash, timingSafeEqual } from "node:crypto";
import { Elysia, t } from "elysia";
import type { Metrics } from "../platform/metrics";
import { errorResponses, errors } from "./errors";

const digest = (value: string) => createHash("sha256").update(value).digest();

/**
 * GET /metrics in Prometheus text format. With `token` (METRICS_TOKEN) set, only a request bearing it
 * gets them; compared in constant time (over digests, so the length is not told either).
 */
export function metricsRoute(metrics: Metrics, token: string | undefined) {
  const expected = token === undefined ? undefined : digest(token);
  return new Elysia({ name: "metrics", tags: ["health"] }).get(
    "/metrics",
    async ({ request, set }) => {
      if (expected) {
        const given = request.headers.get("authorization")?.match(/^Bearer\s+(\S+)\s*$/i)?.[1];
        if (given === undefined) throw errors.unauthenticated("AUTHENTICATION_REQUIRED", "Not authenticated");
        if (!timingSafeEqual(digest(given), expected)) {
          throw errors.unauthenticated("INVALID_TOKEN", "Invalid metrics token");
        }
      }
      const { body, contentType } = await metrics.render();
      set.headers["content-type"] = contentType;
      return body;
    },
    {
      response: {
        200: t.String({ description: "Prometheus text exposition format (version 0.0.4)" }),
        ...errorResponses(401),
      },
      detail: {
        operationId: "metrics_scrape",
        summary: "Prometheus metrics",
        description:
          "Requests by method, route template and status with their latency, the database pool, the cache, rate-limit refusals, uploads, sockets, events and process metrics. With `METRICS_TOKEN` set it requires that bearer token; without, it is open (keep it from the public at the proxy).",
        // Anonymous unless METRICS_TOKEN is set.
        security: [{}, { bearerAuth: [] }],
        "x-response-media-types": { 200: ["text/plain"] },
      },
    },
  );
}
