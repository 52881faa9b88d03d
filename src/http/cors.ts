import { Elysia } from "elysia";

const ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
// The tus headers, for resumable uploads from a browser (tus-js-client, Uppy).
const ALLOW_HEADERS =
  "Authorization, Content-Type, X-Request-ID, Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, Upload-Defer-Length, Upload-Concat, X-HTTP-Method-Override, X-Requested-With";
const EXPOSE_HEADERS =
  "X-Request-ID, Content-Disposition, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Upload-File-Id";
const PREFLIGHT_MAX_AGE = "600";

/**
 * CORS for the origins in ALLOWED_ORIGINS ("*" for any). Grants go only on responses to an allowed
 * Origin, so same-origin and server-to-server calls carry no CORS headers (@elysiajs/cors added four
 * to every response; see the README). Preflights are answered here, before routing.
 */
export function cors(allowedOrigins: string[]) {
  const any = allowedOrigins.includes("*");
  const allowed = new Set(allowedOrigins);
  return new Elysia({ name: "cors" }).headers({ vary: "Origin" }).onRequest(({ request, set }) => {
    const origin = request.headers.get("origin");
    if (!origin || !(any || allowed.has(origin))) return;
    set.headers["access-control-allow-origin"] = origin;
    set.headers["access-control-expose-headers"] = EXPOSE_HEADERS;
    if (request.method === "OPTIONS" && request.headers.has("access-control-request-method")) {
      set.headers["access-control-allow-methods"] = ALLOW_METHODS;
      set.headers["access-control-allow-headers"] = ALLOW_HEADERS;
      set.headers["access-control-max-age"] = PREFLIGHT_MAX_AGE;
      set.status = 204;
      return "";
    }
  });
}
