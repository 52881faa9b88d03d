import { and, asc, count, desc, eq, getTableColumns, ilike, sql, sum } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { rowsOf } from "../../db/migrate";
import { type FileRow, fileStats, files } from "../../db/schema";
import type { FileListParams } from "./model";

export type NewFile = typeof files.$inferInsert;

const SORT_COLUMNS = { uploaded_at: files.uploadedAt, filename: files.filename, file_size: files.fileSize } as const;

const escapeLike = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

const FILE_COLUMNS = Object.entries(getTableColumns(files));
/** A row of `files` as the driver returns it to raw SQL, mapped as Drizzle maps its own queries' rows. */
const fromDriver = (raw: Record<string, unknown>) =>
  Object.fromEntries(
    FILE_COLUMNS.map(([key, column]) => {
      const value = raw[column.name];
      return [key, value === null || value === undefined ? value : column.mapFromDriverValue(value)];
    }),
  ) as FileRow;

/** Bytes an owner stores (kept by triggers), on the pool or inside a transaction. */
async function bytesOf(db: Pick<Orm, "select">, ownerId: string): Promise<number> {
  const [stats] = await db.select({ bytes: fileStats.bytes }).from(fileStats).where(eq(fileStats.ownerId, ownerId));
  return stats?.bytes ?? 0;
}

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

    /**
     * Inserts the row unless it would take the owner past `quota` bytes ("over-quota"). One statement:
     * the owner's `file_stats` row is taken (upserted, which locks it until the statement commits) and
     * read in a CTE, and the file goes in only if it fits, so two uploads cannot both fit the last bytes.
     * It was a transaction with an advisory lock: six round trips, and pooled connections held while waiting.
     */
    async insert(file: NewFile, quota: number | undefined): Promise<FileRow | "over-quota"> {
      if (quota === undefined) {
        const [row] = await insertFile.execute({ ...file, isPublic: file.isPublic ?? false });
        return row as FileRow;
      }
      const result = await orm.execute(sql`
        with stats as (
          insert into ${fileStats} (owner_id) values (${file.ownerId})
          on conflict (owner_id) do update set owner_id = excluded.owner_id
          returning bytes
        )
        insert into ${files} (owner_id, filename, content_type, file_size, file_hash, storage_key, is_public)
        select ${file.ownerId}, ${file.filename}, ${file.contentType}, ${file.fileSize}, ${file.fileHash},
          ${file.storageKey}, ${file.isPublic ?? false}
        from stats where stats.bytes + ${file.fileSize} <= ${quota}
        returning *`);
      const [raw] = rowsOf<Record<string, unknown>>(result);
      return raw ? fromDriver(raw) : "over-quota";
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
