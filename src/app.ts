import { cors } from "@elysiajs/cors";
import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
import { type Config, VERSION } from "./config";
import type { Database } from "./db/client";
import { docsRoutes } from "./http/docs";
import { errorMapper } from "./http/errors";
import { requestContext } from "./http/request-context";
import { healthRoutes } from "./modules/health/routes";
import { createHealthService } from "./modules/health/service";
import type { KeyValueStore } from "./platform/kv";
import type { Logger } from "./platform/logger";

export interface AppDeps {
  config: Config;
  db: Database;
  kv: KeyValueStore;
  logger: Logger;
  startedAt?: number;
}

export const API_PREFIX = "/api/v1";

function corsOrigin(allowed: string[]): boolean | string[] {
  return allowed.includes("*") ? true : allowed;
}

/** Builds the whole HTTP application from its dependencies; no I/O happens here. */
export function createApp(deps: AppDeps) {
  const { config, db, kv, logger } = deps;
  const health = createHealthService({ db, kv, version: VERSION, startedAt: deps.startedAt ?? Date.now() });

  return new Elysia()
    .use(errorMapper(logger))
    .use(requestContext({ logger, trustProxy: config.TRUST_PROXY }))
    .use(
      cors({
        origin: corsOrigin(config.allowedOrigins),
        allowedHeaders: ["Authorization", "Content-Type", "X-Request-ID"],
        exposeHeaders: [
          "X-Request-ID",
          "Content-Disposition",
          "X-RateLimit-Limit",
          "X-RateLimit-Remaining",
          "X-RateLimit-Reset",
          "Retry-After",
        ],
        methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        credentials: false,
        maxAge: 600,
      }),
    )
    .use(
      openapi({
        provider: null,
        specPath: "/openapi.json",
        documentation: {
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
        },
      }),
    )
    .use(docsRoutes)
    .group(API_PREFIX, (api) => api.use(healthRoutes(health)));
}

export type App = ReturnType<typeof createApp>;
