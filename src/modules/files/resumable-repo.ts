import { and, eq, inArray, isNull, lt, or, sql, sum } from "drizzle-orm";
import type { Orm } from "../../db/client";
import { type ResumableRow, type ResumableUploadState, resumableUploads } from "../../db/schema";

export type NewResumable = typeof resumableUploads.$inferInsert;
type Progress = Pick<NewResumable, "offset" | "storageState" | "inspection">;

/** Any constant shared by every instance: one of them sweeps expired uploads at a time. */
const SWEEP_LOCK_KEY = 7_240_314;

// postgres.js returns the rows array itself; PGlite returns `{ rows }`.
function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}

const table = resumableUploads;
/** The lease `token` holds, extended by `ms` from the database's clock (every instance reads the same). */
const leaseFor = (ms: number) => sql`now() + ${ms} * interval '1 millisecond'`;
const hoursFromNow = (hours: number) => sql`now() + ${hours} * interval '1 hour'`;
const free = or(isNull(table.lockedUntil), lt(table.lockedUntil, sql`now()`));
const heldBy = (id: string, token: string) => and(eq(table.id, id), eq(table.lockToken, token));

export function createResumableRepo(orm: Orm) {
  return {
    /** Inserts an upload, held by `token` (its first request may carry bytes), expiring in `hours`. */
    async insert(upload: Omit<NewResumable, "expiresAt">, hours: number, token: string, leaseMs: number) {
      const [row] = await orm
        .insert(table)
        .values({ ...upload, expiresAt: hoursFromNow(hours), lockToken: token, lockedUntil: leaseFor(leaseMs) })
        .returning();
      return row as ResumableRow;
    },

    async find(id: string): Promise<ResumableRow | undefined> {
      const [row] = await orm.select().from(table).where(eq(table.id, id)).limit(1);
      return row;
    },

    /**
     * Takes the owner's upload for `token` for `leaseMs` unless another request holds it (its lease not yet
     * run out), or it has expired, or it is in none of `states`: one conditional UPDATE, so of two racing
     * requests one gets it.
     */
    async lock(id: string, ownerId: string, states: ResumableUploadState[], token: string, leaseMs: number) {
      const [row] = await orm
        .update(table)
        .set({ lockToken: token, lockedUntil: leaseFor(leaseMs) })
        .where(
          and(
            eq(table.id, id),
            eq(table.ownerId, ownerId),
            inArray(table.state, states),
            or(eq(table.state, "complete"), sql`${table.expiresAt} > now()`),
            free,
          ),
        )
        .returning();
      return row;
    },

    /** Extends the lease; false once `token` no longer holds the upload. */
    async renew(id: string, token: string, leaseMs: number): Promise<boolean> {
      const rows = await orm
        .update(table)
        .set({ lockedUntil: leaseFor(leaseMs) })
        .where(heldBy(id, token))
        .returning({ id: table.id });
      return rows.length > 0;
    },

    async release(id: string, token: string): Promise<void> {
      await orm.update(table).set({ lockToken: null, lockedUntil: null }).where(heldBy(id, token));
    },

    /** Records what the storage must not forget (a multipart upload's id) while the request goes on. */
    async saveStorageState(id: string, token: string, storageState: Record<string, unknown>): Promise<boolean> {
      const rows = await orm.update(table).set({ storageState }).where(heldBy(id, token)).returning({ id: table.id });
      return rows.length > 0;
    },

    /** Records a request's bytes, moves the expiry on and lets go of the upload; undefined if `token` lost it. */
    async progress(id: string, token: string, progress: Progress, hours: number) {
      const [row] = await orm
        .update(table)
        .set({ ...progress, expiresAt: hoursFromNow(hours), lockToken: null, lockedUntil: null })
        .where(heldBy(id, token))
        .returning();
      return row;
    },

    /** Every byte is in: the upload is being made a file, still held by `token`. */
    async completing(id: string, token: string, storageState: Record<string, unknown> | null): Promise<boolean> {
      const rows = await orm
        .update(table)
        .set({ state: "completing", storageState })
        .where(heldBy(id, token))
        .returning({ id: table.id });
      return rows.length > 0;
    },

    /** The upload is the file `fileId`: kept, without bytes or lock, until `hours` from now. */
    async complete(id: string, fileId: string, hours: number) {
      const [row] = await orm
        .update(table)
        .set({
          state: "complete",
          offset: sql`${table.length}`,
          fileId,
          storageState: null,
          inspection: {},
          lockToken: null,
          lockedUntil: null,
          expiresAt: hoursFromNow(hours),
        })
        .where(eq(table.id, id))
        .returning();
      return row;
    },

    async delete(id: string): Promise<void> {
      await orm.delete(table).where(eq(table.id, id));
    },

    /** Bytes the owner's unfinished uploads may still bring: what they take of the quota meanwhile. */
    async openBytesOf(ownerId: string): Promise<number> {
      const [row] = await orm
        .select({ bytes: sum(table.length).mapWith(Number) })
        .from(table)
        .where(and(eq(table.ownerId, ownerId), inArray(table.state, ["receiving", "completing"])));
      return row?.bytes ?? 0;
    },

    /**
     * Takes (for `token`) up to `batch` uploads to clean up: expired, orphaned by their owner's deletion, or
     * left `completing` by a crashed instance (its lease run out). Under a lock every instance shares;
     * undefined when another instance is sweeping.
     */
    async claimStale(token: string, leaseMs: number, batch: number): Promise<ResumableRow[] | undefined> {
      return orm.transaction(async (tx) => {
        const [lock] = rowsOf<{ locked: boolean }>(
          await tx.execute(sql`select pg_try_advisory_xact_lock(${SWEEP_LOCK_KEY}) as locked`),
        );
        if (!lock?.locked) return undefined;
        const stale = tx
          .select({ id: table.id })
          .from(table)
          .where(and(free, or(lt(table.expiresAt, sql`now()`), isNull(table.ownerId), eq(table.state, "completing"))))
          .orderBy(table.expiresAt)
          .limit(batch);
        return tx
          .update(table)
          .set({ lockToken: token, lockedUntil: leaseFor(leaseMs) })
          .where(and(inArray(table.id, stale), free))
          .returning();
      });
    },
  };
}

export type ResumableRepo = ReturnType<typeof createResumableRepo>;
