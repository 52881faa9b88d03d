import { type Static, Type as T } from "@sinclair/typebox";

/** The archive's layout version: a reader refuses any other. */
export const ARCHIVE_FORMAT = 1;
export const MANIFEST_NAME = "manifest.json";
/** The development secret (DATA_DIR/secret_key), so tokens signed before a restore still verify. */
export const SECRET_MEMBER = "secret_key";
export const SEQUENCES_MEMBER = "db/sequences.json";
export const tableMember = (table: string) => `db/${table}.csv`;
export const fileMember = (key: string) => `files/${key}`;

const Sha256 = T.String({ pattern: "^[0-9a-f]{64}$" });
const Count = T.Integer({ minimum: 0 });

/** The archive's first member: what it holds, and each member's size and SHA-256. */
export const Manifest = T.Object({
  format: T.Integer(),
  app: T.Literal("reviewpoint"),
  version: T.String(),
  commit: T.String(),
  created_at: T.String(),
  /** Migrations the database had: a restore applies as many, loads the rows, then applies the rest. */
  migrations: Count,
  /** Rows of each table, checked after the restore. */
  tables: T.Record(T.String({ pattern: "^[a-z_][a-z0-9_]*$" }), Count),
  files: Count,
  file_bytes: Count,
  members: T.Array(T.Object({ name: T.String({ minLength: 1 }), size: Count, sha256: Sha256 })),
});
export type Manifest = Static<typeof Manifest>;

export const Sequences = T.Array(
  T.Object({ name: T.String({ pattern: "^[a-z_][a-z0-9_]*$" }), value: T.Union([T.Integer(), T.Null()]) }),
);
export type Sequences = Static<typeof Sequences>;

/** Bad input to backup or restore (a wrong archive, a full disk, a non-empty folder): one line, exit 2. */
export class BackupError extends Error {}
