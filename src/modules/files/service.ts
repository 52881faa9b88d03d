import type { FileRow, Role } from "../../db/schema";
import { hasPermission } from "../../http/auth";
import { errors, loggableError } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Metrics } from "../../platform/metrics";
import { StorageUnavailableError } from "../../platform/storage";
import { type Download, type DownloadConditions, type S3Delivery, serveStored } from "./download";
import { createIngest, IDEMPOTENCY_KEY_TTL_MS, type IngestDeps } from "./ingest";
import { createShareLinks } from "./links";
import type { ShareLinksRepo } from "./links-repo";
import { cleanFilename, type FileChanges, type FileInfo, type FileListParams, toFileInfo } from "./model";
import { SpoolReadError } from "./spool";

export type { FilesConfig } from "./ingest";

/** Who asks: a signed-in user, or nobody (public files only). */
export type Viewer = { id: string; role: Role } | undefined;

/** A backup's pins older than this belong to a backup that died with its process. */
const STALE_PIN_MS = 86_400_000;
/** Keys retired at once when a user is deleted (each an empty write on S3). */
const RETIRE_BATCH = 16;

/** Expired share links and Idempotency-Keys are pruned this often. */
const PRUNE_INTERVAL_MS = 3_600_000;

export interface FilesDeps extends IngestDeps {
  links: ShareLinksRepo;
  metrics: Pick<Metrics, "uploadStored" | "uploadScanned" | "downloadFailed">;
  /** How a bucket's bytes reach clients (S3_DOWNLOAD_MODE). */
  s3Delivery: S3Delivery;
}

/** Uploads (`ingest.ts`), downloads, share links (`links.ts`), listing, renaming and deletion of files. */
export function createFilesService(deps: FilesDeps) {
  const { repo, storage, logger, audit, metrics, notify = () => {} } = deps;
  const ingest = createIngest(deps);

  const isAdmin = (viewer: Viewer) => viewer !== undefined && hasPermission(viewer.role, "files:read");

  /** The row if the viewer may see it; another user's private file does not exist for them (404). */
  async function visible(viewer: Viewer, id: string) {
    const row = await repo.findById(id);
    if (!row || !(row.isPublic || row.ownerId === viewer?.id || isAdmin(viewer))) throw errors.notFound("File");
    return row;
  }

  /** The row if the viewer may change it (its owner, or an admin). */
  async function owned(viewer: Viewer, id: string, permission: "files:write" | "files:delete") {
    const row = await visible(viewer, id);
    if (row.ownerId !== viewer?.id && !(viewer && hasPermission(viewer.role, permission))) {
      // Readable (public) but not theirs.
      throw errors.forbidden();
    }
    return row;
  }

  /**
   * The bytes with their headers; a download the storage fails to deliver whole is logged once with its
   * request id, counted, and answered 503 (spooling finds the failure before the status line goes out).
   * `downloaded`: record `file.downloaded` with these details.
   */
  async function deliver(
    row: FileRow,
    conditions: DownloadConditions,
    meta: RequestMeta,
    downloaded?: { actorId: string | null; details: Record<string, unknown> },
  ): Promise<Download> {
    let download: Download;
    try {
      download = await serveStored(storage, row, conditions, deps.s3Delivery);
    } catch (error) {
      if (conditions.signal?.aborted) throw errors.badRequest("Download aborted by the client");
      if (!(error instanceof SpoolReadError || error instanceof StorageUnavailableError)) throw error;
      logger.warn("download failed: the storage did not deliver the file", {
        request_id: meta.requestId,
        file_id: row.id,
        ...(error instanceof SpoolReadError && { bytes_received: error.received, bytes_expected: error.expected }),
        error: loggableError(error.cause ?? error),
      });
      metrics.downloadFailed();
      throw errors.unavailable("The file storage failed while sending the file; try again");
    }
    if (downloaded && download.status !== 304) {
      try {
        await audit.recordAlone({
          action: "file.downloaded",
          actorId: downloaded.actorId,
          target: { type: "file", id: row.id },
          details: { ...downloaded.details, status: download.status },
          meta,
        });
      } catch (error) {
        await download.release?.();
        throw error;
      }
    }
    return download;
  }

  /** Removes expired share links and Idempotency-Keys; returns how many of each. */
  async function prune(now = Date.now()): Promise<{ links: number; keys: number }> {
    const [links, keys] = await Promise.all([
      deps.links.pruneExpired(new Date(now)),
      repo.pruneKeys(new Date(now - IDEMPOTENCY_KEY_TTL_MS)),
    ]);
    return { links, keys };
  }

  /**
   * Finishes what uploads cut short by a crash left: a temporary with a row is committed (the upload had
   * succeeded), one without a row and older than `olderThanMs` (so not an upload in flight) is removed,
   * and so are backup pins left by a backup that never ended. Returns how many of each.
   */
  async function recover(olderThanMs: number): Promise<{ committed: number; removed: number }> {
    const cutoff = Date.now() - olderThanMs;
    const done = { committed: 0, removed: 0 };
    for (const temporary of await storage.temporaries()) {
      try {
        if (await repo.findByStorageKey(temporary.key)) {
          await storage.commit(temporary.key, { retired: true });
          done.committed++;
        } else if (temporary.modifiedAt < cutoff) {
          await storage.delete(temporary.key);
          done.removed++;
        }
      } catch (error) {
        // Committed, retired or deleted meanwhile by the request that owns it; the next round looks again.
        logger.warn("sweep skipped a temporary", { storage_key: temporary.key, error: (error as Error).message });
      }
    }
    await storage.releaseStalePins?.(STALE_PIN_MS);
    return done;
  }

  return {
    ...ingest,

    links: createShareLinks({
      repo: deps.links,
      audit,
      owned: (actor, id) => owned(actor, id, "files:write"),
      deliver,
    }),

    async list(viewer: NonNullable<Viewer>, params: FileListParams) {
      const wantsOthers = params.all || (params.owner_id !== undefined && params.owner_id !== viewer.id);
      if (wantsOthers && !isAdmin(viewer)) throw errors.forbidden("Only an admin may list other users' files");
      const owner = params.all ? undefined : (params.owner_id ?? viewer.id);
      const { rows, total } = await repo.list(params, owner);
      return { items: rows.map(toFileInfo), total, offset: params.offset, limit: params.limit };
    },

    get: async (viewer: Viewer, id: string) => toFileInfo(await visible(viewer, id)),

    /** The bytes with the headers a browser and a cache need; a download by anyone but the owner is audited. */
    async download(viewer: Viewer, id: string, conditions: DownloadConditions, meta: RequestMeta): Promise<Download> {
      const row = await visible(viewer, id);
      const byOther = viewer?.id !== row.ownerId;
      return deliver(
        row,
        conditions,
        meta,
        byOther ? { actorId: viewer?.id ?? null, details: { owner_id: row.ownerId } } : undefined,
      );
    },

    async update(viewer: NonNullable<Viewer>, id: string, changes: FileChanges): Promise<FileInfo> {
      await owned(viewer, id, "files:write");
      const row = await repo.update(id, {
        filename: changes.filename === undefined ? undefined : cleanFilename(changes.filename),
        isPublic: changes.is_public,
      });
      if (!row) throw errors.notFound("File");
      return toFileInfo(row);
    },

    /** The row first, then the bytes: a failure in between leaves unreachable bytes, never a row without them. */
    async delete(viewer: NonNullable<Viewer>, id: string, meta: RequestMeta): Promise<void> {
      const found = await owned(viewer, id, "files:delete");
      // Retired first (a storage outage is a 503 with nothing changed): bytes a failed delete leaves
      // behind are then a temporary without a row, which the start-up sweep removes.
      await storage.retire(found.storageKey);
      const row = await audit.transaction(async (tx) => {
        const deleted = await repo.delete(id, tx);
        if (deleted) {
          await audit.record(tx, {
            action: "file.deleted",
            actorId: viewer.id,
            target: { type: "file", id },
            details: { owner_id: deleted.ownerId, filename: deleted.filename },
            meta,
          });
        }
        return deleted;
      });
      if (!row) throw errors.notFound("File");
      await storage.delete(row.storageKey).catch((error: Error) =>
        logger.warn("a deleted file's bytes are left for the start-up sweep", {
          storage_key: row.storageKey,
          error: error.message,
        }),
      );
      notify(row.ownerId, "file.deleted", { id: row.id });
    },

    /**
     * For deleting a user: reads the user's keys now and returns what removes their bytes once the
     * user (and, by cascade, the rows) is gone.
     */
    async bytesRemover(ownerId: string): Promise<() => Promise<void>> {
      const keys = await repo.storageKeysOf(ownerId);
      // As for one file: whatever the removal afterwards fails to delete, the start-up sweep will.
      for (let at = 0; at < keys.length; at += RETIRE_BATCH) {
        await Promise.all(keys.slice(at, at + RETIRE_BATCH).map((key) => storage.retire(key)));
      }
      return () => storage.delete(...keys);
    },

    recover,

    prune,

    /** Prunes now and every hour after; returns what stops it. */
    startPruning(): () => void {
      const run = () =>
        prune().catch((error) =>
          logger.warn("pruning share links and idempotency keys failed", { error: loggableError(error) }),
        );
      void run();
      const timer = setInterval(run, PRUNE_INTERVAL_MS);
      timer.unref?.();
      return () => clearInterval(timer);
    },

    /**
     * Runs `recover` now and every `everyMs`, each round under `exclusive` (a lock in the database, so
     * one instance sweeps at a time; a round another instance holds is skipped). Returns what stops it.
     */
    startSweep(options: {
      everyMs: number;
      orphanAgeMs: number;
      exclusive: <T>(work: () => Promise<T>) => Promise<T | undefined>;
    }): () => void {
      const round = () =>
        options
          .exclusive(() => recover(options.orphanAgeMs))
          .then((done) => {
            if (done && (done.committed || done.removed)) logger.info("swept temporary uploads", done);
          })
          .catch((error: Error) => logger.warn("sweep of temporary uploads failed", { error: error.message }));
      void round();
      const timer = setInterval(round, options.everyMs);
      timer.unref();
      return () => clearInterval(timer);
    },
  };
}

export type FilesService = ReturnType<typeof createFilesService>;
