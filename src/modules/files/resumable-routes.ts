import type { Server } from "bun";
import { Elysia, t } from "elysia";
import type { ResumableRow } from "../../db/schema";
import { type AuthGuard, requireAuth, requireVerifiedEmail, secured } from "../../http/auth";
import { errorResponses, errors } from "../../http/errors";
import { perUser, type RateLimits } from "../../http/rate-limit";
import type { MetaReader } from "../../http/request-meta";
import { routedPath } from "../../http/request-target";
import { IdParams } from "../users/model";
import type { Resumable, TusRequest } from "./resumable";
import {
  OFFSET_OCTET_STREAM,
  ResumableUpload,
  TUS_EXTENSIONS,
  TUS_VERSION,
  toResumableUpload,
} from "./resumable-model";
import type { FilesPrincipal } from "./routes";

const BASE = "/uploads/resumable";

/**
 * tus on every request under the resumable path, before anything else answers: every response says
 * `Tus-Resumable: 1.0.0`, and a request that does not (OPTIONS and the JSON status aside) gets 412 and is
 * not processed.
 */
export function tusProtocol(apiPrefix: string) {
  const base = `${apiPrefix}${BASE}`;
  return new Elysia({ name: "tus-protocol" }).onRequest(({ request, set }) => {
    const path = routedPath(request.url);
    if (path !== base && !path.startsWith(`${base}/`)) return;
    set.headers["tus-resumable"] = TUS_VERSION;
    if (request.method === "OPTIONS" || request.method === "GET") return;
    if (request.headers.get("tus-resumable") !== TUS_VERSION) {
      throw errors.preconditionFailed(`Send Tus-Resumable: ${TUS_VERSION}`, { "tus-version": TUS_VERSION });
    }
  });
}

const header = (name: string, description: string, required = true) => ({
  name,
  in: "header" as const,
  required,
  description,
  schema: { type: "string" as const },
});
const TUS_RESUMABLE_PARAMETER = {
  ...header("Tus-Resumable", "Must be 1.0.0 (else 412)"),
  schema: { type: "string" as const, enum: [TUS_VERSION] },
};
const OCTET_BODY = {
  content: { [OFFSET_OCTET_STREAM]: { schema: { type: "string" as const, format: "binary" } } },
};

/** What the handlers read of their context. */
type HandlerContext = Parameters<MetaReader>[0] & { server: Server<unknown> | null };

/** The headers that tell a client where an upload stands. */
function describe(row: ResumableRow): Record<string, string> {
  const headers: Record<string, string> = {
    "upload-offset": String(row.offset),
    "upload-length": String(row.length),
  };
  if (row.metadata) headers["upload-metadata"] = row.metadata;
  if (row.state === "receiving") headers["upload-expires"] = row.expiresAt.toUTCString();
  if (row.fileId) headers["upload-file-id"] = row.fileId;
  return headers;
}

/**
 * The tus routes. They declare no body schema, so the body parser leaves their bodies to the service,
 * which streams them.
 */
export function resumableRoutes<P extends FilesPrincipal>(deps: {
  resumable: Resumable;
  guard: AuthGuard<P>;
  limits: RateLimits["perRoute"];
  meta: MetaReader;
  apiPrefix: string;
}) {
  const { resumable, guard, limits, meta, apiPrefix } = deps;
  const discovery = ({ set }: { set: { status?: number | string; headers: Record<string, string | number> } }) => {
    set.status = 204;
    Object.assign(set.headers, {
      "tus-version": TUS_VERSION,
      "tus-extension": TUS_EXTENSIONS,
      "tus-max-size": String(resumable.maxBytes),
    });
  };
  const discoveryOptions = (operationId: string) => ({
    response: { 204: t.Void({ description: "What the server supports: Tus-Version, Tus-Extension, Tus-Max-Size" }) },
    detail: {
      operationId,
      summary: "tus capabilities",
      description:
        "Needs no token (nor Tus-Resumable). Answers Tus-Version, Tus-Extension and Tus-Max-Size (MAX_UPLOAD_SIZE).",
      security: [],
    },
  });
  /** A body streamed by the service: Bun's idle timeout (deaf to body bytes) is off, the service watches it. */
  const tusRequest = (context: HandlerContext): TusRequest => {
    context.server?.timeout(context.request, 0);
    return {
      contentType: context.request.headers.get("content-type"),
      contentLength: context.request.headers.get("content-length"),
      body: context.request.body,
      meta: meta(context),
    };
  };
  const takeBytes = (user: P["user"], id: string, context: HandlerContext) =>
    resumable.patch(user, id, context.request.headers.get("upload-offset"), tusRequest(context));
  const head = (row: ResumableRow, set: { headers: Record<string, string | number> }) => {
    Object.assign(set.headers, describe(row), { "cache-control": "no-store" });
  };

  return new Elysia({ prefix: BASE, detail: { tags: ["files"] } })
    .use(guard)
    .use(limits)
    .options("", discovery, discoveryOptions("files_resumable_options"))
    .options("/:id", discovery, discoveryOptions("files_resumable_options_upload"))
    .post(
      "",
      async (context) => {
        const { principal, request, set } = context;
        const row = await resumable.create(
          principal.user,
          {
            uploadLength: request.headers.get("upload-length"),
            deferLength: request.headers.get("upload-defer-length"),
            metadata: request.headers.get("upload-metadata"),
          },
          tusRequest(context),
        );
        set.status = 201;
        Object.assign(set.headers, describe(row), { location: `${apiPrefix}${BASE}/${row.id}` });
        return toResumableUpload(row);
      },
      {
        auth: requireVerifiedEmail,
        rateLimit: { rule: "upload" as const, key: perUser },
        response: {
          201: t.Composite([ResumableUpload], {
            description:
              "Created: Location is the upload's URL; Upload-Offset says how many bytes of the body were taken (creation-with-upload); Upload-Expires; Upload-File-Id when the body completed it",
          }),
          ...errorResponses(400, 401, 403, 408, 412, 413, 415, 422, 507),
        },
        detail: {
          ...secured(
            "files_resumable_create",
            "Start a resumable (tus) upload",
            "tus 1.0.0 creation: `Upload-Length` (required; over MAX_UPLOAD_SIZE → 413), `Upload-Metadata` with base64 `filename`, `filetype` (one of ALLOWED_FILE_TYPES, else 415) and `is_public`. Past the quota (stored bytes plus unfinished uploads' lengths) → 413. The body may carry the first bytes as application/offset+octet-stream (creation-with-upload); the content checks run on them as on a PATCH.",
          ),
          "x-header-parameters": [
            TUS_RESUMABLE_PARAMETER,
            header("Upload-Length", "The whole file's bytes"),
            header("Upload-Metadata", "`filename <base64>,filetype <base64>,is_public <base64>`", false),
          ],
          requestBody: { required: false, ...OCTET_BODY },
        },
      },
    )
    .head(
      "/:id",
      async ({ principal, params, set }) => {
        head(await resumable.status(principal.user, params.id), set);
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: {
          200: t.Void({
            description:
              "Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires (while unfinished), Upload-File-Id (once complete); Cache-Control: no-store",
          }),
          // A HEAD answer has no body: the status alone tells.
          401: t.Void({ description: "Missing, invalid or expired credentials (WWW-Authenticate: Bearer)" }),
          404: t.Void({ description: "No such upload of yours (another user's, expired or terminated)" }),
          412: t.Void({ description: "Tus-Resumable is not 1.0.0 (Tus-Version says what is)" }),
          422: t.Void({ description: "The id is not a UUID" }),
        },
        detail: {
          ...secured(
            "files_resumable_head",
            "Where a resumable upload stands (tus)",
            "Its creator only: anyone else gets 404, as does an upload expired or terminated.",
          ),
          "x-header-parameters": [TUS_RESUMABLE_PARAMETER],
        },
      },
    )
    .get(
      "/:id",
      async ({ principal, params, request, set }) => {
        const row = await resumable.status(principal.user, params.id);
        // app.handle() routes a HEAD to the GET of a path with parameters (a real server does not).
        if (request.method === "HEAD") {
          head(row, set);
          // An empty answer (the type is the GET's JSON).
          return new Response(null) as never;
        }
        set.headers["cache-control"] = "no-store";
        return toResumableUpload(row);
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: { 200: ResumableUpload, ...errorResponses(401, 404, 422) },
        detail: {
          ...secured(
            "files_resumable_get",
            "A resumable upload as JSON",
            "Its state, offset and length, and the file's id once complete. Its creator only (others 404).",
          ),
        },
      },
    )
    .patch(
      "/:id",
      async (context) => {
        const { principal, params, set } = context;
        Object.assign(set.headers, describe(await takeBytes(principal.user, params.id, context)));
        set.status = 204;
      },
      {
        auth: requireVerifiedEmail,
        params: IdParams,
        response: {
          204: t.Void({
            description:
              "Taken: Upload-Offset is the new offset; Upload-Expires; once the last byte is in, the file is stored and Upload-File-Id is its id",
          }),
          ...errorResponses(400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 423, 507),
        },
        detail: {
          ...secured(
            "files_resumable_patch",
            "Send bytes of a resumable upload (tus)",
            "`Upload-Offset` must be the upload's offset (else 409, nothing changed). Content checks run as bytes arrive (the type on the first bytes: 415 ends the upload); bytes past Upload-Length → 413. A request cut short keeps what arrived (HEAD tells the offset). Another request writing to the upload → 423. The last byte makes the file, with POST /uploads' quota, scan and event (413, 422 MALWARE_DETECTED, 503 end the upload).",
          ),
          "x-header-parameters": [
            TUS_RESUMABLE_PARAMETER,
            header("Upload-Offset", "Where these bytes go: the upload's offset"),
          ],
          requestBody: { required: true, ...OCTET_BODY },
        },
      },
    )
    .post(
      "/:id",
      async (context) => {
        const { principal, params, request, set } = context;
        // tus' X-HTTP-Method-Override, for clients behind proxies that drop PATCH and DELETE.
        const method = request.headers.get("x-http-method-override")?.trim().toUpperCase();
        if (method === "PATCH") {
          Object.assign(set.headers, describe(await takeBytes(principal.user, params.id, context)));
        } else if (method === "DELETE") {
          await resumable.terminate(principal.user, params.id);
        } else {
          throw errors.badRequest("Send X-HTTP-Method-Override: PATCH or DELETE");
        }
        set.status = 204;
      },
      {
        auth: requireVerifiedEmail,
        params: IdParams,
        response: {
          204: t.Void({ description: "As the PATCH or DELETE the X-HTTP-Method-Override header names" }),
          ...errorResponses(400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 423, 507),
        },
        detail: {
          ...secured(
            "files_resumable_override",
            "PATCH or DELETE a resumable upload through POST (tus X-HTTP-Method-Override)",
            "For clients whose environment cannot send PATCH or DELETE (tus-js-client's `overridePatchMethod`): `X-HTTP-Method-Override: PATCH` or `DELETE` makes this request that one, with its headers, body and answers; anything else → 400.",
          ),
          "x-header-parameters": [
            TUS_RESUMABLE_PARAMETER,
            {
              ...header("X-HTTP-Method-Override", "PATCH or DELETE"),
              schema: { type: "string" as const, enum: ["PATCH", "DELETE"] },
            },
            header("Upload-Offset", "With PATCH: where these bytes go", false),
          ],
          requestBody: { required: false, ...OCTET_BODY },
        },
      },
    )
    .delete(
      "/:id",
      async ({ principal, params, set }) => {
        await resumable.terminate(principal.user, params.id);
        set.status = 204;
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: {
          204: t.Void({
            description: "Terminated: the upload and its bytes are gone (a completed upload's file stays)",
          }),
          ...errorResponses(401, 404, 412, 422, 423),
        },
        detail: {
          ...secured("files_resumable_delete", "Terminate a resumable upload (tus)"),
          "x-header-parameters": [TUS_RESUMABLE_PARAMETER],
        },
      },
    );
}
