import type { PGlite, Transaction } from "@electric-sql/pglite";
import { BackupError, type Sequences } from "./model";

/** One table of the snapshot: its rows as CSV with a header line. */
export interface TableDump {
  name: string;
  rows: number;
  csv: Blob;
}

export interface StoredFileRef {
  key: string;
  size: number;
  hash: string;
}

export interface DatabaseSnapshot {
  tables: TableDump[];
  sequences: Sequences;
  files: StoredFileRef[];
}

// Names come from the catalog; checked anyway before they are quoted into a statement.
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;
const quoted = (name: string) => {
  if (!IDENTIFIER.test(name)) throw new BackupError(`backup: unexpected table name ${JSON.stringify(name)}`);
  return `"${name}"`;
};

type Queryable = Pick<Transaction, "query">;

/**
 * Rows a table is archived with, where not all. Resumable uploads only once complete (their file is in the
 * archive): an unfinished one's bytes wait outside the stored files and are not archived, so its row would
 * promise an offset it cannot continue from. Without it the client's HEAD gets a 404 and it starts again
 * (tus clients do that by themselves); a complete one still answers a client whose last reply was lost.
 */
const ARCHIVED_ROWS: Record<string, string> = { resumable_uploads: "state = 'complete'" };

async function tableNames(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    "select table_name as name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by 1",
  );
  return rows.map((row) => row.name);
}

/**
 * The embedded database's side of backups: COPY of every table to CSV and back, and the sequences.
 * Logical, not a copy of PGlite's files, so an archive restores into a newer PGlite as well.
 */
export function createBackupRepo(pglite: PGlite) {
  return {
    /**
     * Every table, sequence and stored file's key in one transaction: PGlite runs nothing else until it
     * ends, so the snapshot is consistent. `hold` runs inside it too (pinning the files' bytes before a
     * deletion can remove them).
     */
    async snapshot<T>(hold: (files: StoredFileRef[]) => Promise<T>): Promise<{ snapshot: DatabaseSnapshot; held: T }> {
      return pglite.transaction(async (tx) => {
        const tables: TableDump[] = [];
        for (const name of await tableNames(tx)) {
          const only = ARCHIVED_ROWS[name];
          const rows = only ? `(select * from ${quoted(name)} where ${only})` : quoted(name);
          const count = await tx.query<{ n: number }>(`select count(*)::int as n from ${rows} as t`);
          const copy = await tx.query(`copy ${rows} to '/dev/blob' with (format csv, header true)`);
          tables.push({ name, rows: count.rows[0]?.n ?? 0, csv: copy.blob ?? new Blob([]) });
        }
        const sequences = await tx.query<{ name: string; value: number | null }>(
          "select sequencename as name, last_value as value from pg_sequences where schemaname = 'public' order by 1",
        );
        const files = await tx.query<StoredFileRef>(
          "select storage_key as key, file_size::float8 as size, file_hash as hash from files",
        );
        const held = await hold(files.rows);
        return {
          snapshot: {
            tables,
            sequences: sequences.rows.map((row) => ({
              name: row.name,
              value: row.value === null ? null : Number(row.value),
            })),
            files: files.rows,
          },
          held,
        };
      });
    },

    /**
     * Loads the tables (as CSV, header checked against the columns) and sequences into a database
     * migrated to the archive's level. Triggers and foreign keys are off while loading: the rows are a
     * consistent snapshot already, and derived tables (file_stats) come with them.
     */
    async load(tables: { name: string; csv: Blob }[], sequences: Sequences): Promise<Record<string, number>> {
      return pglite.transaction(async (tx) => {
        await tx.query("set local session_replication_role = replica");
        const present = new Set(await tableNames(tx));
        const counts: Record<string, number> = {};
        for (const table of tables) {
          if (!present.has(table.name))
            throw new BackupError(`restore: the archive has a table this version lacks: ${table.name}`);
          await tx.query(`copy ${quoted(table.name)} from '/dev/blob' with (format csv, header match)`, [], {
            blob: table.csv,
          });
          const count = await tx.query<{ n: number }>(`select count(*)::int as n from ${quoted(table.name)}`);
          counts[table.name] = count.rows[0]?.n ?? 0;
        }
        for (const sequence of sequences) {
          if (sequence.value !== null) {
            await tx.query(`select setval('${quoted(sequence.name)}', $1, true)`, [sequence.value]);
          }
        }
        return counts;
      });
    },
  };
}
