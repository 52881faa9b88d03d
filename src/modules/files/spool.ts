/**
 * Bucket bytes made sendable with their length. Bun drops the Content-Length a handler sets on a streamed
 * body and sends it chunked (oven-sh/bun#10507; on 1.4.5 for every kind of stream: plain, `type: "direct"`,
 * `type: "bytes"`, async iterators, fetch bodies, a FIFO behind `Bun.file`). It sends an exact length only for
 * a body whose size it knows: bytes in memory, a regular file (sendfile), or an S3File, which it answers
 * with a redirect. So a bucket's bytes are copied into a file of their own first and sent from there: memory
 * stays flat, and a bucket failing mid-transfer is found before the status line goes out.
 */

import { type FileHandle, open, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { BunFile } from "bun";
import { inFolder } from "../../platform/storage";

/** The storage delivered fewer (or more) bytes than the object has, or failed while delivering them. */
export class SpoolReadError extends Error {
  constructor(
    readonly received: number,
    readonly expected: number,
    cause?: unknown,
  ) {
    super(`storage delivered ${received} of ${expected} bytes`, { cause });
  }
}

export interface SpooledFile {
  file: BunFile;
  /** Removes the file's name; a response that already opened it still reads it to the end. */
  release(): Promise<void>;
}

export interface Spool {
  /** Copies exactly `size` bytes of `body` into a new file; stops (and removes it) when `signal` aborts. */
  fill(body: ReadableStream<Uint8Array>, size: number, signal?: AbortSignal): Promise<SpooledFile>;
  /** Removes files older than `olderThanMs` (left by a crash); returns how many. */
  sweep(olderThanMs: number): Promise<number>;
}

export function createSpool(dir: string): Spool {
  return {
    async fill(body, size, signal) {
      const path = join(dir, Bun.randomUUIDv7());
      const release = () => rm(path, { force: true });
      let handle: FileHandle | undefined;
      let received = 0;
      const reader = body.getReader();
      try {
        // The folder is made only when missing (a mkdir on every download costs as it did on every upload).
        handle = await inFolder(path, () => open(path, "wx", 0o600));
        for (;;) {
          signal?.throwIfAborted();
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (error) {
            throw new SpoolReadError(received, size, error);
          }
          if (chunk.done) break;
          received += chunk.value.byteLength;
          if (received > size) throw new SpoolReadError(received, size);
          await handle.write(chunk.value);
        }
        if (received !== size) throw new SpoolReadError(received, size);
        return { file: Bun.file(path), release };
      } catch (error) {
        await reader.cancel().catch(() => {});
        await release();
        throw error;
      } finally {
        // A FileHandle garbage-collected while open crashes Bun.
        await handle?.close();
      }
    },

    async sweep(olderThanMs) {
      const cutoff = Date.now() - olderThanMs;
      let removed = 0;
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const path = join(dir, name);
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
