/**
 * `bun run build`: the one executable, `dist/reviewpoint`, and `dist/reviewpoint.sha256` beside it.
 * The commit it is built from is compiled in (`--version`): REVIEWPOINT_COMMIT when set (a build without
 * `.git`, such as the Docker image's), else git's HEAD, marked `-dirty` when the tree has changes.
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const ROOT = resolve(import.meta.dir, "..");
// `--outfile` and `--no-bytecode` are for the bench, which compares start-up with and without bytecode.
const { values: options } = parseArgs({
  options: { outfile: { type: "string" }, "no-bytecode": { type: "boolean" } },
});
const OUT = resolve(options.outfile ?? join(ROOT, "dist", "reviewpoint"));

function git(...args: string[]): string | undefined {
  const result = Bun.spawnSync(["git", ...args], { cwd: ROOT, stdout: "pipe", stderr: "ignore" });
  return result.exitCode === 0 ? result.stdout.toString().trim() : undefined;
}

function commit(): string {
  if (process.env.REVIEWPOINT_COMMIT) return process.env.REVIEWPOINT_COMMIT;
  const head = git("rev-parse", "HEAD");
  if (!head) return "unknown";
  return git("status", "--porcelain", "--untracked-files=no") ? `${head}-dirty` : head;
}

const build = Bun.spawnSync(
  [
    process.execPath,
    "build",
    "--compile",
    // Start-up: --version takes ~85 ms of CPU with bytecode, ~145 ms without (bench rows b3, b4).
    ...(options["no-bytecode"] ? [] : ["--bytecode"]),
    // Never identifier minification: it breaks Elysia.
    "--minify-syntax",
    "--minify-whitespace",
    // The binary reads config/.env itself, deliberately; nothing else from its working directory.
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    "--define",
    `BUILD_COMMIT=${JSON.stringify(commit())}`,
    "--outfile",
    OUT,
    "src/index.ts",
  ],
  { cwd: ROOT, stdout: "inherit", stderr: "inherit" },
);
if (build.exitCode !== 0) process.exit(build.exitCode ?? 1);

const digest = new Bun.CryptoHasher("sha256").update(await Bun.file(OUT).arrayBuffer()).digest("hex");
// The format `sha256sum -c` reads.
await Bun.write(`${OUT}.sha256`, `${digest}  reviewpoint\n`);
