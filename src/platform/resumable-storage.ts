import { constants } from "node:fs";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { AwsClient } from "aws4fetch";
import type { S3Setting } from "../config";
import { s3, s3Client, s3Paths } from "./s3-storage";
import {
  diskTemporaryPath,
  inFolder,
  isStorageKey,
  type PendingObject,
  StorageUnavailableError,
  storageFault,
} from "./storage";

/** What a storage keeps of a resumable upload between requests, recorded with its offset (opaque JSON). */
export type ResumableState = Record<string, unknown>;

/** An upload's bytes as the database records them: `offset` bytes of `length` stored, in `state`. */
export interface ResumableBytes {
  key: string;
  offset: number;
  length: number;
  state: ResumableState | null;
}

/** One request's bytes on their way in, appended at the recorded offset. */
export interface Appender {
  /** Resolves once the chunk is taken (written, or buffered towards a part), so memory stays bounded. */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes everything written durable and returns the state to record with the new offset. */
  save(): Promise<ResumableState | null>;
  /** Forgets what was written: the recorded offset stays, and what lies past it is overwritten later. */
  drop(): Promise<void>;
  /** Once the new offset is recorded: removes what the record no longer needs. Best effort. */
  cleanup(): Promise<void>;
}

/** The bytes of the request that lost them cannot be answered for: the upload is gone (a restore without them). */
export class ResumableBytesLostError extends Error {
  constructor(key: string, stored: number, recorded: number) {
    super(`resumable upload ${key}: ${stored} bytes stored, ${recorded} recorded`);
  }
}

/**
 * Where resumable uploads' bytes wait between requests: on disk a file appended to, on S3 the parts of a
 * multipart upload plus small staged objects for what is not yet a part. `finish` turns the complete bytes
 * into the temporary of their key, the `PendingObject` that `ingest.store` makes a file of; nothing here
 * touches the objects of files.
 */
export interface ResumableStorage {
  /** `record` saves a state at once (the multipart upload's id as soon as it exists), so none is ever lost. */
  append(upload: ResumableBytes, record: (state: ResumableState) => Promise<void>): Promise<Appender>;
  finish(upload: ResumableBytes): Promise<PendingObject>;
  /** Removes whatever the upload left (also a crashed writer's unrecorded bytes); harmless when nothing is there. */
  remove(upload: Pick<ResumableBytes, "key" | "state">): Promise<void>;
}

/** Bytes gathered into one write to disk. */
const GATHER = 1024 * 1024;

/** A pending object over bytes already complete: nothing more is written to it. */
function completeObject(parts: Omit<PendingObject, "write">): PendingObject {
  return {
    ...parts,
    write: async () => {
      throw new Error("a finished resumable upload takes no more bytes");
    },
  };
}

/** On disk: `resumable/<key>` under the upload folder, appended to; renamed to `tmp/<key>` when complete. */
function diskResumable(root: string): ResumableStorage {
  const pathOf = (key: string) => {
    if (!isStorageKey(key)) throw new Error("invalid storage key");
    return join(root, "resumable", key);
  };

  return {
    async append(upload) {
      const path = pathOf(upload.key);
      const handle: FileHandle = await inFolder(path, () =>
        open(path, constants.O_RDWR | constants.O_CREAT, 0o600),
      ).catch((error) => {
        throw storageFault(error);
      });
      let position = upload.offset;
      let open_ = true;
      const gather = Buffer.allocUnsafe(GATHER);
      let gathered = 0;
      const close = async () => {
        if (!open_) return;
        open_ = false;
        // A FileHandle garbage-collected while open crashes Bun: always close it explicitly.
        await handle.close();
      };
      const writeAt = async (bytes: Uint8Array) => {
        try {
          for (let done = 0; done < bytes.byteLength; ) {
            done += (await handle.write(bytes, done, bytes.byteLength - done, position + done)).bytesWritten;
          }
        } catch (error) {
          throw storageFault(error);
        }
        position += bytes.byteLength;
      };
      const flush = async () => {
        if (gathered === 0) return;
        const length = gathered;
        gathered = 0;
        await writeAt(gather.subarray(0, length));
      };
      try {
        const stored = (await handle.stat()).size;
        if (stored < upload.offset) throw new ResumableBytesLostError(upload.key, stored, upload.offset);
        // Bytes past the offset were written by a request that never recorded them.
        if (stored > upload.offset) await handle.truncate(upload.offset);
      } catch (error) {
        await close();
        throw storageFault(error);
      }
      return {
        async write(chunk) {
          if (gathered + chunk.byteLength > GATHER) await flush();
          if (chunk.byteLength >= GATHER) return writeAt(chunk);
          gather.set(chunk, gathered);
          gathered += chunk.byteLength;
        },
        async save() {
          try {
            await flush();
            // On disk before the offset is recorded: a crash must not find a hole where bytes were.
            await handle.sync();
          } catch (error) {
            throw storageFault(error);
          } finally {
            await close();
          }
          return null;
        },
        drop: close,
        cleanup: async () => {},
      };
    },

    async finish(upload) {
      const temporary = diskTemporaryPath(root, upload.key);
      await inFolder(temporary, () => rename(pathOf(upload.key), temporary));
      return completeObject({
        async close() {
          // Every request's bytes were synced when its offset was recorded; the rename is made durable here.
          const handle = await open(temporary, "r");
          try {
            await handle.sync();
            return (await handle.stat()).size;
          } finally {
            await handle.close();
          }
        },
        read: () => Bun.file(temporary).stream(),
        discard: () => rm(temporary, { force: true }),
      });
    },

    async remove(upload) {
      await rm(pathOf(upload.key), { force: true });
    },
  };
}

/** S3's smallest part (all but the last) and most parts per upload. */
const MIN_PART = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;

/** The part size that fits `length` bytes in S3's part count. */
export const partSizeFor = (length: number) => Math.max(MIN_PART, Math.ceil(length / MAX_PARTS));

/** What the database keeps of an upload's multipart upload. */
interface MultipartState {
  /** The multipart upload, once a part was needed. */
  uploadId?: string;
  /** Each uploaded part's ETag, part N at index N-1. */
  parts: string[];
  /** Bytes in those parts; the rest of the offset is staged. */
  partBytes: number;
  /** Offsets of the staged objects, in order: bytes waiting to fill a part. */
  staged: number[];
}

function multipartState(state: ResumableState | null): MultipartState {
  const saved = (state ?? {}) as Partial<MultipartState>;
  return {
    uploadId: saved.uploadId,
    parts: [...(saved.parts ?? [])],
    partBytes: saved.partBytes ?? 0,
    staged: [...(saved.staged ?? [])],
  };
}

const unescapeXml = (text: string) =>
  text
    .replaceAll("&quot;", '"')
    .replaceAll("&apos;", "'")
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");
const escapeXml = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
const xmlField = (xml: string, name: string) => {
  const found = xml.match(new RegExp(`<${name}>([^<]*)</${name}>`))?.[1];
  return found === undefined ? undefined : unescapeXml(found);
};

/** An S3 error answer as an error carrying S3's code, as Bun's client throws them. */
async function s3Failure(response: Response): Promise<Error & { code: string }> {
  const body = await response.text().catch(() => "");
  const code = xmlField(body, "Code") ?? `HTTP${response.status}`;
  return Object.assign(new Error(`S3 answered ${response.status} ${code}`), { code });
}

/**
 * The multipart calls Bun's S3 client does not offer across requests (its writer is one request's), signed
 * with aws4fetch; path-style with S3_ENDPOINT, as Bun's client does, virtual-hosted on AWS.
 */
function multipartApi(setting: S3Setting) {
  const region = setting.region ?? "us-east-1";
  const aws = new AwsClient({
    accessKeyId: setting.accessKeyId,
    secretAccessKey: setting.secretAccessKey,
    service: "s3",
    region,
    // Our own retry (s3()) decides; aws4fetch would retry 5xx ten times.
    retries: 0,
  });
  const encoded = (path: string) => path.split("/").map(encodeURIComponent).join("/");
  const urlOf = (path: string, query: string) =>
    setting.endpoint
      ? `${setting.endpoint.replace(/\/+$/, "")}/${setting.bucket}/${encoded(path)}?${query}`
      : `https://${setting.bucket}.s3.${region}.amazonaws.com/${encoded(path)}?${query}`;
  const call = async (method: string, path: string, query: string, body?: Uint8Array | string) => {
    const response = await aws.fetch(urlOf(path, query), { method, body });
    if (!response.ok) throw await s3Failure(response);
    return response;
  };

  return {
    async create(path: string): Promise<string> {
      const xml = await (await call("POST", path, "uploads=")).text();
      const id = xmlField(xml, "UploadId");
      if (!id) throw Object.assign(new Error("S3 gave no UploadId"), { code: "NoUploadId" });
      return id;
    },
    async uploadPart(path: string, uploadId: string, part: number, bytes: Uint8Array): Promise<string> {
      const query = `partNumber=${part}&uploadId=${encodeURIComponent(uploadId)}`;
      const etag = (await call("PUT", path, query, bytes)).headers.get("etag");
      if (!etag) throw Object.assign(new Error("S3 gave no ETag"), { code: "NoETag" });
      return etag;
    },
    async complete(path: string, uploadId: string, etags: string[]): Promise<void> {
      const parts = etags
        .map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${escapeXml(etag)}</ETag></Part>`)
        .join("");
      const xml = `<CompleteMultipartUpload>${parts}</CompleteMultipartUpload>`;
      const response = await call("POST", path, `uploadId=${encodeURIComponent(uploadId)}`, xml);
      // S3 may answer 200 and still fail, with an Error body.
      const answer = await response.text();
      const code = xmlField(answer, "Code");
      if (answer.includes("<Error>") && code)
        throw Object.assign(new Error(`S3 failed to complete: ${code}`), { code });
    },
    /** Ends the multipart upload and frees its parts; false when the server cannot abort (s3rver). */
    async abort(path: string, uploadId: string): Promise<boolean> {
      const response = await aws.fetch(urlOf(path, `uploadId=${encodeURIComponent(uploadId)}`), { method: "DELETE" });
      if (response.ok || response.status === 404) return true;
      if (response.status === 405 || response.status === 501) return false;
      throw await s3Failure(response);
    },
  };
}

/**
 * On S3: a multipart upload to the file's final key, whose parts (at least 5 MiB but the last) are uploaded
 * as the bytes arrive; what a request leaves short of a part goes to a staged object
 * `resumable/<key>/<offset>`, never held in memory between requests, and is read back into the part it
 * starts. One part buffer per request in flight. A part number is written again if a request failed
 * before recording it, so unrecorded parts simply get replaced.
 */
function s3Resumable(setting: S3Setting): ResumableStorage {
  const client = s3Client(setting);
  const api = multipartApi(setting);
  const { objectOf, markerOf } = s3Paths(setting.prefix);
  const stagedTop = (key: string) => {
    if (!isStorageKey(key)) throw new Error("invalid storage key");
    return `${setting.prefix}resumable/${key}/`;
  };
  // Zero-padded, so a listing is in offset order.
  const stagedOf = (key: string, offset: number) => `${stagedTop(key)}${String(offset).padStart(16, "0")}`;

  const removeStaged = async (key: string) => {
    const prefix = stagedTop(key);
    const listing = await s3("list", () => client.list({ prefix }));
    await Promise.all((listing.contents ?? []).map((entry) => s3("delete", () => client.delete(entry.key))));
  };

  /**
   * Abort, or where the server cannot (s3rver), complete with one empty part and delete what that made.
   * An upload S3 no longer knows (completed or aborted already) is done.
   */
  const endMultipart = async (key: string, uploadId: string) => {
    const path = objectOf(key);
    try {
      if (await s3("abort", () => api.abort(path, uploadId))) return;
      const etag = await s3("write", () => api.uploadPart(path, uploadId, 1, new Uint8Array(0)));
      await s3("write", () => api.complete(path, uploadId, [etag]));
    } catch (error) {
      if ((error as { cause?: { code?: string } }).cause?.code === "NoSuchUpload") return;
      throw error;
    }
    await s3("delete", () => client.delete(path));
  };

  return {
    async append(upload, record) {
      const state = multipartState(upload.state);
      const partSize = partSizeFor(upload.length);
      const path = objectOf(upload.key);
      // The buffer's first `reserved` bytes are the staged ones, read back only if the part fills.
      let reserved = upload.offset - state.partBytes;
      let used = reserved;
      // A part holds what is left of the upload at most: a small upload never allocates a whole part.
      const capacity = Math.min(partSize, upload.length - state.partBytes);
      let buffer: Uint8Array | undefined;
      let position = upload.offset;
      const consumed: string[] = [];

      const uploadPart = async (length: number) => {
        buffer ??= new Uint8Array(capacity);
        const part = buffer.subarray(0, length);
        for (const [i, offset] of state.staged.entries()) {
          const end = state.staged[i + 1] ?? state.partBytes + reserved;
          const bytes = await s3("read", () => client.file(stagedOf(upload.key, offset)).bytes());
          if (bytes.byteLength !== end - offset) throw new ResumableBytesLostError(upload.key, bytes.byteLength, end);
          part.set(bytes, offset - state.partBytes);
        }
        if (!state.uploadId) {
          state.uploadId = await s3("write", () => api.create(path));
          await record({ ...state });
        }
        const uploadId = state.uploadId;
        const etag = await s3("write", () => api.uploadPart(path, uploadId, state.parts.length + 1, part));
        state.parts.push(etag);
        state.partBytes += length;
        consumed.push(...state.staged.map((offset) => stagedOf(upload.key, offset)));
        state.staged = [];
        reserved = 0;
        used = 0;
      };

      return {
        async write(chunk) {
          for (let at = 0; at < chunk.byteLength; ) {
            buffer ??= new Uint8Array(capacity);
            const taken = Math.min(chunk.byteLength - at, partSize - used);
            buffer.set(chunk.subarray(at, at + taken), used);
            used += taken;
            at += taken;
            if (used === partSize) await uploadPart(partSize);
          }
          position += chunk.byteLength;
        },
        async save() {
          if (position === upload.length) {
            // The last part may be short (or empty: S3 completes no upload without a part).
            if (used > 0 || state.parts.length === 0) await uploadPart(used);
          } else if (used > reserved) {
            const start = position - (used - reserved);
            const bytes = (buffer as Uint8Array).subarray(reserved, used);
            await s3("write", () => client.write(stagedOf(upload.key, start), bytes));
            state.staged.push(start);
          }
          buffer = undefined;
          return { ...state };
        },
        async drop() {
          buffer = undefined;
        },
        async cleanup() {
          await Promise.all(consumed.map((stale) => s3("delete", () => client.delete(stale)))).catch(() => {});
        },
      };
    },

    async finish(upload) {
      const state = multipartState(upload.state);
      if (!state.uploadId) throw new StorageUnavailableError("complete", new Error("no multipart upload"));
      const uploadId = state.uploadId;
      const object = objectOf(upload.key);
      const marker = markerOf(upload.key);
      // A temporary from here on, like any upload's bytes until their row exists.
      await s3("write", () => client.write(marker, ""));
      await s3("write", () => api.complete(object, uploadId, state.parts));
      await removeStaged(upload.key).catch(() => {});
      return completeObject({
        close: () => s3("stat", async () => (await client.stat(object)).size),
        read: () => client.file(object).stream(),
        async discard() {
          // The bytes, then their marker: the marker is what lets the sweep find bytes without a row.
          await s3("delete", () => client.delete(object));
          await s3("delete", () => client.delete(marker));
        },
      });
    },

    async remove(upload) {
      const { uploadId } = multipartState(upload.state);
      if (uploadId) await endMultipart(upload.key, uploadId);
      await removeStaged(upload.key);
    },
  };
}

/** The resumable twin of STORAGE_URL's storage. */
export function openResumable(setting: { kind: "disk"; dir: string } | ({ kind: "s3" } & S3Setting)) {
  return setting.kind === "s3" ? s3Resumable(setting) : diskResumable(setting.dir);
}
