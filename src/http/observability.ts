import { Elysia } from "elysia";
import type { Logger } from "../platform/logger";

/** What is known of a request once its response has gone out. */
export interface RequestRecord {
  method: string;
  /** The route template (`/api/v1/users/:id`), never the raw path: no ids or query strings. */
  route: string;
  status: number;
  durationMs: number;
  requestId: string;
}

export type RequestObserver = (record: RequestRecord) => void;

/** One hook that times every request and hands the result to each observer (the access log, the metrics). */
export function observability(observers: RequestObserver[]) {
  // No observer (LOG_LEVEL above info, METRICS_ENABLED=false): no hooks at all, so requests pay nothing.
  if (observers.length === 0) return new Elysia({ name: "observability" });
  const started = new WeakMap<Request, number>();
  return new Elysia({ name: "observability" })
    .onRequest(({ request }) => {
      started.set(request, performance.now());
    })
    .onAfterResponse({ as: "global" }, ({ request, set, route, responseValue }) => {
      const start = started.get(request);
      // A route that returns a Response of its own (a download's 206 or 304) leaves `set.status` at 200.
      const status = responseValue instanceof Response ? responseValue.status : set.status;
      const record: RequestRecord = {
        method: request.method,
        route: route || "unmatched",
        status: typeof status === "number" ? status : 200,
        durationMs: start === undefined ? 0 : Math.round((performance.now() - start) * 100) / 100,
        requestId: String(set.headers["x-request-id"] ?? ""),
      };
      for (const observe of observers) observe(record);
    });
}

/** One JSON line per request; undefined when info is not logged, so the hook costs nothing. */
export function accessLog(logger: Logger): RequestObserver | undefined {
  if (!logger.enabled("info")) return undefined;
  return (record) =>
    logger.info("request", {
      method: record.method,
      route: record.route,
      status: record.status,
      duration_ms: record.durationMs,
      request_id: record.requestId,
    });
}
