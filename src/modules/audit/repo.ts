import { and, count, desc, eq, gte, inArray, lt, lte, type SQL, sql } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { auditEvents } from "../../db/schema";
import type { AuditFilter, AuditListParams } from "./model";

export type NewAuditEvent = typeof auditEvents.$inferInsert;

const EXPORT_BATCH = 500;
/** Any constant shared by every instance: one of them prunes at a time. */
const PRUNE_LOCK_KEY = 7_240_313;

// postgres.js returns the rows array itself; PGlite returns `{ rows }`.
function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}

function where(filter: AuditFilter): SQL | undefined {
  return and(
    filter.actor_id ? eq(auditEvents.actorId, filter.actor_id) : undefined,
    filter.target_id ? eq(auditEvents.targetId, filter.target_id) : undefined,
    filter.action ? eq(auditEvents.action, filter.action) : undefined,
    filter.since ? gte(auditEvents.at, new Date(filter.since)) : undefined,
    filter.until ? lte(auditEvents.at, new Date(filter.until)) : undefined,
  );
}

const newestFirst = [desc(auditEvents.at), desc(auditEvents.id)];

export function createAuditRepo(orm: Orm) {
  return {
    /** On `executor`: inside the transaction of the change the event records. */
    async insert(executor: Executor, event: NewAuditEvent): Promise<void> {
      await executor.insert(auditEvents).values(event);
    },

    async list(params: AuditListParams) {
      const condition = where(params);
      const [rows, [totals]] = await Promise.all([
        orm
          .select()
          .from(auditEvents)
          .where(condition)
          .orderBy(...newestFirst)
          .offset(params.offset)
          .limit(params.limit),
        orm.select({ total: count() }).from(auditEvents).where(condition),
      ]);
      return { rows, total: totals?.total ?? 0 };
    },

    /** Every matching event, newest first, in keyset-paginated batches (`at` is stored at millisecond precision). */
    async *stream(filter: AuditFilter) {
      let after: { at: Date; id: string } | undefined;
      for (;;) {
        const page = await orm
          .select()
          .from(auditEvents)
          .where(
            and(
              where(filter),
              after
                ? sql`(${auditEvents.at}, ${auditEvents.id}) < (${after.at.toISOString()}::timestamptz, ${after.id}::uuid)`
                : undefined,
            ),
          )
          .orderBy(...newestFirst)
          .limit(EXPORT_BATCH);
        yield* page;
        const last = page.at(-1);
        if (!last || page.length < EXPORT_BATCH) return;
        after = { at: last.at, id: last.id };
      }
    },

    /**
     * Deletes up to `batch` events older than `before`, under a lock every instance shares; undefined
     * when another instance holds it (it is pruning already).
     */
    async pruneBatch(before: Date, batch: number): Promise<number | undefined> {
      return orm.transaction(async (tx) => {
        const [lock] = rowsOf<{ locked: boolean }>(
          await tx.execute(sql`select pg_try_advisory_xact_lock(${PRUNE_LOCK_KEY}) as locked`),
        );
        if (!lock?.locked) return undefined;
        const oldest = tx
          .select({ id: auditEvents.id })
          .from(auditEvents)
          .where(lt(auditEvents.at, before))
          .orderBy(auditEvents.at)
          .limit(batch);
        const deleted = await tx
          .delete(auditEvents)
          .where(inArray(auditEvents.id, oldest))
          .returning({ id: auditEvents.id });
        return deleted.length;
      });
    },
  };
}

export type AuditRepo = ReturnType<typeof createAuditRepo>;
