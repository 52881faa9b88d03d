import { Elysia } from "elysia";
import { errors } from "./errors";

/**
 * Elysia takes the path from `request.url` at the first "/" from a fixed offset: 11 by default, which
 * assumes a host of at least 4 characters (elysia#748), so with `Host: x` the router skipped into the
 * path (`/ZZ/api/v1/users/me` was served as `/api/v1/users/me`) while everything reading the URL saw
 * the other path. From offset 7 the first "/" after `http://` is the path's, whatever the host's length.
 */
export const ROUTER_OPTIONS = { handler: { standardHostname: false } } as const;

/** The path as the router takes it (the same offset), for every check that decides by path. */
export function routedPath(url: string): string {
  const start = url.indexOf("/", "http://".length);
  const query = url.indexOf("?", start);
  return url.slice(start, query === -1 ? undefined : query);
}

/**
 * The one precondition of that offset: a URL that starts with `http://`. Bun's is a bare path when the
 * request has no usable Host (none, empty, or with a space, "/", "?"...; open pull request
 * oven-sh/bun#33721), which would misplace the path again, so such a request is refused before anything
 * routes or counts it (RFC 9112 §3.2: a request without a valid Host is a 400). The server speaks plain
 * HTTP, so `https://` never comes from a socket.
 */
export function requestTarget() {
  return new Elysia({ name: "request-target" }).onRequest(({ request }) => {
    if (!request.url.startsWith("http://")) throw errors.badRequest("The request needs a valid Host header");
  });
}
