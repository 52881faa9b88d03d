import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  index,
  jsonb,
  pgSequence,
  pgTable,
  primaryKey,
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
    /** Cleared by a trigger whenever the address changes (migration 0005), whoever changes it. */
    emailVerified: boolean("email_verified").notNull().default(false),
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

/**
 * Share links: whoever holds one downloads the file until `expires_at`; revoking deletes the row. The
 * token is only in the link handed out once; its SHA-256 is kept here. A deleted file or user takes its
 * links with it.
 */
export const shareLinks = pgTable(
  "share_links",
  {
    id: uuid("id")
      .primaryKey()
      .defaultRandom()
      .$defaultFn(() => Bun.randomUUIDv7()),
    fileId: uuid("file_id")
      .notNull()
      .references(() => files.id, { onDelete: "cascade" }),
    createdBy: uuid("created_by")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    tokenHash: varchar("token_hash", { length: 64 }).notNull(),
    createdAt: createdAt(),
    expiresAt: timestamptz("expires_at").notNull(),
  },
  (table) => [
    uniqueIndex("share_links_token_hash_key").on(table.tokenHash),
    index("share_links_file_idx").on(table.fileId, table.createdAt),
    index("share_links_created_by_idx").on(table.createdBy),
    index("share_links_expires_idx").on(table.expiresAt),
  ],
);

/**
 * `Idempotency-Key`s of uploads: a user's key names the file its first upload stored. Inserted in the
 * file's own transaction, so neither exists without the other; the file's deletion (or its owner's)
 * takes the key with it. Keys older than a day are ignored, and pruned.
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    userId: uuid("user_id").notNull(),
    key: varchar("key", { length: 255 }).notNull(),
    fileId: uuid("file_id")
      .notNull()
      .references(() => files.id, { onDelete: "cascade" }),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.userId, table.key] }),
    index("idempotency_keys_file_idx").on(table.fileId),
    index("idempotency_keys_created_at_idx").on(table.createdAt),
  ],
);

const RESUMABLE_STATES = ["receiving", "completing", "complete"] as const;
export type ResumableUploadState = (typeof RESUMABLE_STATES)[number];

/** What the content checks carry from one request to the next (bytes as base64). */
export interface ResumableInspection {
  /** The first bytes, until the type is checked against them. */
  head?: string;
  /** The type was checked (magic bytes) and matched. */
  typeChecked?: boolean;
  /** The bytes of a UTF-8 character cut at the end of the last request. */
  carry?: string;
}

/**
 * tus uploads under way (and, until they expire, done): the offset, the lock and what the content checks
 * carry from one PATCH to the next live here, so any instance continues an upload. A PATCH holds the
 * upload through `lock_token` until `locked_until` (a lease it renews while it writes), so a crashed
 * instance's lock frees itself. Its bytes wait in storage under `storage_key` (`storage_state` says how,
 * on S3 the multipart upload's parts); the last byte makes them a File (`file_id`).
 */
export const resumableUploads = pgTable(
  "resumable_uploads",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    /** Null once the owner is deleted: the sweep then removes the upload and its bytes. */
    ownerId: uuid("owner_id").references(() => users.id, { onDelete: "set null" }),
    state: text("state", { enum: RESUMABLE_STATES }).notNull().default("receiving"),
    length: bigint("length", { mode: "number" }).notNull(),
    offset: bigint("upload_offset", { mode: "number" }).notNull().default(0),
    /** Upload-Metadata as received (validated), answered again on HEAD. */
    metadata: text("metadata").notNull().default(""),
    filename: varchar("filename", { length: 255 }).notNull(),
    contentType: varchar("content_type", { length: 127 }).notNull(),
    isPublic: boolean("is_public").notNull().default(false),
    storageKey: text("storage_key").notNull().unique(),
    storageState: jsonb("storage_state").$type<Record<string, unknown>>(),
    /** The content checks' carry-over: the first bytes until the type is checked, a character cut at a PATCH's end. */
    inspection: jsonb("inspection").$type<ResumableInspection>().notNull().default({}),
    fileId: uuid("file_id").references(() => files.id, { onDelete: "set null" }),
    lockToken: uuid("lock_token"),
    lockedUntil: timestamptz("locked_until"),
    createdAt: createdAt(),
    expiresAt: timestamptz("expires_at").notNull(),
  },
  (table) => [
    index("resumable_uploads_owner_idx").on(table.ownerId),
    index("resumable_uploads_expires_idx").on(table.expiresAt),
    check("resumable_uploads_state_check", sql`${table.state} in ('receiving', 'completing', 'complete')`),
    check("resumable_uploads_offset_check", sql`${table.offset} between 0 and ${table.length}`),
  ],
);

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
    /** Moves at every refresh; shown in the session list. */
    lastUsedAt: timestamptz("last_used_at"),
    /** The client that logged in, as it said (truncated); shown in the session list. */
    userAgent: varchar("user_agent", { length: 512 }),
    ip: varchar("ip", { length: 64 }),
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
 * Pending email verifications: the token itself is only in the mail, its SHA-256 here. An email change
 * deletes the user's rows (trigger, migration 0005), so a link mailed before it stops working.
 */
export const emailVerifications = pgTable(
  "email_verifications",
  {
    tokenHash: varchar("token_hash", { length: 64 }).primaryKey(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    email: varchar("email", { length: 320 }).notNull(),
    createdAt: createdAt(),
    expiresAt: timestamptz("expires_at").notNull(),
    usedAt: timestamptz("used_at"),
  },
  (table) => [index("email_verifications_user_idx").on(table.userId)],
);

/** A user's TOTP: pending until confirmed (`enabled_at` null). The secret is encrypted (AES-256-GCM). */
export const userMfa = pgTable("user_mfa", {
  userId: uuid("user_id")
    .primaryKey()
    .references(() => users.id, { onDelete: "cascade" }),
  secret: text("secret").notNull(),
  enabledAt: timestamptz("enabled_at"),
  /** The last time step whose code was accepted: that code and every older one are refused. */
  lastUsedStep: bigint("last_used_step", { mode: "number" }),
  createdAt: createdAt(),
});

/** One-time recovery codes, as keyed hashes (HMAC-SHA-256); `used_at` once spent. */
export const mfaRecoveryCodes = pgTable(
  "mfa_recovery_codes",
  {
    id: uuid("id").primaryKey().defaultRandom(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    codeHash: varchar("code_hash", { length: 64 }).notNull(),
    usedAt: timestamptz("used_at"),
  },
  (table) => [uniqueIndex("mfa_recovery_codes_user_code_idx").on(table.userId, table.codeHash)],
);

/** mfa_tokens that completed a login: each works once. */
export const usedMfaTokens = pgTable("used_mfa_tokens", {
  jti: uuid("jti").primaryKey(),
  userId: uuid("user_id")
    .notNull()
    .references(() => users.id, { onDelete: "cascade" }),
  expiresAt: timestamptz("expires_at").notNull(),
});

/** WebAuthn credentials (discoverable); `counter` is the authenticator's last signature counter. */
export const passkeys = pgTable(
  "passkeys",
  {
    id: uuid("id")
      .primaryKey()
      .defaultRandom()
      .$defaultFn(() => Bun.randomUUIDv7()),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    /** The authenticator's credential id, base64url. */
    credentialId: varchar("credential_id", { length: 1400 }).notNull(),
    /** COSE public key, base64url. */
    publicKey: text("public_key").notNull(),
    counter: bigint("counter", { mode: "number" }).notNull().default(0),
    transports: text("transports").array().notNull().default(sql`'{}'::text[]`),
    name: varchar("name", { length: 100 }).notNull(),
    createdAt: createdAt(),
    lastUsedAt: timestamptz("last_used_at"),
  },
  (table) => [
    uniqueIndex("passkeys_credential_id_key").on(table.credentialId),
    index("passkeys_user_idx").on(table.userId),
  ],
);

/** WebAuthn challenges handed out and not yet answered: each is taken (deleted) by its one answer. */
export const webauthnChallenges = pgTable(
  "webauthn_challenges",
  {
    challenge: varchar("challenge", { length: 128 }).primaryKey(),
    purpose: text("purpose", { enum: ["register", "login"] }).notNull(),
    /** Registration only: the user who asked. */
    userId: uuid("user_id").references(() => users.id, { onDelete: "cascade" }),
    expiresAt: timestamptz("expires_at").notNull(),
  },
  (table) => [index("webauthn_challenges_expires_idx").on(table.expiresAt)],
);

/**
 * Security events, written in the transaction of the change they record. No foreign keys: an event
 * outlives the user, session or file it names.
 */
export const auditEvents = pgTable(
  "audit_events",
  {
    // v7: time-ordered, so the export can page by (at, id).
    id: uuid("id")
      .primaryKey()
      .defaultRandom()
      .$defaultFn(() => Bun.randomUUIDv7()),
    at: timestamptz("at").notNull().defaultNow(),
    action: varchar("action", { length: 64 }).notNull(),
    actorId: uuid("actor_id"),
    targetType: varchar("target_type", { length: 32 }),
    targetId: uuid("target_id"),
    ip: varchar("ip", { length: 64 }),
    userAgent: varchar("user_agent", { length: 512 }),
    requestId: varchar("request_id", { length: 128 }),
    details: jsonb("details").$type<Record<string, unknown>>().notNull().default({}),
  },
  (table) => [
    index("audit_events_at_idx").on(table.at, table.id),
    index("audit_events_actor_idx").on(table.actorId, table.at),
    index("audit_events_target_idx").on(table.targetId, table.at),
    index("audit_events_action_idx").on(table.action, table.at),
  ],
);

/**
 * Advanced after every change to a user or a revocation. The shared cache records the highest value it
 * has applied; a cache that is behind (a lost write, a restart from an old snapshot) is not trusted.
 */
export const authChangeSeq = pgSequence("auth_change_seq");

export type UserRow = typeof users.$inferSelect;
export type FileRow = typeof files.$inferSelect;
export type ResumableRow = typeof resumableUploads.$inferSelect;
export type ShareLinkRow = typeof shareLinks.$inferSelect;
export type PasskeyRow = typeof passkeys.$inferSelect;
export type AuditEventRow = typeof auditEvents.$inferSelect;
