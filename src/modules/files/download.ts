/** HTTP details of serving a stored file: byte ranges, validators and the download name. */
import type { FileRow } from "../../db/schema";
import { errors } from "../../http/errors";
import type { ObjectStorage } from "../../platform/storage";

/** What the route sends back for a download. */
export interface Download {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  body: ReturnType<ObjectStorage["read"]> | null;
}

export interface DownloadConditions {
  range: string | null;
  ifNoneMatch: string | null;
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
  Object.assign(headers, {
    "content-type": row.contentType,
    "content-disposition": contentDisposition(row.filename),
  });
  const range = parseRange(conditions.range, row.fileSize);
  if (range === "unsatisfiable") throw errors.rangeNotSatisfiable(row.fileSize);
  if (!range) {
    return {
      status: 200,
      headers: { ...headers, "content-length": String(row.fileSize) },
      body: storage.read(row.storageKey),
    };
  }
  return {
    status: 206,
    headers: {
      ...headers,
      "content-length": String(range.end - range.start + 1),
      "content-range": `bytes ${range.start}-${range.end}/${row.fileSize}`,
    },
    body: storage.read(row.storageKey, range),
  };
}
