import type { Executor, Orm, Tx } from "../../db/client";
import { loggableError } from "../../http/errors";
import { type Logger, redact } from "../../platform/logger";
import { type AuditEntry, type AuditFilter, type AuditListParams, toPublicAuditEvent } from "./model";
import type { AuditRepo } from "./repo";

const DAY_MS = 86_400_000;
const PRUNE_BATCH = 1000;
const PRUNE_INTERVAL_MS = 3_600_000;

/**
 * The audit log. `record(tx, entry)` writes an event inside the caller's transaction, so the event and
 * the change it records commit or roll back together; `recordAlone` is for events that record no
 * change (a failed login). With `enabled` false nothing is written.
 */
export function createAuditLog(deps: {
  repo: AuditRepo;
  enabled: boolean;
  retentionDays: number;
  logger: Logger;
  orm: Orm;
}) {
  const { repo, enabled, retentionDays, logger, orm } = deps;

  async function record(executor: Executor, entry: AuditEntry): Promise<void> {
    if (!enabled) return;
    await repo.insert(executor, {
      // Milliseconds, as JavaScript reads it back: the export pages on (at, id).
      at: new Date(),
      action: entry.action,
      actorId: entry.actorId,
      targetType: entry.target?.type ?? null,
      targetId: entry.target?.id ?? null,
      ip: entry.meta.ip,
      userAgent: entry.meta.userAgent,
      requestId: entry.meta.requestId,
      // A field named like a secret is masked, should one ever be passed by mistake.
      details: (redact(entry.details ?? {}) ?? {}) as Record<string, unknown>,
    });
  }

  /** Prunes events older than AUDIT_RETENTION_DAYS in batches; stops early if another instance is at it. */
  async function prune(now = Date.now(), batch = PRUNE_BATCH): Promise<number> {
    const before = new Date(now - retentionDays * DAY_MS);
    let total = 0;
    for (;;) {
      const deleted = await repo.pruneBatch(before, batch);
      if (deleted === undefined) return total;
      total += deleted;
      if (deleted < batch) return total;
    }
  }

  return {
    record,
    recordAlone: (entry: AuditEntry) => record(orm, entry),
    /** One transaction for a change and its event (services hold no SQL, but they do decide what commits together). */
    transaction: <T>(work: (tx: Tx) => Promise<T>) => orm.transaction(work),
    prune,

    async list(params: AuditListParams) {
      const { rows, total } = await repo.list(params);
      return { items: rows.map(toPublicAuditEvent), total, offset: params.offset, limit: params.limit };
    },

    /** JSON lines, produced while the client reads; the first batch is read first, so a failing query is an error response. */
    async export(filter: AuditFilter): Promise<ReadableStream<Uint8Array>> {
      const rows = repo.stream(filter);
      const encoder = new TextEncoder();
      let pending: IteratorResult<Parameters<typeof toPublicAuditEvent>[0]> | undefined = await rows.next();
      return new ReadableStream({
        async pull(controller) {
          try {
            const next = pending ?? (await rows.next());
            pending = undefined;
            if (next.done) controller.close();
            else controller.enqueue(encoder.encode(`${JSON.stringify(toPublicAuditEvent(next.value))}\n`));
          } catch (error) {
            logger.error("audit export failed mid-stream", { error: loggableError(error) });
            controller.error(error);
          }
        },
        cancel: () => void rows.return(undefined),
      });
    },

    /** Prunes now and every hour after; returns what stops it. */
    startRetention(): () => void {
      const run = () =>
        prune()
          .then(
            (deleted) => deleted > 0 && logger.info("audit events pruned", { deleted, retention_days: retentionDays }),
          )
          .catch((error) => logger.warn("pruning audit events failed", { error: loggableError(error) }));
      void run();
      const timer = setInterval(run, PRUNE_INTERVAL_MS);
      timer.unref?.();
      return () => clearInterval(timer);
    },
  };
}

export type AuditLog = ReturnType<typeof createAuditLog>;
/** Writes an event inside the caller's transaction. */
export type AuditRecorder = AuditLog["record"];
