import { join } from "node:path";
import { Elysia } from "elysia";
import { type Config, type StorageSetting, VERSION } from "./config";
import type { Database } from "./db/client";
import { authGuard } from "./http/auth";
import { bodyParser, type RouteBodies } from "./http/body";
import { requestOrigin } from "./http/client";
import { cors } from "./http/cors";
import { docsRoutes } from "./http/docs";
import { errorMapper } from "./http/errors";
import { type InFlight, inFlightTracking } from "./http/in-flight";
import { metricsRoute } from "./http/metrics";
import { accessLog, observability, type RequestObserver } from "./http/observability";
import { openapiRoute } from "./http/openapi";
import { rateLimits } from "./http/rate-limit";
import { requestId } from "./http/request-id";
import { requestMetaReader } from "./http/request-meta";
import { ROUTER_OPTIONS, requestTarget } from "./http/request-target";
import { securityHeaders } from "./http/security-headers";
import { createAuditRepo } from "./modules/audit/repo";
import { auditRoutes } from "./modules/audit/routes";
import { createAuditLog } from "./modules/audit/service";
import { createAccessState } from "./modules/auth/access-state";
import { createEmailVerification } from "./modules/auth/email-verification";
import { createMfaService } from "./modules/auth/mfa";
import { createMfaRepo } from "./modules/auth/mfa-repo";
import { mfaRoutes } from "./modules/auth/mfa-routes";
import { createPasskeyRepo } from "./modules/auth/passkey-repo";
import { passkeyRoutes } from "./modules/auth/passkey-routes";
import { createPasskeyService } from "./modules/auth/passkeys";
import { createAuthRepo } from "./modules/auth/repo";
import { authRoutes } from "./modules/auth/routes";
import { createAuthService } from "./modules/auth/service";
import { createSessions } from "./modules/auth/sessions";
import { createTokenService } from "./modules/auth/tokens";
import { createVerificationRepo } from "./modules/auth/verification-repo";
import { createShareLinksRepo } from "./modules/files/links-repo";
import { createFilesRepo } from "./modules/files/repo";
import { createResumable } from "./modules/files/resumable";
import { createResumableRepo } from "./modules/files/resumable-repo";
import { resumableRoutes, tusProtocol } from "./modules/files/resumable-routes";
import { filesRoutes } from "./modules/files/routes";
import { createFilesService } from "./modules/files/service";
import { createSpool } from "./modules/files/spool";
import { healthRoutes } from "./modules/health/routes";
import { createHealthService } from "./modules/health/service";
import { realtimeRoutes, websocketOptions } from "./modules/realtime/routes";
import { createRealtime } from "./modules/realtime/service";
import { createUsersRepo } from "./modules/users/repo";
import { usersRoutes } from "./modules/users/routes";
import { createUsersService } from "./modules/users/service";
import { clamdScanner, type Scanner } from "./platform/antivirus";
import type { KeyValueStore } from "./platform/kv";
import type { Logger } from "./platform/logger";
import { createMailer, type Mailer } from "./platform/mail";
import { createMetrics, type Metrics, noMetrics } from "./platform/metrics";
import { createPasswordHasher } from "./platform/passwords";
import { memoryPubSub, type PubSub } from "./platform/pubsub";
import { createRateLimiter } from "./platform/rate-limiter";
import { openResumable, type ResumableStorage } from "./platform/resumable-storage";
import { s3Storage } from "./platform/s3-storage";
import { keyedHash, secretBox } from "./platform/secret-box";
import { diskStorage, type ObjectStorage } from "./platform/storage";

export interface AppDeps {
  config: Config;
  db: Database;
  kv: KeyValueStore;
  logger: Logger;
  /** Counts running handlers, for a graceful shutdown. */
  inFlight?: InFlight;
  /** Defaults to SMTP_URL's server, or the log outside production. */
  mailer?: Mailer;
  /** Defaults to STORAGE_URL's bucket, or files under UPLOAD_DIR. */
  storage?: ObjectStorage;
  /** Where resumable uploads' bytes wait; defaults to the twin of STORAGE_URL's storage. */
  resumableStorage?: ResumableStorage;
  /** Defaults to Prometheus metrics, or none with METRICS_ENABLED=false. */
  metrics?: Metrics;
  /** Events between instances; defaults to this process only. */
  pubsub?: PubSub;
  /** The virus scanner; defaults to clamd at CLAMAV_URL, or none. */
  scanner?: Scanner;
  /** Aborted when a shutdown stops waiting for in-flight requests (bodies still arriving get a 503). */
  shutdown?: AbortSignal;
  startedAt?: number;
  /** The clock TOTP codes are checked against (ms since the epoch); defaults to Date.now. */
  now?: () => number;
}

export const API_PREFIX = "/api/v1";
/** Routes that also take an HTML form (the OAuth2 password flow of the docs' Authorize button). */
const FORM_ROUTES = [`${API_PREFIX}/auth/login`];

const DOCUMENTATION = {
  info: {
    title: "ReViewPoint API",
    version: VERSION,
    description: "Users, authentication and file uploads for the ReViewPoint paper-review platform.",
  },
  tags: [
    { name: "auth", description: "Registration, login and tokens" },
    { name: "users", description: "Profiles and administration" },
    { name: "files", description: "Uploads and downloads" },
    { name: "realtime", description: "The event socket and system notifications" },
    { name: "health", description: "Liveness, readiness and status" },
    { name: "audit", description: "The security audit log (admin)" },
  ],
  components: {
    securitySchemes: {
      bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
      OAuth2PasswordBearer: {
        type: "oauth2",
        flows: { password: { tokenUrl: `${API_PREFIX}/auth/login`, scopes: {} } },
      },
    },
  },
};

/** The storage STORAGE_URL names: its S3 bucket, or the disk. */
export function openStorage(setting: StorageSetting): ObjectStorage {
  return setting.kind === "s3" ? s3Storage(setting) : diskStorage(setting.dir);
}

/** Where S3 downloads wait to be sent with their length (proxy mode); created on first use. */
export const spoolDir = (config: Pick<Config, "DATA_DIR">) => join(config.DATA_DIR, "download-spool");

/** The application's services, wired once; the CLI uses them without HTTP. */
export function createServices(deps: AppDeps) {
  const { config, db, kv, logger } = deps;
  const passwords = createPasswordHasher(config.BCRYPT_ROUNDS);
  const tokens = createTokenService(config);
  const metrics =
    deps.metrics ??
    (config.METRICS_ENABLED ? createMetrics({ version: VERSION, pool: db.pool, cache: kv }) : noMetrics);
  const realtime = createRealtime({
    pubsub: deps.pubsub ?? memoryPubSub(),
    logger,
    metrics,
    // Bound late: the auth service is built below, on the access state that announces to realtime.
    stillAllowed: (claims) => auth.stillAllowed(claims),
  });
  const usersRepo = createUsersRepo(db.orm);
  const authRepo = createAuthRepo(db.orm);
  const access = createAccessState({
    kv,
    // Without Redis, instances sharing a Postgres would each cache on their own and disagree: no cache then.
    cacheable: kv.backend === "redis" || db.kind === "pglite",
    repo: authRepo,
    users: usersRepo,
    accessTtlSeconds: tokens.lifetimes.access,
    userTtlSeconds: config.CACHE_TTL,
    logger,
    onChange: realtime.accessChanged,
  });
  const limits = rateLimits(createRateLimiter(kv, logger), config, metrics);
  const scanner =
    deps.scanner ??
    (config.CLAMAV_URL
      ? clamdScanner({
          url: config.CLAMAV_URL,
          timeoutMs: config.CLAMAV_TIMEOUT_MS,
          connections: config.CLAMAV_CONNECTIONS,
        })
      : undefined);
  const antivirus = scanner && { scanner, required: !config.CLAMAV_FAIL_OPEN };
  const audit = createAuditLog({
    repo: createAuditRepo(db.orm),
    enabled: config.AUDIT_ENABLED,
    retentionDays: config.AUDIT_RETENTION_DAYS,
    logger,
    orm: db.orm,
  });
  const filesRepo = createFilesRepo(db.orm);
  const storage = deps.storage ?? openStorage(config.storage);
  const files = createFilesService({
    repo: filesRepo,
    links: createShareLinksRepo(db.orm),
    storage,
    s3Delivery: {
      spool: createSpool(spoolDir(config)),
      presignSeconds: config.S3_DOWNLOAD_MODE === "redirect" ? config.S3_PRESIGN_SECONDS : undefined,
    },
    config: {
      maxBytes: config.MAX_UPLOAD_SIZE,
      allowedTypes: config.allowedFileTypes,
      quota: config.USER_STORAGE_QUOTA,
      idleMs: config.UPLOAD_IDLE_SECONDS * 1000,
      deadlineMs: config.UPLOAD_TIMEOUT_SECONDS * 1000,
    },
    shutdown: deps.shutdown,
    logger,
    metrics,
    notify: realtime.notify,
    antivirus: antivirus && { scanner: antivirus.scanner, failOpen: !antivirus.required },
    audit,
  });
  const resumable = createResumable({
    repo: createResumableRepo(db.orm),
    files: filesRepo,
    ingest: files,
    bytes: deps.resumableStorage ?? openResumable(config.storage),
    storage,
    config: {
      maxBytes: config.MAX_UPLOAD_SIZE,
      allowedTypes: config.allowedFileTypes,
      quota: config.USER_STORAGE_QUOTA,
      expireHours: config.RESUMABLE_EXPIRE_HOURS,
    },
    logger,
  });
  const mailer =
    deps.mailer ??
    createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, environment: config.ENVIRONMENT, logger });
  const verification = createEmailVerification({
    repo: createVerificationRepo(db.orm),
    audit,
    mailer,
    logger,
    config: { verifyUrl: config.EMAIL_VERIFY_URL, lifetimeHours: config.EMAIL_VERIFY_EXPIRE_HOURS },
    userChanged: access.userChanged,
  });
  const users = createUsersService({
    repo: usersRepo,
    passwords,
    hooks: {
      userChanged: access.userChanged,
      endSessions: access.revokeUserSessions,
      userUpdated: (user) => realtime.notify(user.id, "user.updated", user),
      bytesRemover: files.bytesRemover,
      verifyEmail: verification.send,
      emailChanged: verification.emailChanged,
    },
    passwordAttempts: limits.attempts("passwordChange"),
    logger,
    audit: audit.record,
  });
  const sessions = createSessions({ repo: authRepo, tokens, audit });
  const mfaRepo = createMfaRepo(db.orm);
  const mfa = createMfaService({
    repo: mfaRepo,
    users: usersRepo,
    passwords,
    box: secretBox(config.secretKey, "totp-secret"),
    hashRecoveryCode: keyedHash(config.secretKey, "mfa-recovery-code"),
    audit,
    passwordAttempts: limits.attempts("passwordChange"),
    codeAttempts: limits.attempts("mfa", "mfaFailures"),
    now: deps.now ?? Date.now,
    mailer,
    logger,
  });
  const auth = createAuthService({
    config,
    repo: authRepo,
    users: usersRepo,
    access,
    tokens,
    passwords,
    mailer,
    logger,
    audit,
    sessions,
    mfa,
    mfaRepo,
  });
  const passkeys = createPasskeyService({
    repo: createPasskeyRepo(db.orm),
    users: usersRepo,
    sessions,
    audit,
    settings: config.webauthn,
    sessionStartedAt: async (id) => (await authRepo.findSession(id))?.createdAt,
    mailer,
    logger,
  });
  return { users, auth, files, resumable, limits, realtime, metrics, antivirus, audit, mfa, passkeys, verification };
}

export type Services = ReturnType<typeof createServices>;

const HTTP_IDLE_SECONDS = 30;

/** How the binary listens; tests that need a real socket listen the same way. */
export function listenOptions(config: Pick<Config, "PORT" | "HOST">) {
  return {
    port: config.PORT,
    hostname: config.HOST,
    // Every limit is ours, enforced while streaming, so every oversize body gets the contract's 413.
    // Bun's own limit answers with a bare 413 and closes the socket (the client often sees EPIPE).
    maxRequestBodySize: Number.POSITIVE_INFINITY,
    // A connection idle this long is closed (a request without its body yet, a quiet keep-alive). Bun does
    // not count body bytes as activity, so uploads turn it off for themselves and watch their own body.
    idleTimeout: HTTP_IDLE_SECONDS,
    development: false,
  };
}

/** Builds the whole HTTP application from its dependencies; no I/O happens here. */
export function createApp(deps: AppDeps, services: Services = createServices(deps)) {
  const { config, db, kv, logger } = deps;
  const health = createHealthService({
    db,
    kv,
    version: VERSION,
    startedAt: deps.startedAt ?? Date.now(),
    antivirus: services.antivirus,
  });
  const { users, auth, files, resumable, limits, realtime, metrics, audit, mfa, passkeys, verification } = services;
  const guard = authGuard(auth.authenticate, { requireVerifiedEmail: config.REQUIRE_VERIFIED_EMAIL });
  const meta = requestMetaReader(config.TRUST_PROXY);
  const observers = [accessLog(logger), metrics.observer].filter(
    (observer): observer is RequestObserver => observer !== undefined,
  );

  const app = new Elysia({ ...ROUTER_OPTIONS, websocket: websocketOptions(config.WS_IDLE_TIMEOUT_SECONDS) })
    // On the root app: a plugin's start hook inside a group is never called. Delivery needs the server.
    .onStart(({ server }) => {
      if (server) void realtime.start(server);
    })
    .use(errorMapper(logger))
    .use(requestId())
    // Before every hook that reads the path: a request whose path cannot be found is refused here.
    .use(requestTarget())
    .use(securityHeaders(config.TRUST_PROXY))
    // CORS before the limiter, so a browser can read a 429 too; it answers preflights itself.
    .use(cors(config.allowedOrigins))
    // After CORS: a preflight answered there never reaches onAfterResponse, so it must not be counted.
    .use(deps.inFlight ? inFlightTracking(deps.inFlight) : new Elysia())
    .use(observability(observers))
    // Before the limiter: every answer under the tus path, a 429 too, says Tus-Resumable.
    .use(tusProtocol(API_PREFIX))
    .use(bodyParser({ formRoutes: FORM_ROUTES, app: (): RouteBodies => app }))
    .use(limits.perRequest)
    .use(docsRoutes)
    .group(API_PREFIX, (api) =>
      api
        .use(healthRoutes(health))
        .use(config.METRICS_ENABLED ? metricsRoute(metrics, config.METRICS_TOKEN) : new Elysia())
        .use(authRoutes({ auth, users, verification, guard, limits: limits.perRoute, meta }))
        .use(mfaRoutes({ mfa, guard, meta }))
        .use(passkeyRoutes({ passkeys, guard, limits: limits.perRoute, meta }))
        .use(usersRoutes({ users, guard, meta }))
        .use(resumableRoutes({ resumable, guard, limits: limits.perRoute, meta, apiPrefix: API_PREFIX }))
        .use(
          filesRoutes({
            files,
            guard,
            limits: limits.perRoute,
            meta,
            linkBase: (request) =>
              `${config.PUBLIC_URL ?? requestOrigin(request, config.TRUST_PROXY)}${API_PREFIX}/shared/`,
          }),
        )
        .use(realtimeRoutes({ realtime, authenticate: auth.authenticate, guard, logger }))
        .use(auditRoutes({ audit, guard })),
    );
  return app.use(openapiRoute(app, DOCUMENTATION, { formBodies: FORM_ROUTES, apiPrefix: API_PREFIX }));
}
