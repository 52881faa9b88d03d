// The floor every server row is compared with: Bun.serve answering JSON and nothing else, plus the
// floors of the files rows: a POST that reads its body, a POST that streams it (/stream), a POST that
// stores it durably (/store, into the folder BASELINE_STORE_DIR names), and GET /file streaming the file
// named by the second argument. All are routes, so the catch-all JSON answer is unchanged.
import { createHash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";

const port = Number(process.argv[2]);
const file = process.argv[3];
const storeDir = process.env.BASELINE_STORE_DIR;
Bun.serve({
  hostname: "127.0.0.1",
  port,
  development: false,
  // The big upload's ceiling sends 200 MiB to /stream.
  maxRequestBodySize: Number.POSITIVE_INFINITY,
  routes: {
    "/api/v1/uploads": {
      POST: async (request) => {
        await request.arrayBuffer();
        return Response.json({ status: "ok" }, { status: 201 });
      },
    },
    // The big upload's ceiling: read and dropped piece by piece, as the server streams an upload.
    "/stream": {
      POST: async (request) => {
        for await (const _ of request.body ?? []);
        return Response.json({ status: "ok" }, { status: 201 });
      },
    },
    // What any upload server must do at the least, with none of ours: SHA-256 of every byte, each write
    // awaited, a data sync before answering (no multipart parsing, checks, auth or database).
    "/store": {
      POST: async (request) => {
        if (!storeDir) return new Response("no BASELINE_STORE_DIR", { status: 500 });
        const path = join(storeDir, crypto.randomUUID());
        const handle = await open(path, "wx", 0o600);
        const hash = createHash("sha256");
        try {
          for await (const chunk of request.body ?? []) {
            hash.update(chunk);
            await handle.write(chunk);
          }
          await handle.datasync();
        } finally {
          await handle.close();
          await rm(path, { force: true });
        }
        return Response.json({ sha256: hash.digest("hex") }, { status: 201 });
      },
    },
    "/file": () => (file ? new Response(Bun.file(file)) : new Response("no file", { status: 404 })),
  },
  fetch: () => Response.json({ status: "ok" }),
});
