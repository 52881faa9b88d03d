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

/**
 * The one body parser. JSON everywhere; an HTML form only on `formRoutes` (the OAuth2 password flow);
 * nothing at all on `streamRoutes`, which stream their bodies themselves.
 * Any other media type is refused with 415 before a byte of the body is read, so Elysia's own parsers
 * (which read text and multipart bodies whole, uncapped) never run.
 */
export function bodyParser(options: { formRoutes: readonly string[]; streamRoutes: readonly string[] }) {
  const formRoutes = new Set(options.formRoutes);
  const streamRoutes = new Set(options.streamRoutes);
  return new Elysia({ name: "body-parser" }).onParse({ as: "global" }, async ({ request, contentType, route }) => {
    // The route reads `request.body` itself, with its own limits (uploads); null stops Elysia's parsers.
    if (streamRoutes.has(route)) return null;
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
