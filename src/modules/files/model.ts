import { t } from "elysia";
import type { FileRow } from "../../db/schema";
import { SingleLine } from "../../http/text";
import { Uuid } from "../users/model";

export const FileInfo = t.Object(
  {
    id: t.String({ format: "uuid" }),
    filename: t.String({ description: "The original name, cleaned for display" }),
    content_type: t.String(),
    file_size: t.Integer({ description: "Bytes" }),
    file_hash: t.String({ description: "SHA-256 of the bytes, hex" }),
    is_public: t.Boolean(),
    uploaded_at: t.String({ format: "date-time" }),
    owner_id: t.String({ format: "uuid" }),
  },
  { title: "File", description: "The file's metadata" },
);
export type FileInfo = typeof FileInfo.static;

/** The multipart body, for the document only: the route streams it itself. */
export const UploadForm = t.Object({
  file: t.File({ description: "The file; its part's Content-Type must be one of ALLOWED_FILE_TYPES" }),
  is_public: t.Optional(t.BooleanString({ description: "Anyone may read and download it (default false)" })),
});

export const FilePatch = t.Object(
  {
    filename: t.Optional(SingleLine({ minLength: 1, maxLength: 255 })),
    is_public: t.Optional(t.Boolean()),
  },
  { minProperties: 1, error: "Give filename or is_public" },
);
export type FileChanges = typeof FilePatch.static;

export const FileListQuery = t.Object({
  owner_id: t.Optional(Uuid),
  all: t.Optional(t.Boolean({ description: "Admin: every user's files" })),
  q: t.Optional(SingleLine({ maxLength: 100, description: "Substring of the filename" })),
  content_type: t.Optional(SingleLine({ maxLength: 127 })),
  offset: t.Integer({ minimum: 0, maximum: 2_147_483_647, default: 0 }),
  limit: t.Integer({ minimum: 1, maximum: 100, default: 20 }),
  sort: t.Union([t.Literal("uploaded_at"), t.Literal("filename"), t.Literal("file_size")], { default: "uploaded_at" }),
  order: t.Union([t.Literal("asc"), t.Literal("desc")], { default: "desc" }),
});
export type FileListParams = typeof FileListQuery.static;

export const FileList = t.Object(
  { items: t.Array(FileInfo), total: t.Integer(), offset: t.Integer(), limit: t.Integer() },
  { title: "FileList", description: "One page of files, with the total of all matches" },
);

export function toFileInfo(row: FileRow): FileInfo {
  return {
    id: row.id,
    filename: row.filename,
    content_type: row.contentType,
    file_size: row.fileSize,
    file_hash: row.fileHash,
    is_public: row.isPublic,
    uploaded_at: row.uploadedAt.toISOString(),
    owner_id: row.ownerId,
  };
}

// Control characters (C0, DEL, C1), the bidirectional overrides that can make `txt.exe` look like
// `exe.txt`, and the zero-width characters that can make a name invisible.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
const MAX_FILENAME_BYTES = 255;

/**
 * The client's file name, fit for display: no path parts, no control or bidi characters, at most 255
 * bytes of UTF-8 (never cutting a character), never empty. It never builds a path or a key.
 */
export function cleanFilename(raw: string): string {
  // A part header allows 16 KiB of name: cut early, so the cleaning stays linear.
  const base =
    raw
      .slice(-4 * MAX_FILENAME_BYTES)
      .split(/[/\\]/)
      .at(-1) ?? "";
  const name = base.normalize("NFC").replace(UNSAFE, "").trim();
  if (name === "" || name === "." || name === "..") return "file";
  // encodeInto never splits a character: `read` is where the last whole one ends.
  const { read } = new TextEncoder().encodeInto(name, new Uint8Array(MAX_FILENAME_BYTES));
  return name.slice(0, read);
}

/** The longest a share link may live: 30 days. */
export const MAX_LINK_SECONDS = 30 * 86_400;

export const ShareLinkCreate = t.Object({
  expires_in_seconds: t.Integer({
    minimum: 1,
    maximum: MAX_LINK_SECONDS,
    description: "How long the link works, in seconds (at most 30 days)",
  }),
});

export const ShareLinkCreated = t.Object(
  {
    id: t.String({ format: "uuid" }),
    url: t.String({ format: "uri", description: "Anyone with this URL may download the file; it is shown only once" }),
    expires_at: t.String({ format: "date-time" }),
  },
  { title: "ShareLinkCreated", description: "A new share link, with its URL" },
);

export const ShareLink = t.Object(
  {
    id: t.String({ format: "uuid" }),
    created_at: t.String({ format: "date-time" }),
    expires_at: t.String({ format: "date-time" }),
    created_by: t.String({ format: "uuid", description: "The owner, or the admin who made it" }),
  },
  { title: "ShareLink", description: "An active share link (its token is never shown again)" },
);

export const ShareLinkList = t.Object(
  { items: t.Array(ShareLink) },
  { title: "ShareLinkList", description: "A file's active share links, newest first" },
);

export const LinkParams = t.Object({ id: Uuid, link_id: Uuid });

export const SharedParams = t.Object({
  token: t.String({ maxLength: 256, description: "The token of a share link's URL" }),
});

export const UploadHeaders = t.Object({
  "idempotency-key": t.Optional(
    t.String({
      description:
        'Makes a retry safe (draft-ietf-httpapi-idempotency-key-header): a Structured Field string such as `"8e03978e-40d5-43e8-bc93-6894a57f9324"` (a bare token is accepted too), 1..255 visible ASCII characters. The same user, key and bytes within 24 hours get the first upload\'s File (201) instead of a copy; other bytes get 422.',
    }),
  ),
});
