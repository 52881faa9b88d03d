import type { ServerWebSocket } from "bun";
import { Elysia, t } from "elysia";
import { type AuthGuard, BEARER_SECURITY, requireRole } from "../../http/auth";
import { AppError, errorResponses, errors, loggableError } from "../../http/errors";
import type { Logger } from "../../platform/logger";
import type { Principal } from "../auth/model";
import { NotificationBody, NotificationSent } from "./model";
import { type Connection, type Realtime, SOCKETS_PER_USER } from "./service";

/** Server-wide socket settings (Bun applies them to every socket, never per route). */
export const websocketOptions = (idleTimeoutSeconds: number) => ({
  // Bun pings a quiet socket; one that does not answer within this is closed.
  idleTimeout: idleTimeoutSeconds,
  // Larger than the 64 KiB we accept, so an oversize message gets an `error` message, not a dropped socket.
  maxPayloadLength: 1024 * 1024,
});

const JWT = /^[\w-]+\.[\w-]+\.[\w-]+$/;

/**
 * The token from `?token=` or `Sec-WebSocket-Protocol` (browsers cannot set headers on a socket). With a
 * protocol list such as `bearer, <token>`, the other entry is echoed back as the chosen protocol, as
 * browsers require; a token sent alone is echoed itself.
 */
function socketToken(request: Request, query: string | undefined) {
  const offered = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
  const fromProtocol = offered.find((entry) => JWT.test(entry));
  const chosen = fromProtocol && (offered.find((entry) => entry !== fromProtocol) ?? fromProtocol);
  return { token: query ?? fromProtocol, protocol: fromProtocol ? chosen : offered[0] };
}

type SocketData = { connection?: Connection };

export function realtimeRoutes<P extends Pick<Principal, "user">>(deps: {
  realtime: Realtime;
  authenticate: (authorization: string | undefined) => Promise<Principal>;
  guard: AuthGuard<P>;
  logger: Logger;
}) {
  const { realtime, authenticate, guard, logger } = deps;
  return new Elysia()
    .use(guard)
    .get(
      "/ws",
      async ({ request, query, server }) => {
        const { token, protocol } = socketToken(request, query.token);
        // Refused before the upgrade, with the contract's 401 body.
        const principal = await authenticate(token ? `Bearer ${token}` : undefined);
        if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
          throw errors.badRequest("Expected a WebSocket upgrade");
        }
        if (realtime.socketsOf(principal.user.id) >= SOCKETS_PER_USER) {
          throw new AppError(429, "RATE_LIMITED", `At most ${SOCKETS_PER_USER} open sockets per user`, [], {
            "retry-after": "60",
          });
        }
        const adapt = (ws: ServerWebSocket<SocketData>): Connection => ({
          userId: principal.user.id,
          claims: principal.claims,
          send: (text) => void ws.send(text),
          close: (code, reason) => ws.close(code, reason),
          subscribe: (topic) => ws.subscribe(topic),
          unsubscribe: (topic) => ws.unsubscribe(topic),
        });
        // A throw in a socket handler is uncaught by anyone above it and would end the process.
        const guarded = (what: string, work: () => void) => {
          try {
            work();
          } catch (error) {
            logger.error("socket handler failed", {
              event: what,
              user_id: principal.user.id,
              error: loggableError(error),
            });
          }
        };
        const data = {
          // Called by Elysia's server-wide socket handlers, with Bun's raw message.
          open(ws: ServerWebSocket<SocketData>) {
            guarded("open", () => {
              ws.data.connection = adapt(ws);
              realtime.opened(ws.data.connection);
            });
          },
          message(ws: ServerWebSocket<SocketData>, raw: string | Buffer) {
            const { connection } = ws.data;
            if (connection) guarded("message", () => realtime.received(connection, raw));
          },
          close(ws: ServerWebSocket<SocketData>) {
            const { connection } = ws.data;
            if (connection) guarded("close", () => realtime.closed(connection));
          },
        } satisfies SocketData & Record<string, unknown>;
        const upgraded = server?.upgrade(request, {
          headers: protocol ? { "sec-websocket-protocol": protocol } : undefined,
          data,
        });
        if (!upgraded) throw errors.badRequest("Expected a WebSocket upgrade");
      },
      {
        query: t.Object({ token: t.Optional(t.String({ maxLength: 4096 })) }),
        response: { 101: t.Void({ description: "Switching protocols" }), ...errorResponses(400, 401, 429) },
        detail: {
          tags: ["realtime"],
          operationId: "realtime_socket",
          summary: "Open the event socket",
          description:
            "WebSocket upgrade. Authenticate with `?token=<access token>` or `Sec-WebSocket-Protocol: bearer, <access token>`. Server messages are `{type, data, timestamp, id}`; see the API guide.",
        },
      },
    )
    .post(
      "/admin/notifications",
      ({ body, set }) => {
        const sent = realtime.notifyUsers(body.user_ids, { message: body.message });
        set.status = 202;
        return {
          id: sent.id,
          type: sent.type,
          timestamp: sent.timestamp,
          recipients: body.user_ids?.length ?? ("all" as const),
        };
      },
      {
        auth: requireRole("admin"),
        body: NotificationBody,
        response: {
          202: t.Composite([NotificationSent], { description: "Published to every instance" }),
          ...errorResponses(401, 403, 422),
        },
        detail: {
          tags: ["realtime"],
          operationId: "realtime_notify",
          summary: "Send a system notification",
          description: "To the named users' sockets, or to every connected user when `user_ids` is absent.",
          security: BEARER_SECURITY,
        },
      },
    );
}
