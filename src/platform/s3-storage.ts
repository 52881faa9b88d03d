import { S3Client } from "bun";
import type { S3Setting } from "../config";
import { isStorageKey, type ObjectStorage, StorageUnavailableError, type Temporary } from "./storage";

/** S3's smallest part. The writer holds about (1 + QUEUE) parts per upload: memory stays bounded. */
const PART_SIZE = 5 * 1024 * 1024;
const QUEUE = 2;
/** Requests at once when deleting many keys (a user's files). */
const DELETE_CONCURRENCY = 16;

/** At most `length` bytes of `stream`; the rest is not read. */
function firstBytes(stream: ReadableStream<Uint8Array>, length: number): ReadableStream<Uint8Array> {
  let left = length;
  return stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        controller.enqueue(chunk.byteLength <= left ? chunk : chunk.subarray(0, left));
        left -= Math.min(left, chunk.byteLength);
        if (left === 0) controller.terminate();
      },
    }),
  );
}

// Errors S3 asks clients to retry (and s3rver gives when two deletes race to remove a shared folder).
const RETRYABLE = new Set(["InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"]);

/**
 * Runs an S3 call, `attempts` times at most while the bucket answers a retryable error. Any failure is
 * the bucket's (our keys are well-formed), so a 503 for the client. Streaming writes are not repeated
 * here: Bun's writer retries its own parts.
 */
export async function s3<T>(operation: string, call: () => T | Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = (error as { code?: string } | null)?.code ?? "";
      if (attempt < attempts && RETRYABLE.has(code)) await Bun.sleep(50 * attempt);
      else throw new StorageUnavailableError(operation, error);
    }
  }
}

/** Bun's client for the configured bucket. */
export const s3Client = (setting: S3Setting) =>
  new S3Client({
    bucket: setting.bucket,
    endpoint: setting.endpoint,
    region: setting.region,
    accessKeyId: setting.accessKeyId,
    secretAccessKey: setting.secretAccessKey,
  });

/** Where a key's object and, while it is a temporary, its marker lie in the bucket. */
export function s3Paths(prefix: string) {
  const checked = (key: string) => {
    if (!isStorageKey(key)) throw new Error("invalid storage key");
    return key;
  };
  const markerTop = `${prefix}tmp/`;
  return {
    markerTop,
    objectOf: (key: string) => `${prefix}objects/${checked(key)}`,
    markerOf: (key: string) => `${markerTop}${checked(key)}`,
  };
}

/**
 * Objects in an S3-compatible bucket through Bun's S3 client: `<prefix>objects/<key>`, plus a marker
 * `<prefix>tmp/<key>` while an upload is under way. S3 has no rename (and Bun's client no copy), so the
 * bytes go straight to their final key and the marker plays the temporary: `commit` removes it, and the
 * start-up sweep lists the markers. Bytes under a key with a marker and no row belong to nobody: the
 * database row is what makes an object visible, and it is inserted only after the bytes are complete.
 */
export function s3Storage(setting: S3Setting): ObjectStorage {
  const client = s3Client(setting);
  const { markerTop, objectOf, markerOf } = s3Paths(setting.prefix);

  const removeAll = async (paths: string[]) => {
    for (let at = 0; at < paths.length; at += DELETE_CONCURRENCY) {
      await Promise.all(
        paths.slice(at, at + DELETE_CONCURRENCY).map((path) => s3("delete", () => client.delete(path))),
      );
    }
  };

  /**
   * The bytes first, then their markers: a marker is what lets the sweep find bytes without a row, so it
   * goes only once they are gone (a failure in between leaves work for the sweep, never an orphan).
   */
  const removeObjects = async (keys: string[]) => {
    await removeAll(keys.map(objectOf));
    await removeAll(keys.map(markerOf));
  };

  return {
    kind: "s3",

    async begin(key) {
      const marker = markerOf(key);
      const object = objectOf(key);
      await s3("write", () => client.write(marker, ""));
      const writer = client.file(object).writer({ partSize: PART_SIZE, queueSize: QUEUE });
      let open = true;
      return {
        async write(chunk) {
          if (!open) throw new Error("object already closed");
          await s3(
            "write",
            async () => {
              await writer.write(chunk);
              // write() only buffers: without waiting on flush, a fast client fills memory.
              await writer.flush();
            },
            1,
          );
        },
        async close() {
          open = false;
          // end() resolves once every part is uploaded and the upload completed; the size is asked back.
          await s3("write", () => writer.end(), 1);
          return s3("stat", async () => (await client.stat(object)).size);
        },
        read: () => client.file(object).stream(),
        async discard() {
          if (open) {
            open = false;
            // Bun's writer cannot abort: ending completes what was sent (an abort-less multipart upload
            // would stay in the bucket unseen), and the delete below removes it.
            await Promise.resolve(writer.end()).catch(() => {});
          }
          await removeObjects([key]);
        },
      };
    },

    async commit(key) {
      await s3("delete", () => client.delete(markerOf(key)));
    },

    async retire(key) {
      // A key that is not one of ours names nothing stored here (as for `delete`).
      if (!isStorageKey(key)) return;
      await s3("write", () => client.write(markerOf(key), ""));
    },

    read(key, range) {
      const file = client.file(objectOf(key));
      // A stream, not the S3File: Bun answers `new Response(s3File)` with a redirect to the bucket.
      if (!range) return file.stream();
      // Bun reads slice(0, 1) as the whole object (a range ending at 0 taken as none): ask for at least
      // two bytes, and keep what was asked.
      const length = range.end - range.start + 1;
      return firstBytes(file.slice(range.start, Math.max(range.end + 1, 2)).stream(), length);
    },

    presign(key, options) {
      return client.file(objectOf(key)).presign({
        method: "GET",
        expiresIn: options.seconds,
        // Sent back by the bucket as response-content-type and response-content-disposition.
        type: options.contentType,
        contentDisposition: options.contentDisposition,
      });
    },

    async stat(key) {
      const path = objectOf(key);
      return s3("stat", async () => {
        try {
          return { size: (await client.stat(path)).size };
        } catch (error) {
          if ((error as { code?: string } | null)?.code === "NoSuchKey") return undefined;
          throw error;
        }
      });
    },

    async delete(...keys) {
      await removeObjects(keys.filter(isStorageKey));
    },

    async temporaries() {
      const found: Temporary[] = [];
      let continuationToken: string | undefined;
      do {
        const page = await s3("list", () => client.list({ prefix: markerTop, continuationToken }));
        for (const entry of page.contents ?? []) {
          const key = entry.key.slice(markerTop.length);
          // No date: taken as new, so the sweep never removes what it cannot date.
          const modifiedAt = entry.lastModified ? Date.parse(entry.lastModified) : Date.now();
          if (isStorageKey(key)) found.push({ key, modifiedAt });
        }
        continuationToken = page.isTruncated ? page.nextContinuationToken : undefined;
      } while (continuationToken);
      return found;
    },
  };
}
