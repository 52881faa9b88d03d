import { isUtf8 } from "node:buffer";
import { fileTypeFromBuffer } from "file-type";
import { type AppError, errors } from "../../http/errors";
import type { PendingObject } from "../../platform/storage";
import { createMultipartParser, MultipartError, multipartBoundary, type PartSink } from "./multipart";

/** What a multipart upload delivered, once its bytes are in `pending` (not yet committed). */
export interface ReceivedUpload {
  filename: string;
  contentType: string;
  size: number;
  /** SHA-256 of the bytes, hex. */
  hash: string;
  fields: Record<string, string>;
}

export interface UploadLimits {
  maxBytes: number;
  allowedTypes: readonly string[];
}

/** Part headers, small fields and boundaries around the file: a body longer than this plus the limit cannot fit. */
export const MULTIPART_OVERHEAD = 64 * 1024;

// file-type reads at most this much of the start of a file.
export const SNIFF_BYTES = 4100;
const MAX_FIELDS = 8;
const MAX_FIELD_BYTES = 1024;

/** How many bytes at the end start a character the chunk does not finish (0 to 3). */
function unfinishedTail(bytes: Uint8Array): number {
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back] as number;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back
    const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return length > back ? back : 0;
  }
  return 0;
}

/**
 * UTF-8 validation across chunks, without decoding into strings (that made garbage on every chunk of
 * a big text upload): a character cut at a chunk's end is carried over to the next.
 */
export function utf8Validator(carried: Uint8Array = new Uint8Array(0)) {
  let carry: Uint8Array = carried;
  let valid = true;
  return {
    push(chunk: Uint8Array) {
      if (!valid) return;
      const bytes = carry.byteLength ? Buffer.concat([carry, chunk]) : chunk;
      const cut = bytes.byteLength - unfinishedTail(bytes);
      valid = isUtf8(bytes.subarray(0, cut));
      carry = bytes.slice(cut);
    },
    valid: () => valid && carry.byteLength === 0,
    /** Valid so far (the bytes of an unfinished last character aside). */
    validSoFar: () => valid,
    /** The unfinished last character's bytes, to carry into a later request. */
    carry: () => carry,
  };
}

/** Whether a binary file's first bytes are the declared type's magic bytes. */
export async function magicMatches(head: Uint8Array, declared: string): Promise<boolean> {
  return (await fileTypeFromBuffer(head))?.mime === declared;
}

/**
 * What a multipart upload's bytes go through on their way to storage: the size limit, the SHA-256, the
 * first bytes for the type check, and UTF-8 validation for text. (A resumable upload's PATCHes use
 * `resumableInspector`, whose state outlives one request.)
 */
export function contentInspector(declared: string, maxBytes: number) {
  const hash = new Bun.CryptoHasher("sha256");
  const head = new Uint8Array(SNIFF_BYTES);
  let headSize = 0;
  let size = 0;
  const utf8 = declared.startsWith("text/") ? utf8Validator() : undefined;
  return {
    /** Takes the next bytes; throws 413 past the limit. */
    push(bytes: Uint8Array) {
      size += bytes.byteLength;
      if (size > maxBytes) throw errors.tooLarge(maxBytes);
      hash.update(bytes);
      if (headSize < SNIFF_BYTES) {
        const taken = bytes.subarray(0, SNIFF_BYTES - headSize);
        head.set(taken, headSize);
        headSize += taken.byteLength;
      }
      utf8?.push(bytes);
    },
    get size() {
      return size;
    },
    /** Throws 415 unless the content matches the declared type (magic bytes; valid UTF-8 for text). */
    async requireMatch() {
      const matches = utf8 ? utf8.valid() : await magicMatches(head.subarray(0, headSize), declared);
      if (!matches) throw errors.unsupportedMediaType(`The content is not ${declared}`);
    },
    digest: () => hash.digest("hex"),
  };
}

export function requireAllowedType(declared: string, allowed: readonly string[]): void {
  if (!allowed.includes(declared)) {
    throw errors.unsupportedMediaType(`File type ${declared} is not allowed (${allowed.join(", ")})`);
  }
}

/** Stops reading a body: a client gone quiet, one too slow overall, or the server shutting down. */
export interface BodyWatch {
  /** No byte for this long ends the upload (408). */
  idleMs: number;
  /** The whole body must arrive within this long (408). */
  deadlineMs: number;
  /** Aborted when the server stops waiting for in-flight requests (503). */
  shutdown?: AbortSignal;
}

/**
 * The body's chunks, ended early with the reason's error when the watch fires. One timer per body, not
 * one per chunk: a chunk only bumps a counter, and the check every half idle period compares it.
 */
export async function* watched(body: ReadableStream<Uint8Array>, watch: BodyWatch): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  let stopped: AppError | undefined;
  const stop = (reason: AppError) => {
    stopped ??= reason;
    reader.cancel().catch(() => {});
  };
  let chunks = 0;
  let seen = -1;
  const idleSeconds = Math.round(watch.idleMs / 1000);
  const idle = setInterval(
    () => {
      if (chunks === seen) stop(errors.requestTimeout(`No data received for ${idleSeconds} seconds`));
      seen = chunks;
    },
    Math.max(50, watch.idleMs / 2),
  );
  const deadline = setTimeout(
    () => stop(errors.requestTimeout(`The upload took longer than ${Math.round(watch.deadlineMs / 1000)} seconds`)),
    watch.deadlineMs,
  );
  const onShutdown = () => stop(errors.shuttingDown());
  if (watch.shutdown?.aborted) onShutdown();
  watch.shutdown?.addEventListener("abort", onShutdown);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (stopped) throw stopped;
      if (done) return;
      chunks++;
      yield value;
    }
  } finally {
    clearInterval(idle);
    clearTimeout(deadline);
    watch.shutdown?.removeEventListener("abort", onShutdown);
    reader.releaseLock();
  }
}

/**
 * Streams a multipart body: the part named `file` goes to `pending` (each write awaited, so memory stays
 * flat) while its size, hash, type and text are checked; the other parts are small fields. Decided while
 * streaming: a type not allowed (415) and a size over the limit (413) stop the reading at once. Throws the
 * contract's errors; the caller discards `pending` on any failure.
 */
export async function receiveUpload(
  body: ReadableStream<Uint8Array> | null,
  contentType: string,
  limits: UploadLimits,
  pending: PendingObject,
  watch: BodyWatch,
): Promise<ReceivedUpload> {
  const boundary = multipartBoundary(contentType);
  if (!boundary) throw errors.badRequest("Malformed multipart body: no boundary");
  if (!body) throw errors.badRequest("Malformed multipart body: empty");
  const fields: Record<string, string> = {};
  let file: { filename: string; contentType: string; inspector: ReturnType<typeof contentInspector> } | undefined;
  let parts = 0;
  let fileParts = 0;
  const tooMany = () => errors.validation([{ field: "file", issue: "Send one file and at most a few fields" }]);
  // The file's bytes of the chunk being parsed, written once the parser is done with it.
  const toWrite: Uint8Array[] = [];

  const parser = createMultipartParser(boundary, (part): PartSink | undefined => {
    if (++parts > MAX_FIELDS + 1) throw tooMany();
    if (part.filename !== undefined) {
      if (++fileParts > 1) throw tooMany();
      if (part.name !== "file") return undefined;
      requireAllowedType(part.contentType, limits.allowedTypes);
      const inspector = contentInspector(part.contentType, limits.maxBytes);
      file = { filename: part.filename, contentType: part.contentType, inspector };
      return {
        data(bytes) {
          inspector.push(bytes);
          toWrite.push(bytes);
        },
        end() {},
      };
    }
    if (parts - fileParts > MAX_FIELDS) throw tooMany();
    const value: Uint8Array[] = [];
    let length = 0;
    return {
      data(bytes) {
        length += bytes.byteLength;
        if (length > MAX_FIELD_BYTES) throw errors.validation([{ field: part.name, issue: "Field value too long" }]);
        value.push(bytes.slice());
      },
      end() {
        fields[part.name] = Buffer.concat(value).toString("utf8");
      },
    };
  });

  // Every byte counts, not only the file's: a preamble, an epilogue or a big field could go on forever.
  let received = 0;
  try {
    for await (const chunk of watched(body, watch)) {
      received += chunk.byteLength;
      if (received > limits.maxBytes + MULTIPART_OVERHEAD) throw errors.tooLarge(limits.maxBytes);
      parser.push(chunk);
      for (const bytes of toWrite.splice(0)) await pending.write(bytes);
    }
    parser.end();
  } catch (error) {
    if (error instanceof MultipartError) throw errors.badRequest(`Malformed multipart body: ${error.message}`);
    if ((error as Error).name === "AbortError") throw errors.badRequest("Upload aborted by the client");
    throw error;
  }
  if (!file) throw errors.validation([{ field: "file", issue: "A file part named 'file' is required" }]);
  await file.inspector.requireMatch();
  return {
    filename: file.filename,
    contentType: file.contentType,
    size: file.inspector.size,
    hash: file.inspector.digest(),
    fields,
  };
}
