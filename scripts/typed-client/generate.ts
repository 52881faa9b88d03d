/**
 * Writes the served /openapi.json to generated/openapi.json and turns it into generated/api.d.ts with
 * openapi-typescript, for flow.ts to type-check against (`bun run check:client`).
 * The app is built in-process as test/support.ts builds it; no server is started, no port is opened.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createApp } from "../../src/app";
import { loadConfig } from "../../src/config";
import { openPglite } from "../../src/db/client";
import { MemoryStore } from "../../src/platform/kv";
import { createLogger } from "../../src/platform/logger";

const root = join(import.meta.dir, "..", "..");
const outDir = join(import.meta.dir, "generated");
const documentPath = join(outDir, "openapi.json");
const typesPath = join(outDir, "api.d.ts");

// The document is built from the routes alone: no migrations, no query reaches the database.
const db = await openPglite("memory://");
try {
  const app = createApp({
    config: loadConfig({ ENVIRONMENT: "test" }),
    db,
    kv: new MemoryStore(),
    logger: createLogger({ level: "silent", format: "json" }),
  });
  const response = await app.handle(new Request("http://localhost/openapi.json"));
  if (response.status !== 200) throw new Error(`GET /openapi.json: ${response.status} ${await response.text()}`);
  const document = await response.json();
  mkdirSync(outDir, { recursive: true });
  await Bun.write(documentPath, `${JSON.stringify(document, null, 2)}\n`);
} finally {
  await db.close();
}

// The CLI, run by Bun itself (`--bun`), as a developer would run it.
const cli = Bun.spawn(
  [process.execPath, "--bun", join(root, "node_modules/openapi-typescript/bin/cli.js"), documentPath, "-o", typesPath],
  { cwd: root, stdout: "inherit", stderr: "inherit" },
);
const code = await cli.exited;
if (code !== 0) {
  console.error(`openapi-typescript exited with ${code}`);
  process.exit(1);
}
