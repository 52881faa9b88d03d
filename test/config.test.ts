import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, readEnvironment } from "../src/config";

const fail = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("expected a ConfigError");
};

const TEST_ENV = { ENVIRONMENT: "test" };

describe("configuration", () => {
  test("defaults match the contract", () => {
    const config = loadConfig(TEST_ENV);
    expect(config.PORT).toBe(8000);
    expect(config.ACCESS_TOKEN_EXPIRE_MINUTES).toBe(60);
    expect(config.REFRESH_TOKEN_EXPIRE_DAYS).toBe(7);
    expect(config.MAX_UPLOAD_SIZE).toBe(10 * 1024 * 1024);
    expect(config.allowedFileTypes).toEqual(["image/jpeg", "image/png", "application/pdf", "text/plain"]);
    expect(config.BCRYPT_ROUNDS).toBe(12);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.rateLimits.login).toEqual({ limit: 5, windowMs: 60_000 });
    expect(config.rateLimits.register).toEqual({ limit: 5, windowMs: 3_600_000 });
  });

  test("a bad value names the variable in one line", () => {
    const message = fail({ ...TEST_ENV, PORT: "eighty" });
    expect(message).toStartWith("config: PORT ");
    expect(message).not.toContain("\n");
    expect(fail({ ...TEST_ENV, LOG_FORMAT: "xml" })).toStartWith("config: LOG_FORMAT");
    expect(fail({ ...TEST_ENV, RATE_LIMIT_LOGIN: "5 per minute" })).toStartWith("config: RATE_LIMIT_LOGIN");
    expect(fail({ ...TEST_ENV, REDIS_URL: "localhost:6379" })).toStartWith("config: REDIS_URL");
    expect(fail({ ...TEST_ENV, ALLOWED_ORIGINS: "[not json" })).toStartWith("config: ALLOWED_ORIGINS");
  });

  test("a rejected secret is never echoed", () => {
    const message = fail({ ENVIRONMENT: "production", SECRET_KEY: "short-but-secret" });
    expect(message).toContain("SECRET_KEY");
    expect(message).not.toContain("short-but-secret");
  });

  test("a bad URL is named with its password masked", () => {
    const cases = {
      REVIEWPOINT_DB_URL: "mysql://app:hunter2@db.internal/reviewpoint",
      DATABASE_URL: "postgres//app:hunter2@db.internal/reviewpoint",
      REDIS_URL: "redis//:hunter2@cache.internal:6379",
      SMTP_URL: "smtpx://mailer:hun/ter2@mail.internal:587",
    };
    for (const [name, value] of Object.entries(cases)) {
      const message = fail({ ...TEST_ENV, [name]: value });
      expect(message).toStartWith(`config: ${name} `);
      expect(message).not.toContain("hunter2");
      expect(message).not.toContain("hun/ter2");
      expect(message).toContain("***@");
    }
  });

  test("the SQLAlchemy asyncpg URL is accepted as plain postgresql", () => {
    const config = loadConfig({ ...TEST_ENV, REVIEWPOINT_DB_URL: "postgresql+asyncpg://u:p@db:5432/app" });
    expect(config.databaseUrl).toBe("postgresql://u:p@db:5432/app");
    expect(loadConfig({ ...TEST_ENV, DATABASE_URL: "postgres://db/x" }).databaseUrl).toBe("postgres://db/x");
  });

  test("allowed origins come as a JSON list or a comma list", () => {
    expect(
      loadConfig({ ...TEST_ENV, ALLOWED_ORIGINS: '["https://a.example", "https://b.example"]' }).allowedOrigins,
    ).toEqual(["https://a.example", "https://b.example"]);
    expect(loadConfig({ ...TEST_ENV, ALLOWED_ORIGINS: "https://a.example, https://b.example" }).allowedOrigins).toEqual(
      ["https://a.example", "https://b.example"],
    );
  });

  test("production refuses a missing, default or short SECRET_KEY", () => {
    expect(fail({ ENVIRONMENT: "production" })).toContain("SECRET_KEY");
    expect(fail({ ENVIRONMENT: "production", SECRET_KEY: "changeme" })).toContain("SECRET_KEY");
    expect(fail({ ENVIRONMENT: "production", SECRET_KEY: "x".repeat(31) })).toContain("SECRET_KEY");
    expect(loadConfig({ ENVIRONMENT: "production", SECRET_KEY: "k".repeat(40) }).secretKey).toBe("k".repeat(40));
  });

  test("development generates a secret once and keeps it in DATA_DIR", () => {
    const dataDir = mkdtempSync(join(tmpdir(), "rp-config-"));
    const first = loadConfig({ ENVIRONMENT: "development", DATA_DIR: dataDir }).secretKey;
    const second = loadConfig({ ENVIRONMENT: "development", DATA_DIR: dataDir }).secretKey;
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(second).toBe(first);
    const file = join(dataDir, "secret_key");
    expect(readFileSync(file, "utf8")).toBe(first);
    expect(statSync(file).mode & 0o077).toBe(0);
  });

  test("identity defaults: audit on for 365 days, passkeys for the allowed origins' host, MFA and verify limits", () => {
    const config = loadConfig(TEST_ENV);
    expect(config.AUDIT_ENABLED).toBe(true);
    expect(config.AUDIT_RETENTION_DAYS).toBe(365);
    expect(config.REQUIRE_VERIFIED_EMAIL).toBe(false);
    expect(config.EMAIL_VERIFY_EXPIRE_HOURS).toBe(48);
    expect(config.webauthn).toEqual({
      rpId: "localhost",
      origins: ["http://localhost:3000", "http://localhost:5173"],
    });
    expect(config.rateLimits.mfa).toEqual({ limit: 5, windowMs: 60_000 });
    expect(config.rateLimits.emailVerification).toEqual({ limit: 3, windowMs: 3_600_000 });
    // Only exact origins under the RP id count; `*` alone leaves passkeys unconfigured.
    const mixed = loadConfig({ ...TEST_ENV, ALLOWED_ORIGINS: "https://app.example.com/,https://app.example.com,*" });
    expect(mixed.webauthn).toEqual({ rpId: "app.example.com", origins: ["https://app.example.com"] });
    expect(loadConfig({ ...TEST_ENV, ALLOWED_ORIGINS: "*" }).webauthn).toBeUndefined();
    const parent = loadConfig({
      ...TEST_ENV,
      WEBAUTHN_RP_ID: "example.com",
      WEBAUTHN_ORIGINS: '["https://example.com", "https://app.example.com"]',
    });
    expect(parent.webauthn).toEqual({
      rpId: "example.com",
      origins: ["https://example.com", "https://app.example.com"],
    });
  });

  test("bad WebAuthn settings and an unusable REQUIRE_VERIFIED_EMAIL stop start-up naming the variable", () => {
    expect(fail({ ...TEST_ENV, WEBAUTHN_ORIGINS: "app.example.com" })).toStartWith("config: WEBAUTHN_ORIGINS");
    expect(fail({ ...TEST_ENV, WEBAUTHN_ORIGINS: "https://app.example.com/login" })).toStartWith(
      "config: WEBAUTHN_ORIGINS",
    );
    expect(fail({ ...TEST_ENV, WEBAUTHN_RP_ID: "https://example.com" })).toStartWith("config: WEBAUTHN_RP_ID");
    expect(fail({ ...TEST_ENV, WEBAUTHN_RP_ID: "example.com", WEBAUTHN_ORIGINS: "https://evil.test" })).toStartWith(
      "config: WEBAUTHN_RP_ID",
    );
    expect(fail({ ...TEST_ENV, AUDIT_RETENTION_DAYS: "0" })).toStartWith("config: AUDIT_RETENTION_DAYS");
    const production = { ENVIRONMENT: "production", SECRET_KEY: "s".repeat(40), REQUIRE_VERIFIED_EMAIL: "true" };
    expect(fail(production)).toBe("config: REQUIRE_VERIFIED_EMAIL=true needs SMTP_URL in production");
    expect(loadConfig({ ...production, SMTP_URL: "smtp://mail.example.com:587" }).REQUIRE_VERIFIED_EMAIL).toBe(true);
  });

  test("downloads and links: proxy by default, presigned URLs for 300 s, PUBLIC_URL without its trailing slash", () => {
    const config = loadConfig(TEST_ENV);
    expect([config.S3_DOWNLOAD_MODE, config.S3_PRESIGN_SECONDS, config.PUBLIC_URL]).toEqual(["proxy", 300, undefined]);
    const set = loadConfig({ ...TEST_ENV, S3_DOWNLOAD_MODE: "redirect", PUBLIC_URL: "https://files.example.com/api/" });
    expect([set.S3_DOWNLOAD_MODE, set.PUBLIC_URL]).toEqual(["redirect", "https://files.example.com/api"]);
    expect(fail({ ...TEST_ENV, S3_DOWNLOAD_MODE: "stream" })).toBe(
      'config: S3_DOWNLOAD_MODE must be one of proxy|redirect (got "stream")',
    );
    expect(fail({ ...TEST_ENV, S3_PRESIGN_SECONDS: "604801" })).toStartWith("config: S3_PRESIGN_SECONDS");
    for (const bad of ["files.example.com", "https://files.example.com/?x=1", "ftp://files.example.com"]) {
      expect(fail({ ...TEST_ENV, PUBLIC_URL: bad })).toStartWith("config: PUBLIC_URL");
    }
  });

  test("config/.env is read and the environment wins over it", () => {
    const dir = mkdtempSync(join(tmpdir(), "rp-dotenv-"));
    mkdirSync(join(dir, "config"));
    writeFileSync(join(dir, "config", ".env"), "PORT=9100\nLOG_FORMAT=pretty\n");
    const raw = readEnvironment({ LOG_FORMAT: "json" }, dir);
    const config = loadConfig({ ...raw, ...TEST_ENV });
    expect(config.PORT).toBe(9100);
    expect(config.LOG_FORMAT).toBe("json");
    expect(existsSync(join(dir, "data"))).toBe(false);
  });
});
