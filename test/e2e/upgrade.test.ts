import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { openPglite } from "../../src/db/client";
import { rowsOf } from "../../src/db/migrate";
import { JOURNAL } from "../../src/db/migrations";
import { buildBinary, finished, freePort, operatorDir, REPO_ROOT, runShipped, TEST_DATABASE_URL } from "../support";
import { clientOf, samplePdf, untilReady } from "./client";

/** The last commit before the release that made the binary self-contained: the previous release. */
const PREVIOUS_RELEASE = "bebc671b913e67916b3811f5c3128fe0a9f8b884";
/** Built once per machine: a release never changes. */
/** Migrations the previous release shipped. */
const PREVIOUS_MIGRATIONS = 5;
const RELEASE_DIR = join(homedir(), ".cache", "reviewpoint-releases", PREVIOUS_RELEASE);

async function step(what: string, command: string[], cwd: string) {
  const result = await finished(Bun.spawn(command, { cwd, stdout: "pipe", stderr: "pipe" }));
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}): ${result.stderr.slice(-2000)}`);
}

/** The previous release's binary, built from git like its CI built it (it still reads its build tree). */
async function previousRelease(): Promise<string> {
  const binary = join(RELEASE_DIR, "dist", "reviewpoint");
  if (existsSync(binary)) return binary;
  // Built where it stays: the release reads its migrations from the folder it was built in.
  rmSync(RELEASE_DIR, { recursive: true, force: true });
  mkdirSync(RELEASE_DIR, { recursive: true });
  try {
    await step(
      "git archive of the previous release",
      ["sh", "-c", 'git -C "$0" archive "$1" | tar -x -C "$2"', REPO_ROOT, PREVIOUS_RELEASE, RELEASE_DIR],
      REPO_ROOT,
    );
    await step("bun install", ["bun", "install", "--frozen-lockfile"], RELEASE_DIR);
    await step("bun run build", ["bun", "run", "build"], RELEASE_DIR);
  } catch (error) {
    rmSync(RELEASE_DIR, { recursive: true, force: true });
    throw error;
  }
  return binary;
}

/** Rows of every table of the embedded database in `pgdata`. */
async function rowCounts(pgdata: string): Promise<Record<string, number>> {
  const db = await openPglite(pgdata);
  try {
    const pglite = db.pglite as NonNullable<typeof db.pglite>;
    const tables = rowsOf<{ name: string }>(
      await pglite.query("select table_name as name from information_schema.tables where table_schema = 'public'"),
    );
    const counts: Record<string, number> = {};
    for (const { name } of tables) {
      counts[name] = rowsOf<{ n: number }>(await pglite.query(`select count(*)::int as n from "${name}"`))[0]?.n ?? 0;
    }
    return counts;
  } finally {
    await db.close();
  }
}

// A DATA_DIR of the embedded database, upgraded: the PGlite run has it.
describe.skipIf(Boolean(TEST_DATABASE_URL))(
  "upgrading from the previous release's binary (embedded database; the PGlite run)",
  () => {
    const dir = operatorDir("rp-upgrade-");
    const data = mkdtempSync(join(tmpdir(), "rp-upgrade-data-"));
    const port = freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = {
      PATH: process.env.PATH ?? "",
      DATA_DIR: data,
      PORT: String(port),
      HOST: "127.0.0.1",
      ENVIRONMENT: "production",
      SECRET_KEY: "upgrade-secret-upgrade-secret-upgrade-secret-01",
      BCRYPT_ROUNDS: "4",
      LOG_LEVEL: "warn",
    };
    const api = clientOf(base);
    let previous: string;

    beforeAll(async () => {
      [previous] = await Promise.all([previousRelease(), buildBinary()]);
    }, 300_000);

    afterAll(() => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(data, { recursive: true, force: true });
    });

    test("today's binary opens a DATA_DIR the previous release made, migrates it, keeps every row and byte", async () => {
      // The previous release as its users ran it (beside its build tree, which it needed).
      const old = Bun.spawn([previous, "serve"], { cwd: RELEASE_DIR, env, stdout: "ignore", stderr: "pipe" });
      await untilReady(base, old);
      const files = new Map<string, { user: string; bytes: Uint8Array }>();
      for (let u = 0; u < 3; u++) {
        const username = `upgrade${u}`;
        const { access } = await api.signUp(username);
        for (let f = 0; f < 2; f++) {
          const bytes = samplePdf(50_000 + u * 70_000 + f);
          files.set((await api.upload(access, bytes, `paper-${u}-${f}.pdf`, "application/pdf")).id, {
            user: username,
            bytes,
          });
        }
      }
      old.kill("SIGTERM");
      expect(await old.exited).toBe(0);
      const before = await rowCounts(join(data, "pgdata"));
      expect(before.users).toBe(3);

      const migrate = await finished(runShipped(dir, ["migrate"], { env: { ...env, LOG_LEVEL: "info" } }));
      expect(migrate.code).toBe(0);
      const applied = JSON.parse(migrate.stdout.trim().split("\n").at(-1) as string).applied;
      expect(applied).toBe(JOURNAL.length - PREVIOUS_MIGRATIONS);
      const after = await rowCounts(join(data, "pgdata"));
      for (const [table, rows] of Object.entries(before))
        expect({ table, rows: after[table] }).toEqual({ table, rows });

      const server = runShipped(dir, ["serve"], { env });
      await untilReady(base, server);
      for (const [id, { user, bytes }] of files) {
        const { access } = await api.login(user);
        expect(Buffer.from(await api.download(access, id)).equals(Buffer.from(bytes))).toBe(true);
      }
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
    }, 180_000);
  },
);
