import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";

/** Bytes being written: appended chunk by chunk, then made visible under a key, or thrown away. */
export interface PendingObject {
  /** Resolves once the chunk is written, so a slow disk slows the upload instead of filling memory. */
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the bytes readable under `key`. */
  commit(key: string): Promise<void>;
  /** Removes whatever was written; harmless after a commit or a second call. */
  discard(): Promise<void>;
}

/**
 * The one seam over stored bytes: opaque, server-chosen keys (UUIDs). Nothing else in the code
 * touches stored bytes, so another backend (S3) slots in behind the same five calls.
 */
export interface ObjectStorage {
  readonly kind: "disk";
  begin(): Promise<PendingObject>;
  /** The object's bytes, or the inclusive byte range [start, end]; a Blob streams when sent as a body. */
  read(key: string, range?: { start: number; end: number }): Blob;
  stat(key: string): Promise<{ size: number } | undefined>;
  delete(...keys: string[]): Promise<void>;
  /** Removes temporary objects older than `olderThanMs` (what a crash mid-upload leaves); returns how many. */
  sweep(olderThanMs: number): Promise<number>;
}

const KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Files under `root`: `objects/ab/cd/<key>` (two levels of shards, so no folder holds millions of
 * entries) and `tmp/<random>` while an upload is in flight. A rename inside one file system makes
 * the commit atomic: a reader sees the whole object or none.
 */
export function diskStorage(root: string): ObjectStorage {
  const tmpDir = join(root, "tmp");
  const objectsDir = join(root, "objects");
  // Folders are made on first use: building the storage does no I/O.

  const pathOf = (key: string) => {
    // Keys are ours, but a key never becomes a path unless it is one of ours.
    if (!KEY.test(key)) throw new Error("invalid storage key");
    return join(objectsDir, key.slice(0, 2), key.slice(2, 4), key);
  };

  return {
    kind: "disk",

    async begin() {
      await mkdir(tmpDir, { recursive: true, mode: 0o700 });
      const temp = join(tmpDir, crypto.randomUUID());
      let handle: FileHandle | undefined = await open(temp, "wx", 0o600);
      const close = async () => {
        // A FileHandle garbage-collected while open crashes Bun: always close it explicitly.
        const closing = handle;
        handle = undefined;
        await closing?.close();
      };
      return {
        async write(chunk) {
          if (!handle) throw new Error("object already finished");
          await handle.write(chunk);
        },
        async commit(key) {
          await close();
          const target = pathOf(key);
          await mkdir(join(target, ".."), { recursive: true, mode: 0o700 });
          await rename(temp, target);
        },
        async discard() {
          await close().catch(() => {});
          await rm(temp, { force: true });
        },
      };
    },

    read(key, range) {
      // A fresh Bun.file each time: a cached size would serve a later read truncated.
      const file = Bun.file(pathOf(key));
      return range ? file.slice(range.start, range.end + 1) : file;
    },

    async stat(key) {
      const info = await stat(pathOf(key)).catch(() => undefined);
      return info?.isFile() ? { size: info.size } : undefined;
    },

    async delete(...keys) {
      // A key that is not one of ours names nothing stored here.
      await Promise.all(keys.filter((key) => KEY.test(key)).map((key) => rm(pathOf(key), { force: true })));
    },

    async sweep(olderThanMs) {
      const cutoff = Date.now() - olderThanMs;
      let removed = 0;
      for (const name of await readdir(tmpDir).catch(() => [])) {
        const path = join(tmpDir, name);
        const info = await stat(path).catch(() => undefined);
        if (info && info.mtimeMs < cutoff) {
          await rm(path, { force: true });
          removed++;
        }
      }
      return removed;
    },
  };
}
