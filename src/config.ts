import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Static, Type as T } from "@sinclair/typebox";
import { Value, type ValueError } from "@sinclair/typebox/value";
import { parse as parseDotenv } from "dotenv";
import pkg from "../package.json" with { type: "json" };

export const VERSION: string = pkg.version;
/** The git commit the binary was built from (`scripts/build.ts` defines it); "source" when run from a checkout. */
export const COMMIT: string = typeof BUILD_COMMIT === "string" ? BUILD_COMMIT : "source";

/** Thrown for any bad setting; the CLI prints `message` alone and exits 2. */
export class ConfigError extends Error {}

const rate = T.String({ pattern: "^[0-9]+/(second|minute|hour|day)$", description: "N/second|minute|hour|day" });

/** Every setting of the contract, as it arrives in the environment. */
const EnvSchema = T.Object({
  REVIEWPOINT_DB_URL: T.Optional(T.String({ pattern: "^postgres(ql)?(\\+[a-z0-9]+)?://" })),
  DATABASE_URL: T.Optional(T.String({ pattern: "^postgres(ql)?(\\+[a-z0-9]+)?://" })),
  SECRET_KEY: T.Optional(T.String({ minLength: 1 })),
  ALGORITHM: T.Union([T.Literal("HS256"), T.Literal("HS384"), T.Literal("HS512")], { default: "HS256" }),
  ACCESS_TOKEN_EXPIRE_MINUTES: T.Integer({ minimum: 1, maximum: 10080, default: 60 }),
  REFRESH_TOKEN_EXPIRE_DAYS: T.Integer({ minimum: 1, maximum: 365, default: 7 }),
  REFRESH_GRACE_SECONDS: T.Integer({ minimum: 0, maximum: 60, default: 5 }),
  PASSWORD_RESET_EXPIRE_MINUTES: T.Integer({ minimum: 1, maximum: 10080, default: 60 }),
  DEBUG: T.Boolean({ default: false }),
  ENVIRONMENT: T.Union([T.Literal("development"), T.Literal("test"), T.Literal("production")], {
    default: "development",
  }),
  ALLOWED_ORIGINS: T.String({ default: "http://localhost:3000,http://localhost:5173" }),
  MAX_UPLOAD_SIZE: T.Integer({ minimum: 1, default: 10 * 1024 * 1024 }),
  UPLOAD_DIR: T.Optional(T.String({ minLength: 1 })),
  ALLOWED_FILE_TYPES: T.String({
    pattern: "^[a-z0-9.+-]+/[a-z0-9.+-]+(,\\s*[a-z0-9.+-]+/[a-z0-9.+-]+)*$",
    default: "image/jpeg,image/png,application/pdf,text/plain",
  }),
  REDIS_URL: T.Optional(T.String({ pattern: "^rediss?://" })),
  CACHE_TTL: T.Integer({ minimum: 1, default: 300 }),
  LOG_LEVEL: T.Union(
    [T.Literal("debug"), T.Literal("info"), T.Literal("warn"), T.Literal("error"), T.Literal("silent")],
    { default: "info" },
  ),
  LOG_FORMAT: T.Union([T.Literal("json"), T.Literal("pretty")], { default: "json" }),
  PORT: T.Integer({ minimum: 0, maximum: 65535, default: 8000 }),
  HOST: T.String({ minLength: 1, default: "0.0.0.0" }),
  DATA_DIR: T.String({ minLength: 1, default: "./data" }),
  SMTP_URL: T.Optional(T.String({ pattern: "^smtps?://" })),
  MAIL_FROM: T.String({ minLength: 3, default: "ReViewPoint <no-reply@reviewpoint.local>" }),
  PASSWORD_RESET_URL: T.String({ pattern: "^https?://", default: "http://localhost:5173/reset-password" }),
  EMAIL_VERIFY_URL: T.String({ pattern: "^https?://", default: "http://localhost:5173/verify-email" }),
  EMAIL_VERIFY_EXPIRE_HOURS: T.Integer({ minimum: 1, maximum: 720, default: 48 }),
  REQUIRE_VERIFIED_EMAIL: T.Boolean({ default: false }),
  // The RP id is a host name: no scheme, port or path.
  WEBAUTHN_RP_ID: T.Optional(T.String({ pattern: "^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", maxLength: 253 })),
  WEBAUTHN_ORIGINS: T.Optional(T.String({ minLength: 1 })),
  AUDIT_ENABLED: T.Boolean({ default: true }),
  AUDIT_RETENTION_DAYS: T.Integer({ minimum: 1, maximum: 36_500, default: 365 }),
  BCRYPT_ROUNDS: T.Integer({ minimum: 4, maximum: 31, default: 12 }),
  RATE_LIMIT_ENABLED: T.Boolean({ default: true }),
  RATE_LIMIT_LOGIN: T.String({ ...rate, default: "5/minute" }),
  RATE_LIMIT_LOGIN_IP: T.String({ ...rate, default: "20/minute" }),
  RATE_LIMIT_REGISTER: T.String({ ...rate, default: "5/hour" }),
  RATE_LIMIT_PASSWORD_RESET: T.String({ ...rate, default: "3/hour" }),
  RATE_LIMIT_PASSWORD_CHANGE: T.String({ ...rate, default: "5/hour" }),
  RATE_LIMIT_MFA: T.String({ ...rate, default: "5/minute" }),
  RATE_LIMIT_MFA_FAILURES: T.String({ ...rate, default: "20/day" }),
  RATE_LIMIT_EMAIL_VERIFY: T.String({ ...rate, default: "3/hour" }),
  RATE_LIMIT_UPLOAD: T.String({ ...rate, default: "60/minute" }),
  USER_STORAGE_QUOTA: T.Optional(T.Integer({ minimum: 1 })),
  // An upload whose body brings no byte for this long ends with a 408; so does one slower than the timeout.
  UPLOAD_IDLE_SECONDS: T.Integer({ minimum: 1, maximum: 3600, default: 30 }),
  UPLOAD_TIMEOUT_SECONDS: T.Integer({ minimum: 1, maximum: 86_400, default: 3600 }),
  // An unfinished resumable upload not continued for this long is removed, bytes and all.
  RESUMABLE_EXPIRE_HOURS: T.Integer({ minimum: 1, maximum: 8760, default: 24 }),
  RATE_LIMIT_DEFAULT: T.String({ ...rate, default: "300/minute" }),
  TRUST_PROXY: T.Boolean({ default: false }),
  STORAGE_URL: T.Optional(T.String({ pattern: "^(s3://[^/]+(/.*)?|file://.+)$" })),
  S3_ENDPOINT: T.Optional(T.String({ pattern: "^https?://" })),
  S3_REGION: T.Optional(T.String({ minLength: 1 })),
  S3_ACCESS_KEY_ID: T.Optional(T.String({ minLength: 1 })),
  S3_SECRET_ACCESS_KEY: T.Optional(T.String({ minLength: 1 })),
  // proxy: the bytes pass through this server; redirect: a 302 to a presigned URL of the bucket.
  S3_DOWNLOAD_MODE: T.Union([T.Literal("proxy"), T.Literal("redirect")], { default: "proxy" }),
  // S3 accepts presigned URLs for at most 7 days.
  S3_PRESIGN_SECONDS: T.Integer({ minimum: 1, maximum: 604_800, default: 300 }),
  // Where clients reach this server (share links are built on it); no query or fragment.
  PUBLIC_URL: T.Optional(T.String({ pattern: "^https?://[^/?#\\s]+(/[^?#\\s]*)?$" })),
  DB_POOL_MAX: T.Integer({ minimum: 1, maximum: 200, default: 10 }),
  // One attempt to open a Postgres connection.
  DB_CONNECT_TIMEOUT_MS: T.Integer({ minimum: 100, maximum: 60_000, default: 2000 }),
  // A query's wait for a free connection while the database answers (a saturated pool); then 503.
  DB_POOL_TIMEOUT_MS: T.Integer({ minimum: 100, maximum: 60_000, default: 3000 }),
  // A request's wait on a database that does not answer; then 503, and requests are refused until it answers.
  DB_UNAVAILABLE_MS: T.Integer({ minimum: 100, maximum: 60_000, default: 2000 }),
  SHUTDOWN_TIMEOUT_SECONDS: T.Integer({ minimum: 0, maximum: 600, default: 10 }),
  METRICS_ENABLED: T.Boolean({ default: true }),
  // The characters a bearer token may have (RFC 6750), so a token with a space fails here, not at every scrape.
  METRICS_TOKEN: T.Optional(T.String({ pattern: "^[A-Za-z0-9._~+/-]+=*$" })),
  // Bun pings a socket quiet this long and closes one that stays silent (a dead peer).
  WS_IDLE_TIMEOUT_SECONDS: T.Integer({ minimum: 1, maximum: 960, default: 60 }),
  CLAMAV_URL: T.Optional(T.String({ pattern: "^(tcp://[^/:]+:\\d+/?|unix:///.+)$" })),
  CLAMAV_TIMEOUT_MS: T.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
  CLAMAV_FAIL_OPEN: T.Boolean({ default: false }),
  // Scans at once per instance; further uploads wait (CLAMAV_TIMEOUT_MS at most) before reading a byte.
  CLAMAV_CONNECTIONS: T.Integer({ minimum: 1, maximum: 64, default: 4 }),
  // Scheduled backups of the embedded database and the files on disk; unset: none.
  BACKUP_INTERVAL_HOURS: T.Optional(T.Integer({ minimum: 1, maximum: 8760 })),
  BACKUP_KEEP: T.Integer({ minimum: 1, maximum: 1000, default: 7 }),
  BACKUP_DIR: T.Optional(T.String({ minLength: 1 })),
});
type Env = Static<typeof EnvSchema>;

export interface RateLimit {
  limit: number;
  windowMs: number;
}

export interface Config
  extends Omit<
    Env,
    `RATE_LIMIT_${string}` | "ALLOWED_ORIGINS" | "ALLOWED_FILE_TYPES" | "SECRET_KEY" | "WEBAUTHN_ORIGINS"
  > {
  databaseUrl: string | undefined;
  secretKey: string;
  allowedOrigins: string[];
  allowedFileTypes: string[];
  uploadDir: string;
  /** Where scheduled backups go (BACKUP_DIR, else DATA_DIR/backups). */
  backupDir: string;
  /** Where uploaded bytes live: STORAGE_URL's bucket, or `uploadDir`. */
  storage: StorageSetting;
  /** Passkeys' relying party; undefined when there is no origin to accept (ALLOWED_ORIGINS `*` alone). */
  webauthn: { rpId: string; origins: string[] } | undefined;
  rateLimits: {
    enabled: boolean;
    login: RateLimit;
    loginIp: RateLimit;
    register: RateLimit;
    passwordReset: RateLimit;
    passwordChange: RateLimit;
    mfa: RateLimit;
    mfaFailures: RateLimit;
    emailVerification: RateLimit;
    upload: RateLimit;
    default: RateLimit;
  };
}

export interface S3Setting {
  bucket: string;
  /** "" or a path ending in "/". */
  prefix: string;
  endpoint: string | undefined;
  region: string | undefined;
  accessKeyId: string;
  secretAccessKey: string;
}

export type StorageSetting = { kind: "disk"; dir: string } | ({ kind: "s3" } & S3Setting);

const WINDOW_MS = { second: 1000, minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
const KNOWN_WEAK_SECRETS = new Set(["secret", "changeme", "change-me", "your-secret-key", "dev", "development"]);
const MIN_SECRET_LENGTH = 32;

function parseRate(value: string): RateLimit {
  const [count, unit] = value.split("/") as [string, keyof typeof WINDOW_MS];
  return { limit: Number(count), windowMs: WINDOW_MS[unit] };
}

function parseOrigins(value: string, name = "ALLOWED_ORIGINS"): string[] {
  const trimmed = value.trim();
  if (trimmed.startsWith("[")) {
    let list: unknown;
    try {
      list = JSON.parse(trimmed);
    } catch {
      throw new ConfigError(`config: ${name} is not a valid JSON list`);
    }
    if (!Array.isArray(list) || !list.every((o) => typeof o === "string")) {
      throw new ConfigError(`config: ${name} must be a JSON list of strings`);
    }
    return list.map((o) => o.trim()).filter(Boolean);
  }
  return trimmed
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
}

/** The origin of `value` when it is exactly an http(s) origin (no path, query or trailing slash). */
function exactOrigin(value: string): string | undefined {
  try {
    const url = new URL(value);
    return /^https?:$/.test(url.protocol) && url.origin === value ? value : undefined;
  } catch {
    return undefined;
  }
}

const withinRp = (origin: string, rpId: string) => {
  const host = new URL(origin).hostname;
  return host === rpId || host.endsWith(`.${rpId}`);
};

/**
 * Passkeys accept WEBAUTHN_ORIGINS (checked strictly) or else the usable ALLOWED_ORIGINS; the RP id is
 * WEBAUTHN_RP_ID or the first origin's host, and every accepted origin must be that host or under it.
 */
function parseWebAuthn(env: Env, allowedOrigins: string[]): Config["webauthn"] {
  let origins: string[];
  if (env.WEBAUTHN_ORIGINS !== undefined) {
    origins = parseOrigins(env.WEBAUTHN_ORIGINS, "WEBAUTHN_ORIGINS");
    const bad = origins.find((origin) => !exactOrigin(origin));
    if (bad !== undefined || origins.length === 0) {
      throw new ConfigError(
        `config: WEBAUTHN_ORIGINS must list origins such as https://app.example.com (got ${JSON.stringify(bad ?? "")})`,
      );
    }
  } else {
    origins = allowedOrigins.filter((origin) => exactOrigin(origin));
  }
  const rpId = env.WEBAUTHN_RP_ID ?? (origins[0] && new URL(origins[0]).hostname);
  if (!rpId) return undefined;
  const outside = origins.find((origin) => !withinRp(origin, rpId));
  if (outside && env.WEBAUTHN_ORIGINS !== undefined) {
    throw new ConfigError(
      `config: WEBAUTHN_RP_ID ${rpId} must be the host of every WebAuthn origin or a parent domain of it (got ${outside})`,
    );
  }
  const accepted = origins.filter((origin) => withinRp(origin, rpId));
  return accepted.length > 0 ? { rpId, origins: accepted } : undefined;
}

/** SQLAlchemy-style `postgresql+asyncpg://` is accepted as plain `postgresql://`. */
function normaliseDbUrl(url: string | undefined): string | undefined {
  return url?.replace(/^postgres(ql)?\+[a-z0-9]+:\/\//, "postgresql://");
}

function resolveSecret(env: Env, dataDir: string, keepSecret: boolean): string {
  const given = env.SECRET_KEY;
  if (env.ENVIRONMENT === "production") {
    if (!given) throw new ConfigError("config: SECRET_KEY is required in production");
    if (KNOWN_WEAK_SECRETS.has(given.toLowerCase()) || given.length < MIN_SECRET_LENGTH) {
      throw new ConfigError(
        `config: SECRET_KEY must be a non-default secret of at least ${MIN_SECRET_LENGTH} characters in production`,
      );
    }
    return given;
  }
  if (given) return given;
  if (env.ENVIRONMENT === "test" || !keepSecret) return randomBytes(32).toString("hex");
  // Development: generate once and keep it, so tokens survive restarts.
  const file = join(dataDir, "secret_key");
  try {
    if (existsSync(file)) return readFileSync(file, "utf8").trim();
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const secret = randomBytes(48).toString("base64url");
    writeFileSync(file, secret, { mode: 0o600 });
    chmodSync(file, 0o600);
    return secret;
  } catch (error) {
    throw new ConfigError(`DATA_DIR ${dataDir} cannot be used: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
}

/**
 * A URL as it may be printed: whatever stands between the user name's `:` and the last `@` becomes
 * `***`. Deliberately not a URL parser: the values printed are the malformed ones.
 */
export function maskCredentials(value: string): string {
  const at = value.lastIndexOf("@");
  if (at === -1) return value;
  const slashes = value.indexOf("//");
  const userStart = slashes === -1 || slashes > at ? 0 : slashes + 2;
  const colon = value.indexOf(":", userStart);
  return colon === -1 || colon > at ? value : `${value.slice(0, colon + 1)}***${value.slice(at)}`;
}

function describe(error: ValueError): string {
  const name = error.path.replace(/^\//, "");
  const secret = /SECRET|PASSWORD|KEY|_TOKEN$/.test(name);
  const url = name.endsWith("_URL") || name === "S3_ENDPOINT";
  const value = typeof error.value === "string" && url ? maskCredentials(error.value) : error.value;
  const shown = secret || value === undefined ? "" : ` (got ${JSON.stringify(value)})`;
  const choices = (error.schema.anyOf as { const?: unknown }[] | undefined)
    ?.map((option) => option.const)
    .filter((value) => value !== undefined);
  const problem = choices?.length ? `must be one of ${choices.join("|")}` : error.message.toLowerCase();
  return `config: ${name} ${problem}${shown}`;
}

/** The folder of a `file://` STORAGE_URL (it overrides UPLOAD_DIR). */
function storageDir(url: string | undefined): string | undefined {
  if (!url?.startsWith("file://")) return undefined;
  try {
    return fileURLToPath(url);
  } catch {
    throw new ConfigError(
      `config: STORAGE_URL must be file:///ABSOLUTE/PATH (got ${JSON.stringify(maskCredentials(url))})`,
    );
  }
}

// S3's rule for new buckets (DNS-compatible names).
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** STORAGE_URL `s3://BUCKET/PREFIX` with the S3_* settings; otherwise the disk. */
function parseStorage(env: Env, uploadDir: string): StorageSetting {
  const url = env.STORAGE_URL;
  if (!url?.startsWith("s3://")) return { kind: "disk", dir: uploadDir };
  const [, bucket = "", path = ""] = url.match(/^s3:\/\/([^/]*)\/?(.*)$/) ?? [];
  if (!BUCKET.test(bucket)) {
    throw new ConfigError(
      `config: STORAGE_URL must be s3://BUCKET/PREFIX with a valid bucket name, credentials in S3_* (got ${JSON.stringify(maskCredentials(url))})`,
    );
  }
  if (!(env.S3_ACCESS_KEY_ID && env.S3_SECRET_ACCESS_KEY)) {
    throw new ConfigError("config: STORAGE_URL s3:// needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY");
  }
  const prefix = path.replace(/^\/+|\/+$/g, "");
  // `..` would take path-style requests to another bucket; `.`, empty segments and backslashes alias other prefixes.
  const segments = prefix === "" ? [] : prefix.split("/");
  if (segments.some((segment) => segment === "" || segment === "." || segment === ".." || segment.includes("\\"))) {
    throw new ConfigError(
      `config: STORAGE_URL's PREFIX must be plain path segments (no empty, "." or ".." segment, no backslash) (got ${JSON.stringify(maskCredentials(url))})`,
    );
  }
  return {
    kind: "s3",
    bucket,
    prefix: prefix ? `${prefix}/` : "",
    endpoint: env.S3_ENDPOINT,
    region: env.S3_REGION,
    accessKeyId: env.S3_ACCESS_KEY_ID,
    secretAccessKey: env.S3_SECRET_ACCESS_KEY,
  };
}

/** Reads `config/.env` under `cwd`, if present; the process environment wins over it. */
export function readEnvironment(env: Record<string, string | undefined> = process.env, cwd = process.cwd()) {
  const file = join(cwd, "config", ".env");
  const fromFile = existsSync(file) ? parseDotenv(readFileSync(file)) : {};
  return { ...fromFile, ...env };
}

/**
 * Validates the raw environment; throws ConfigError with one line naming the bad variable. `keepSecret:
 * false` leaves DATA_DIR untouched (a restore needs it empty): a development secret is then not kept.
 */
export function loadConfig(raw: Record<string, string | undefined>, options = { keepSecret: true }): Config {
  const picked: Record<string, unknown> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = raw[key];
    if (value !== undefined && value !== "") picked[key] = value;
  }
  const converted = Value.Convert(EnvSchema, Value.Default(EnvSchema, picked));
  const first = Value.Errors(EnvSchema, converted).First();
  if (first) throw new ConfigError(describe(first));
  const env = converted as Env;

  const dataDir = resolve(env.DATA_DIR);
  const {
    SECRET_KEY: _secret,
    ALLOWED_ORIGINS,
    ALLOWED_FILE_TYPES,
    RATE_LIMIT_ENABLED,
    RATE_LIMIT_LOGIN,
    RATE_LIMIT_LOGIN_IP,
    RATE_LIMIT_REGISTER,
    RATE_LIMIT_PASSWORD_RESET,
    RATE_LIMIT_PASSWORD_CHANGE,
    RATE_LIMIT_MFA,
    RATE_LIMIT_MFA_FAILURES,
    RATE_LIMIT_EMAIL_VERIFY,
    RATE_LIMIT_UPLOAD,
    RATE_LIMIT_DEFAULT,
    WEBAUTHN_ORIGINS: _webauthnOrigins,
    ...rest
  } = env;
  const allowedOrigins = parseOrigins(ALLOWED_ORIGINS);
  if (env.REQUIRE_VERIFIED_EMAIL && env.ENVIRONMENT === "production" && !env.SMTP_URL) {
    // No verification mail could reach anyone: nobody could ever upload.
    throw new ConfigError("config: REQUIRE_VERIFIED_EMAIL=true needs SMTP_URL in production");
  }
  const uploadDir = resolve(storageDir(env.STORAGE_URL) ?? env.UPLOAD_DIR ?? join(dataDir, "uploads"));
  const databaseUrl = normaliseDbUrl(env.REVIEWPOINT_DB_URL ?? env.DATABASE_URL);
  const storage = parseStorage(env, uploadDir);
  if (env.BACKUP_INTERVAL_HOURS !== undefined && (databaseUrl || storage.kind === "s3")) {
    throw new ConfigError(
      "config: BACKUP_INTERVAL_HOURS backs up the embedded database and files on disk; back up PostgreSQL with pg_dump and a bucket with its own versioning",
    );
  }
  return {
    ...rest,
    PUBLIC_URL: env.PUBLIC_URL?.replace(/\/+$/, ""),
    DATA_DIR: dataDir,
    databaseUrl,
    secretKey: resolveSecret(env, dataDir, options.keepSecret),
    allowedOrigins,
    webauthn: parseWebAuthn(env, allowedOrigins),
    allowedFileTypes: ALLOWED_FILE_TYPES.split(",").map((type) => type.trim()),
    uploadDir,
    backupDir: resolve(env.BACKUP_DIR ?? join(dataDir, "backups")),
    storage,
    rateLimits: {
      enabled: RATE_LIMIT_ENABLED,
      login: parseRate(RATE_LIMIT_LOGIN),
      loginIp: parseRate(RATE_LIMIT_LOGIN_IP),
      register: parseRate(RATE_LIMIT_REGISTER),
      passwordReset: parseRate(RATE_LIMIT_PASSWORD_RESET),
      passwordChange: parseRate(RATE_LIMIT_PASSWORD_CHANGE),
      mfa: parseRate(RATE_LIMIT_MFA),
      mfaFailures: parseRate(RATE_LIMIT_MFA_FAILURES),
      emailVerification: parseRate(RATE_LIMIT_EMAIL_VERIFY),
      upload: parseRate(RATE_LIMIT_UPLOAD),
      default: parseRate(RATE_LIMIT_DEFAULT),
    },
  };
}
