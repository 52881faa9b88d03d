import { isUtf8 } from "node:buffer";
import busboy from "busboy";
import { fileTypeFromBuffer } from "file-type";
import { AppError, errors } from "../../http/errors";
import type { PendingObject } from "../../platform/storage";

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
const SNIFF_BYTES = 4100;
const MAX_FIELDS = 8;
const MiB = 1024 * 1024;
/** Resident-set growth tolerated before a big upload asks for a full collection. */
const RSS_SLACK = 16 * MiB;

/**
 * Every network chunk of an upload becomes garbage once written, and the GC lets tens of MiB of it
 * pile up before a full collection (a 200 MiB upload grew the resident set by 50-70 MiB; a full
 * collection takes ~12 ms here). Checked once per MiB received: past RSS_SLACK over what the last
 * collection left, collect now. A 200 MiB upload then peaks ~35 MiB up, for ~6 collections.
 */
const keepMemoryFlat = (() => {
  let settled = Number.POSITIVE_INFINITY;
  return () => {
    const rss = process.memoryUsage.rss();
    settled = Math.min(settled, rss);
    if (rss - settled < RSS_SLACK) return;
    Bun.gc(true);
    settled = process.memoryUsage.rss();
  };
})();

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
function utf8Validator() {
  let carry: Uint8Array = new Uint8Array(0);
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
  };
}

/** Does the content match the declared type: magic bytes for binary types, valid UTF-8 for text? */
async function contentMatches(declared: string, head: Uint8Array, validUtf8: boolean): Promise<boolean> {
  if (declared.startsWith("text/")) return validUtf8;
  return (await fileTypeFromBuffer(head))?.mime === declared;
}

/**
 * Streams a multipart body: the part named `file` goes to `pending` chunk by chunk (each write awaited,
 * so memory stays flat) while its SHA-256 is computed; the other parts are small fields. Decided while
 * streaming: a type not allowed (415) and a size over the limit (413) stop the reading at once.
 * Throws the contract's errors; the caller discards `pending` on any failure.
 */
export async function receiveUpload(
  body: ReadableStream<Uint8Array> | null,
  contentType: string,
  limits: UploadLimits,
  pending: PendingObject,
  /** Gets the file's bytes too, as they go to storage (the virus scanner); awaited alike. */
  scan?: { write(chunk: Uint8Array): Promise<void> },
): Promise<ReceivedUpload> {
  let parser: busboy.Busboy;
  try {
    parser = busboy({
      headers: { "content-type": contentType },
      // Raw UTF-8 filenames arrive garbled without it.
      defParamCharset: "utf8",
      // One byte more than allowed, so a file of exactly the limit is not mistaken for a cut one.
      limits: { files: 1, fileSize: limits.maxBytes + 1, fields: MAX_FIELDS, fieldSize: 1024, parts: MAX_FIELDS + 1 },
    });
  } catch {
    throw errors.badRequest("Malformed multipart body: no boundary");
  }

  let failure: Error | undefined;
  const fail = (error: Error) => {
    failure ??= error;
  };
  const malformed = (error: Error) =>
    fail(error instanceof AppError ? error : errors.badRequest(`Malformed multipart body: ${error.message}`));
  const fields: Record<string, string> = {};
  const hash = new Bun.CryptoHasher("sha256");
  const head: Uint8Array[] = [];
  let headSize = 0;
  const utf8 = utf8Validator();
  let file: { filename: string; contentType: string; size: number; done: Promise<void> } | undefined;

  parser.on("file", (name, stream, info) => {
    // Attached at once: a truncated body otherwise throws an uncaught error that kills the process.
    stream.on("error", malformed);
    if (name !== "file" || file) {
      if (name === "file") fail(errors.validation([{ field: "file", issue: "Send exactly one file" }]));
      stream.resume();
      return;
    }
    const declared = info.mimeType.toLowerCase();
    if (!limits.allowedTypes.includes(declared)) {
      fail(errors.unsupportedMediaType(`File type ${declared} is not allowed (${limits.allowedTypes.join(", ")})`));
      stream.resume();
      return;
    }
    const current = { filename: info.filename ?? "", contentType: declared, size: 0, done: Promise.resolve() };
    file = current;
    current.done = new Promise<void>((resolve) => {
      stream.on("data", (chunk: Buffer) => {
        current.size += chunk.byteLength;
        if (current.size > limits.maxBytes) {
          fail(errors.tooLarge(limits.maxBytes));
          return;
        }
        stream.pause();
        hash.update(chunk);
        if (headSize < SNIFF_BYTES) {
          head.push(chunk.subarray(0, SNIFF_BYTES - headSize));
          headSize += Math.min(chunk.byteLength, SNIFF_BYTES - headSize);
        }
        if (declared.startsWith("text/")) utf8.push(chunk);
        if (Math.floor(current.size / MiB) !== Math.floor((current.size - chunk.byteLength) / MiB)) keepMemoryFlat();
        (scan ? Promise.all([pending.write(chunk), scan.write(chunk)]) : pending.write(chunk)).then(
          () => stream.resume(),
          (error: Error) => {
            fail(error);
            stream.resume();
          },
        );
      });
      stream.on("close", resolve);
    });
  });
  parser.on("field", (name, value, info) => {
    if (info.valueTruncated) fail(errors.validation([{ field: name, issue: "Field value too long" }]));
    fields[name] = value;
  });
  for (const limit of ["filesLimit", "fieldsLimit", "partsLimit"] as const) {
    parser.on(limit, () =>
      fail(errors.validation([{ field: "file", issue: "Send one file and at most a few fields" }])),
    );
  }
  const closed = new Promise<void>((resolve, reject) => {
    parser.on("close", resolve);
    parser.on("error", (error: Error) => {
      malformed(error);
      reject(failure);
    });
  });
  closed.catch(() => {});

  try {
    if (!body) throw errors.badRequest("Malformed multipart body: empty");
    // Every byte counts, not only the file's: a preamble, an epilogue or a big field could go on forever.
    let received = 0;
    for await (const chunk of body) {
      received += chunk.byteLength;
      if (received > limits.maxBytes + MULTIPART_OVERHEAD) fail(errors.tooLarge(limits.maxBytes));
      if (failure) break;
      if (!parser.write(chunk)) {
        await Promise.race([new Promise((resolve) => parser.once("drain", resolve)), closed]);
      }
    }
    if (!failure) {
      parser.end();
      await closed;
      await file?.done;
    }
  } catch (error) {
    if ((error as Error).name === "AbortError") fail(errors.badRequest("Upload aborted by the client"));
    else fail(error as Error);
  } finally {
    if (failure) parser.destroy();
  }
  if (failure) throw failure;
  if (!file) throw errors.validation([{ field: "file", issue: "A file part named 'file' is required" }]);
  if (!(await contentMatches(file.contentType, Buffer.concat(head), utf8.valid()))) {
    throw errors.unsupportedMediaType(`The content is not ${file.contentType}`);
  }
  return { filename: file.filename, contentType: file.contentType, size: file.size, hash: hash.digest("hex"), fields };
}
