import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Value } from "@sinclair/typebox/value";
import { createApp, createServices, listenOptions } from "./app";
import { type Config, ConfigError, loadConfig, readEnvironment, VERSION } from "./config";
import { connectPostgres, type Database, DatabaseInUseError, openPglite, postgresOptions } from "./db/client";
import { runMigrations } from "./db/migrate";
import { AppError } from "./http/errors";
import { CLOSE_GOING_AWAY } from "./modules/realtime/service";
import { AdminCreateBody } from "./modules/users/model";
import { createStore, MemoryStore } from "./platform/kv";
import { createLogger, type Logger } from "./platform/logger";
import { createPubSub } from "./platform/pubsub";

const HELP = `ReViewPoint API server ${VERSION}

Usage: reviewpoint [command] [options]

Commands:
  serve                      Apply pending migrations, then serve HTTP (default)
  migrate                    Apply pending migrations and exit
  create-admin --username U --email E
                             Create an admin; password from REVIEWPOINT_ADMIN_PASSWORD or stdin

Options:
  --version                  Print the version
  --help                     Print this help

Configuration comes from the environment and config/.env (the environment wins);
see the README for every variable.`;

const ORPHAN_AGE_MS = 3_600_000;

async function openDatabase(config: Config, logger: Logger): Promise<Database> {
  if (config.databaseUrl) return connectPostgres(postgresOptions(config.databaseUrl, config, logger));
  mkdirSync(config.DATA_DIR, { recursive: true, mode: 0o700 });
  return openPglite(join(config.DATA_DIR, "pgdata"));
}

async function migrateCommand(config: Config, logger: Logger) {
  const db = await openDatabase(config, logger);
  try {
    const applied = await runMigrations(db);
    logger.info("migrations applied", { applied, database: db.kind });
  } finally {
    await db.close();
  }
}

async function readPassword(): Promise<string> {
  const fromEnv = process.env.REVIEWPOINT_ADMIN_PASSWORD;
  if (fromEnv) return fromEnv;
  if (process.stdin.isTTY) process.stderr.write("Password (end with Ctrl-D): ");
  return (await Bun.stdin.text()).replace(/\r?\n$/, "");
}

async function createAdminCommand(config: Config, logger: Logger, username?: string, email?: string) {
  if (!username || !email) throw new ConfigError("create-admin needs --username U --email E; see --help");
  const account = { username, email, password: await readPassword(), role: "admin" as const };
  const problem = Value.Errors(AdminCreateBody, account).First();
  if (problem) {
    const field = problem.path.replace(/^\//, "");
    const rule = (problem.schema as { error?: string }).error ?? problem.message;
    throw new ConfigError(`create-admin: ${field}: ${rule}`);
  }
  const db = await openDatabase(config, logger);
  try {
    await runMigrations(db);
    const { users } = createServices({ config, db, kv: new MemoryStore(), logger });
    const admin = await users.create(account);
    logger.info("admin created", { id: admin.id, username: admin.username });
  } catch (error) {
    if (error instanceof AppError) throw new CliError(`create-admin: ${error.message}`);
    throw error;
  } finally {
    await db.close();
  }
}

async function serveCommand(config: Config, logger: Logger) {
  const startedAt = Date.now();
  const db = await openDatabase(config, logger);
  const [applied, kv, pubsub] = await Promise.all([
    runMigrations(db),
    createStore(config.REDIS_URL, logger),
    createPubSub({ redis: config.REDIS_URL, postgres: config.databaseUrl }, logger),
  ]);
  const inFlight = { count: 0 };
  const deps = { config, db, kv, pubsub, logger, startedAt, inFlight };
  const services = createServices(deps);
  // What uploads cut short by a crash left behind; an upload in flight elsewhere is never this old.
  services.files
    .recover(ORPHAN_AGE_MS)
    .then((done) => (done.committed || done.removed) && logger.info("recovered temporary uploads", done))
    .catch((error: Error) => logger.warn("recovery of temporary uploads failed", { error: error.message }));
  const app = createApp(deps, services).listen(listenOptions(config));
  const server = app.server;
  if (!server) throw new Error("server did not start");
  logger.info("listening", {
    url: `http://${config.HOST}:${server.port}`,
    version: VERSION,
    database: db.kind,
    cache: kv.backend,
    migrations_applied: applied,
    startup_ms: Date.now() - startedAt,
  });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("shutting down", { signal, in_flight: inFlight.count });
    const deadline = Date.now() + config.SHUTDOWN_TIMEOUT_SECONDS * 1000;
    // Stop accepting, then let running handlers finish (also those whose client already left).
    void server.stop(false);
    while (inFlight.count > 0 && Date.now() < deadline) await Bun.sleep(20);
    if (inFlight.count > 0) logger.warn("in-flight requests cut off after timeout", { in_flight: inFlight.count });
    services.realtime.closeAll(CLOSE_GOING_AWAY, "Server shutting down");
    // Then close what is left: idle keep-alive sockets, and those whose unread body Bun holds after an
    // early answer (an oversize upload from a keep-alive client), which a graceful stop waits on forever.
    await server.stop(true);
    await Promise.allSettled([db.close(), kv.close(), services.realtime.stop()]);
    logger.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

async function main(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
      username: { type: "string" },
      email: { type: "string" },
    },
  });
  if (values.version) return console.log(VERSION);
  if (values.help) return console.log(HELP);

  // Everything this process creates (DATA_DIR, the embedded database, the development secret, uploads)
  // is its owner's alone, whatever umask it was started with.
  process.umask(0o077);

  const config = loadConfig(readEnvironment());
  const logger = createLogger({ level: config.DEBUG ? "debug" : config.LOG_LEVEL, format: config.LOG_FORMAT });
  const command = positionals[0] ?? "serve";
  switch (command) {
    case "serve":
      return serveCommand(config, logger);
    case "migrate":
      return migrateCommand(config, logger);
    case "create-admin":
      return createAdminCommand(config, logger, values.username, values.email);
    default:
      throw new ConfigError(`unknown command "${command}"; see --help`);
  }
}

/** A failure the operator can act on; printed as one line, exit code 1. */
class CliError extends Error {}

main(process.argv.slice(2)).catch((error: unknown) => {
  // Bad settings or arguments (parseArgs throws TypeErrors with a code): one line, exit 2.
  if (error instanceof ConfigError || (error instanceof TypeError && "code" in error)) {
    console.error(error.message);
    process.exit(2);
  }
  if (error instanceof CliError || error instanceof DatabaseInUseError) {
    console.error(error.message);
    process.exit(1);
  }
  console.error("fatal:", error instanceof Error ? error.message : error);
  process.exit(1);
});
