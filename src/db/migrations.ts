/**
 * The migrations, compiled into the program as text: nothing is read from a folder at run time, so the
 * binary migrates wherever it runs (`import.meta.dir` inside a `--bytecode` binary names the build tree).
 * `bun run db:generate` writes a new `drizzle/NNNN_*.sql`: import it here too (a test fails until it is).
 */

import m0000 from "../../drizzle/0000_init.sql" with { type: "text" };
import m0001 from "../../drizzle/0001_auth_change_seq.sql" with { type: "text" };
import m0002 from "../../drizzle/0002_auth_change_triggers.sql" with { type: "text" };
import m0003 from "../../drizzle/0003_auth_cache_replay.sql" with { type: "text" };
import m0004 from "../../drizzle/0004_file_stats.sql" with { type: "text" };
import m0005 from "../../drizzle/0005_identity.sql" with { type: "text" };
import m0006 from "../../drizzle/0006_share_links_idempotency.sql" with { type: "text" };
import m0007 from "../../drizzle/0007_resumable_uploads.sql" with { type: "text" };
import journal from "../../drizzle/meta/_journal.json" with { type: "json" };

/** Each migration's SQL by its journal tag. */
export const MIGRATION_SQL: Readonly<Record<string, string>> = {
  "0000_init": m0000,
  "0001_auth_change_seq": m0001,
  "0002_auth_change_triggers": m0002,
  "0003_auth_cache_replay": m0003,
  "0004_file_stats": m0004,
  "0005_identity": m0005,
  "0006_share_links_idempotency": m0006,
  "0007_resumable_uploads": m0007,
};

export interface JournalEntry {
  tag: string;
  when: number;
  breakpoints: boolean;
}

export const JOURNAL: readonly JournalEntry[] = journal.entries;
