import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import Ajv2020, { type ValidateFunction } from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { Secret, TOTP } from "otpauth";
import type { MailMessage } from "../../src/platform/mail";
import { API, type CallOptions, call, login, makeApp, PASSWORD, promote, signUp } from "../support";
import { SoftAuthenticator } from "../webauthn";

// The preload's setDefaultTimeout reaches only the first file of a run (Bun 1.4.5): this file sets its own.
setDefaultTimeout(30_000);

/**
 * The served OpenAPI document, checked against what the server really answers: a validating proxy sits in
 * front of the app while a realistic scenario runs through every operation, and each response must have a
 * declared status, a declared media type (or no body when none is declared) and a body matching the schema.
 */

type Schema = Record<string, unknown>;
type Content = Record<string, { schema?: Schema }>;
type Operation = {
  operationId?: string;
  requestBody?: { content: Content };
  responses: Record<string, { description?: string; content?: Content }>;
};
type OpenApiDocument = {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
};
type Handler = Parameters<typeof call>[0];
type Reply = Awaited<ReturnType<typeof call>>;

const HTTP_METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
const UNKNOWN_ID = "0196f0a2-7c1e-7000-8000-000000000000";
/** What a careless client (or a fuzzer) sends to an operation that takes no body. */
const STRAY_BODY = '{"garbage": ';

/** Every operation of the document as [`METHOD /template`, operation]. */
const operationsOf = (doc: OpenApiDocument): [string, Operation][] =>
  Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => HTTP_METHODS.includes(method))
      .map(([method, operation]): [string, Operation] => [`${method.toUpperCase()} ${path}`, operation]),
  );

/** Checks every response against the document, and remembers which operations it saw. */
class ValidatingProxy {
  /** Broken contract: undeclared statuses or media types, bodies not matching their schema. */
  readonly violations: string[] = [];
  /** A step of the scenario got another status than it meant to provoke. */
  readonly surprises: string[] = [];
  readonly seen = new Set<string>();
  /** Operations that declare no request body but were sent one (malformed JSON), which they must ignore. */
  readonly strayBodies = new Set<string>();
  private readonly ajv = new Ajv2020({ allErrors: true });
  private readonly validators = new Map<Schema, ValidateFunction>();
  private readonly templates: { template: string; pattern: RegExp }[];

  constructor(private readonly doc: OpenApiDocument) {
    addFormats(this.ajv);
    // Not a standard format: Elysia documents its t.Integer() as "an integer, or a string of one" with it.
    this.ajv.addFormat("integer", /^-?\d+$/);
    // The document's components as one schema, so `#/components/schemas/X` can be rewritten to `components#/$defs/X`.
    this.ajv.addSchema({ $id: "components", $defs: doc.components.schemas });
    // Literal paths first, so /users/me is not taken for /users/{id}.
    this.templates = Object.keys(doc.paths)
      .sort((a, b) => Number(a.includes("{")) - Number(b.includes("{")))
      .map((template) => ({
        template,
        pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`),
      }));
  }

  private validator(schema: Schema): ValidateFunction {
    let validate = this.validators.get(schema);
    if (!validate) {
      const rewritten = JSON.stringify(schema).replaceAll('"#/components/schemas/', '"components#/$defs/');
      validate = this.ajv.compile(JSON.parse(rewritten));
      this.validators.set(schema, validate);
    }
    return validate;
  }

  /**
   * Sends a request through the app, checks the response, and notes if it is not the `expected` status.
   * To an operation that declares no request body (other than a GET), malformed JSON is sent anyway:
   * the answer must be the same as without it.
   */
  async send(app: Handler, method: string, path: string, expected: number, options: CallOptions = {}) {
    const template = this.templates.find(({ pattern }) => pattern.test(path.split("?")[0] as string))?.template;
    const operation = template ? this.doc.paths[template]?.[method.toLowerCase()] : undefined;
    const stray = operation && !operation.requestBody && options.body === undefined && method !== "GET";
    const res = await call(
      app,
      method,
      path,
      stray
        ? { ...options, body: STRAY_BODY, headers: { ...options.headers, "content-type": "application/json" } }
        : options,
    );
    if (stray) this.strayBodies.add(`${method} ${template}`);
    if (!template || !operation) {
      this.violations.push(`${method} ${path} → ${res.status}: no such operation in the document`);
      return res;
    }
    this.seen.add(`${method} ${template}`);
    if (res.status !== expected) {
      this.surprises.push(`${method} ${path}: expected ${expected}, got ${res.status} ${res.text.slice(0, 200)}`);
    }
    const problem = this.check(operation, res);
    if (problem) this.violations.push(`${method} ${template} → ${res.status}: ${problem}`);
    return res;
  }

  private check(operation: Operation, res: Reply): string | undefined {
    const response = operation.responses[String(res.status)];
    if (!response) return `status not declared (declared: ${Object.keys(operation.responses).join(", ")})`;
    const declared = Object.keys(response.content ?? {});
    const contentType = res.headers.get("content-type");
    if (declared.length === 0) {
      return res.text === "" ? undefined : `no content declared, got a ${contentType} body: ${res.text.slice(0, 200)}`;
    }
    const media = contentType?.split(";")[0]?.trim().toLowerCase() ?? "";
    // A media range (`*/*`: a download, as stored) covers any type.
    const declaredAs = declared.includes(media) ? media : declared.includes("*/*") ? "*/*" : undefined;
    if (!declaredAs) return `Content-Type ${contentType} not declared (declared: ${declared.join(", ")})`;
    const schema = response.content?.[declaredAs]?.schema;
    if (!schema) return undefined;
    const isJson = media === "application/json";
    if (!isJson && declaredAs === "*/*") return undefined; // bytes as stored: nothing to validate
    if (isJson && res.json === undefined) return `body is not JSON: ${res.text.slice(0, 200)}`;
    const validate = this.validator(schema);
    if (validate(isJson ? res.json : res.text)) return undefined;
    return `body does not match the declared ${media} schema: ${this.ajv.errorsText(validate.errors)}`;
  }
}

let doc: OpenApiDocument;

beforeAll(async () => {
  const { app } = await makeApp();
  const res = await call(app, "GET", "/openapi.json");
  expect(res.status).toBe(200);
  doc = res.json;
});

describe("OpenAPI document: conventions", () => {
  test("every operation has a unique snake_case operationId", () => {
    const ids = operationsOf(doc).map(([key, operation]) => [key, operation.operationId] as const);
    expect(ids.filter(([, id]) => !/^[a-z]+(_[a-z]+)+$/.test(id ?? ""))).toEqual([]);
    const all = ids.map(([, id]) => id);
    expect(all.filter((id, i) => all.indexOf(id) !== i)).toEqual([]);
  });

  test("the export declares text/csv and application/x-ndjson, not text/plain", () => {
    const media = Object.keys(doc.paths[`${API}/users/export`]?.get?.responses["200"]?.content ?? {});
    expect(media).toContain("text/csv");
    expect(media).toContain("application/x-ndjson");
    expect(media).not.toContain("text/plain");
  });

  test("every 2xx response has a real description", () => {
    const generic = operationsOf(doc).flatMap(([key, operation]) =>
      Object.entries(operation.responses)
        .filter(([status]) => status.startsWith("2"))
        .filter(([, { description = "" }]) => !description.trim() || /^Response for status \d+$/.test(description))
        .map(([status, { description }]) => `${key} ${status}: ${JSON.stringify(description)}`),
    );
    expect(generic).toEqual([]);
  });

  test("request bodies are JSON only (an HTML form too on login; multipart on uploads; tus bytes on resumable uploads)", () => {
    const bodies = operationsOf(doc)
      .filter(([, operation]) => operation.requestBody)
      .map(([key, operation]) => ({ key, media: Object.keys(operation.requestBody?.content ?? {}).sort() }));
    expect(bodies.length).toBeGreaterThan(0);
    const expected = bodies.map(({ key }) => ({
      key,
      media:
        key === `POST ${API}/auth/login`
          ? ["application/json", "application/x-www-form-urlencoded"]
          : key.includes(`${API}/uploads/resumable`)
            ? ["application/offset+octet-stream"]
            : key === `POST ${API}/uploads` || key === `POST ${API}/uploads/`
              ? ["multipart/form-data"]
              : ["application/json"],
    }));
    expect(bodies).toEqual(expected);
  });
});

describe("OpenAPI document: the server answers what it declares", () => {
  test("a scenario through every operation gets only declared statuses, media types and bodies", async () => {
    const mails: MailMessage[] = [];
    const { app, deps } = await makeApp({}, { mailer: { send: async (mail) => void mails.push(mail) } });
    const proxy = new ValidatingProxy(doc);
    const send = (expected: number, method: string, path: string, options?: CallOptions) =>
      proxy.send(app, method, `${API}${path}`, expected, options);
    const bearer = (token: string | undefined) => ({ token: token ?? "missing" });

    // Health probes.
    await send(200, "GET", "/health");
    await send(200, "GET", "/health/live");
    await send(200, "GET", "/health/ready");
    await send(200, "GET", "/metrics");
    const guarded = await makeApp({ METRICS_TOKEN: "metrics-token-1" });
    await proxy.send(guarded.app, "GET", `${API}/metrics`, 401);

    // Registration, and the ways it is refused.
    const alice = { username: "alice", email: "alice@example.com", password: PASSWORD, name: "Alice" };
    const registered = await send(201, "POST", "/auth/register", { body: alice });
    await send(409, "POST", "/auth/register", { body: alice });
    await send(422, "POST", "/auth/register", { body: { ...alice, username: "alice2", email: "not-an-email" } });
    await send(415, "POST", "/auth/register", { body: "alice", headers: { "content-type": "text/plain" } });
    await send(400, "POST", "/auth/register", { body: "{", headers: { "content-type": "application/json" } });
    const oversized = JSON.stringify({ ...alice, name: "x".repeat(1024 * 1024) });
    await send(413, "POST", "/auth/register", { body: oversized, headers: { "content-type": "application/json" } });

    // Logging in: JSON, the OAuth2 form, wrong password, no identifier.
    const session = await send(200, "POST", "/auth/login", { body: { username: "alice", password: PASSWORD } });
    const form = new URLSearchParams({ grant_type: "password", username: "alice@example.com", password: PASSWORD });
    const formSession = await send(200, "POST", "/auth/login", { body: form });
    await send(401, "POST", "/auth/login", { body: { username: "alice", password: "wrong-password1" } });
    await send(422, "POST", "/auth/login", { body: { password: PASSWORD } });

    // Tokens.
    const refreshed = await send(200, "POST", "/auth/refresh", {
      body: { refresh_token: session.json?.refresh_token },
    });
    await send(401, "POST", "/auth/refresh", { body: { refresh_token: "not-a-token" } });
    const access = refreshed.json?.access_token as string | undefined;
    await send(200, "GET", "/auth/me", bearer(access));
    await send(401, "GET", "/auth/me");
    await send(204, "POST", "/auth/logout", {
      ...bearer(formSession.json?.access_token),
      body: { refresh_token: formSession.json?.refresh_token },
    });
    await send(401, "GET", "/auth/me", bearer(formSession.json?.access_token));

    // Password reset: the request is always accepted; a made-up token is refused.
    await send(202, "POST", "/auth/request-password-reset", { body: { email: alice.email } });
    await send(400, "POST", "/auth/reset-password", { body: { token: "made-up", new_password: "another123" } });
    await send(422, "POST", "/auth/reset-password", { body: { token: "made-up", new_password: "short" } });

    // My profile.
    const bob = await signUp(app, { username: "bob" });
    await send(200, "GET", "/users/me", bearer(access));
    await send(200, "PUT", "/users/me", { ...bearer(access), body: { name: "Alice L." } });
    await send(200, "PATCH", "/users/me", { ...bearer(access), body: { bio: "Reviews papers\non Tuesdays" } });
    await send(409, "PATCH", "/users/me", { ...bearer(access), body: { username: "bob" } });
    await send(422, "PATCH", "/users/me", { ...bearer(access), body: { email: "nope" } });
    await send(422, "POST", "/users/me/password", {
      ...bearer(access),
      body: { current_password: "wrong-password1", new_password: "another123" },
    });
    await send(204, "POST", "/users/me/password", {
      ...bearer(access),
      body: { current_password: PASSWORD, new_password: "another123" },
    });
    await send(403, "GET", "/users", bearer(access));
    await send(204, "DELETE", "/users/me", bearer(bob.access));
    await send(401, "GET", "/users/me", bearer(bob.access));

    // Administration.
    const root = await signUp(app, { username: "root" });
    await promote(deps.db, root.id);
    const admin = bearer((await login(app, "root")).access_token);
    await send(200, "GET", "/users?limit=5&sort=username&order=asc", admin);
    await send(422, "GET", "/users?limit=0", admin);
    await send(401, "GET", "/users");
    const carol = { username: "carol", email: "carol@example.com", password: PASSWORD, role: "admin" };
    const created = await send(201, "POST", "/users", { ...admin, body: carol });
    await send(409, "POST", "/users", { ...admin, body: carol });
    const carolId = created.json?.id ?? UNKNOWN_ID;
    await send(200, "GET", `/users/${carolId}`, admin);
    await send(200, "GET", `/users/${registered.json?.id ?? UNKNOWN_ID}`, admin);
    await send(404, "GET", `/users/${UNKNOWN_ID}`, admin);
    await send(422, "GET", "/users/not-a-uuid", admin);
    await send(200, "PATCH", `/users/${carolId}`, { ...admin, body: { name: "Carol", is_active: true } });
    await send(404, "PATCH", `/users/${UNKNOWN_ID}`, { ...admin, body: { name: "Nobody" } });
    await send(409, "PATCH", `/users/${carolId}`, { ...admin, body: { email: alice.email } });
    await send(200, "GET", "/users/export", admin);
    await send(200, "GET", "/users/export?format=json&role=user", admin);
    await send(422, "GET", "/users/export?format=xml", admin);
    await send(204, "DELETE", `/users/${carolId}`, admin);
    await send(404, "DELETE", `/users/${carolId}`, admin);
    // Carol is gone: root is the last active admin.
    await send(409, "DELETE", "/users/me", admin);
    await send(409, "DELETE", `/users/${root.id}`, admin);

    // Files: upload, the ways an upload is refused, listing, metadata, download (whole, ranged, cached,
    // unsatisfiable), public access, changes and deletion.
    const fileForm = (bytes: string, type = "text/plain") => {
      const form = new FormData();
      form.append("file", new File([bytes], "notes.txt", { type }));
      return form;
    };
    const uploaded = await send(201, "POST", "/uploads", { ...admin, body: fileForm("0123456789") });
    await send(201, "POST", "/uploads/", { ...admin, body: fileForm("second") });
    await send(415, "POST", "/uploads", { ...admin, body: fileForm("not a pdf", "application/pdf") });
    await send(400, "POST", "/uploads", { ...admin, body: "x", headers: { "content-type": "multipart/form-data" } });
    await send(422, "POST", "/uploads", { ...admin, body: new FormData() });
    await send(401, "POST", "/uploads", { body: fileForm("anonymous") });
    const fileId = uploaded.json?.id ?? UNKNOWN_ID;
    await send(200, "GET", "/uploads?sort=filename&order=asc", admin);
    await send(403, "GET", "/uploads?all=true", bearer(access));
    await send(200, "GET", `/uploads/${fileId}`, admin);
    await send(404, "GET", `/uploads/${fileId}`);
    const whole = await send(200, "GET", `/uploads/${fileId}/download`, admin);
    await send(206, "GET", `/uploads/${fileId}/download`, { ...admin, headers: { range: "bytes=2-5" } });
    await send(304, "GET", `/uploads/${fileId}/download`, {
      ...admin,
      headers: { "if-none-match": whole.headers.get("etag") ?? "" },
    });
    await send(416, "GET", `/uploads/${fileId}/download`, { ...admin, headers: { range: "bytes=99-" } });
    await send(200, "PATCH", `/uploads/${fileId}`, { ...admin, body: { filename: "renamed.txt", is_public: true } });
    await send(200, "GET", `/uploads/${fileId}/download`);
    await send(403, "PATCH", `/uploads/${fileId}`, { ...bearer(access), body: { filename: "mine.txt" } });
    await send(422, "PATCH", `/uploads/${fileId}`, { ...admin, body: { filename: "" } });

    // Retries with an Idempotency-Key, and share links: created, listed, used, revoked.
    const retried = { ...admin, headers: { "idempotency-key": '"scenario-key"' } };
    await send(201, "POST", "/uploads", { ...retried, body: fileForm("retried") });
    await send(201, "POST", "/uploads", { ...retried, body: fileForm("retried") });
    await send(422, "POST", "/uploads", { ...retried, body: fileForm("other bytes") });
    const link = await send(201, "POST", `/uploads/${fileId}/links`, { ...admin, body: { expires_in_seconds: 600 } });
    await send(422, "POST", `/uploads/${fileId}/links`, { ...admin, body: { expires_in_seconds: 0 } });
    await send(404, "POST", `/uploads/${UNKNOWN_ID}/links`, { ...admin, body: { expires_in_seconds: 60 } });
    await send(403, "POST", `/uploads/${fileId}/links`, { ...bearer(access), body: { expires_in_seconds: 60 } });
    await send(200, "GET", `/uploads/${fileId}/links`, admin);
    await send(401, "GET", `/uploads/${fileId}/links`);
    const sharedPath = new URL(link.json?.url ?? "http://localhost/none").pathname.slice(API.length);
    const shared = await send(200, "GET", sharedPath);
    await send(206, "GET", sharedPath, { headers: { range: "bytes=0-1" } });
    await send(304, "GET", sharedPath, { headers: { "if-none-match": shared.headers.get("etag") ?? "" } });
    await send(416, "GET", sharedPath, { headers: { range: "bytes=99-" } });
    await send(404, "GET", `/shared/${"A".repeat(43)}`);
    await send(422, "GET", `/shared/${"A".repeat(300)}`);
    await send(204, "DELETE", `/uploads/${fileId}/links/${link.json?.id ?? UNKNOWN_ID}`, admin);
    await send(404, "DELETE", `/uploads/${fileId}/links/${link.json?.id ?? UNKNOWN_ID}`, admin);
    await send(422, "DELETE", `/uploads/${fileId}/links/not-a-uuid`, admin);
    await send(404, "GET", sharedPath);

    await send(204, "DELETE", `/uploads/${fileId}`, admin);
    await send(404, "DELETE", `/uploads/${fileId}`, admin);

    // Resumable uploads (tus): discovery, creation with and without bytes, status, bytes, refusals, termination.
    const b64 = (text: string) => Buffer.from(text).toString("base64");
    const meta = (type = "text/plain") => `filename ${b64("notes.txt")},filetype ${b64(type)}`;
    const tus = (headers: Record<string, string> = {}) => ({
      ...admin,
      headers: { "tus-resumable": "1.0.0", ...headers },
    });
    const bytesAt = (offset: number, body: string, type = "application/offset+octet-stream") => ({
      ...tus({ "upload-offset": String(offset), "content-type": type }),
      body,
    });
    await send(204, "OPTIONS", "/uploads/resumable");
    await send(204, "OPTIONS", `/uploads/resumable/${UNKNOWN_ID}`);
    const started = await send(
      201,
      "POST",
      "/uploads/resumable",
      tus({ "upload-length": "10", "upload-metadata": meta() }),
    );
    const tusPath = `/uploads/resumable/${started.json?.id ?? UNKNOWN_ID}`;
    await send(200, "HEAD", tusPath, tus());
    await send(200, "GET", tusPath, admin);
    await send(409, "PATCH", tusPath, bytesAt(3, "abc"));
    await send(415, "PATCH", tusPath, bytesAt(0, "abc", "text/plain"));
    await send(413, "PATCH", tusPath, bytesAt(0, "0123456789ABC"));
    await send(400, "PATCH", tusPath, bytesAt(Number.NaN, "abc"));
    await send(204, "PATCH", tusPath, bytesAt(0, "01234"));
    await send(412, "PATCH", tusPath, { ...admin, headers: { "upload-offset": "5" }, body: "56789" });
    await send(401, "PATCH", tusPath, { headers: { "tus-resumable": "1.0.0", "upload-offset": "5" }, body: "56789" });
    await send(422, "PATCH", "/uploads/resumable/not-a-uuid", bytesAt(5, "56789"));
    await send(401, "HEAD", tusPath, { headers: { "tus-resumable": "1.0.0" } });
    await send(204, "POST", tusPath, {
      ...bytesAt(5, "56"),
      headers: { ...bytesAt(5, "56").headers, "x-http-method-override": "PATCH" },
    });
    await send(400, "POST", tusPath, tus());
    await send(412, "DELETE", tusPath, admin);
    await send(204, "DELETE", tusPath, tus());
    await send(404, "GET", tusPath, admin);
    await send(404, "PATCH", tusPath, bytesAt(5, "56789"));
    await send(404, "DELETE", tusPath, tus());
    await send(422, "DELETE", "/uploads/resumable/not-a-uuid", tus());
    await send(401, "GET", tusPath);
    await send(422, "GET", "/uploads/resumable/not-a-uuid", admin);
    await send(201, "POST", "/uploads/resumable", {
      ...tus({ "upload-length": "5", "upload-metadata": meta(), "content-type": "application/offset+octet-stream" }),
      body: "hello",
    });
    await send(400, "POST", "/uploads/resumable", tus({ "upload-metadata": meta() }));
    await send(413, "POST", "/uploads/resumable", tus({ "upload-length": String(2 ** 40), "upload-metadata": meta() }));
    await send(
      415,
      "POST",
      "/uploads/resumable",
      tus({ "upload-length": "5", "upload-metadata": meta("application/x-msdownload") }),
    );
    const notBool = `${meta()},is_public ${b64("maybe")}`;
    await send(422, "POST", "/uploads/resumable", tus({ "upload-length": "5", "upload-metadata": notBool }));
    await send(412, "POST", "/uploads/resumable", { ...admin, headers: { "upload-length": "5" } });
    await send(401, "POST", "/uploads/resumable", { headers: { "tus-resumable": "1.0.0", "upload-length": "5" } });

    // Real-time: the socket's refusals (upgrades are tested over real sockets) and notifications.
    await send(401, "GET", "/ws");
    await send(400, "GET", `/ws?token=${admin.token}`);
    await send(202, "POST", "/admin/notifications", { ...admin, body: { message: "Maintenance at noon" } });
    await send(403, "POST", "/admin/notifications", { ...bearer(access), body: { message: "Hello" } });
    await send(422, "POST", "/admin/notifications", { ...admin, body: { message: "Hi", user_ids: [] } });

    // Sessions.
    const dora = await signUp(app, { username: "dora" });
    const doraToken = bearer(dora.access);
    await login(app, "dora");
    const doraSessions = await send(200, "GET", "/auth/sessions", doraToken);
    const otherSession = doraSessions.json?.items?.find((s: { current: boolean }) => !s.current)?.id ?? UNKNOWN_ID;
    await send(204, "DELETE", `/auth/sessions/${otherSession}`, doraToken);
    await send(404, "DELETE", `/auth/sessions/${otherSession}`, doraToken);
    await send(422, "DELETE", "/auth/sessions/not-a-uuid", doraToken);
    await send(401, "GET", "/auth/sessions");

    // Email verification.
    const verifyToken = (mails.findLast((m) => m.to === dora.email)?.text.match(/[?&]token=([\w-]+)/) ?? [])[1];
    await send(400, "POST", "/auth/verify-email", { body: { token: "made-up" } });
    await send(422, "POST", "/auth/verify-email", { body: {} });
    await send(202, "POST", "/auth/request-verification", doraToken);
    await send(200, "POST", "/auth/verify-email", { body: { token: verifyToken ?? "missing" } });
    await send(409, "POST", "/auth/request-verification", doraToken);
    await send(401, "POST", "/auth/request-verification");
    const strict = await makeApp({ REQUIRE_VERIFIED_EMAIL: "true" });
    const unverified = await signUp(strict.app);
    await proxy.send(strict.app, "POST", `${API}/uploads`, 403, { token: unverified.access, body: fileForm("x") });
    await proxy.send(strict.app, "POST", `${API}/uploads/resumable`, 403, {
      token: unverified.access,
      headers: { "tus-resumable": "1.0.0", "upload-length": "5", "upload-metadata": meta() },
    });

    // TOTP: enrolment, the two-step login, turning it off (by the user and by an admin).
    const password = { password: PASSWORD };
    await send(422, "POST", "/auth/mfa/totp", { ...doraToken, body: { password: "wrong-password1" } });
    await send(409, "POST", "/auth/mfa/totp/confirm", { ...doraToken, body: { code: "123456" } });
    const enrolment = await send(200, "POST", "/auth/mfa/totp", { ...doraToken, body: password });
    const totp = new TOTP({ secret: Secret.fromBase32(enrolment.json?.secret ?? "AAAA") });
    const notNow = (code: string) => (code === "000000" ? "000001" : "000000");
    await send(422, "POST", "/auth/mfa/totp/confirm", { ...doraToken, body: { code: notNow(totp.generate()) } });
    const confirmed = await send(200, "POST", "/auth/mfa/totp/confirm", {
      ...doraToken,
      body: { code: totp.generate() },
    });
    const [firstCode, secondCode] = (confirmed.json?.recovery_codes ?? []) as string[];
    await send(409, "POST", "/auth/mfa/totp", { ...doraToken, body: password });
    const challenge = await send(200, "POST", "/auth/login", { body: { username: "dora", password: PASSWORD } });
    const mfaToken = challenge.json?.mfa_token ?? "missing";
    await send(401, "POST", "/auth/login/mfa", { body: { mfa_token: mfaToken, code: notNow(totp.generate()) } });
    await send(200, "POST", "/auth/login/mfa", { body: { mfa_token: mfaToken, code: firstCode ?? "missing" } });
    await send(422, "POST", "/auth/login/mfa", { body: { mfa_token: mfaToken } });
    await send(422, "DELETE", "/auth/mfa/totp", { ...doraToken, body: { ...password, code: firstCode ?? "x" } });
    await send(204, "DELETE", "/auth/mfa/totp", { ...doraToken, body: { ...password, code: secondCode ?? "x" } });
    await send(409, "DELETE", "/auth/mfa/totp", { ...doraToken, body: { ...password, code: "123456" } });
    await send(204, "DELETE", `/users/${dora.id}/mfa`, admin);
    await send(404, "DELETE", `/users/${UNKNOWN_ID}/mfa`, admin);
    await send(403, "DELETE", `/users/${dora.id}/mfa`, doraToken);

    // Passkeys: register, list, sign in (once per challenge), malformed answers, remove.
    const authenticator = new SoftAuthenticator("http://localhost:5173");
    const creation = await send(200, "POST", "/auth/passkeys/register/options", { ...doraToken, body: {} });
    const attestation = authenticator.register(creation.json);
    const added = await send(201, "POST", "/auth/passkeys/register/verify?name=Phone", {
      ...doraToken,
      body: attestation,
    });
    await send(400, "POST", "/auth/passkeys/register/verify", { ...doraToken, body: attestation });
    await send(422, "POST", "/auth/passkeys/register/verify", { ...doraToken, body: {} });
    await send(200, "GET", "/auth/passkeys", doraToken);
    const request = await send(200, "POST", "/auth/passkeys/login/options", { body: {} });
    const assertion = authenticator.authenticate(request.json);
    await send(200, "POST", "/auth/passkeys/login/verify", { body: assertion });
    await send(401, "POST", "/auth/passkeys/login/verify", { body: assertion });
    const unreadable = { ...assertion, response: { ...assertion.response, clientDataJSON: "bm90IGpzb24" } };
    await send(400, "POST", "/auth/passkeys/login/verify", { body: unreadable });
    await send(422, "POST", "/auth/passkeys/login/verify", { body: {} });
    await send(204, "DELETE", `/auth/passkeys/${added.json?.id ?? UNKNOWN_ID}`, doraToken);
    await send(404, "DELETE", `/auth/passkeys/${added.json?.id ?? UNKNOWN_ID}`, doraToken);
    const noPasskeys = await makeApp({ ALLOWED_ORIGINS: "*" });
    await proxy.send(noPasskeys.app, "POST", `${API}/auth/passkeys/login/options`, 404, { body: {} });

    // Every session at once.
    await send(204, "POST", "/auth/logout-all", doraToken);
    await send(401, "POST", "/auth/logout-all", doraToken);

    // The audit log.
    await send(200, "GET", "/admin/audit?limit=5&action=login.succeeded", admin);
    await send(422, "GET", "/admin/audit?since=yesterday", admin);
    await send(403, "GET", "/admin/audit", bearer(access));
    await send(401, "GET", "/admin/audit");
    await send(200, "GET", "/admin/audit/export?action=login.failed", admin);
    await send(422, "GET", "/admin/audit/export?actor_id=nope", admin);
    await send(403, "GET", "/admin/audit/export", bearer(access));

    // Rate limited: the second registration from one client within the hour (its own 429), then any request
    // past the default per-client limit (the 429 every limited route shares, a $ref to Error).
    const limited = await makeApp({
      RATE_LIMIT_ENABLED: "true",
      RATE_LIMIT_REGISTER: "1/hour",
      RATE_LIMIT_DEFAULT: "2/minute",
    });
    const register = (n: number) => ({
      body: { username: `limited${n}`, email: `limited${n}@example.com`, password: PASSWORD },
    });
    await proxy.send(limited.app, "POST", `${API}/auth/register`, 201, register(1));
    await proxy.send(limited.app, "POST", `${API}/auth/register`, 429, register(2));
    await proxy.send(limited.app, "GET", `${API}/users/me`, 429);

    const unexercised = operationsOf(doc)
      .map(([key]) => key)
      .filter((key) => !proxy.seen.has(key));
    const bodyless = operationsOf(doc).filter(([key, operation]) => !operation.requestBody && !key.startsWith("GET "));
    expect(bodyless.length).toBeGreaterThan(0);
    const noStrayBody = bodyless.map(([key]) => key).filter((key) => !proxy.strayBodies.has(key));
    expect({ violations: proxy.violations, surprises: proxy.surprises, unexercised, noStrayBody }).toEqual({
      violations: [],
      surprises: [],
      unexercised: [],
      noStrayBody: [],
    });
  });
});
