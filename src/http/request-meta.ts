import { type ClientServer, clientIp } from "./client";

/** Who sent a request, as the audit log records it; services get this instead of the request. */
export interface RequestMeta {
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
}

/** For work no request started (the command line, a periodic job). */
export const NO_REQUEST: RequestMeta = { ip: null, userAgent: null, requestId: null };

const USER_AGENT_MAX = 512;

/** Reads a handler's context into a RequestMeta (the client IP as the rate limits see it). */
export function requestMetaReader(trustProxy: boolean) {
  return (context: { request: Request; server: ClientServer; set: { headers: Record<string, unknown> } }) => {
    const ip = clientIp(context.request, context.server, trustProxy);
    const requestId = context.set.headers["x-request-id"];
    return {
      ip: ip === "unknown" ? null : ip.slice(0, 64),
      userAgent: context.request.headers.get("user-agent")?.slice(0, USER_AGENT_MAX) ?? null,
      requestId: typeof requestId === "string" ? requestId : null,
    } satisfies RequestMeta;
  };
}

export type MetaReader = ReturnType<typeof requestMetaReader>;
