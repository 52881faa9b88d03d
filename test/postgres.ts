import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./support";

/** Debian's PostgreSQL programs (of the installed major version); tests that stop a database run their own. */
const DEBIAN_POSTGRES = "/usr/lib/postgresql";
const BIN = (existsSync(DEBIAN_POSTGRES) ? readdirSync(DEBIAN_POSTGRES) : [])
  .map((version) => join(DEBIAN_POSTGRES, version, "bin"))
  .find((bin) => existsSync(join(bin, "initdb")));

/**
 * Whether this machine can run a private cluster: Debian's binaries, and root to run them as `postgres`
 * (initdb refuses to run as root). The skipped tests say so in their names.
 */
export const CAN_RUN_POSTGRES = BIN !== undefined && process.getuid?.() === 0;
export const PRIVATE_POSTGRES = `needs root and Debian's postgresql${CAN_RUN_POSTGRES ? "" : ": skipped here"}`;

export interface ThrowawayPostgres {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication). */
  url: string;
  /** `pg_ctl stop` in the given mode (`fast`: sessions are ended, new connections refused). */
  stop(mode?: "smart" | "fast" | "immediate"): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** Stops it at once and removes its folder. */
  remove(): Promise<void>;
}

async function asPostgres(args: string[]): Promise<void> {
  const run = Bun.spawn(["runuser", "-u", "postgres", "--", ...args], { stdout: "ignore", stderr: "pipe" });
  if ((await run.exited) !== 0) throw new Error(`${args[0]} failed: ${await new Response(run.stderr).text()}`);
}

/** A PostgreSQL cluster of the test's own, in a temporary folder, on a free port; fsync off. */
export async function throwawayPostgres(): Promise<ThrowawayPostgres> {
  const dir = mkdtempSync(join(tmpdir(), "rp-pg-"));
  chownSync(dir, Number(Bun.spawnSync(["id", "-u", "postgres"]).stdout.toString()), -1);
  const data = join(dir, "data");
  const port = freePort();
  const bin = BIN as string;
  await asPostgres([join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  const ctl = (...args: string[]) => asPostgres([join(bin, "pg_ctl"), "-D", data, ...args]);
  const cluster: ThrowawayPostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () =>
      ctl(
        "-o",
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`,
        "-l",
        join(dir, "log"),
        "-w",
        "start",
      ),
    stop: (mode = "fast") => ctl("-m", mode, "-w", "stop"),
    async remove() {
      await ctl("-m", "immediate", "-w", "stop").catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.start();
  return cluster;
}
