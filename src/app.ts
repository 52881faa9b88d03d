import { Elysia } from "elysia";
import { type Config, VERSION } from "./config";
import type { Database } from "./db/client";
import { authGuard } from "./http/auth";
import { cors } from "./http/cors";
import { docsRoutes } from "./http/docs";
import { errorMapper } from "./http/errors";
import { openapiRoute } from "./http/openapi";
import { rateLimits } from "./http/rate-limit";
import { type InFlight, requestContext } from "./http/request-context";
import { createAuthRepo } from "./modules/auth/repo";
import { createRevocation } from "./modules/auth/revocation";
import { authRoutes } from "./modules/auth/routes";
import { createAuthService } from "./modules/auth/service";
import { createTokenService } from "./modules/auth/tokens";
import { healthRoutes } from "./modules/health/routes";
import { createHealthService } from "./modules/health/service";
import { createUserCache } from "./modules/users/cache";
import { createUsersRepo } from "./modules/users/repo";
import { usersRoutes } from "./modules/users/routes";
import { createUsersService } from "./modules/users/service";
import type { KeyValueStore } from "./platform/kv";
import type { Logger } from "./platform/logger";
import { createMailer, type Mailer } from "./platform/mail";
import { createPasswordHasher } from "./platform/passwords";
import { createRateLimiter } from "./platform/rate-limiter";

export interface AppDeps {
  config: Config;
  db: Database;
  kv: KeyValueStore;
  logger: Logger;
  /** Counts running handlers, for a graceful shutdown. */
  inFlight?: InFlight;
  /** Defaults to SMTP_URL's server, or the log outside production. */
  mailer?: Mailer;
  startedAt?: number;
}

const API_PREFIX = "/api/v1";

const DOCUMENTATION = {
  info: {
    title: "ReViewPoint API",
    version: VERSION,
    description: "Users, authentication and file uploads for the ReViewPoint paper-review platform.",
  },
  tags: [
    { name: "auth", description: "Registration, login and tokens" },
    { name: "users", description: "Profiles and administration" },
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

/** The application's services, wired once; the CLI uses them without HTTP. */
export function createServices(deps: AppDeps) {
  const { config, db, kv, logger } = deps;
  const passwords = createPasswordHasher(config.BCRYPT_ROUNDS);
  const tokens = createTokenService(config);
  const usersRepo = createUsersRepo(db.orm);
  const authRepo = createAuthRepo(db.orm);
  const userCache = createUserCache(kv, config.CACHE_TTL, logger);
  const revocation = createRevocation({ kv, repo: authRepo, accessTtlSeconds: tokens.lifetimes.access, logger });
  const users = createUsersService({ repo: usersRepo, cache: userCache, passwords, revocation });
  const mailer =
    deps.mailer ??
    createMailer({ smtpUrl: config.SMTP_URL, from: config.MAIL_FROM, environment: config.ENVIRONMENT, logger });
  const auth = createAuthService({
    config,
    kv,
    repo: authRepo,
    users: usersRepo,
    userCache,
    tokens,
    revocation,
    passwords,
    mailer,
    logger,
  });
  return { users, auth };
}

/** Builds the whole HTTP application from its dependencies; no I/O happens here. */
export function createApp(deps: AppDeps) {
  const { config, db, kv, logger } = deps;
  const health = createHealthService({ db, kv, version: VERSION, startedAt: deps.startedAt ?? Date.now() });
  const { users, auth } = createServices(deps);
  const guard = authGuard(auth.authenticate);
  const limits = rateLimits(createRateLimiter(kv, logger), config);

  const app = new Elysia()
    .use(errorMapper(logger))
    .use(requestContext({ logger, trustProxy: config.TRUST_PROXY, inFlight: deps.inFlight }))
    // CORS before the limiter, so a browser can read a 429 too.
    .use(cors(config.allowedOrigins))
    .use(limits.plugin)
    .use(docsRoutes)
    .group(API_PREFIX, (api) =>
      api
        .use(healthRoutes(health))
        .use(authRoutes({ auth, users, guard, limits, rules: config.rateLimits }))
        .use(usersRoutes({ users, guard })),
    );
  return app.use(openapiRoute(app, DOCUMENTATION, { formBodies: [`${API_PREFIX}/auth/login`], apiPrefix: API_PREFIX }));
}
