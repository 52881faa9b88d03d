import type { Server } from "bun";
import { Elysia, t } from "elysia";
import { type AuthGuard, BEARER_SECURITY, optionalAuth, requireAuth, requireVerifiedEmail } from "../../http/auth";
import { errorResponses } from "../../http/errors";
import { perUser, type RateLimits } from "../../http/rate-limit";
import type { MetaReader } from "../../http/request-meta";
import { IdParams, type PublicUser } from "../users/model";
import { FileInfo, FileList, FileListQuery, FilePatch, UploadForm } from "./model";
import type { FilesService } from "./service";

/** What these routes need of the authenticated caller. */
export type FilesPrincipal = { user: PublicUser };

const secured = (operationId: string, summary: string, description?: string) => ({
  operationId,
  summary,
  description,
  security: BEARER_SECURITY,
});
/** Public files are readable without a token. */
const OPTIONAL_BEARER = [...BEARER_SECURITY, {}];

export function filesRoutes<P extends FilesPrincipal>(deps: {
  files: FilesService;
  guard: AuthGuard<P>;
  limits: RateLimits["perRoute"];
  meta: MetaReader;
}) {
  const { files, guard, limits, meta } = deps;
  const viewerOf = (principal: P | undefined) => principal && { id: principal.user.id, role: principal.user.role };
  /**
   * The upload's body is streamed to the service, never parsed here. Bun's idle timeout is not reset by
   * body bytes (a slow upload was cut at ~30 s while still sending): off for this request, whose body the
   * service watches itself (UPLOAD_IDLE_SECONDS, UPLOAD_TIMEOUT_SECONDS).
   */
  const store = (
    context: {
      principal: P;
      server: Pick<Server<unknown>, "timeout" | "requestIP"> | null;
    } & Parameters<MetaReader>[0],
  ) => {
    const { request, server } = context;
    server?.timeout(request, 0);
    const length = request.headers.get("content-length");
    return files.upload(
      context.principal.user,
      {
        body: request.body,
        contentType: request.headers.get("content-type") ?? "",
        contentLength: length === null ? undefined : Number(length),
      },
      meta(context),
    );
  };
  const upload = {
    auth: requireVerifiedEmail,
    rateLimit: { rule: "upload" as const, key: perUser },
    response: {
      201: t.Composite([FileInfo], { description: "The stored file" }),
      ...errorResponses(400, 401, 403, 408, 413, 415, 422, 507),
    },
    detail: {
      ...secured(
        "files_upload",
        "Upload a file",
        "Multipart, field `file` (its part's Content-Type must be one of ALLOWED_FILE_TYPES, and the content must match it), optional `is_public`. Streamed to storage; over MAX_UPLOAD_SIZE or the user's quota → 413, decided while streaming.",
      ),
      requestBody: {
        required: true,
        content: { "multipart/form-data": { schema: UploadForm, encoding: { file: { contentType: "*/*" } } } },
      },
    },
  };

  return new Elysia({ prefix: "/uploads", detail: { tags: ["files"] } })
    .use(guard)
    .use(limits)
    .post(
      "",
      async (context) => {
        context.set.status = 201;
        return store(context);
      },
      upload,
    )
    .post(
      "/",
      async (context) => {
        context.set.status = 201;
        return store(context);
      },
      {
        ...upload,
        detail: {
          ...upload.detail,
          operationId: "files_upload_slash",
          summary: "Upload a file (same as POST /uploads)",
        },
      },
    )
    .get("", ({ principal, query }) => files.list(principal.user, query), {
      auth: requireAuth,
      query: FileListQuery,
      response: { 200: FileList, ...errorResponses(401, 403, 422) },
      detail: secured("files_list", "List files", "Your own files; an admin may pass `owner_id` or `all=true`."),
    })
    .get("/:id", ({ principal, params }) => files.get(viewerOf(principal), params.id), {
      auth: optionalAuth,
      params: IdParams,
      response: { 200: FileInfo, ...errorResponses(401, 404, 422) },
      detail: {
        operationId: "files_get",
        summary: "A file's metadata",
        description: "Its owner, an admin, or anyone when the file is public; anybody else gets 404.",
        security: OPTIONAL_BEARER,
      },
    })
    .get(
      "/:id/download",
      async (context) => {
        const { principal, params, request, set } = context;
        const conditions = { range: request.headers.get("range"), ifNoneMatch: request.headers.get("if-none-match") };
        const download = await files.download(viewerOf(principal), params.id, conditions, meta(context));
        // An uploaded file must never run as a page of this origin.
        set.headers["content-security-policy"] = "sandbox";
        return new Response(download.body, { status: download.status, headers: download.headers });
      },
      {
        auth: optionalAuth,
        params: IdParams,
        response: {
          200: t.String({ format: "binary", description: "The bytes, as stored" }),
          206: t.String({ format: "binary", description: "The requested byte range (see Content-Range)" }),
          304: t.Void({ description: "Not modified (If-None-Match matched the ETag)" }),
          ...errorResponses(401, 404, 416, 422),
        },
        detail: {
          operationId: "files_download",
          summary: "Download a file",
          description:
            "Streams the bytes with Content-Type as stored, Content-Disposition: attachment (ASCII `filename` and RFC 5987 `filename*`), ETag (the SHA-256), 304 on If-None-Match, Accept-Ranges: bytes and 206 for one `Range` (several ranges get the whole file), 416 when unsatisfiable. Same access as the metadata.",
          security: OPTIONAL_BEARER,
          // Whatever type the file was stored with.
          "x-response-media-types": { 200: ["*/*"], 206: ["*/*"] },
        },
      },
    )
    .patch("/:id", ({ principal, params, body }) => files.update(principal.user, params.id, body), {
      auth: requireAuth,
      params: IdParams,
      body: FilePatch,
      response: { 200: FileInfo, ...errorResponses(401, 403, 404, 422) },
      detail: secured("files_update", "Rename a file or change who may read it", "Its owner or an admin."),
    })
    .delete(
      "/:id",
      async (context) => {
        await files.delete(context.principal.user, context.params.id, meta(context));
        context.set.status = 204;
      },
      {
        auth: requireAuth,
        params: IdParams,
        response: { 204: t.Void({ description: "File and bytes removed" }), ...errorResponses(401, 403, 404, 422) },
        detail: secured("files_delete", "Delete a file", "Its owner, or a holder of `files:delete` (admin)."),
      },
    );
}
