import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { FileRow, Role } from "../../db/schema";
import { errors } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import type { AuditLog } from "../audit/service";
import type { Download, DownloadConditions } from "./download";
import type { ShareLinksRepo } from "./links-repo";

/** Active links a file may have at once, so neither a list nor the table grows without bound. */
export const MAX_ACTIVE_LINKS = 100;
/** 256 random bits, base64url: unguessable, and fit for a URL as they are. */
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

type Actor = { id: string; role: Role };

const sha256 = (token: string) => createHash("sha256").update(token).digest();

export interface ShareLinkDeps {
  repo: ShareLinksRepo;
  audit: Pick<AuditLog, "record" | "transaction">;
  /** The file if `actor` may change it (its owner, or an admin); else 404 or 403. */
  owned(actor: Actor, fileId: string): Promise<FileRow>;
  /** Serves the file's bytes and records `file.downloaded` with these details. */
  deliver(
    row: FileRow,
    conditions: DownloadConditions,
    meta: RequestMeta,
    downloaded: { actorId: string | null; details: Record<string, unknown> },
  ): Promise<Download>;
}

/**
 * Share links: a URL anyone may download a file with until it expires or is revoked. Its token is shown
 * once; only its SHA-256 is stored, found by that hash and compared in constant time.
 */
export function createShareLinks(deps: ShareLinkDeps) {
  const { repo, audit, owned, deliver } = deps;

  return {
    /** `linkBase` + token is the URL (`…/api/v1/shared/`). */
    async create(actor: Actor, fileId: string, seconds: number, linkBase: string, meta: RequestMeta) {
      const file = await owned(actor, fileId);
      const token = randomBytes(32).toString("base64url");
      const now = new Date();
      const expiresAt = new Date(now.getTime() + seconds * 1000);
      const link = await audit.transaction(async (tx) => {
        const active = await repo.lockFile(tx, fileId, now);
        if (active === undefined) throw errors.notFound("File");
        if (active >= MAX_ACTIVE_LINKS) {
          throw errors.conflict(`A file has at most ${MAX_ACTIVE_LINKS} active share links; revoke one first`);
        }
        const row = await repo.insert(tx, {
          fileId,
          createdBy: actor.id,
          tokenHash: sha256(token).toString("hex"),
          expiresAt,
        });
        await audit.record(tx, {
          action: "share_link.created",
          actorId: actor.id,
          target: { type: "share_link", id: row.id },
          details: { file_id: fileId, owner_id: file.ownerId, expires_at: expiresAt.toISOString() },
          meta,
        });
        return row;
      });
      return { id: link.id, url: `${linkBase}${token}`, expires_at: link.expiresAt.toISOString() };
    },

    async list(actor: Actor, fileId: string) {
      await owned(actor, fileId);
      const rows = await repo.listActive(fileId, new Date());
      return {
        items: rows.map((row) => ({
          id: row.id,
          created_at: row.createdAt.toISOString(),
          expires_at: row.expiresAt.toISOString(),
          created_by: row.createdBy,
        })),
      };
    },

    async revoke(actor: Actor, fileId: string, linkId: string, meta: RequestMeta): Promise<void> {
      const file = await owned(actor, fileId);
      const revoked = await audit.transaction(async (tx) => {
        const row = await repo.revoke(tx, fileId, linkId, new Date());
        if (row) {
          await audit.record(tx, {
            action: "share_link.revoked",
            actorId: actor.id,
            target: { type: "share_link", id: row.id },
            details: { file_id: fileId, owner_id: file.ownerId },
            meta,
          });
        }
        return row;
      });
      if (!revoked) throw errors.notFound("Share link");
    },

    /** `GET /shared/{token}`: the file's bytes for anyone holding an active link. */
    async open(token: string, conditions: DownloadConditions, meta: RequestMeta): Promise<Download> {
      if (!TOKEN.test(token)) throw errors.notFound("Share link");
      const hash = sha256(token);
      const found = await repo.findActive(hash.toString("hex"), new Date());
      // Found by its hash; compared again in constant time, so no timing tells how close a guess came.
      if (!found || !timingSafeEqual(Buffer.from(found.link.tokenHash, "hex"), hash)) {
        throw errors.notFound("Share link");
      }
      return deliver(found.file, conditions, meta, {
        actorId: null,
        details: { owner_id: found.file.ownerId, via: "share_link", share_link_id: found.link.id },
      });
    },
  };
}

export type ShareLinks = ReturnType<typeof createShareLinks>;
