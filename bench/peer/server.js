/**
 * The bench's peer: `POST /api/v1/uploads` as a TypeScript/Node team would write it with Fastify 5 and
 * @fastify/multipart, run under Node (`node server.js`), configured by the environment the bench sets.
 *
 * What it does, like our server: a bearer token required (a static one, compared as a string: the cheapest
 * auth there is); a size limit decided while streaming (413); only allowed declared types (415); the file
 * part streamed to a temporary file with SHA-256 from node:crypto, renamed into place, one INSERT of its
 * row with postgres.js (the same driver and version as ours, so the comparison is not about the driver);
 * the row back as JSON with 201; level-`warn` logging, as the bench runs ours.
 *
 * What it does not, unlike ours: no JWT verification or user lookup (ours checks the token's signature and
 * that the user and session are still live), no rate limit, no quota, no metrics, no content check
 * (magic bytes, UTF-8), no virus scan, no event to the owner's sockets, no cap on the whole body (only on
 * the file part), no fsync before the rename (ours makes a 201 durable: issue 14), no crash recovery of
 * temporaries, and the contract's error body only in spirit.
 */
import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import multipart from "@fastify/multipart";
import Fastify from "fastify";
import postgres from "postgres";

const env = process.env;
const port = Number(env.PORT ?? 3000);
const maxBytes = Number(env.MAX_UPLOAD_SIZE ?? 10 * 1024 * 1024);
const allowedTypes = new Set((env.ALLOWED_FILE_TYPES ?? "image/jpeg,image/png,application/pdf,text/plain").split(","));
const expectedAuthorization = `Bearer ${env.PEER_TOKEN}`;
// Every upload belongs to the one user the static token stands for.
const ownerId = env.PEER_OWNER_ID ?? randomUUID();
const uploadDir = env.UPLOAD_DIR ?? "uploads";
const tmpDir = join(uploadDir, "tmp");
const filesDir = join(uploadDir, "files");

const sql = postgres(env.DATABASE_URL, { onnotice: () => {} });
await sql`
  create table if not exists peer_files (
    id uuid primary key default gen_random_uuid(),
    owner_id uuid not null,
    filename varchar(255) not null,
    content_type varchar(127) not null,
    file_size bigint not null,
    file_hash varchar(64) not null,
    storage_key text not null unique,
    uploaded_at timestamptz not null default now()
  )`;
await sql`create index if not exists peer_files_owner_uploaded_idx on peer_files (owner_id, uploaded_at, id)`;
await mkdir(tmpDir, { recursive: true });
await mkdir(filesDir, { recursive: true });

const app = Fastify({ logger: { level: env.LOG_LEVEL ?? "info" } });
await app.register(multipart, { limits: { fileSize: maxBytes, files: 1, fields: 8, fieldSize: 1024, parts: 9 } });

async function authenticate(request, reply) {
  if (request.headers.authorization !== expectedAuthorization) {
    return reply.code(401).send({ error: { code: "AUTHENTICATION_REQUIRED", message: "Not authenticated" } });
  }
}

app.get("/api/v1/health/ready", async () => {
  await sql`select 1`;
  return { status: "ok" };
});

app.post("/api/v1/uploads", { onRequest: authenticate }, async (request, reply) => {
  const data = await request.file();
  if (!data) return reply.code(400).send({ error: { code: "VALIDATION_ERROR", message: "A file part is required" } });
  if (!allowedTypes.has(data.mimetype)) {
    data.file.resume();
    return reply.code(415).send({ error: { code: "UNSUPPORTED_MEDIA_TYPE", message: `${data.mimetype} not allowed` } });
  }
  const key = randomUUID();
  const temporary = join(tmpDir, key);
  const hash = createHash("sha256");
  let size = 0;
  data.file.on("data", (chunk) => {
    hash.update(chunk);
    size += chunk.length;
  });
  try {
    await pipeline(data.file, createWriteStream(temporary, { flags: "wx" }));
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  // Past the limit busboy stops the file part short and marks it truncated (the README's way to tell).
  if (data.file.truncated) {
    await rm(temporary, { force: true });
    return reply.code(413).send({ error: { code: "PAYLOAD_TOO_LARGE", message: `Over ${maxBytes} bytes` } });
  }
  await rename(temporary, join(filesDir, key));
  const [file] = await sql`
    insert into peer_files ${sql({
      owner_id: ownerId,
      filename: data.filename,
      content_type: data.mimetype,
      file_size: size,
      file_hash: hash.digest("hex"),
      storage_key: key,
    })}
    returning *`;
  return reply.code(201).send(file);
});

await app.listen({ host: env.HOST ?? "127.0.0.1", port });
