import { and, asc, count, desc, eq, gt, ilike, lte, sql, sum } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { type FileRow, fileStats, files, idempotencyKeys } from "../../db/schema";
import type { FileListParams } from "./model";

export type NewFile = typeof files.$inferInsert;

const SORT_COLUMNS = { uploaded_at: files.uploadedAt, filename: files.filename, file_size: files.fileSize } as const;

const escapeLike = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * The file's row, unless it would take its owner past `quota` bytes. One statement: the owner's
 * `file_stats` row is taken (upserted, which locks it until the transaction ends) and read in a CTE, and
 * the file goes in only if it fits, so two uploads cannot both fit the last bytes. It was a transaction
 * with an advisory lock: six round trips, and pooled connections held while waiting for it. Prepared on the
 * pool (as raw SQL it was parsed and planned again for every upload); inside a transaction, run as built.
 */
function insertWithinQuota(db: Executor) {
  const stats = db.$with("stats").as(
    db
      .insert(fileStats)
      .values({ ownerId: sql.placeholder("ownerId") })
      .onConflictDoUpdate({ target: fileStats.ownerId, set: { ownerId: sql`excluded.owner_id` } })
      .returning({ bytes: fileStats.bytes }),
  );
  const p = (name: keyof NewFile | "quota") => sql.placeholder(name);
  // Every column in the table's order, as Drizzle lists them for an INSERT ... SELECT (id and uploaded_at
  // as their defaults would be).
  return db
    .with(stats)
    .insert(files)
    .select(
      sql`select gen_random_uuid(), ${p("ownerId")}, ${p("filename")}, ${p("contentType")}, ${p("fileSize")},
        ${p("fileHash")}, ${p("storageKey")}, ${p("isPublic")}, now()
        from ${stats} where ${stats.bytes} + ${p("fileSize")} <= ${p("quota")}`,
    )
    .returning();
}

/** Bytes an owner stores (kept by triggers), on the pool or inside a transaction. */
async function bytesOf(db: Pick<Orm, "select">, ownerId: string): Promise<number> {
  const [stats] = await db.select({ bytes: fileStats.bytes }).from(fileStats).where(eq(fileStats.ownerId, ownerId));
  return stats?.bytes ?? 0;
}

/** A user's Idempotency-Key, and the oldest use of it that still counts. */
export interface IdempotencyClaim {
  userId: string;
  key: string;
  since: Date;
}

/** The file an unexpired key names. */
async function fileOfKey(db: Pick<Orm, "select">, claim: IdempotencyClaim): Promise<FileRow | undefined> {
  const [found] = await db
    .select({ file: files })
    .from(idempotencyKeys)
    .innerJoin(files, eq(files.id, idempotencyKeys.fileId))
    .where(
      and(
        eq(idempotencyKeys.userId, claim.userId),
        eq(idempotencyKeys.key, claim.key),
        gt(idempotencyKeys.createdAt, claim.since),
      ),
    )
    .limit(1);
  return found?.file;
}

/** Thrown inside the insert's transaction to roll the file back: another upload holds the key. */
class KeyTaken extends Error {}

export function createFilesRepo(orm: Orm) {
  /**
   * One owner's page with its total in a single round trip, the common list (no filter): a statement
   * prepared once per order, so nothing is rebuilt per request.
   */
  const ownPages = new Map<string, ReturnType<typeof preparePage>>();
  const preparePage = (sort: FileListParams["sort"], order: FileListParams["order"]) => {
    const direction = order === "asc" ? asc : desc;
    const owner = sql.placeholder("owner");
    return (
      orm
        // The owner's count as the triggers keep it: what a count(*) would say, for one row's read.
        .select({
          file: files,
          total:
            sql<number>`(select ${fileStats.fileCount} from ${fileStats} where ${fileStats.ownerId} = ${owner})`.mapWith(
              Number,
            ),
        })
        .from(files)
        .where(eq(files.ownerId, owner))
        .orderBy(direction(SORT_COLUMNS[sort]), direction(files.id))
        .offset(sql.placeholder("offset"))
        .limit(sql.placeholder("limit"))
        .prepare(`files_page_${sort}_${order}`)
    );
  };
  async function ownPage(owner: string, params: FileListParams) {
    const key = `${params.sort} ${params.order}`;
    let page = ownPages.get(key);
    if (!page) {
      page = preparePage(params.sort, params.order);
      ownPages.set(key, page);
    }
    const rows = await page.execute({ owner, offset: params.offset, limit: params.limit });
    if (rows[0]) return { rows: rows.map((row) => row.file), total: rows[0].total };
    // A page past the end has no row to carry the total.
    const [stats] = await orm
      .select({ total: fileStats.fileCount })
      .from(fileStats)
      .where(eq(fileStats.ownerId, owner));
    return { rows: [], total: stats?.total ?? 0 };
  }

  // The statements of every upload and download, built once.
  const byId = orm
    .select()
    .from(files)
    .where(eq(files.id, sql.placeholder("id")))
    .limit(1)
    .prepare("files_by_id");
  const insertFile = orm
    .insert(files)
    .values({
      ownerId: sql.placeholder("ownerId"),
      filename: sql.placeholder("filename"),
      contentType: sql.placeholder("contentType"),
      fileSize: sql.placeholder("fileSize"),
      fileHash: sql.placeholder("fileHash"),
      storageKey: sql.placeholder("storageKey"),
      isPublic: sql.placeholder("isPublic"),
    })
    .returning()
    .prepare("files_insert");
  const insertFileWithinQuota = insertWithinQuota(orm).prepare("files_insert_within_quota");
  const quotaValues = (file: NewFile, quota: number) => ({ ...file, isPublic: file.isPublic ?? false, quota });
  const orOverQuota = ([row]: FileRow[]): FileRow | "over-quota" => row ?? "over-quota";

  return {
    async findById(id: string): Promise<FileRow | undefined> {
      const [row] = await byId.execute({ id });
      return row;
    },

    bytesOf: (ownerId: string) => bytesOf(orm, ownerId),

    async findByStorageKey(key: string): Promise<FileRow | undefined> {
      const [row] = await orm.select().from(files).where(eq(files.storageKey, key)).limit(1);
      return row;
    },

    /** The file an unexpired Idempotency-Key of the user names. */
    fileOfKey: (claim: IdempotencyClaim) => fileOfKey(orm, claim),

    /**
     * Inserts the row unless it would take the owner past `quota` bytes ("over-quota"; see
     * `insertWithinQuota`). With `claim`, the key is recorded in the same transaction; when an unexpired
     * use of it exists (or commits while this waits on it), nothing is inserted and its file is `earlier`
     * ("taken" if that file went meanwhile).
     */
    async insert(
      file: NewFile,
      quota: number | undefined,
      claim?: IdempotencyClaim,
    ): Promise<FileRow | "over-quota" | { earlier: FileRow } | "taken"> {
      if (quota === undefined && claim === undefined) {
        const [row] = await insertFile.execute({ ...file, isPublic: file.isPublic ?? false });
        return row as FileRow;
      }
      if (claim === undefined)
        return orOverQuota(await insertFileWithinQuota.execute(quotaValues(file, quota as number)));
      try {
        return await orm.transaction(async (tx) => {
          const earlier = await fileOfKey(tx, claim);
          if (earlier) return { earlier };
          const row =
            quota === undefined
              ? ((await tx.insert(files).values(file).returning()) as [FileRow])[0]
              : orOverQuota(await insertWithinQuota(tx).execute(quotaValues(file, quota)));
          if (row === "over-quota") return row;
          // A racing upload's uncommitted key makes this wait for its transaction; once it commits, the
          // key is theirs unless expired.
          const now = new Date();
          const claimed = await tx
            .insert(idempotencyKeys)
            .values({ userId: claim.userId, key: claim.key, fileId: row.id, createdAt: now })
            .onConflictDoUpdate({
              target: [idempotencyKeys.userId, idempotencyKeys.key],
              set: { fileId: row.id, createdAt: now },
              setWhere: lte(idempotencyKeys.createdAt, claim.since),
            })
            .returning({ key: idempotencyKeys.key });
          if (claimed.length === 0) throw new KeyTaken();
          return row;
        });
      } catch (error) {
        if (!(error instanceof KeyTaken)) throw error;
        const earlier = await fileOfKey(orm, claim);
        return earlier ? { earlier } : "taken";
      }
    },

    /** Removes keys used before `before`; returns how many. */
    async pruneKeys(before: Date): Promise<number> {
      const deleted = await orm
        .delete(idempotencyKeys)
        .where(lte(idempotencyKeys.createdAt, before))
        .returning({ key: idempotencyKeys.key });
      return deleted.length;
    },

    /** `owner`: undefined for every owner (an admin's `all=true`), else this one. */
    async list(params: FileListParams, owner: string | undefined): Promise<{ rows: FileRow[]; total: number }> {
      const filtered = params.q !== undefined || params.content_type !== undefined;
      if (owner && !filtered) return ownPage(owner, params);
      const condition = and(
        owner ? eq(files.ownerId, owner) : undefined,
        params.q ? ilike(files.filename, `%${escapeLike(params.q)}%`) : undefined,
        params.content_type ? eq(files.contentType, params.content_type.toLowerCase()) : undefined,
      );
      const direction = params.order === "asc" ? asc : desc;
      const [rows, [totals]] = await Promise.all([
        orm
          .select()
          .from(files)
          .where(condition)
          .orderBy(direction(SORT_COLUMNS[params.sort]), direction(files.id))
          .offset(params.offset)
          .limit(params.limit),
        filtered
          ? orm.select({ total: count() }).from(files).where(condition)
          : orm.select({ total: sum(fileStats.fileCount).mapWith(Number) }).from(fileStats),
      ]);
      return { rows, total: totals?.total ?? 0 };
    },

    async update(id: string, changes: Partial<Pick<NewFile, "filename" | "isPublic">>) {
      const [row] = await orm.update(files).set(changes).where(eq(files.id, id)).returning();
      return row;
    },

    /** On the pool, or on `executor`: a transaction that also records the deletion. */
    async delete(id: string, executor: Executor = orm): Promise<FileRow | undefined> {
      const [row] = await executor.delete(files).where(eq(files.id, id)).returning();
      return row;
    },

    async storageKeysOf(ownerId: string): Promise<string[]> {
      const rows = await orm.select({ key: files.storageKey }).from(files).where(eq(files.ownerId, ownerId));
      return rows.map((row) => row.key);
    },
  };
}

export type FilesRepo = ReturnType<typeof createFilesRepo>;
