/**
 * A streaming multipart/form-data parser (RFC 7578) that finds boundaries with `Buffer.indexOf` (native
 * memmem) and hands a part's bytes on as views of the chunks it was given: no copy, no stream objects,
 * no promise per chunk. It replaced busboy, whose JavaScript boundary search and Node streams took most of
 * an upload's CPU (bench/micro). It does only what uploads need: part headers, file bytes, small fields.
 */

/** The body is not well-formed multipart: a 400. */
export class MultipartError extends Error {}

export interface PartInfo {
  /** The form field's name. */
  name: string;
  /** Present (possibly empty) for a file part. */
  filename: string | undefined;
  /** The part's declared media type, lowercased, without parameters ("text/plain" when absent). */
  contentType: string;
}

export interface PartSink {
  /** A piece of the part's bytes: a view valid only during the call. */
  data(bytes: Uint8Array): void;
  end(): void;
}

const CR = 13;
const HEADER_END = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");
/** Part headers beyond this are refused (a 16,000-character file name still fits). */
const MAX_HEADER_BYTES = 16 * 1024 + 512;
// A header field name (token) and value (visible characters, spaces, tabs, obs-text; no other controls).
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const BAD_VALUE_CHARACTER = /[\x00-\x08\x0a-\x1f\x7f]/;
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$/;

/** The boundary of a `multipart/form-data` Content-Type, or undefined. */
export function multipartBoundary(contentType: string): string | undefined {
  const { type, params } = parseHeaderValue(contentType);
  if (type !== "multipart/form-data") return undefined;
  const boundary = params.get("boundary");
  return boundary !== undefined && BOUNDARY.test(boundary) ? boundary : undefined;
}

const utf8 = new TextDecoder();

/** A header's value as `type; name=value; name="quoted"; name*=UTF-8''percent-encoded`. */
export function parseHeaderValue(value: string): { type: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  const extended = new Set<string>();
  const first = value.indexOf(";");
  const type = (first === -1 ? value : value.slice(0, first)).trim().toLowerCase();
  let at = first === -1 ? value.length : first + 1;
  while (at < value.length) {
    const equals = value.indexOf("=", at);
    if (equals === -1) break;
    let name = value.slice(at, equals).trim().toLowerCase();
    at = equals + 1;
    while (value[at] === " " || value[at] === "\t") at++;
    let raw: string;
    if (value[at] === '"') {
      raw = "";
      // Browsers send names unescaped (C:\Users\a.txt): a backslash escapes only a quote or a backslash.
      for (at++; at < value.length && value[at] !== '"'; at++) {
        const escaped = value[at] === "\\" && (value[at + 1] === '"' || value[at + 1] === "\\");
        raw += escaped ? value[++at] : value[at];
      }
      if (at >= value.length) throw new MultipartError("Malformed part header: unterminated quoted string");
      at = value.indexOf(";", at + 1);
    } else {
      const end = value.indexOf(";", at);
      raw = (end === -1 ? value.slice(at) : value.slice(at, end)).trim();
      at = end;
    }
    at = at === -1 ? value.length : at + 1;
    if (name.endsWith("*")) {
      name = name.slice(0, -1);
      const decoded = decodeExtendedValue(raw);
      if (decoded === undefined) continue;
      params.set(name, decoded);
      extended.add(name);
    } else if (!extended.has(name) && !params.has(name)) {
      // Browsers send names raw in UTF-8; the header was read byte for byte (latin1).
      params.set(name, utf8.decode(Buffer.from(raw, "latin1")));
    }
  }
  return { type, params };
}

/** RFC 5987: `charset'language'percent-encoded`, in UTF-8 or ISO-8859-1; undefined otherwise. */
function decodeExtendedValue(raw: string): string | undefined {
  const match = raw.match(/^([^']*)'[^']*'(.*)$/);
  const charset = match?.[1]?.toLowerCase();
  if (!match || (charset !== "utf-8" && charset !== "iso-8859-1")) return undefined;
  const encoded = match[2] ?? "";
  const bytes: number[] = [];
  for (let at = 0; at < encoded.length; at++) {
    const hex = encoded[at] === "%" ? encoded.slice(at + 1, at + 3) : "";
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      at += 2;
    } else bytes.push(encoded.charCodeAt(at) & 0xff);
  }
  return charset === "utf-8" ? utf8.decode(new Uint8Array(bytes)) : Buffer.from(bytes).toString("latin1");
}

function parsePartHeaders(block: Buffer): PartInfo | undefined {
  const headers = new Map<string, string>();
  let last: string | undefined;
  for (const line of block.toString("latin1").split("\r\n")) {
    if ((line.startsWith(" ") || line.startsWith("\t")) && last) {
      headers.set(last, `${headers.get(last)} ${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    const name = colon === -1 ? "" : line.slice(0, colon);
    const value = line.slice(colon + 1);
    if (!HEADER_NAME.test(name) || BAD_VALUE_CHARACTER.test(value)) throw new MultipartError("Malformed part header");
    last = name.toLowerCase();
    headers.set(last, value.trim());
  }
  const disposition = headers.get("content-disposition");
  if (!disposition) return undefined;
  const { type, params } = parseHeaderValue(disposition);
  const name = params.get("name");
  if (type !== "form-data" || name === undefined) return undefined;
  const contentType = headers.get("content-type");
  return {
    name,
    filename: params.get("filename"),
    contentType: contentType ? parseHeaderValue(contentType).type : "text/plain",
  };
}

type State = "preamble" | "delimiter" | "headers" | "body" | "done";

/**
 * Feeds `push` each chunk of the body and `end` once it is over; `onPart` is called as each part begins
 * and returns the sink for its bytes (or undefined to skip them). Throws MultipartError on a malformed body.
 */
export function createMultipartParser(boundary: string, onPart: (part: PartInfo) => PartSink | undefined) {
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  // The first delimiter may open the body without a line break before it.
  let carry: Buffer = Buffer.from(CRLF);
  let state: State = "preamble";
  let sink: PartSink | undefined;

  /** How many bytes at the end of `data` (after `from`) could start a delimiter the next chunk completes. */
  function partialDelimiter(data: Buffer, from: number): number {
    const earliest = Math.max(from, data.length - delimiter.length + 1);
    for (let at = data.lastIndexOf(CR, data.length - 1); at >= earliest; at = data.lastIndexOf(CR, at - 1)) {
      if (data.subarray(at).equals(delimiter.subarray(0, data.length - at))) return data.length - at;
      if (at === 0) break;
    }
    return 0;
  }

  function consume(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      if (state === "preamble" || state === "body") {
        const found = data.indexOf(delimiter, at);
        const end = found === -1 ? data.length - partialDelimiter(data, at) : found;
        if (state === "body" && end > at) sink?.data(data.subarray(at, end));
        if (found === -1) {
          carry = Buffer.from(data.subarray(end));
          return;
        }
        if (state === "body") sink?.end();
        sink = undefined;
        state = "delimiter";
        at = found + delimiter.length;
      } else if (state === "delimiter") {
        const lineEnd = data.indexOf(CRLF, at);
        if (data.length - at >= 2 && data[at] === 45 && data[at + 1] === 45) {
          state = "done";
          return;
        }
        if (lineEnd === -1) {
          if (data.length - at > 256) throw new MultipartError("Malformed part delimiter");
          carry = Buffer.from(data.subarray(at));
          return;
        }
        // Transport padding (spaces and tabs) may follow the boundary; nothing else may.
        if (!/^[ \t]*$/.test(data.toString("latin1", at, lineEnd)))
          throw new MultipartError("Malformed part delimiter");
        state = "headers";
        at = lineEnd + 2;
      } else if (state === "headers") {
        const blank = data[at] === CR && data[at + 1] === 10 ? at : data.indexOf(HEADER_END, at);
        if (blank === -1 || (blank === at && data.length - at < 2)) {
          if (data.length - at > MAX_HEADER_BYTES) throw new MultipartError("Part headers too large");
          carry = Buffer.from(data.subarray(at));
          return;
        }
        const part = blank === at ? undefined : parsePartHeaders(data.subarray(at, blank));
        sink = part && onPart(part);
        state = "body";
        at = blank + (blank === at ? 2 : 4);
      } else {
        // The epilogue: ignored.
        return;
      }
    }
    carry = Buffer.alloc(0);
  }

  return {
    push(chunk: Uint8Array): void {
      if (state === "done") return;
      const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      consume(carry.length ? Buffer.concat([carry, bytes]) : bytes);
    },
    /** The body is over: throws unless the closing delimiter was seen. */
    end(): void {
      if (state !== "done") throw new MultipartError("Unexpected end of form");
    },
    get finished() {
      return state === "done";
    },
  };
}
