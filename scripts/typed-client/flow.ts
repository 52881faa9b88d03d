/**
 * What a client written against the generated types looks like: register, log in (with a TOTP code when
 * the account has TOTP on), upload, list, download, delete; list the sessions, end another one, end all.
 * `bun run check:client` only type-checks it (it is never run), so a change to /openapi.json that breaks
 * this flow for typed clients fails CI.
 */
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, paths } from "./generated/api";

/** The multipart body as the document describes it (`file` is `format: binary`, which openapi-typescript types as a string). */
type UploadForm = paths["/api/v1/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"];

/** Throws on any error answer, naming the contract's error code. */
function fail(step: string, response: Response, error: components["schemas"]["Error"]): never {
  const fields = error.error.details.map((detail) => `${detail.field}: ${detail.issue}`).join("; ");
  throw new Error(`${step}: ${response.status} ${error.error.code} ${error.error.message} ${fields}`.trim());
}

type Tokens = paths["/api/v1/auth/login/mfa"]["post"]["responses"][200]["content"]["application/json"];

/**
 * Logs in; an account with TOTP on answers an MfaChallenge instead of tokens, and the second step sends
 * `code()` (from the authenticator app, or a recovery code) with its `mfa_token`.
 */
export async function signIn(
  client: Client<paths>,
  username: string,
  password: string,
  code: () => Promise<string>,
): Promise<Tokens> {
  const login = await client.POST("/api/v1/auth/login", { body: { username, password } });
  if (login.error) fail("login", login.response, login.error);
  if (!("mfa_required" in login.data)) return login.data;
  const methods: "totp"[] = login.data.methods;
  const second = await client.POST("/api/v1/auth/login/mfa", {
    body: { mfa_token: login.data.mfa_token, code: await code() },
  });
  if (second.error) fail(`login (${methods.join(", ")})`, second.response, second.error);
  return second.data;
}

/** Ends every other session one by one, then all of them (this one too); describes those it ended. */
export async function endSessions(client: Client<paths>): Promise<string[]> {
  const listed = await client.GET("/api/v1/auth/sessions");
  if (listed.error) fail("sessions", listed.response, listed.error);
  const ended: string[] = [];
  for (const session of listed.data.items) {
    if (session.current) continue;
    const revoked = await client.DELETE("/api/v1/auth/sessions/{id}", { params: { path: { id: session.id } } });
    if (revoked.error) fail("end a session", revoked.response, revoked.error);
    ended.push(
      `${session.user_agent ?? "unknown client"} from ${session.ip ?? "?"}, last used ${session.last_used_at}`,
    );
  }
  const all = await client.POST("/api/v1/auth/logout-all");
  if (all.error) fail("logout-all", all.response, all.error);
  return ended;
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

  const tokens = await signIn(client, username, password, async () => "123456");
  const tokenType: "bearer" = tokens.token_type;
  accessToken = tokens.access_token;

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
