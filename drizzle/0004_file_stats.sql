CREATE TABLE "file_stats" (
	"owner_id" uuid PRIMARY KEY NOT NULL,
	"file_count" bigint DEFAULT 0 NOT NULL,
	"bytes" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
DROP INDEX "files_owner_uploaded_idx";--> statement-breakpoint
ALTER TABLE "file_stats" ADD CONSTRAINT "file_stats_owner_id_users_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "files_owner_uploaded_id_idx" ON "files" USING btree ("owner_id","uploaded_at","id");--> statement-breakpoint
-- file_stats follows every change to files inside the writing transaction, so it is exactly what a
-- count(*) and a sum(file_size) over the owner's rows would say. Statement-level triggers (with
-- transition tables) update each owner's row once per statement, however many files it touches.
CREATE FUNCTION "file_stats_inserted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "file_stats" AS s ("owner_id", "file_count", "bytes")
    SELECT "owner_id", count(*), sum("file_size") FROM inserted GROUP BY "owner_id" ORDER BY "owner_id"
  ON CONFLICT ("owner_id") DO UPDATE
    SET "file_count" = s."file_count" + excluded."file_count", "bytes" = s."bytes" + excluded."bytes";
  RETURN NULL;
END;
$$;--> statement-breakpoint
-- Only an update: the owner's row is gone already when the owner's deletion cascades here.
CREATE FUNCTION "file_stats_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE "file_stats" AS s SET "file_count" = s."file_count" - d.n, "bytes" = s."bytes" - d.b
    FROM (SELECT "owner_id", count(*) AS n, sum("file_size") AS b FROM deleted GROUP BY "owner_id") AS d
    WHERE s."owner_id" = d."owner_id";
  RETURN NULL;
END;
$$;--> statement-breakpoint
-- The service never changes a file's owner or size; kept exact should anything else do it.
CREATE FUNCTION "file_stats_moved"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE "file_stats" SET "file_count" = "file_count" - 1, "bytes" = "bytes" - OLD."file_size"
    WHERE "owner_id" = OLD."owner_id";
  INSERT INTO "file_stats" AS s ("owner_id", "file_count", "bytes") VALUES (NEW."owner_id", 1, NEW."file_size")
  ON CONFLICT ("owner_id") DO UPDATE SET "file_count" = s."file_count" + 1, "bytes" = s."bytes" + NEW."file_size";
  RETURN NULL;
END;
$$;--> statement-breakpoint
CREATE FUNCTION "file_stats_truncated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "file_stats";
  RETURN NULL;
END;
$$;--> statement-breakpoint
CREATE TRIGGER "files_stats_insert" AFTER INSERT ON "files" REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION "file_stats_inserted"();--> statement-breakpoint
CREATE TRIGGER "files_stats_delete" AFTER DELETE ON "files" REFERENCING OLD TABLE AS deleted
  FOR EACH STATEMENT EXECUTE FUNCTION "file_stats_deleted"();--> statement-breakpoint
CREATE TRIGGER "files_stats_update" AFTER UPDATE OF "owner_id", "file_size" ON "files" FOR EACH ROW
  WHEN ((OLD."owner_id", OLD."file_size") IS DISTINCT FROM (NEW."owner_id", NEW."file_size"))
  EXECUTE FUNCTION "file_stats_moved"();--> statement-breakpoint
CREATE TRIGGER "files_stats_truncate" AFTER TRUNCATE ON "files" FOR EACH STATEMENT
  EXECUTE FUNCTION "file_stats_truncated"();--> statement-breakpoint
-- After the triggers: creating them locked out writers, so nothing slips between the two.
INSERT INTO "file_stats" ("owner_id", "file_count", "bytes")
  SELECT "owner_id", count(*), sum("file_size") FROM "files" GROUP BY "owner_id";
