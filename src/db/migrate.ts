import { createHash } from "node:crypto";
import { sql } from "drizzle-orm";
import type { MigrationMeta } from "drizzle-orm/migrator";
import type { Database, Orm } from "./client";
import { JOURNAL, MIGRATION_SQL } from "./migrations";

/** Any constant shared by every instance; it names the migration lock in pg_locks. */
const MIGRATION_LOCK_KEY = 7_240_311;

/**
 * The embedded migrations in the form Drizzle's migrator takes, as `readMigrationFiles` would build them
 * from the folder (same statements, same hash), so databases migrated from files before stay in step.
 */
export function embeddedMigrations(): MigrationMeta[] {
  return JOURNAL.map((entry) => {
    const text = MIGRATION_SQL[entry.tag];
    if (text === undefined) throw new Error(`migration ${entry.tag} is not embedded (src/db/migrations.ts)`);
    return {
      sql: text.split("--> statement-breakpoint"),
      bps: entry.breakpoints,
      folderMillis: entry.when,
      hash: createHash("sha256").update(text).digest("hex"),
    };
  });
}

/** Drizzle's own migrator, fed from memory instead of a folder. */
async function applyMigrations(orm: Orm, migrations: MigrationMeta[]): Promise<void> {
  const { dialect, session } = orm as unknown as {
    dialect: { migrate(m: MigrationMeta[], s: unknown, c: object): Promise<void> };
    session: unknown;
  };
  await dialect.migrate(migrations, session, {});
}

/**
 * Applies pending migrations (the first `upTo` of them when given); safe when several instances start at
 * once. Returns how many were pending.
 */
export async function runMigrations(db: Database, upTo?: number): Promise<number> {
  const migrations = embeddedMigrations().slice(0, upTo);
  // The usual start: nothing pending, so no need for the lock's extra connection.
  if ((await appliedCount(db)) >= migrations.length) return 0;
  return db.exclusive(MIGRATION_LOCK_KEY, async (orm) => {
    const before = await appliedCount(db);
    await applyMigrations(orm, migrations);
    return Math.max(0, migrations.length - before);
  });
}

/** How many migrations the database has applied. */
export async function appliedCount(db: Database): Promise<number> {
  const exists = await db.orm.execute<{ present: boolean }>(
    sql`select to_regclass('drizzle.__drizzle_migrations') is not null as present`,
  );
  if (!rowsOf<{ present: boolean }>(exists)[0]?.present) return 0;
  const result = await db.orm.execute<{ count: number }>(
    sql`select count(*)::int as count from drizzle.__drizzle_migrations`,
  );
  return rowsOf<{ count: number }>(result)[0]?.count ?? 0;
}

/** True when every embedded migration has been applied to the database. */
export async function migrationsApplied(db: Database): Promise<boolean> {
  return (await appliedCount(db)) >= JOURNAL.length;
}

// postgres.js returns the rows array itself; PGlite returns `{ rows }`.
export function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}
