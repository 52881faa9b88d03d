import { Elysia } from "elysia";
import { errors } from "./errors";

/** Every JSON (or form) body is capped here; files take their own streaming path and limit. */
const JSON_BODY_LIMIT = 1024 * 1024;

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

/** `Application/JSON; charset=UTF-8` → `application/json`. */
const mediaType = (contentType: string) => contentType.split(";", 1)[0]?.trim().toLowerCase() ?? "";

/** What the parser needs to know of a route: does it declare a body schema. */
export interface RouteBodies {
  readonly routes: readonly { method: string; path: string; hooks: { body?: unknown } }[];
}

/**
 * The one body parser. JSON everywhere; an HTML form only on `formRoutes` (the OAuth2 password flow).
 * Any other media type is refused with 415 before a byte of the body is read, so Elysia's own parsers
 * (which read text and multipart bodies whole, uncapped) never run.
 * A route that declares no body schema gets none parsed: a body sent to it anyway (a DELETE with JSON) is
 * ignored, never a 400/413/415 its operation does not declare, and the upload routes read theirs themselves.
 * `app` is asked on the first request, once every route is registered.
 */
export function bodyParser(options: { formRoutes: readonly string[]; app: () => RouteBodies }) {
  const formRoutes = new Set(options.formRoutes);
  let withBody: Set<string> | undefined;
  const declaresBody = (method: string, route: string) => {
    withBody ??= new Set(
      options
        .app()
        .routes.filter((declared) => declared.hooks.body !== undefined)
        .map((declared) => `${declared.method} ${declared.path}`),
    );
    return withBody.has(`${method} ${route}`);
  };
  return new Elysia({ name: "body-parser" }).onParse({ as: "global" }, async ({ request, contentType, route }) => {
    // Null stops Elysia's parsers: the body stays unread (the upload routes stream it themselves).
    if (!declaresBody(request.method, route)) return null;
    if (!request.body) return undefined;
    const type = mediaType(contentType);
    if (type === "application/json") {
      const text = await readCapped(request, JSON_BODY_LIMIT);
      if (text === "") return undefined;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        throw errors.badRequest("Malformed JSON body");
      }
      // Every JSON body here is an object. Elysia's normalisation would turn `5`, `"x"` or `[1]` into `{}`,
      // a valid (empty) patch, so refuse them before it runs.
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw errors.validation([{ field: "body", issue: "Expected a JSON object" }]);
      }
      return parsed;
    }
    if (type === "application/x-www-form-urlencoded" && formRoutes.has(route)) {
      return Object.fromEntries(new URLSearchParams(await readCapped(request, JSON_BODY_LIMIT)));
    }
    throw errors.unsupportedMediaType(
      formRoutes.has(route) ? "Send application/json or application/x-www-form-urlencoded" : "Send application/json",
    );
  });
}
