import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { sql } from "drizzle-orm";
import { connectPostgres, type Database, openPglite } from "../../src/db/client";
import { migrationsApplied, migrationsDir, runMigrations } from "../../src/db/migrate";
import { scratchPostgres, TEST_DATABASE_URL } from "../support";

const migrationCount = readdirSync(migrationsDir()).filter((name) => name.endsWith(".sql")).length;

/** A brand-new, empty database of the run's kind; dropped again by `dispose`. */
async function emptyDatabase(): Promise<{ open: () => Database | Promise<Database>; dispose: () => Promise<void> }> {
  if (!TEST_DATABASE_URL) {
    const db = await openPglite("memory://");
    return { open: () => db, dispose: () => db.close() };
  }
  const scratch = await scratchPostgres("migrate");
  const opened: Database[] = [];
  return {
    open: () => {
      const db = connectPostgres({ url: scratch.url, max: 2 });
      opened.push(db);
      return db;
    },
    dispose: async () => {
      await Promise.all(opened.map((db) => db.close()));
      await scratch.drop();
    },
  };
}

async function tableNames(db: Database): Promise<string[]> {
  const result = await db.orm.execute<{ name: string }>(
    sql`select table_name as name from information_schema.tables where table_schema = 'public' order by 1`,
  );
  const rows = Array.isArray(result) ? result : (result as unknown as { rows: { name: string }[] }).rows;
  return rows.map((row) => row.name);
}

describe("migrations", () => {
  test("apply on an empty database, then a re-run applies nothing", async () => {
    const scratch = await emptyDatabase();
    try {
      const db = await scratch.open();
      expect(await migrationsApplied(db)).toBe(false);
      expect(await runMigrations(db)).toBe(migrationCount);
      expect(await tableNames(db)).toEqual([
        "auth_sessions",
        "file_stats",
        "files",
        "revoked_tokens",
        "used_password_reset_tokens",
        "users",
      ]);
      expect(await migrationsApplied(db)).toBe(true);
      expect(await runMigrations(db)).toBe(0);
    } finally {
      await scratch.dispose();
    }
  });

  // PGlite is single-process (one server per data dir), so concurrent instances exist only on Postgres.
  test.skipIf(!TEST_DATABASE_URL)("instances starting together migrate once, without racing", async () => {
    const scratch = await emptyDatabase();
    try {
      const instances = await Promise.all([scratch.open(), scratch.open(), scratch.open()]);
      const applied = await Promise.all(instances.map((db) => runMigrations(db)));
      expect(applied.reduce((sum, n) => sum + n, 0)).toBe(migrationCount);
      expect(await migrationsApplied(instances[0] as Database)).toBe(true);
    } finally {
      await scratch.dispose();
    }
  });
});
