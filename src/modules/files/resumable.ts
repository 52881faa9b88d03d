import type { ResumableInspection, ResumableRow } from "../../db/schema";
import { AppError, errors, loggableError } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import {
  type Appender,
  ResumableBytesLostError,
  type ResumableState,
  type ResumableStorage,
} from "../../platform/resumable-storage";
import type { ObjectStorage, PendingObject } from "../../platform/storage";
import type { Ingest } from "./ingest";
import { parsePublicFlag } from "./ingest";
import { cleanFilename } from "./model";
import type { FilesRepo } from "./repo";
import { byteCount, mediaTypeOf, OFFSET_OCTET_STREAM, parseMetadata } from "./resumable-model";
import type { ResumableRepo } from "./resumable-repo";
import { magicMatches, requireAllowedType, SNIFF_BYTES, utf8Validator, watched } from "./upload";

export interface ResumableConfig {
  maxBytes: number;
  allowedTypes: readonly string[];
  quota: number | undefined;
  /** RESUMABLE_EXPIRE_HOURS: an unfinished upload not continued for this long goes. */
  expireHours: number;
}

export interface ResumableDeps {
  repo: ResumableRepo;
  files: Pick<FilesRepo, "bytesOf" | "findByStorageKey">;
  ingest: Pick<Ingest, "store" | "discard" | "watch">;
  bytes: ResumableStorage;
  storage: Pick<ObjectStorage, "delete">;
  config: ResumableConfig;
  logger: Logger;
  /** How long a request holds an upload without renewing (it renews every third of it). */
  leaseMs?: number;
}

/** What a request sends: its headers as they came, the body (tus bytes, or none), and who sent it. */
export interface TusRequest {
  contentType: string | null;
  contentLength: string | null;
  body: ReadableStream<Uint8Array> | null;
  /** For the audit log, should the last byte bring malware. */
  meta: RequestMeta;
}

/** A crashed instance's hold frees itself this long after its last renewal. */
const LEASE_MS = 15_000;
const SWEEP_BATCH = 100;
const SWEEP_INTERVAL_MS = 10 * 60_000;
/** Hashers kept between requests (the SHA-256 cannot be saved; a missing one is recomputed at the end). */
const HASHERS_KEPT = 1024;

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");
const unb64 = (text: string | undefined) => new Uint8Array(Buffer.from(text ?? "", "base64"));

async function sha256Of(stream: ReadableStream<Uint8Array>): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of stream) hasher.update(chunk);
  return hasher.digest("hex");
}

/**
 * The content checks of `POST /uploads` spread over many requests: the type from the first bytes as soon
 * as they are in, UTF-8 as bytes arrive (a character cut at a request's end carried to the next), the
 * SHA-256 while this instance has the upload's hasher. Each check's state is saved with the offset.
 */
function resumableInspector(row: ResumableRow, hasher: Bun.CryptoHasher | undefined) {
  const declared = row.contentType;
  const text = declared.startsWith("text/");
  const sniffSize = Math.min(SNIFF_BYTES, row.length);
  let typeChecked = text || row.inspection.typeChecked === true;
  let head = typeChecked ? undefined : unb64(row.inspection.head);
  const utf8 = text ? utf8Validator(unb64(row.inspection.carry)) : undefined;
  const refuse = () => errors.unsupportedMediaType(`The content is not ${declared}`);
  const checkType = async () => {
    if (!(await magicMatches(head ?? new Uint8Array(0), declared))) throw refuse();
    typeChecked = true;
    head = undefined;
  };
  return {
    hasher,
    /** Takes the next bytes; throws 415 as soon as they show the content is not the declared type. */
    async push(bytes: Uint8Array) {
      hasher?.update(bytes);
      if (head) {
        head = Buffer.concat([head, bytes.subarray(0, sniffSize - head.byteLength)]);
        if (head.byteLength === sniffSize) await checkType();
      }
      if (utf8) {
        utf8.push(bytes);
        if (!utf8.validSoFar()) throw refuse();
      }
    },
    /** With every byte in: the type of a file shorter than the sniffed head, and no cut character at the end. */
    async finish() {
      if (!typeChecked) await checkType();
      if (utf8 && !utf8.valid()) throw refuse();
    },
    state(): ResumableInspection {
      if (utf8) return { carry: b64(utf8.carry()) };
      return typeChecked ? { typeChecked } : { head: b64(head ?? new Uint8Array(0)) };
    },
  };
}

/** The bytes of the request stopped by the client or the server: what arrived is kept for the resume. */
const isInterruption = (error: unknown) =>
  (error as Error).name === "AbortError" ||
  (error instanceof AppError && (error.status === 408 || error.errorCode === "SERVICE_UNAVAILABLE"));
/** The content is not what was declared: the upload can never become a file. */
const isRefusal = (error: unknown) => error instanceof AppError && error.status === 415;

/**
 * tus 1.0.0 uploads (creation, creation-with-upload, termination, expiration). The offset, the lock and the
 * content checks' state live in the database, the bytes in storage, so any instance continues an upload;
 * the last byte makes a file through `ingest.store`, with the checks, quota, scan and event of
 * `POST /uploads`.
 */
export function createResumable(deps: ResumableDeps) {
  const { repo, files, ingest, bytes, storage, config, logger } = deps;
  const leaseMs = deps.leaseMs ?? LEASE_MS;
  const hashers = new Map<string, { offset: number; hasher: Bun.CryptoHasher }>();

  /** The hasher this instance left at `offset` for the upload, if any (bytes before an offset never change). */
  const takeHasher = (row: ResumableRow) => {
    const kept = hashers.get(row.id);
    hashers.delete(row.id);
    if (kept?.offset === row.offset) return kept.hasher;
    return row.offset === 0 ? new Bun.CryptoHasher("sha256") : undefined;
  };
  const keepHasher = (id: string, offset: number, hasher: Bun.CryptoHasher | undefined) => {
    if (!hasher) return;
    if (hashers.size >= HASHERS_KEPT) hashers.delete(hashers.keys().next().value as string);
    hashers.set(id, { offset, hasher });
  };

  /** Renews the lease while a request works; `lost()` once another took the upload. */
  function holdLease(id: string, token: string) {
    let lost = false;
    const timer = setInterval(() => {
      repo.renew(id, token, leaseMs).then(
        (held) => {
          if (!held) lost = true;
        },
        () => {},
      );
    }, leaseMs / 3);
    return { lost: () => lost, stop: () => clearInterval(timer) };
  }

  /** Removes the upload's bytes, then its row; a failure leaves the row for the sweep to try again. */
  async function remove(row: ResumableRow, state: ResumableState | null = row.storageState) {
    await bytes.remove({ key: row.storageKey, state });
    await repo.delete(row.id);
  }
  const removeQuietly = (row: ResumableRow, state?: ResumableState | null) =>
    remove(row, state).catch((error) =>
      logger.error("removing a resumable upload failed; the sweep will retry", {
        upload_id: row.id,
        error: loggableError(error),
      }),
    );

  /**
   * The owner's upload as it stands, or 404: another user's, expired, or one whose instance crashed while
   * making it a file (then it is the file if that got stored, else gone).
   */
  async function visible(ownerId: string, id: string): Promise<ResumableRow> {
    const row = await repo.find(id);
    if (!row || row.ownerId !== ownerId) throw errors.notFound("Upload");
    const now = Date.now();
    if (row.state === "receiving" && row.expiresAt.getTime() <= now) throw errors.notFound("Upload");
    if (row.state === "completing" && (row.lockedUntil?.getTime() ?? 0) <= now) {
      const file = await files.findByStorageKey(row.storageKey);
      if (!file) throw errors.notFound("Upload");
      return (await repo.complete(row.id, file.id, config.expireHours)) ?? row;
    }
    return row;
  }

  /** Every byte is in (the lease still held): the checks that need them all, then the file. */
  async function complete(
    ownerId: string,
    row: ResumableRow,
    token: string,
    state: ResumableState | null,
    inspector: ReturnType<typeof resumableInspector>,
    meta: RequestMeta,
  ): Promise<ResumableRow> {
    try {
      await inspector.finish();
      if (!(await repo.completing(row.id, token, state))) throw errors.locked("Another request took this upload");
    } catch (error) {
      if (isRefusal(error)) await removeQuietly(row, state);
      throw error;
    }
    let pending: PendingObject;
    try {
      pending = await bytes.finish({ key: row.storageKey, offset: row.length, length: row.length, state });
    } catch (error) {
      await removeQuietly(row, state);
      throw error;
    }
    // From here the bytes are the key's temporary (no multipart upload is left): ingest owns them.
    let hash = inspector.hasher?.digest("hex");
    try {
      // Another instance took part of the upload: its SHA-256 is read back from the stored bytes.
      hash ??= await sha256Of(pending.read());
    } catch (error) {
      await ingest.discard(row.storageKey, pending);
      await removeQuietly(row, null);
      throw error;
    }
    try {
      const file = await ingest.store(
        { id: ownerId },
        row.storageKey,
        pending,
        {
          filename: row.filename,
          contentType: row.contentType,
          size: row.length,
          hash,
          isPublic: row.isPublic,
        },
        meta,
      );
      return (await repo.complete(row.id, file.id, config.expireHours)) as ResumableRow;
    } catch (error) {
      // ingest.store left nothing of the file; the upload goes with it.
      await removeQuietly(row, null);
      throw error;
    }
  }

  /**
   * Appends the body at the upload's offset (held by `token`), checking the content as it comes. A request
   * cut short keeps what arrived; content that is not the declared type ends the upload (415); any other
   * failure leaves the upload as it was. The last byte makes the file.
   */
  async function receive(ownerId: string, row: ResumableRow, token: string, request: TusRequest) {
    const room = row.length - row.offset;
    if (request.contentLength !== null && byteCount("Content-Length", request.contentLength) > room) {
      throw errors.tooLarge(room);
    }
    const lease = holdLease(row.id, token);
    try {
      const inspector = resumableInspector(row, takeHasher(row));
      // What the storage has recorded so far (a multipart upload this request started): removal needs it.
      let recorded = row.storageState;
      let appender: Appender;
      try {
        appender = await bytes.append(
          { key: row.storageKey, offset: row.offset, length: row.length, state: row.storageState },
          async (state) => {
            if (!(await repo.saveStorageState(row.id, token, state)))
              throw errors.locked("Another request took this upload");
            recorded = state;
          },
        );
      } catch (error) {
        if (!(error instanceof ResumableBytesLostError)) throw error;
        logger.error("a resumable upload's bytes are missing; the upload is removed", {
          upload_id: row.id,
          error: error.message,
        });
        await removeQuietly(row);
        throw errors.notFound("Upload");
      }
      let received = 0;
      let interruption: unknown;
      try {
        if (request.body) {
          for await (const chunk of watched(request.body, ingest.watch)) {
            if (lease.lost()) throw errors.locked("Another request took this upload");
            received += chunk.byteLength;
            if (received > room) throw errors.tooLarge(room);
            await inspector.push(chunk);
            await appender.write(chunk);
          }
        }
      } catch (error) {
        if (isRefusal(error)) {
          await appender.drop();
          await removeQuietly(row, recorded);
          throw error;
        }
        if (!isInterruption(error)) {
          await appender.drop();
          throw error;
        }
        interruption = error;
      }
      let state: ResumableState | null;
      try {
        state = await appender.save();
      } catch (error) {
        await appender.drop();
        throw error;
      }
      const offset = row.offset + received;
      if (offset === row.length) return await complete(ownerId, row, token, state, inspector, request.meta);
      const saved = await repo.progress(
        row.id,
        token,
        { offset, storageState: state, inspection: inspector.state() },
        config.expireHours,
      );
      if (!saved) throw errors.locked("Another request took this upload");
      await appender.cleanup();
      keepHasher(row.id, offset, inspector.hasher);
      if (interruption) throw interruption;
      return saved;
    } finally {
      lease.stop();
    }
  }

  /** Takes the owner's upload for one request; 404 if it is not theirs (or gone), 423 while another holds it. */
  async function take(ownerId: string, id: string, states: ResumableRow["state"][], token: string) {
    const row = await repo.lock(id, ownerId, states, token, leaseMs);
    if (row) return row;
    const current = await visible(ownerId, id);
    return current.state === "complete" && !states.includes("complete") ? current : undefined;
  }

  /** Cleans up one stale upload the sweep holds. */
  async function settle(row: ResumableRow): Promise<void> {
    hashers.delete(row.id);
    if (row.state === "completing") {
      const file = await files.findByStorageKey(row.storageKey);
      if (file) {
        await repo.complete(row.id, file.id, config.expireHours);
        return;
      }
      // A crash while completing may have left the bytes as the key's temporary.
      await storage.delete(row.storageKey);
    }
    if (row.state !== "complete") await bytes.remove({ key: row.storageKey, state: row.storageState });
    await repo.delete(row.id);
  }

  /**
   * Removes uploads that expired or lost their owner, with their bytes, and settles those an instance
   * left while making them a file. Returns how many it handled; one that fails stays for the next sweep.
   */
  async function sweep(): Promise<number> {
    const token = crypto.randomUUID();
    let handled = 0;
    for (;;) {
      const claimed = await repo.claimStale(token, leaseMs, SWEEP_BATCH);
      if (!claimed) return handled;
      for (const row of claimed) {
        try {
          await settle(row);
          handled++;
        } catch (error) {
          logger.warn("a stale resumable upload could not be removed yet", {
            upload_id: row.id,
            error: loggableError(error),
          });
        }
      }
      if (claimed.length < SWEEP_BATCH) return handled;
    }
  }

  return {
    /** The most bytes one upload may have (Tus-Max-Size). */
    maxBytes: config.maxBytes,

    /** POST: a new upload of `Upload-Length` bytes, with the first of them if the body carries any. */
    async create(
      owner: { id: string },
      headers: { uploadLength: string | null; deferLength: string | null; metadata: string | null },
      request: TusRequest,
    ): Promise<ResumableRow> {
      if (headers.deferLength !== null)
        throw errors.badRequest("Upload-Defer-Length is not supported: send Upload-Length");
      const length = byteCount("Upload-Length", headers.uploadLength);
      if (length > config.maxBytes) throw errors.tooLarge(config.maxBytes);
      const { values, canonical } = parseMetadata(headers.metadata);
      const type = mediaTypeOf(values.get("filetype") ?? null);
      if (!type) throw errors.unsupportedMediaType("Name the file's type in Upload-Metadata (filetype)");
      requireAllowedType(type, config.allowedTypes);
      const isPublic = parsePublicFlag(values.get("is_public"));
      if (isPublic === undefined)
        throw errors.validation([{ field: "Upload-Metadata.is_public", issue: "Must be true or false" }]);
      const carriesBytes = request.body !== null && mediaTypeOf(request.contentType) === OFFSET_OCTET_STREAM;
      if (request.body !== null && !carriesBytes && request.contentLength !== "0") {
        throw errors.unsupportedMediaType(`Send the upload's first bytes as ${OFFSET_OCTET_STREAM}`);
      }
      if (config.quota !== undefined) {
        // Unfinished uploads hold their length against the quota until they end.
        const [stored, open] = await Promise.all([files.bytesOf(owner.id), repo.openBytesOf(owner.id)]);
        if (stored + open + length > config.quota) throw errors.overQuota(config.quota);
      }
      const token = crypto.randomUUID();
      const row = await repo.insert(
        {
          ownerId: owner.id,
          length,
          metadata: canonical,
          filename: cleanFilename(values.get("filename") ?? ""),
          contentType: type,
          isPublic,
          storageKey: Bun.randomUUIDv7(),
        },
        config.expireHours,
        token,
        leaseMs,
      );
      if (!carriesBytes && length > 0) {
        await repo.release(row.id, token);
        return { ...row, lockToken: null, lockedUntil: null };
      }
      try {
        // An empty file is complete at once.
        return await receive(owner.id, row, token, carriesBytes ? request : { ...request, body: null });
      } catch (error) {
        // The client has no Location yet: nothing of this upload may stay.
        if (isRefusal(error)) throw error;
        const current = await repo.find(row.id);
        if (current && current.state !== "complete") await removeQuietly(current);
        throw error;
      }
    },

    /** HEAD and GET: where the owner's upload stands. */
    status: (owner: { id: string }, id: string) => visible(owner.id, id),

    /** PATCH: bytes at `Upload-Offset`, which must be the upload's offset (else 409). */
    async patch(
      owner: { id: string },
      id: string,
      uploadOffset: string | null,
      request: TusRequest,
    ): Promise<ResumableRow> {
      if (mediaTypeOf(request.contentType) !== OFFSET_OCTET_STREAM) {
        throw errors.unsupportedMediaType(`Send the bytes as ${OFFSET_OCTET_STREAM}`);
      }
      const offset = byteCount("Upload-Offset", uploadOffset);
      const token = crypto.randomUUID();
      const row = await take(owner.id, id, ["receiving"], token);
      if (!row) throw errors.locked("Another request is writing to this upload; retry shortly");
      if (row.state === "complete") {
        if (offset !== row.length) throw errors.conflict(`The upload is complete at offset ${row.length}`);
        return row;
      }
      try {
        if (offset !== row.offset) {
          throw errors.conflict(`Upload-Offset must be the upload's offset, ${row.offset}`, [
            { field: "Upload-Offset", issue: `The upload is at ${row.offset}` },
          ]);
        }
        return await receive(owner.id, row, token, request);
      } finally {
        await repo.release(row.id, token).catch(() => {});
      }
    },

    /** DELETE: the upload and its bytes go (a complete one's file stays: it is a file like any other). */
    async terminate(owner: { id: string }, id: string): Promise<void> {
      const token = crypto.randomUUID();
      const row = await repo.lock(id, owner.id, ["receiving", "complete"], token, leaseMs);
      if (!row) {
        await visible(owner.id, id);
        throw errors.locked("Another request is writing to this upload; retry shortly");
      }
      try {
        await remove(row);
      } catch (error) {
        await repo.release(row.id, token).catch(() => {});
        throw error;
      }
      hashers.delete(row.id);
    },

    sweep,

    /** Sweeps now and every ten minutes; returns what stops it. */
    startSweep(): () => void {
      const run = () =>
        sweep()
          .then((handled) => handled > 0 && logger.info("stale resumable uploads removed", { handled }))
          .catch((error) => logger.warn("sweeping resumable uploads failed", { error: loggableError(error) }));
      void run();
      const timer = setInterval(run, SWEEP_INTERVAL_MS);
      timer.unref?.();
      return () => clearInterval(timer);
    },
  };
}

export type Resumable = ReturnType<typeof createResumable>;
