import { Elysia } from "elysia";
import { type Config, type StorageSetting, VERSION } from "./config";
import type { Database } from "./db/client";
import { authGuard } from "./http/auth";
import { bodyParser, type RouteBodies } from "./http/body";
import { cors } from "./http/cors";
import { docsRoutes } from "./http/docs";
import { errorMapper } from "./http/errors";
import { type InFlight, inFlightTracking } from "./http/in-flight";
import { metricsRoute } from "./http/metrics";
import { accessLog, observability, type RequestObserver } from "./http/observability";
import { openapiRoute } from "./http/openapi";
import { rateLimits } from "./http/rate-limit";
import { requestId } from "./http/request-id";
import { ROUTER_OPTIONS, requestTarget } from "./http/request-target";
import { securityHeaders } from "./http/security-headers";
import { createAccessState } from "./modules/auth/access-state";
import { createAuthRepo } from "./modules/auth/repo";
import { authRoutes } from "./modules/auth/routes";
import { createAuthService } from "./modules/auth/service";
import { createTokenService } from "./modules/auth/tokens";
import { createFilesRepo } from "./modules/files/repo";
import { filesRoutes } from "./modules/files/routes";
import { createFilesService } from "./modules/files/service";
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
import { s3Storage } from "./platform/s3-storage";
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
  /** Defaults to Prometheus metrics, or none with METRICS_ENABLED=false. */
  metrics?: Metrics;
  /** Events between instances; defaults to this process only. */
  pubsub?: PubSub;
  /** The virus scanner; defaults to clamd at CLAMAV_URL, or none. */
  scanner?: Scanner;
  startedAt?: number;
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
  const files = createFilesService({
    repo: createFilesRepo(db.orm),
    storage: deps.storage ?? openStorage(config.storage),
    config: {
      maxBytes: config.MAX_UPLOAD_SIZE,
      allowedTypes: config.allowedFileTypes,
      quota: config.USER_STORAGE_QUOTA,
    },
    logger,
    metrics,
    notify: realtime.notify,
    antivirus: antivirus && { scanner: antivirus.scanner, failOpen: !antivirus.required },
  });
  const users = createUsersService({
    repo: usersRepo,
    passwords,
    hooks: {
      userChanged: access.userChanged,
      endSessions: access.revokeUserSessions,
      userUpdated: (user) => realtime.notify(user.id, "user.updated", user),
      bytesRemover: files.bytesRemover,
    },
    passwordAttempts: limits.attempts("passwordChange"),
    logger,
  });
  const mailer =
    deps.mailer ??
    createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, environment: config.ENVIRONMENT, logger });
  const auth = createAuthService({
    config,
    repo: authRepo,
    users: usersRepo,
    access,
    tokens,
    passwords,
    mailer,
    logger,
  });
  return { users, auth, files, limits, realtime, metrics, antivirus };
}

export type Services = ReturnType<typeof createServices>;

/** How the binary listens; tests that need a real socket listen the same way. */
export function listenOptions(config: Pick<Config, "PORT" | "HOST">) {
  return {
    port: config.PORT,
    hostname: config.HOST,
    // Every limit is ours, enforced while streaming, so every oversize body gets the contract's 413.
    // Bun's own limit answers with a bare 413 and closes the socket (the client often sees EPIPE).
    maxRequestBodySize: Number.POSITIVE_INFINITY,
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
  const { users, auth, files, limits, realtime, metrics } = services;
  const guard = authGuard(auth.authenticate);
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
    .use(bodyParser({ formRoutes: FORM_ROUTES, app: (): RouteBodies => app }))
    .use(limits.perRequest)
    .use(docsRoutes)
    .group(API_PREFIX, (api) =>
      api
        .use(healthRoutes(health))
        .use(config.METRICS_ENABLED ? metricsRoute(metrics, config.METRICS_TOKEN) : new Elysia())
        .use(authRoutes({ auth, users, guard, limits: limits.perRoute }))
        .use(usersRoutes({ users, guard }))
        .use(filesRoutes({ files, guard, limits: limits.perRoute }))
        .use(realtimeRoutes({ realtime, authenticate: auth.authenticate, guard, logger })),
    );
  return app.use(openapiRoute(app, DOCUMENTATION, { formBodies: FORM_ROUTES, apiPrefix: API_PREFIX }));
}
