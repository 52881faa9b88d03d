import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  index,
  pgSequence,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
  varchar,
} from "drizzle-orm/pg-core";

const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });
const createdAt = () => timestamptz("created_at").notNull().defaultNow();

const ROLES = ["user", "admin"] as const;
export type Role = (typeof ROLES)[number];

export const users = pgTable(
  "users",
  {
    // v7: time-ordered, so exports can page by id in creation order.
    id: uuid("id")
      .primaryKey()
      .defaultRandom()
      .$defaultFn(() => Bun.randomUUIDv7()),
    username: varchar("username", { length: 50 }).notNull(),
    email: varchar("email", { length: 320 }).notNull(),
    name: varchar("name", { length: 255 }),
    bio: text("bio"),
    passwordHash: text("password_hash").notNull(),
    role: text("role", { enum: ROLES }).notNull().default("user"),
    isActive: boolean("is_active").notNull().default(true),
    createdAt: createdAt(),
    updatedAt: timestamptz("updated_at").notNull().defaultNow(),
  },
  (table) => [
    // Uniqueness ignores case: "Alice" and "alice" are the same account name.
    uniqueIndex("users_username_lower_idx").on(sql`lower(${table.username})`),
    uniqueIndex("users_email_lower_idx").on(sql`lower(${table.email})`),
    index("users_created_at_idx").on(table.createdAt),
    index("users_updated_at_idx").on(table.updatedAt),
    check("users_role_check", sql`${table.role} in ('user', 'admin')`),
  ],
);

export const files = pgTable(
  "files",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    ownerId: uuid("owner_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    filename: varchar("filename", { length: 255 }).notNull(),
    contentType: varchar("content_type", { length: 127 }).notNull(),
    fileSize: bigint("file_size", { mode: "number" }).notNull(),
    fileHash: varchar("file_hash", { length: 64 }).notNull(),
    storageKey: text("storage_key").notNull().unique(),
    isPublic: boolean("is_public").notNull().default(false),
    uploadedAt: timestamptz("uploaded_at").notNull().defaultNow(),
  },
  // The list's default order, ties broken by id: a page is read straight off the index.
  (table) => [index("files_owner_uploaded_id_idx").on(table.ownerId, table.uploadedAt, table.id)],
);

/**
 * How many files each owner has and their bytes, kept exact by triggers on `files` (migration 0004):
 * the list's `total` and the quota read one row instead of counting the owner's files.
 */
export const fileStats = pgTable("file_stats", {
  ownerId: uuid("owner_id")
    .primaryKey()
    .references(() => users.id, { onDelete: "cascade" }),
  fileCount: bigint("file_count", { mode: "number" }).notNull().default(0),
  bytes: bigint("bytes", { mode: "number" }).notNull().default(0),
});

/** One row per login; the refresh token in circulation is the one whose jti matches. */
export const authSessions = pgTable(
  "auth_sessions",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    refreshJti: uuid("refresh_jti").notNull(),
    /** The pair issued by the last rotation, so racing refreshes within the grace window get it again. */
    previousJti: uuid("previous_jti"),
    accessJti: uuid("access_jti"),
    rotatedAt: timestamptz("rotated_at"),
    createdAt: createdAt(),
    expiresAt: timestamptz("expires_at").notNull(),
    revokedAt: timestamptz("revoked_at"),
  },
  (table) => [
    index("auth_sessions_user_idx").on(table.userId),
    // The auth cache replays recent revocations from here.
    index("auth_sessions_revoked_at_idx").on(table.revokedAt),
  ],
);

/** Access tokens revoked before their expiry (logout); the durable side of the revocation cache. */
export const revokedTokens = pgTable(
  "revoked_tokens",
  {
    jti: uuid("jti").primaryKey(),
    expiresAt: timestamptz("expires_at").notNull(),
    revokedAt: timestamptz("revoked_at").notNull().defaultNow(),
  },
  (table) => [
    index("revoked_tokens_expires_idx").on(table.expiresAt),
    index("revoked_tokens_revoked_at_idx").on(table.revokedAt),
  ],
);

export const usedPasswordResetTokens = pgTable("used_password_reset_tokens", {
  jti: uuid("jti").primaryKey(),
  userId: uuid("user_id")
    .notNull()
    .references(() => users.id, { onDelete: "cascade" }),
  usedAt: timestamptz("used_at").notNull().defaultNow(),
  expiresAt: timestamptz("expires_at").notNull(),
});

/**
 * Advanced after every change to a user or a revocation. The shared cache records the highest value it
 * has applied; a cache that is behind (a lost write, a restart from an old snapshot) is not trusted.
 */
export const authChangeSeq = pgSequence("auth_change_seq");

export type UserRow = typeof users.$inferSelect;
export type FileRow = typeof files.$inferSelect;
