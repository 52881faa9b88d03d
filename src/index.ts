import { parseArgs } from "node:util";
import { Value } from "@sinclair/typebox/value";
import { createApp, createServices, listenOptions, openStorage, spoolDir } from "./app";
import { COMMIT, type Config, ConfigError, loadConfig, readEnvironment, VERSION } from "./config";
import { runMigrations } from "./db/migrate";
import { openDatabase } from "./db/open";
import { AppError } from "./http/errors";
import { openArchive } from "./modules/backup/archive";
import { backupCommand, restoreCommand } from "./modules/backup/commands";
import { BackupError } from "./modules/backup/model";
import { startBackupSchedule } from "./modules/backup/schedule";
import { createSpool } from "./modules/files/spool";
import { CLOSE_GOING_AWAY } from "./modules/realtime/service";
import { AdminCreateBody } from "./modules/users/model";
import { COMMAND_LINE } from "./modules/users/service";
import { serveControl } from "./platform/control-socket";
import { controlSocketPath, DataDirInUseError, DataDirUnusableError } from "./platform/data-dir";
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
  backup [--output FILE]     Archive the embedded database and the uploaded files (also while
                             the server runs); FILE defaults to ./reviewpoint-backup-<time>.tar
  restore FILE               Restore an archive into an empty DATA_DIR

Options:
  --version                  Print the version and the commit it was built from
  --help                     Print this help

Configuration comes from the environment and config/.env (the environment wins);
see the README for every variable.`;

const SWEEP_INTERVAL_MS = 10 * 60_000;
/** Any constant shared by every instance; it names the sweep's lock in pg_locks. */
const SWEEP_LOCK_KEY = 7_240_312;
/**
 * A temporary without a row older than this is dead: no upload lasts longer than UPLOAD_TIMEOUT_SECONDS
 * and its scan, plus a margin (an S3 marker is dated from the upload's start).
 */
const orphanAge = (config: Config) => (config.UPLOAD_TIMEOUT_SECONDS + 600) * 1000 + config.CLAMAV_TIMEOUT_MS;
/** A spooled download older than this was left by a crash. */
const SPOOL_ORPHAN_AGE_MS = 3_600_000;
/** After the shutdown timeout, how long requests told to stop get to send their 503. */
const FINAL_ANSWERS_MS = 1000;

const BUILD = { version: VERSION, commit: COMMIT };

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
    const admin = await users.create(account, COMMAND_LINE);
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
  const storage = openStorage(config.storage);
  // Aborted once in-flight requests have had their time: bodies still arriving are answered 503.
  const stopWaiting = new AbortController();
  const deps = { config, db, kv, pubsub, logger, startedAt, inFlight, storage, shutdown: stopWaiting.signal };
  const services = createServices(deps);
  // What uploads cut short by a crash or a lost connection left behind, at start and every few minutes.
  const stopSweep = services.files.startSweep({
    everyMs: SWEEP_INTERVAL_MS,
    orphanAgeMs: orphanAge(config),
    exclusive: (work) => db.whenFree(SWEEP_LOCK_KEY, work),
  });
  // S3 downloads a crash left in the spool (a download in progress is never this old).
  createSpool(spoolDir(config))
    .sweep(SPOOL_ORPHAN_AGE_MS)
    .then((removed) => removed > 0 && logger.info("removed spooled downloads left by a crash", { removed }))
    .catch((error: Error) => logger.warn("sweeping spooled downloads failed", { error: error.message }));
  // Every instance runs it; a lock in the database lets one prune at a time.
  const stopRetention = services.audit.startRetention();
  const stopPruning = services.files.startPruning();
  // Expired resumable uploads and their bytes; a database lock lets one instance sweep them at a time.
  const stopResumableSweep = services.resumable.startSweep();
  const app = createApp(deps, services).listen(listenOptions(config));
  // With the embedded database this process holds DATA_DIR: backups are made here, on request or on schedule.
  const archive = async () => (await openArchive({ db, storage, dataDir: config.DATA_DIR, build: BUILD })).stream;
  const embedded = db.kind === "pglite" && config.storage.kind === "disk";
  const control = embedded ? serveControl(controlSocketPath(config.DATA_DIR), { backup: archive }, logger) : undefined;
  const stopSchedule =
    embedded && config.BACKUP_INTERVAL_HOURS
      ? startBackupSchedule({
          intervalMs: config.BACKUP_INTERVAL_HOURS * 3_600_000,
          keep: config.BACKUP_KEEP,
          dir: config.backupDir,
          archive,
          logger,
        })
      : undefined;
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
    if (inFlight.count > 0) {
      logger.warn("in-flight requests cut off after timeout", { in_flight: inFlight.count });
      // Uploads still receiving stop and answer 503 with Retry-After and Connection: close; a moment for
      // those answers to go out before the sockets close.
      stopWaiting.abort();
      const answered = Date.now() + FINAL_ANSWERS_MS;
      while (inFlight.count > 0 && Date.now() < answered) await Bun.sleep(20);
    }
    services.realtime.closeAll(CLOSE_GOING_AWAY, "Server shutting down");
    stopSchedule?.();
    control?.stop();
    stopRetention();
    stopPruning();
    stopSweep();
    stopResumableSweep();
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
      output: { type: "string", short: "o" },
    },
  });
  if (values.version) return console.log(`reviewpoint ${VERSION} (commit ${COMMIT})`);
  if (values.help) return console.log(HELP);

  // Everything this process creates (DATA_DIR, the embedded database, the development secret, uploads)
  // is its owner's alone, whatever umask it was started with.
  process.umask(0o077);

  const command = positionals[0] ?? "serve";
  const config = loadConfig(readEnvironment(), { keepSecret: command !== "restore" });
  const logger = createLogger({ level: config.DEBUG ? "debug" : config.LOG_LEVEL, format: config.LOG_FORMAT });
  switch (command) {
    case "serve":
      return serveCommand(config, logger);
    case "migrate":
      return migrateCommand(config, logger);
    case "create-admin":
      return createAdminCommand(config, logger, values.username, values.email);
    case "backup":
      return backupCommand(config, logger, BUILD, values.output);
    case "restore":
      return restoreCommand(config, logger, BUILD, positionals[1]);
    default:
      throw new ConfigError(`unknown command "${command}"; see --help`);
  }
}

/** A failure the operator can act on; printed as one line, exit code 1. */
class CliError extends Error {}

main(process.argv.slice(2)).catch((error: unknown) => {
  // Bad settings, arguments, folders or archives (parseArgs throws TypeErrors with a code): one line, exit 2.
  if (
    error instanceof ConfigError ||
    error instanceof BackupError ||
    error instanceof DataDirUnusableError ||
    (error instanceof TypeError && "code" in error)
  ) {
    console.error(error.message);
    process.exit(2);
  }
  if (error instanceof CliError || error instanceof DataDirInUseError) {
    console.error(error.message);
    process.exit(1);
  }
  console.error("fatal:", error instanceof Error ? error.message : error);
  process.exit(1);
});
