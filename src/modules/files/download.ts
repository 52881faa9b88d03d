/** HTTP details of serving a stored file: byte ranges, validators, the download name, and how S3 bytes travel. */
import type { FileRow } from "../../db/schema";
import { errors } from "../../http/errors";
import type { ObjectStorage } from "../../platform/storage";
import type { Spool } from "./spool";

/** What the route sends back for a download. */
export interface Download {
  status: 200 | 206 | 302 | 304;
  headers: Record<string, string>;
  body: ReturnType<ObjectStorage["read"]> | null;
  /** Call once the response holds the body (the route does): it frees what the body was spooled to. */
  release?: () => Promise<void>;
}

export interface DownloadConditions {
  range: string | null;
  ifNoneMatch: string | null;
  /** The client went away: stop fetching its bytes. */
  signal?: AbortSignal;
}

/**
 * How a bucket's bytes reach the client (files on disk are always sent by this server): through the server
 * with their exact length, spooled first (see spool.ts), or, with `presignSeconds`, by a redirect to a
 * presigned URL of the bucket (S3_DOWNLOAD_MODE=redirect).
 */
export interface S3Delivery {
  spool: Spool;
  presignSeconds?: number;
}

export type RangeRequest = { start: number; end: number } | "unsatisfiable" | undefined;

/**
 * One `bytes=` range (`a-b`, `a-`, `-n`) against a file of `size` bytes. Several ranges, or a header
 * that does not parse, are ignored (the whole file is sent), as RFC 9110 allows.
 */
export function parseRange(header: string | null, size: number): RangeRequest {
  const match = header?.trim().match(/^bytes=(\d*)-(\d*)$/i);
  if (!match || (match[1] === "" && match[2] === "")) return undefined;
  const [first, last] = [match[1] ?? "", match[2] ?? ""];
  if (first === "") {
    const suffix = Number(last);
    return suffix === 0 || size === 0 ? "unsatisfiable" : { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  // `bytes=3-2` is invalid, not unsatisfiable: ignored (the whole file), whatever the size.
  if (last !== "" && Number(last) < start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end: last === "" ? size - 1 : Math.min(Number(last), size - 1) };
}

/** True when an `If-None-Match` header names this entity tag (weakly compared, as for GET). */
export function matchesEtag(header: string | null, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((candidate) => {
    const tag = candidate.trim();
    return tag === "*" || tag.replace(/^W\//, "") === etag;
  });
}

/** `attachment` with an ASCII fallback and the exact name in RFC 5987 form. */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, "_");
  const exact = encodeURIComponent(filename).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${exact}`;
}

/**
 * A stored file's bytes with the headers a browser and a cache need: ranges, validators, a safe
 * disposition. Whoever may see the row has been decided already.
 */
export async function serveStored(
  storage: ObjectStorage,
  row: FileRow,
  conditions: DownloadConditions,
  s3: S3Delivery,
): Promise<Download> {
  // Checked first: Bun answers a missing file with its own error page, past our error mapper. A row
  // without bytes is an upload being committed (or deleted) this instant.
  if (!(await storage.stat(row.storageKey))) throw errors.notFound("File");
  const etag = `"${row.fileHash}"`;
  const headers: Record<string, string> = {
    etag,
    "accept-ranges": "bytes",
    "cache-control": row.isPublic ? "public, no-cache" : "private, no-cache",
  };
  if (matchesEtag(conditions.ifNoneMatch, etag)) return { status: 304, headers, body: null };
  const disposition = contentDisposition(row.filename);
  if (storage.presign && s3.presignSeconds !== undefined) {
    const location = storage.presign(row.storageKey, {
      seconds: s3.presignSeconds,
      contentType: row.contentType,
      contentDisposition: disposition,
    });
    // The bucket answers ranges and validators itself. A cached redirect would outlive its signature.
    return { status: 302, headers: { location, "cache-control": "private, no-store" }, body: null };
  }
  Object.assign(headers, { "content-type": row.contentType, "content-disposition": disposition });
  const range = parseRange(conditions.range, row.fileSize);
  if (range === "unsatisfiable") throw errors.rangeNotSatisfiable(row.fileSize);
  const [status, part] = range ? ([206, range] as const) : ([200, undefined] as const);
  const length = part ? part.end - part.start + 1 : row.fileSize;
  headers["content-length"] = String(length);
  if (part) headers["content-range"] = `bytes ${part.start}-${part.end}/${row.fileSize}`;
  const bytes = storage.read(row.storageKey, part);
  if (bytes instanceof Blob) return { status, headers, body: bytes };
  const spooled = await s3.spool.fill(bytes, length, conditions.signal);
  return { status, headers, body: spooled.file, release: spooled.release };
}
