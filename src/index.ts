import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createApp } from "./app";
import { type Config, ConfigError, loadConfig, readEnvironment, VERSION } from "./config";
import { connectPostgres, type Database, openPglite } from "./db/client";
import { runMigrations } from "./db/migrate";
import { createStore } from "./platform/kv";
import { createLogger, type Logger } from "./platform/logger";

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

async function openDatabase(config: Config): Promise<Database> {
  if (config.databaseUrl) return connectPostgres({ url: config.databaseUrl, max: config.DB_POOL_MAX });
  mkdirSync(config.DATA_DIR, { recursive: true });
  return openPglite(join(config.DATA_DIR, "pgdata"));
}

async function migrateCommand(config: Config, logger: Logger) {
  const db = await openDatabase(config);
  try {
    const applied = await runMigrations(db);
    logger.info("migrations applied", { applied, database: db.kind });
  } finally {
    await db.close();
  }
}

async function serveCommand(config: Config, logger: Logger) {
  const startedAt = Date.now();
  const db = await openDatabase(config);
  const applied = await runMigrations(db);
  const kv = await createStore(config.REDIS_URL, logger);
  const app = createApp({ config, db, kv, logger, startedAt }).listen({
    port: config.PORT,
    hostname: config.HOST,
    // Our own limits answer first with the contract's 413; this only stops runaway bodies.
    maxRequestBodySize: config.MAX_UPLOAD_SIZE + 1024 * 1024,
    development: false,
  });
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
    logger.info("shutting down", { signal });
    const drained = server.stop(false).then(() => true);
    const timedOut = Bun.sleep(config.SHUTDOWN_TIMEOUT_SECONDS * 1000).then(() => false);
    if (!(await Promise.race([drained, timedOut]))) {
      logger.warn("in-flight requests cut off after timeout", { seconds: config.SHUTDOWN_TIMEOUT_SECONDS });
      await server.stop(true);
    }
    await Promise.allSettled([db.close(), kv.close()]);
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

  const config = loadConfig(readEnvironment());
  const logger = createLogger({ level: config.DEBUG ? "debug" : config.LOG_LEVEL, format: config.LOG_FORMAT });
  const command = positionals[0] ?? "serve";
  switch (command) {
    case "serve":
      return serveCommand(config, logger);
    case "migrate":
      return migrateCommand(config, logger);
    default:
      throw new ConfigError(`unknown command "${command}"; see --help`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof ConfigError || (error instanceof TypeError && "code" in error)) {
    console.error(error.message);
    process.exit(2);
  }
  console.error("fatal:", error instanceof Error ? error.message : error);
  process.exit(1);
});
