import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { connectPostgres, type Database, openPglite } from "../../src/db/client";
import { migrationsApplied, runMigrations } from "../../src/db/migrate";
import { JOURNAL, MIGRATION_SQL } from "../../src/db/migrations";
import { scratchPostgres, TEST_DATABASE_URL } from "../support";

const DRIZZLE = join(import.meta.dir, "..", "..", "drizzle");
const migrationFiles = readdirSync(DRIZZLE).filter((name) => name.endsWith(".sql"));
const migrationCount = migrationFiles.length;

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
  test("every generated migration is embedded, byte for byte, in the journal's order", async () => {
    expect(JOURNAL.map((entry) => `${entry.tag}.sql`)).toEqual(migrationFiles.sort());
    for (const entry of JOURNAL) {
      expect(MIGRATION_SQL[entry.tag]).toBe(await Bun.file(join(DRIZZLE, `${entry.tag}.sql`)).text());
    }
  });

  test("apply on an empty database, then a re-run applies nothing", async () => {
    const scratch = await emptyDatabase();
    try {
      const db = await scratch.open();
      expect(await migrationsApplied(db)).toBe(false);
      expect(await runMigrations(db)).toBe(migrationCount);
      expect(await tableNames(db)).toEqual([
        "audit_events",
        "auth_sessions",
        "email_verifications",
        "file_stats",
        "files",
        "idempotency_keys",
        "mfa_recovery_codes",
        "passkeys",
        "resumable_uploads",
        "revoked_tokens",
        "share_links",
        "used_mfa_tokens",
        "used_password_reset_tokens",
        "user_mfa",
        "users",
        "webauthn_challenges",
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
