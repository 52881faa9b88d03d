import type { Server } from "bun";
import { Elysia, t } from "elysia";
import {
  type AuthGuard,
  BEARER_SECURITY,
  optionalAuth,
  requireAuth,
  requireVerifiedEmail,
  secured,
} from "../../http/auth";
import { errorResponses, errors } from "../../http/errors";
import { perUser, type RateLimits } from "../../http/rate-limit";
import type { MetaReader } from "../../http/request-meta";
import { IdParams, type PublicUser } from "../users/model";
import type { Download } from "./download";
import {
  FileInfo,
  FileList,
  FileListQuery,
  FilePatch,
  LinkParams,
  SharedParams,
  ShareLinkCreate,
  ShareLinkCreated,
  ShareLinkList,
  UploadForm,
  UploadHeaders,
} from "./model";
import type { FilesService } from "./service";

/** What these routes need of the authenticated caller. */
export type FilesPrincipal = { user: PublicUser };

/** Public files are readable without a token. */
const OPTIONAL_BEARER = [...BEARER_SECURITY, {}];

// An Idempotency-Key is a Structured Field string (RFC 8941): quoted, `\"` and `\\` escaped; a bare token is taken too.
const SF_STRING = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"$/;
const BARE_KEY = /^[\x21\x23-\x7e][\x21-\x7e]*$/;
const MAX_KEY_LENGTH = 255;

/** The key of an `Idempotency-Key` header; a malformed one is a 422 naming the header. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const value = header.trim();
  const quoted = value.match(SF_STRING)?.[1]?.replace(/\\(["\\])/g, "$1");
  const key = quoted ?? (BARE_KEY.test(value) ? value : undefined);
  if (!key || key.length > MAX_KEY_LENGTH) {
    throw errors.validation([
      { field: "Idempotency-Key", issue: `Must be a quoted string of 1..${MAX_KEY_LENGTH} visible ASCII characters` },
    ]);
  }
  return key;
}

const DOWNLOAD_RESPONSES = {
  200: t.String({ format: "binary", description: "The bytes, as stored, with their exact Content-Length" }),
  206: t.String({ format: "binary", description: "The requested byte range (see Content-Range)" }),
  302: t.Void({
    description:
      "S3_DOWNLOAD_MODE=redirect: the bytes are at the presigned URL in Location (valid S3_PRESIGN_SECONDS), which answers with the same Content-Type and Content-Disposition",
  }),
  304: t.Void({ description: "Not modified (If-None-Match matched the ETag)" }),
};
const DOWNLOAD_DESCRIPTION =
  "Streams the bytes with Content-Type as stored, exact Content-Length, Content-Disposition: attachment (ASCII `filename` and RFC 5987 `filename*`), ETag (the SHA-256), 304 on If-None-Match, Accept-Ranges: bytes and 206 for one `Range` (several ranges get the whole file), 416 when unsatisfiable, and Content-Security-Policy: sandbox. With S3 storage and S3_DOWNLOAD_MODE=redirect, a 302 to a presigned URL of the bucket instead.";
// Whatever type the file was stored with.
const DOWNLOAD_MEDIA_TYPES = { "x-response-media-types": { 200: ["*/*"], 206: ["*/*"] } };

/**
 * A download as the response. Bun's server opens a file body when the handler returns (sendfile), before
 * the next turn of the event loop: a spooled body's name can go then, and the open file is read to its
 * end. A caller in this process (`app.handle`) reads the body later: it gets the file as a stream that
 * removes it once read.
 */
function respond(download: Download, set: { headers: Record<string, unknown> }, served: boolean): Response {
  // An uploaded file must never run as a page of this origin.
  set.headers["content-security-policy"] = "sandbox";
  const { release, body } = download;
  let sent = body;
  if (release && served) setImmediate(() => void release());
  else if (release && body instanceof Blob) sent = removedWhenRead(body, release);
  return new Response(sent, { status: download.status, headers: download.headers });
}

function removedWhenRead(file: Blob, release: () => Promise<void>): ReadableStream<Uint8Array> {
  const reader = file.stream().getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = await reader.read();
        if (!next.done) return controller.enqueue(next.value);
        controller.close();
      } catch (error) {
        controller.error(error);
      }
      await release();
    },
    async cancel() {
      await reader.cancel();
      await release();
    },
  });
}

export function filesRoutes<P extends FilesPrincipal>(deps: {
  files: FilesService;
  guard: AuthGuard<P>;
  limits: RateLimits["perRoute"];
  meta: MetaReader;
  /** What a share link's token is appended to: PUBLIC_URL (else the request's origin) and `/api/v1/shared/`. */
  linkBase: (request: Request) => string;
}) {
  const { files, guard, limits, meta, linkBase } = deps;
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
    const idempotencyKey = idempotencyKeyOf(request.headers.get("idempotency-key") ?? undefined);
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
      idempotencyKey,
    );
  };
  const upload = {
    auth: requireVerifiedEmail,
    rateLimit: { rule: "upload" as const, key: perUser },
    headers: UploadHeaders,
    response: {
      201: t.Composite([FileInfo], {
        description: "The stored file (a retry with its Idempotency-Key: the same file)",
      }),
      ...errorResponses(400, 401, 403, 408, 409, 413, 415, 422, 507),
    },
    detail: {
      ...secured(
        "files_upload",
        "Upload a file",
        "Multipart, field `file` (its part's Content-Type must be one of ALLOWED_FILE_TYPES, and the content must match it), optional `is_public`. Streamed to storage; over MAX_UPLOAD_SIZE or the user's quota → 413, decided while streaming. With `Idempotency-Key`, a retry (same user, key and bytes within 24 hours) gets the first upload's File with 201 and stores nothing; the key with other bytes → 422; 409 when the key's first file was deleted while this retry ran.",
      ),
      requestBody: {
        required: true,
        content: { "multipart/form-data": { schema: UploadForm, encoding: { file: { contentType: "*/*" } } } },
      },
    },
  };

  const uploads = new Elysia({ prefix: "/uploads", detail: { tags: ["files"] } })
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
        const { principal, params, request, set, server } = context;
        const download = await files.download(viewerOf(principal), params.id, conditionsOf(request), meta(context));
        return respond(download, set, server !== null);
      },
      {
        auth: optionalAuth,
        params: IdParams,
        response: { ...DOWNLOAD_RESPONSES, ...errorResponses(401, 404, 416, 422) },
        detail: {
          operationId: "files_download",
          summary: "Download a file",
          description: `${DOWNLOAD_DESCRIPTION} Same access as the metadata.`,
          security: OPTIONAL_BEARER,
          ...DOWNLOAD_MEDIA_TYPES,
        },
      },
    )
    .post(
      "/:id/links",
      async (context) => {
        const { principal, params, body, request, set } = context;
        const created = await files.links.create(
          principal.user,
          params.id,
          body.expires_in_seconds,
          linkBase(request),
          meta(context),
        );
        set.status = 201;
        return created;
      },
      {
        auth: requireAuth,
        params: IdParams,
        body: ShareLinkCreate,
        response: { 201: ShareLinkCreated, ...errorResponses(401, 403, 404, 409, 422) },
        detail: secured(
          "files_create_link",
          "Create a share link",
          "Its owner or an admin. Anyone with the returned URL downloads the file (`GET /shared/{token}`) until `expires_at` or until the link is revoked; the URL is shown only this once. At most 100 active links per file (409).",
        ),
      },
    )
    .get("/:id/links", ({ principal, params }) => files.links.list(principal.user, params.id), {
      auth: requireAuth,
      params: IdParams,
      response: { 200: ShareLinkList, ...errorResponses(401, 403, 404, 422) },
      detail: secured(
        "files_list_links",
        "A file's active share links",
        "Its owner or an admin; tokens are never shown.",
      ),
    })
    .delete(
      "/:id/links/:link_id",
      async (context) => {
        const { principal, params, set } = context;
        await files.links.revoke(principal.user, params.id, params.link_id, meta(context));
        set.status = 204;
      },
      {
        auth: requireAuth,
        params: LinkParams,
        response: {
          204: t.Void({ description: "Revoked: the link's URL answers 404 from now on" }),
          ...errorResponses(401, 403, 404, 422),
        },
        detail: secured(
          "files_revoke_link",
          "Revoke a share link",
          "Its owner or an admin; an expired or unknown link is a 404.",
        ),
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

  const shared = new Elysia({ prefix: "/shared", detail: { tags: ["files"] } }).get(
    "/:token",
    async (context) => {
      const { params, request, set, server } = context;
      const download = await files.links.open(params.token, conditionsOf(request), meta(context));
      return respond(download, set, server !== null);
    },
    {
      params: SharedParams,
      response: { ...DOWNLOAD_RESPONSES, ...errorResponses(404, 416, 422) },
      detail: {
        operationId: "files_shared_download",
        summary: "Download a file through a share link",
        description: `Anyone holding an active share link's URL. ${DOWNLOAD_DESCRIPTION} An expired, revoked or unknown link is a 404; limited per client IP like every request.`,
        security: [],
        ...DOWNLOAD_MEDIA_TYPES,
      },
    },
  );

  return new Elysia({ name: "files-routes" }).use(uploads).use(shared);
}

/** What a download's answer depends on in the request. */
function conditionsOf(request: Request) {
  return {
    range: request.headers.get("range"),
    ifNoneMatch: request.headers.get("if-none-match"),
    signal: request.signal,
  };
}
