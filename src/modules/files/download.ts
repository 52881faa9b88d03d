/** HTTP details of serving a stored file: byte ranges, validators and the download name. */

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
