/**
 * What a client written against the generated types looks like: register, log in, upload, list,
 * download, delete. `bun run check:client` only type-checks it (it is never run), so a change to
 * /openapi.json that breaks this flow for typed clients fails CI.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./generated/api";

/** The multipart body as the document describes it (`file` is `format: binary`, which openapi-typescript types as a string). */
type UploadForm = paths["/api/v1/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"];

/** Throws on any error answer, naming the contract's error code. */
function fail(step: string, response: Response, error: components["schemas"]["Error"]): never {
  const fields = error.error.details.map((detail) => `${detail.field}: ${detail.issue}`).join("; ");
  throw new Error(`${step}: ${response.status} ${error.error.code} ${error.error.message} ${fields}`.trim());
}

export async function uploadRoundTrip(baseUrl = "http://localhost:8000"): Promise<string> {
  const client = createClient<paths>({ baseUrl });
  let accessToken: string | undefined;
  const bearer: Middleware = {
    onRequest({ request }) {
      if (accessToken) request.headers.set("Authorization", `Bearer ${accessToken}`);
      return request;
    },
  };
  client.use(bearer);

  const username = `ada_${crypto.randomUUID().slice(0, 8)}`;
  const password = "correct horse battery staple 4";

  const registered = await client.POST("/api/v1/auth/register", {
    body: { username, email: `${username}@example.com`, password, name: "Ada Lovelace" },
  });
  if (registered.error) fail("register", registered.response, registered.error);
  const userId: string = registered.data.id;

  const login = await client.POST("/api/v1/auth/login", { body: { username, password } });
  if (login.error) fail("login", login.response, login.error);
  const tokenType: "bearer" = login.data.token_type;
  accessToken = login.data.access_token;

  const form = new FormData();
  form.set("file", new File(["Notes on the Analytical Engine\n"], "notes.txt", { type: "text/plain" }));
  form.set("is_public", "false");
  const uploaded = await client.POST("/api/v1/uploads", {
    // The one cast: a FormData is not an object of the schema's shape. openapi-fetch sends a FormData as
    // it is, without a Content-Type of its own, so fetch sets multipart/form-data with its boundary.
    body: form as unknown as UploadForm,
  });
  if (uploaded.error) fail("upload", uploaded.response, uploaded.error);
  const ownerId: string = uploaded.data.owner_id;
  if (ownerId !== userId) throw new Error("upload: stored for somebody else");

  // offset, limit, sort and order have server defaults: a client may leave them out.
  const listed = await client.GET("/api/v1/uploads");
  if (listed.error) fail("list", listed.response, listed.error);
  const first = listed.data.items[0];
  if (!first) throw new Error("list: the upload is missing");
  const id: string = first.id;
  const filename: string = first.filename;
  const isPublic: boolean = first.is_public;
  // Integers are numbers, not "a number or a numeric string".
  const kib: number = first.file_size / 1024;
  const total: number = listed.data.total + 0;

  const downloaded = await client.GET("/api/v1/uploads/{id}/download", {
    params: { path: { id } },
    parseAs: "blob",
  });
  if (downloaded.error) fail("download", downloaded.response, downloaded.error);
  const bytes: Blob = downloaded.data;
  const text = await bytes.text();
  const etag = downloaded.response.headers.get("etag");

  const removed = await client.DELETE("/api/v1/uploads/{id}", { params: { path: { id } } });
  if (removed.error) fail("delete", removed.response, removed.error);
  if (removed.response.status !== 204) throw new Error(`delete: ${removed.response.status}`);

  return `${tokenType} ${filename} (${kib} KiB, ${total} in all, public: ${isPublic}, etag ${etag}): ${text.trim()}`;
}
