import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { sql } from "drizzle-orm";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { migrate } from "drizzle-orm/postgres-js/migrator";
import type { Database } from "./client";

/** Any constant shared by every instance; it names the migration lock in pg_locks. */
const MIGRATION_LOCK_KEY = 7_240_311;

/** Inside the binary the folder is embedded beside the bundle (`--asset ./drizzle`); in a checkout it is at the root. */
export function migrationsDir(): string {
  const embedded = join(import.meta.dir, "drizzle");
  return existsSync(join(embedded, "meta", "_journal.json")) ? embedded : resolve(import.meta.dir, "../../drizzle");
}

/** Applies pending migrations; safe when several instances start at once. Returns how many were pending. */
export async function runMigrations(db: Database): Promise<number> {
  // The usual start: nothing pending, so no need for the lock's extra connection.
  if (await migrationsApplied(db)) return 0;
  const migrationsFolder = migrationsDir();
  return db.exclusive(MIGRATION_LOCK_KEY, async (orm) => {
    const before = await appliedCount(db);
    await migrate(orm, { migrationsFolder });
    return readMigrationFiles({ migrationsFolder }).length - before;
  });
}

async function appliedCount(db: Database): Promise<number> {
  const exists = await db.orm.execute<{ present: boolean }>(
    sql`select to_regclass('drizzle.__drizzle_migrations') is not null as present`,
  );
  if (!rowsOf<{ present: boolean }>(exists)[0]?.present) return 0;
  const result = await db.orm.execute<{ count: number }>(
    sql`select count(*)::int as count from drizzle.__drizzle_migrations`,
  );
  return rowsOf<{ count: number }>(result)[0]?.count ?? 0;
}

let embeddedCount: number | undefined;

/** True when every embedded migration has been applied to the database. */
export async function migrationsApplied(db: Database): Promise<boolean> {
  embeddedCount ??= readMigrationFiles({ migrationsFolder: migrationsDir() }).length;
  return (await appliedCount(db)) >= embeddedCount;
}

// postgres.js returns the rows array itself; PGlite returns `{ rows }`.
function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}
