import { t } from "elysia";
import type { ResumableRow } from "../../db/schema";
import { errors } from "../../http/errors";

export const TUS_VERSION = "1.0.0";
export const TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration";
/** The media type of every tus request body. */
export const OFFSET_OCTET_STREAM = "application/offset+octet-stream";

export const ResumableUpload = t.Object(
  {
    id: t.String({ format: "uuid" }),
    state: t.Union([t.Literal("receiving"), t.Literal("completing"), t.Literal("complete")], {
      description:
        "receiving: more bytes are awaited; completing: the last byte arrived and the file is being stored (scan, quota); complete: `file_id` is the file",
    }),
    offset: t.Integer({ description: "Bytes received and stored" }),
    length: t.Integer({ description: "Upload-Length: the whole file's bytes" }),
    filename: t.String(),
    content_type: t.String(),
    is_public: t.Boolean(),
    file_id: t.Union([t.String({ format: "uuid" }), t.Null()], { description: "The stored file, once complete" }),
    created_at: t.String({ format: "date-time" }),
    expires_at: t.String({
      format: "date-time",
      description: "An unfinished upload not continued by then is removed; a complete one is forgotten",
    }),
  },
  { title: "ResumableUpload", description: "A tus upload and where it stands" },
);
export type ResumableUpload = typeof ResumableUpload.static;

export function toResumableUpload(row: ResumableRow): ResumableUpload {
  return {
    id: row.id,
    state: row.state,
    offset: row.offset,
    length: row.length,
    filename: row.filename,
    content_type: row.contentType,
    is_public: row.isPublic,
    file_id: row.fileId,
    created_at: row.createdAt.toISOString(),
    expires_at: row.expiresAt.toISOString(),
  };
}

const DIGITS = /^\d{1,16}$/;

/** A tus length or offset header: a non-negative integer, or a 400 naming the header. */
export function byteCount(header: string, value: string | null): number {
  const count = value !== null && DIGITS.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(count)) throw errors.badRequest(`${header} must be a non-negative integer`);
  return count;
}

const METADATA_KEY = /^[\x21-\x2b\x2d-\x7e]+$/; // printable ASCII but the comma
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Upload-Metadata: comma-separated `key base64value` pairs (the value may be left out), keys unique.
 * Returns the decoded values and the header rebuilt from them, safe to answer on HEAD.
 */
export function parseMetadata(header: string | null): { values: Map<string, string>; canonical: string } {
  const values = new Map<string, string>();
  const canonical: string[] = [];
  if (header === null || header.trim() === "") return { values, canonical: "" };
  const malformed = (issue: string) => errors.badRequest(`Malformed Upload-Metadata: ${issue}`);
  for (const pair of header.split(",")) {
    const [key = "", encoded = "", ...rest] = pair.trim().split(" ");
    if (!METADATA_KEY.test(key) || rest.length > 0) throw malformed("each pair is a key and a base64 value");
    if (values.has(key)) throw malformed(`the key ${key} is given twice`);
    if (!BASE64.test(encoded)) throw malformed(`the value of ${key} is not base64`);
    let value: string;
    try {
      value = utf8.decode(Buffer.from(encoded, "base64"));
    } catch {
      throw malformed(`the value of ${key} is not UTF-8`);
    }
    values.set(key, value);
    canonical.push(encoded ? `${key} ${encoded}` : key);
  }
  return { values, canonical: canonical.join(",") };
}

/** `Application/Offset+Octet-Stream; x=y` → `application/offset+octet-stream`. */
export const mediaTypeOf = (contentType: string | null) => contentType?.split(";", 1)[0]?.trim().toLowerCase() ?? "";
