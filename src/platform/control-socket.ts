import { rmSync } from "node:fs";
import type { Logger } from "./logger";

/** What the running server does for a command run beside it. */
export interface ControlHandlers {
  /** A backup archive of what the server holds open (the embedded database), as it streams. */
  backup(): Promise<ReadableStream<Uint8Array>>;
}

/** A unix socket path longer than this cannot be bound (sun_path). */
const MAX_SOCKET_PATH = 107;

/**
 * The local channel to a running server: HTTP over a unix socket inside the owner-only DATA_DIR, so only
 * the server's own user reaches it (no token involved). `reviewpoint backup` uses it while the server holds
 * the embedded database. A failure is one line of text with status 500.
 */
export function serveControl(path: string, handlers: ControlHandlers, logger: Logger): { stop(): void } {
  if (path.length > MAX_SOCKET_PATH) {
    logger.warn("no control socket: the DATA_DIR path is too long; stop the server to back it up", { path });
    return { stop() {} };
  }
  // Only the holder of the data directory's lock gets here: a socket file left by a dead server is stale.
  rmSync(path, { force: true });
  const server = Bun.serve({
    unix: path,
    async fetch(request) {
      if (request.method !== "POST" || new URL(request.url).pathname !== "/backup") {
        return new Response("unknown control request", { status: 404 });
      }
      try {
        return new Response(await handlers.backup(), { headers: { "content-type": "application/x-tar" } });
      } catch (error) {
        logger.error("backup failed", { error: (error as Error).message });
        return new Response((error as Error).message, { status: 500 });
      }
    },
  });
  return {
    stop() {
      server.stop(true);
      rmSync(path, { force: true });
    },
  };
}

/** Asks the server listening on `path` for a backup; throws with the server's one-line reason. */
export async function requestBackup(path: string): Promise<ReadableStream<Uint8Array>> {
  let response: Response;
  try {
    response = await fetch("http://localhost/backup", { method: "POST", unix: path });
  } catch (error) {
    throw new Error(`the running server's control socket (${path}) does not answer: ${(error as Error).message}`);
  }
  if (!response.ok || !response.body) throw new Error((await response.text()) || `status ${response.status}`);
  return response.body;
}
