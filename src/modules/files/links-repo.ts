import { and, count, desc, eq, gt, lte, sql } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { type FileRow, files, type ShareLinkRow, shareLinks } from "../../db/schema";

export type NewShareLink = Pick<typeof shareLinks.$inferInsert, "fileId" | "createdBy" | "tokenHash" | "expiresAt">;

/** Share links' SQL. A link counts while `expires_at` is after `now`; revoking deletes it. */
export function createShareLinksRepo(orm: Orm) {
  const active = (now: Date) => gt(shareLinks.expiresAt, now);

  const byToken = orm
    .select({ link: shareLinks, file: files })
    .from(shareLinks)
    .innerJoin(files, eq(files.id, shareLinks.fileId))
    .where(and(eq(shareLinks.tokenHash, sql.placeholder("hash")), gt(shareLinks.expiresAt, sql.placeholder("now"))))
    .limit(1)
    .prepare("share_links_by_token");

  return {
    /**
     * Inside a transaction: locks the file's row, so its links are counted and created one at a time and the
     * file cannot be deleted meanwhile. Returns how many active links it has, or undefined when it is gone.
     */
    async lockFile(tx: Executor, fileId: string, now: Date): Promise<number | undefined> {
      const [file] = await tx.select({ id: files.id }).from(files).where(eq(files.id, fileId)).for("update");
      if (!file) return undefined;
      const [links] = await tx
        .select({ total: count() })
        .from(shareLinks)
        .where(and(eq(shareLinks.fileId, fileId), active(now)));
      return links?.total ?? 0;
    },

    async insert(tx: Executor, link: NewShareLink): Promise<ShareLinkRow> {
      const [row] = await tx.insert(shareLinks).values(link).returning();
      return row as ShareLinkRow;
    },

    /** A file's active links, newest first. */
    listActive: (fileId: string, now: Date): Promise<ShareLinkRow[]> =>
      orm
        .select()
        .from(shareLinks)
        .where(and(eq(shareLinks.fileId, fileId), active(now)))
        .orderBy(desc(shareLinks.createdAt), desc(shareLinks.id)),

    /** Deletes an active link of the file; undefined when it has no such link. */
    async revoke(tx: Executor, fileId: string, linkId: string, now: Date): Promise<ShareLinkRow | undefined> {
      const [row] = await tx
        .delete(shareLinks)
        .where(and(eq(shareLinks.id, linkId), eq(shareLinks.fileId, fileId), active(now)))
        .returning();
      return row;
    },

    /** The active link with this token hash, and its file. */
    async findActive(tokenHash: string, now: Date): Promise<{ link: ShareLinkRow; file: FileRow } | undefined> {
      // A placeholder skips the column's mapping: postgres.js takes the time as text.
      const [found] = await byToken.execute({ hash: tokenHash, now: now.toISOString() });
      return found;
    },

    /** Removes links that have expired; returns how many. */
    async pruneExpired(now: Date): Promise<number> {
      const deleted = await orm
        .delete(shareLinks)
        .where(lte(shareLinks.expiresAt, now))
        .returning({ id: shareLinks.id });
      return deleted.length;
    },
  };
}

export type ShareLinksRepo = ReturnType<typeof createShareLinksRepo>;
