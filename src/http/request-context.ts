import { Elysia } from "elysia";
import type { Logger } from "../platform/logger";
import { errors } from "./errors";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const DEFAULT_CSP = "default-src 'self'";
const JSON_BODY_LIMIT = 1024 * 1024;

/** Handlers still running; a client that hung up does not stop its handler, so shutdown waits on this. */
export interface InFlight {
  count: number;
}

export interface RequestContextOptions {
  logger: Logger;
  trustProxy: boolean;
  inFlight?: InFlight;
}

/** Reads a text body, refusing it with 413 as soon as it passes `limit` bytes (no Content-Length is trusted). */
async function readCapped(request: Request, limit: number): Promise<string> {
  if (!request.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.byteLength;
    if (size > limit) throw errors.tooLarge(limit);
    chunks.push(chunk);
  }
  return new TextDecoder("utf-8", { fatal: false }).decode(Buffer.concat(chunks));
}

export type ClientServer = { requestIP(request: Request): { address: string } | null } | null;

/** The path of a request URL, without the cost of parsing it whole. */
export function pathOf(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  const query = url.indexOf("?", start);
  return url.slice(start, query === -1 ? undefined : query);
}

/** The socket's peer, or with TRUST_PROXY the address our one trusted proxy appended last to X-Forwarded-For. */
export function clientIp(request: Request, server: ClientServer, trustProxy: boolean): string {
  if (trustProxy) {
    const forwarded = request.headers.get("x-forwarded-for");
    const last = forwarded?.split(",").at(-1)?.trim();
    if (last) return last;
  }
  return server?.requestIP(request)?.address ?? "unknown";
}

function isHttps(request: Request, trustProxy: boolean): boolean {
  if (request.url.startsWith("https:")) return true;
  return trustProxy && request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim() === "https";
}

/**
 * Per-request plumbing every response needs: X-Request-ID, security headers, capped body parsing
 * and one access-log line. Route templates (not raw paths) are logged, so
 * query strings and path secrets never reach the log.
 */
/** Generated ids: a random per-process prefix and a counter, unique across instances and far cheaper than a UUID each. */
function requestIds(): () => string {
  const prefix = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  let sequence = 0;
  return () => `${prefix}-${(sequence++).toString(36).padStart(6, "0")}`;
}

export function requestContext(options: RequestContextOptions) {
  const started = new WeakMap<Request, number>();
  const nextRequestId = requestIds();
  const accessLog = options.logger.enabled("info");
  return new Elysia({ name: "request-context" })
    .headers({
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
      "content-security-policy": DEFAULT_CSP,
    })
    .onRequest(({ request, set }) => {
      if (options.inFlight) options.inFlight.count++;
      if (accessLog) started.set(request, performance.now());
      const incoming = request.headers.get("x-request-id");
      set.headers["x-request-id"] = incoming && REQUEST_ID.test(incoming) ? incoming : nextRequestId();
      if (isHttps(request, options.trustProxy)) {
        set.headers["strict-transport-security"] = "max-age=31536000; includeSubDomains";
      }
    })
    .onParse({ as: "global" }, async ({ request, contentType }) => {
      if (contentType.startsWith("application/json")) {
        const text = await readCapped(request, JSON_BODY_LIMIT);
        try {
          return text === "" ? undefined : JSON.parse(text);
        } catch {
          throw errors.badRequest("Malformed JSON body");
        }
      }
      if (contentType.startsWith("application/x-www-form-urlencoded")) {
        return Object.fromEntries(new URLSearchParams(await readCapped(request, JSON_BODY_LIMIT)));
      }
    })
    .onAfterResponse({ as: "global" }, ({ request, set, route }) => {
      if (options.inFlight) options.inFlight.count--;
      if (!accessLog) return;
      const start = started.get(request);
      options.logger.info("request", {
        method: request.method,
        route: route || "unmatched",
        status: typeof set.status === "number" ? set.status : 200,
        duration_ms: start === undefined ? undefined : Math.round((performance.now() - start) * 100) / 100,
        request_id: set.headers["x-request-id"],
      });
    });
}
