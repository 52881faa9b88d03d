/** Share links: created by the owner or an admin, used by anyone holding the URL, revoked, expired, audited. */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import { createServices } from "../../../src/app";
import { auditEvents, shareLinks } from "../../../src/db/schema";
import { MAX_ACTIVE_LINKS } from "../../../src/modules/files/links";
import { API, call, expectError, makeApp, promote, signUp, type TestContext } from "../../support";
import { SAMPLES, sha256, upload } from "./fixtures";

// The preload's setDefaultTimeout reaches only the first file of a run (Bun 1.4.5): this file sets its own.
setDefaultTimeout(30_000);

const createLink = (
  ctx: TestContext,
  fileId: string,
  token: string | undefined,
  seconds: unknown = 3600,
  headers = {},
) => call(ctx.app, "POST", `${API}/uploads/${fileId}/links`, { token, body: { expires_in_seconds: seconds }, headers });

/** The path of a link's URL, to call through `app.handle`. */
const pathOf = (url: string) => new URL(url).pathname;

async function withFile(overrides: Record<string, string> = {}) {
  const ctx = await makeApp(overrides);
  const owner = await signUp(ctx.app);
  const file = (await upload(ctx, SAMPLES.text, { name: "review «draft».txt", token: owner.access })).json;
  return { ctx, owner, file };
}

const linkRows = (ctx: TestContext) => ctx.deps.db.orm.select().from(shareLinks);

describe("share links", () => {
  test("the owner creates one; anyone with its URL downloads with the download headers, ranges and 304", async () => {
    const { ctx, owner, file } = await withFile();
    const before = Date.now();
    const created = await createLink(ctx, file.id, owner.access, 600);
    expect(created.status).toBe(201);
    expect(created.json).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      url: expect.stringMatching(/^http:\/\/localhost\/api\/v1\/shared\/[A-Za-z0-9_-]{43}$/),
      expires_at: expect.stringMatching(/Z$/),
    });
    const expiresAt = Date.parse(created.json.expires_at);
    expect(expiresAt - before).toBeGreaterThanOrEqual(600_000 - 1000);
    expect(expiresAt - before).toBeLessThanOrEqual(600_000 + 60_000);

    // No token: the URL is the credential.
    const shared = await call(ctx.app, "GET", pathOf(created.json.url));
    const direct = await call(ctx.app, "GET", `${API}/uploads/${file.id}/download`, { token: owner.access });
    expect(shared.status).toBe(200);
    expect(shared.text).toBe(new TextDecoder().decode(SAMPLES.text));
    for (const header of [
      "content-type",
      "content-length",
      "content-disposition",
      "etag",
      "accept-ranges",
      "cache-control",
      "content-security-policy",
      "x-content-type-options",
    ]) {
      expect({ header, value: shared.headers.get(header) }).toEqual({ header, value: direct.headers.get(header) });
    }
    expect(shared.headers.get("content-security-policy")).toBe("sandbox");
    expect(shared.headers.get("cache-control")).toBe("private, no-cache");

    const part = await call(ctx.app, "GET", pathOf(created.json.url), { headers: { range: "bytes=0-7" } });
    expect([part.status, part.text, part.headers.get("content-range")]).toEqual([
      206,
      "Reviewer",
      `bytes 0-7/${SAMPLES.text.byteLength}`,
    ]);
    const unchanged = await call(ctx.app, "GET", pathOf(created.json.url), {
      headers: { "if-none-match": `"${sha256(SAMPLES.text)}"` },
    });
    expect(unchanged.status).toBe(304);
    const beyond = await call(ctx.app, "GET", pathOf(created.json.url), { headers: { range: "bytes=9999-" } });
    expectError(beyond, 416, "RANGE_NOT_SATISFIABLE");
  });

  test("the token is shown once: stored as its SHA-256 only, never listed; the list has the active links", async () => {
    const { ctx, owner, file } = await withFile();
    const first = await createLink(ctx, file.id, owner.access, 60);
    const second = await createLink(ctx, file.id, owner.access, 120);
    const token = first.json.url.split("/").at(-1) as string;

    const rows = await linkRows(ctx);
    const stored = rows.find((row) => row.id === first.json.id);
    expect(stored?.tokenHash).toBe(createHash("sha256").update(token).digest("hex"));
    expect(JSON.stringify(rows)).not.toContain(token);

    const listed = await call(ctx.app, "GET", `${API}/uploads/${file.id}/links`, { token: owner.access });
    expect(listed.status).toBe(200);
    expect(listed.json).toEqual({
      items: [
        {
          id: second.json.id,
          created_at: expect.any(String),
          expires_at: second.json.expires_at,
          created_by: owner.id,
        },
        { id: first.json.id, created_at: expect.any(String), expires_at: first.json.expires_at, created_by: owner.id },
      ],
    });
    expect(listed.text).not.toContain(token);
  });

  test("revoked, expired, unknown or malformed: 404; revoking twice is a 404; expired links are not listed, and pruned", async () => {
    const { ctx, owner, file } = await withFile();
    const revoked = await createLink(ctx, file.id, owner.access);
    const expired = await createLink(ctx, file.id, owner.access);
    const kept = await createLink(ctx, file.id, owner.access);

    const revoke = (linkId: string) =>
      call(ctx.app, "DELETE", `${API}/uploads/${file.id}/links/${linkId}`, { token: owner.access });
    expect((await revoke(revoked.json.id)).status).toBe(204);
    expectError(await call(ctx.app, "GET", pathOf(revoked.json.url)), 404, "NOT_FOUND");
    expectError(await revoke(revoked.json.id), 404, "NOT_FOUND");

    await ctx.deps.db.orm
      .update(shareLinks)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(shareLinks.id, expired.json.id));
    expectError(await call(ctx.app, "GET", pathOf(expired.json.url)), 404, "NOT_FOUND");
    expectError(await revoke(expired.json.id), 404, "NOT_FOUND");

    const listed = await call(ctx.app, "GET", `${API}/uploads/${file.id}/links`, { token: owner.access });
    expect(listed.json.items.map((link: { id: string }) => link.id)).toEqual([kept.json.id]);
    expect((await call(ctx.app, "GET", pathOf(kept.json.url))).status).toBe(200);

    // Unknown tokens of the right shape, and anything else, are the same 404.
    const unknown = `${API}/shared/${"A".repeat(43)}`;
    for (const path of [unknown, `${API}/shared/abc`, `${API}/shared/${"A".repeat(42)}%2F`]) {
      expectError(await call(ctx.app, "GET", path), 404, "NOT_FOUND");
    }

    expect(await createServices(ctx.deps).files.prune()).toEqual({ links: 1, keys: 0 });
    expect((await linkRows(ctx)).map((row) => row.id)).toEqual([kept.json.id]);
  });

  test("a deleted file, or a deleted owner, takes its links with it", async () => {
    const { ctx, owner, file } = await withFile();
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const onFile = await createLink(ctx, file.id, owner.access);
    expect((await call(ctx.app, "DELETE", `${API}/uploads/${file.id}`, { token: owner.access })).status).toBe(204);
    expectError(await call(ctx.app, "GET", pathOf(onFile.json.url)), 404, "NOT_FOUND");
    expect(await linkRows(ctx)).toEqual([]);

    const other = (await upload(ctx, SAMPLES.pdf, { name: "p.pdf", type: "application/pdf", token: owner.access }))
      .json;
    const onOther = await createLink(ctx, other.id, owner.access);
    expect((await call(ctx.app, "DELETE", `${API}/users/${owner.id}`, { token: admin.access })).status).toBe(204);
    expectError(await call(ctx.app, "GET", pathOf(onOther.json.url)), 404, "NOT_FOUND");
    expect(await linkRows(ctx)).toEqual([]);
  });

  test("who may: the owner and admins; another user's private file is a 404, a public one a 403; anonymous is a 401", async () => {
    const { ctx, owner, file } = await withFile();
    const [stranger, admin] = [await signUp(ctx.app), await signUp(ctx.app)];
    await promote(ctx.deps.db, admin.id);
    const publicFile = (await upload(ctx, SAMPLES.text, { token: owner.access, isPublic: "true" })).json;

    expectError(await createLink(ctx, file.id, stranger.access), 404, "NOT_FOUND");
    expectError(await createLink(ctx, publicFile.id, stranger.access), 403, "PERMISSION_DENIED");
    expectError(await createLink(ctx, file.id, undefined), 401, "AUTHENTICATION_REQUIRED");
    expectError(
      await call(ctx.app, "GET", `${API}/uploads/${publicFile.id}/links`, { token: stranger.access }),
      403,
      "PERMISSION_DENIED",
    );

    const byAdmin = await createLink(ctx, file.id, admin.access);
    expect(byAdmin.status).toBe(201);
    const listed = await call(ctx.app, "GET", `${API}/uploads/${file.id}/links`, { token: owner.access });
    expect(listed.json.items[0].created_by).toBe(admin.id);
    // A stranger cannot revoke it, even knowing its id; the owner can.
    const path = `${API}/uploads/${file.id}/links/${byAdmin.json.id}`;
    expectError(await call(ctx.app, "DELETE", path, { token: stranger.access }), 404, "NOT_FOUND");
    expect((await call(ctx.app, "DELETE", path, { token: owner.access })).status).toBe(204);
    // A link id under another file is not found.
    const other = await createLink(ctx, publicFile.id, owner.access);
    expectError(
      await call(ctx.app, "DELETE", `${API}/uploads/${file.id}/links/${other.json.id}`, { token: owner.access }),
      404,
      "NOT_FOUND",
    );
  });

  test("lifetime 1 s to 30 days; at most 100 active links per file", async () => {
    const { ctx, owner, file } = await withFile();
    for (const bad of [0, -1, 30 * 86_400 + 1, 1.5, "soon", null]) {
      expectError(await createLink(ctx, file.id, owner.access, bad), 422, "VALIDATION_ERROR", ["expires_in_seconds"]);
    }
    // Another file's link: this one may well expire before the count below.
    const other = (await upload(ctx, SAMPLES.pdf, { name: "p.pdf", type: "application/pdf", token: owner.access }))
      .json;
    expect((await createLink(ctx, other.id, owner.access, 1)).status).toBe(201);
    expect((await createLink(ctx, file.id, owner.access, 30 * 86_400)).status).toBe(201);
    for (let made = 1; made < MAX_ACTIVE_LINKS; made++) {
      expect((await createLink(ctx, file.id, owner.access)).status).toBe(201);
    }
    expectError(await createLink(ctx, file.id, owner.access), 409, "CONFLICT");
    expect((await linkRows(ctx)).filter((row) => row.fileId === file.id).length).toBe(MAX_ACTIVE_LINKS);
  });

  test("the URL is built on PUBLIC_URL; without it on the request's origin, the proxy's only with TRUST_PROXY", async () => {
    const proxied = { "x-forwarded-proto": "https", "x-forwarded-host": "files.example.org" };
    const direct = await withFile();
    const plain = await createLink(direct.ctx, direct.file.id, direct.owner.access, 60, proxied);
    expect(plain.json.url).toStartWith("http://localhost/api/v1/shared/");

    const trusting = await withFile({ TRUST_PROXY: "true" });
    const behind = await createLink(trusting.ctx, trusting.file.id, trusting.owner.access, 60, proxied);
    expect(behind.json.url).toStartWith("https://files.example.org/api/v1/shared/");

    const configured = await withFile({ PUBLIC_URL: "https://reviews.example.com/backend/", TRUST_PROXY: "true" });
    const link = await createLink(configured.ctx, configured.file.id, configured.owner.access, 60, proxied);
    expect(link.json.url).toMatch(/^https:\/\/reviews\.example\.com\/backend\/api\/v1\/shared\/[A-Za-z0-9_-]{43}$/);
  });

  test("limited per client IP like every request (RATE_LIMIT_DEFAULT)", async () => {
    // Registration, login, the upload and the link take the IP's first 4 requests.
    const { ctx, owner, file } = await withFile({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_DEFAULT: "6/minute" });
    const link = await createLink(ctx, file.id, owner.access);
    expect((await call(ctx.app, "GET", pathOf(link.json.url))).status).toBe(200);
    // Guesses count the same as downloads.
    expectError(await call(ctx.app, "GET", `${API}/shared/${"A".repeat(43)}`), 404, "NOT_FOUND");
    const limited = await call(ctx.app, "GET", `${API}/shared/${"A".repeat(43)}`);
    expectError(limited, 429, "RATE_LIMITED");
    expect(limited.headers.get("retry-after")).toMatch(/^\d+$/);
    expectError(await call(ctx.app, "GET", pathOf(link.json.url)), 429, "RATE_LIMITED");
  });
});

describe("audit of share links", () => {
  const events = async (ctx: TestContext) =>
    (await ctx.deps.db.orm.select().from(auditEvents).orderBy(auditEvents.at, auditEvents.id)).filter(
      (event) => event.action.startsWith("share_link.") || event.action === "file.downloaded",
    );

  test("created and revoked, each with the link as target; a download through a link, by nobody in particular", async () => {
    const { ctx, owner, file } = await withFile();
    const link = await createLink(ctx, file.id, owner.access, 60, { "x-request-id": "link-create-1" });
    expect((await call(ctx.app, "GET", pathOf(link.json.url), { headers: { "user-agent": "curl/8" } })).status).toBe(
      200,
    );
    const etag = `"${sha256(SAMPLES.text)}"`;
    expect((await call(ctx.app, "GET", pathOf(link.json.url), { headers: { "if-none-match": etag } })).status).toBe(
      304,
    );
    const revoked = await call(ctx.app, "DELETE", `${API}/uploads/${file.id}/links/${link.json.id}`, {
      token: owner.access,
    });
    expect(revoked.status).toBe(204);

    const recorded = await events(ctx);
    expect(recorded.map((event) => [event.action, event.actorId, event.targetType, event.targetId])).toEqual([
      ["share_link.created", owner.id, "share_link", link.json.id],
      ["file.downloaded", null, "file", file.id],
      ["share_link.revoked", owner.id, "share_link", link.json.id],
    ]);
    expect(recorded[0]).toMatchObject({
      requestId: "link-create-1",
      details: { file_id: file.id, owner_id: owner.id, expires_at: link.json.expires_at },
    });
    expect(recorded[1]).toMatchObject({
      userAgent: "curl/8",
      details: { owner_id: owner.id, via: "share_link", share_link_id: link.json.id, status: 200 },
    });
    const token = link.json.url.split("/").at(-1);
    expect(JSON.stringify(recorded)).not.toContain(token);
  });

  test("the event is written in the link's own transaction: when it cannot be, there is no link", async () => {
    const { ctx, owner, file } = await withFile();
    const link = await createLink(ctx, file.id, owner.access);
    const { db } = ctx.deps;
    await db.orm.execute(sql`create or replace function refuse_share_link_events() returns trigger language plpgsql as $$
      begin if new.action like 'share_link.%' then raise exception 'audit refused'; end if; return new; end $$`);
    await db.orm.execute(sql`create trigger refuse_share_link_events before insert on audit_events
      for each row execute function refuse_share_link_events()`);
    try {
      expect((await createLink(ctx, file.id, owner.access)).status).toBe(500);
      const revoke = await call(ctx.app, "DELETE", `${API}/uploads/${file.id}/links/${link.json.id}`, {
        token: owner.access,
      });
      expect(revoke.status).toBe(500);
    } finally {
      await db.orm.execute(sql`drop trigger refuse_share_link_events on audit_events`);
      await db.orm.execute(sql`drop function refuse_share_link_events()`);
    }
    // Neither the second link nor the revocation happened.
    expect((await linkRows(ctx)).map((row) => row.id)).toEqual([link.json.id]);
    expect((await call(ctx.app, "GET", pathOf(link.json.url))).status).toBe(200);
  });
});
