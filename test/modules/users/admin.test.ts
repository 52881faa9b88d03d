import { describe, expect, test } from "bun:test";
import { files } from "../../../src/db/schema";
import { expectError, expectUnauthorized, expectUser, PASSWORD, type UsersApp, usersApp } from "./fixtures";

const UNKNOWN_ID = "0196f0a2-7c1e-7000-8000-000000000000";

/** An admin plus a set of users inserted directly, with fixed creation times a day apart. */
async function withDirectory(t: UsersApp) {
  const admin = await t.signUp("root", { admin: true, email: "root@admin.test" });
  const day = (n: number) => new Date(Date.UTC(2025, 0, n, 12));
  const rows = await t.insertUsers([
    { username: "alice", email: "alice@example.com", name: "Alice Liddell", createdAt: day(1) },
    { username: "bob", email: "bob@mail.test", name: "Robert 50% Smith", createdAt: day(2) },
    { username: "carol_x", email: "carol@example.com", name: "Carol", role: "admin", createdAt: day(3) },
    { username: "dave", email: "dave@example.com", name: "D\\Ave", isActive: false, createdAt: day(4) },
    { username: "carolxy", email: "erin@example.com", name: "Erin ALICEson", createdAt: day(5) },
  ]);
  return { admin, rows, day };
}

const usernames = (res: { json: any }) => res.json.items.map((u: { username: string }) => u.username);

describe("admin routes: access", () => {
  const routes: [string, string, unknown?][] = [
    ["GET", "/users"],
    ["POST", "/users", { username: "newbie", email: "newbie@example.com", password: PASSWORD }],
    ["GET", "/users/export"],
    ["GET", `/users/${UNKNOWN_ID}`],
    ["PATCH", `/users/${UNKNOWN_ID}`, { bio: "x" }],
    ["DELETE", `/users/${UNKNOWN_ID}`],
  ];

  test("anonymous → 401 with a bearer challenge on every admin route", async () => {
    const t = await usersApp();
    for (const [method, path, body] of routes) {
      expectUnauthorized(await t.req(method, path, { body }), "AUTHENTICATION_REQUIRED");
    }
  });

  test("a plain user → 403 PERMISSION_DENIED on every admin route, and nothing is created", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    for (const [method, path, body] of routes) {
      expectError(await t.req(method, path, { token: ada.access, body }), 403, "PERMISSION_DENIED");
    }
    expect((await t.login("newbie")).status).toBe(401);
  });
});

describe("GET /users", () => {
  test("pages with offset/limit and reports the true total; defaults offset 0, limit 20, newest first", async () => {
    const t = await usersApp();
    await withDirectory(t);
    const all = await t.req("GET", "/users", { token: (await t.session("root")).access });
    expect(all.status).toBe(200);
    expect(all.json).toMatchObject({ total: 6, offset: 0, limit: 20 });
    for (const user of all.json.items) expectUser(user);
    expect(usernames(all)).toEqual(["root", "carolxy", "dave", "carol_x", "bob", "alice"]);

    const page = await t.req("GET", "/users?offset=2&limit=2", { token: (await t.session("root")).access });
    expect(page.json).toMatchObject({ total: 6, offset: 2, limit: 2 });
    expect(usernames(page)).toEqual(["dave", "carol_x"]);
    const past = await t.req("GET", "/users?offset=10&limit=5", { token: (await t.session("root")).access });
    expect(past.json).toMatchObject({ items: [], total: 6, offset: 10, limit: 5 });
  });

  test("422 naming the parameter for out-of-range paging, unknown sort or order", async () => {
    const t = await usersApp();
    const { admin } = await withDirectory(t);
    const cases: [string, string][] = [
      ["limit=101", "limit"],
      ["limit=0", "limit"],
      ["limit=ten", "limit"],
      ["offset=-1", "offset"],
      ["sort=password_hash", "sort"],
      ["order=sideways", "order"],
      ["role=superuser", "role"],
      ["created_after=yesterday", "created_after"],
    ];
    const verdict = async (query: string) => {
      const res = await t.req("GET", `/users?${query}`, { token: admin.access });
      return {
        query,
        status: res.status,
        code: res.json.error?.code,
        fields: res.json.error?.details.map((d: any) => d.field),
      };
    };
    const expected = cases.map(([query, field]) => ({ query, status: 422, code: "VALIDATION_ERROR", fields: [field] }));
    expect(await Promise.all(cases.map(([query]) => verdict(query)))).toEqual(expected);
  });

  test("q matches a substring of username, email or name, ignoring case", async () => {
    const t = await usersApp();
    const { admin } = await withDirectory(t);
    const search = async (q: string) =>
      usernames(
        await t.req("GET", `/users?sort=username&order=asc&q=${encodeURIComponent(q)}`, { token: admin.access }),
      );
    expect(await search("ALICE")).toEqual(["alice", "carolxy"]); // username / name
    expect(await search("MAIL.test")).toEqual(["bob"]); // email
    expect(await search("liddell")).toEqual(["alice"]); // name only
    expect(await search("nobody-like-this")).toEqual([]);
  });

  test("%, _ and \\ in q are literal characters, not wildcards or escapes", async () => {
    const t = await usersApp();
    const { admin } = await withDirectory(t);
    const list = (q: string) =>
      t.req("GET", `/users?sort=username&order=asc&q=${encodeURIComponent(q)}`, { token: admin.access });
    const percent = await list("%");
    expect(usernames(percent)).toEqual(["bob"]);
    expect(percent.json.total).toBe(1);
    expect(usernames(await list("carol_"))).toEqual(["carol_x"]);
    expect(usernames(await list("0% S"))).toEqual(["bob"]);
    expect(usernames(await list("\\"))).toEqual(["dave"]);
    expect(usernames(await list("d\\a"))).toEqual(["dave"]);
  });

  test("filters by role, is_active and creation time (each alone and together), with a matching total", async () => {
    const t = await usersApp();
    const { admin } = await withDirectory(t);
    const cases: [string, string[]][] = [
      ["role=admin", ["carol_x", "root"]],
      ["role=user", ["alice", "bob", "carolxy", "dave"]],
      ["is_active=false", ["dave"]],
      ["is_active=true", ["alice", "bob", "carol_x", "carolxy", "root"]],
      ["created_after=2025-01-02T00:00:00Z&created_before=2025-01-04T23:00:00Z", ["bob", "carol_x", "dave"]],
      ["created_before=2025-01-02T00:00:00Z", ["alice"]],
      ["created_after=2025-01-03T00:00:00Z&created_before=2025-01-06T00:00:00Z&is_active=true", ["carol_x", "carolxy"]],
      ["q=carol&role=user", ["carolxy"]],
    ];
    for (const [query, expected] of cases) {
      const res = await t.req("GET", `/users?sort=username&order=asc&${query}`, { token: admin.access });
      expect({ query, names: usernames(res), total: res.json.total }).toEqual({
        query,
        names: expected,
        total: expected.length,
      });
    }
  });

  test("sorts by created_at, username or email, ascending or descending", async () => {
    const t = await usersApp();
    const { admin } = await withDirectory(t);
    const filter = "role=user"; // the five inserted users minus carol_x: fixed creation times
    const cases: [string, string[]][] = [
      ["sort=created_at&order=asc", ["alice", "bob", "dave", "carolxy"]],
      ["sort=created_at&order=desc", ["carolxy", "dave", "bob", "alice"]],
      ["sort=username&order=asc", ["alice", "bob", "carolxy", "dave"]],
      ["sort=username&order=desc", ["dave", "carolxy", "bob", "alice"]],
      ["sort=email&order=asc", ["alice", "bob", "dave", "carolxy"]],
      ["sort=email&order=desc", ["carolxy", "dave", "bob", "alice"]],
    ];
    for (const [query, expected] of cases) {
      const res = await t.req("GET", `/users?${filter}&${query}`, { token: admin.access });
      expect({ query, names: usernames(res) }).toEqual({ query, names: expected });
    }
  });
});

describe("POST /users", () => {
  test("201 with the requested role; the account logs in and holds that role; the password is hashed", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const res = await t.req("POST", "/users", {
      token: admin.access,
      body: { username: "helper", email: "helper@example.com", password: "helper123", name: "Helper", role: "admin" },
    });
    expect(res.status).toBe(201);
    expectUser(res.json, {
      username: "helper",
      email: "helper@example.com",
      name: "Helper",
      role: "admin",
      is_active: true,
    });
    const stored = await t.row(res.json.id);
    expect(stored?.passwordHash).toMatch(/^\$2[aby]?\$/);
    const helper = await t.session("helper", "helper123");
    expect((await t.req("GET", "/users", { token: helper.access })).status).toBe(200);
  });

  test("role defaults to user", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const res = await t.req("POST", "/users", {
      token: admin.access,
      body: { username: "plain", email: "plain@example.com", password: PASSWORD },
    });
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ role: "user", name: null, bio: null });
  });

  test("duplicate username or email (ignoring case) → 409 naming the field; invalid body → 422", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true, email: "root@example.com" });
    const create = (body: Record<string, string>) =>
      t.req("POST", "/users", { token: admin.access, body: { password: PASSWORD, ...body } });
    expectError(await create({ username: "ROOT", email: "other@example.com" }), 409, "CONFLICT", ["username"]);
    expectError(await create({ username: "other", email: "Root@Example.COM" }), 409, "CONFLICT", ["email"]);
    expectError(await create({ username: "other", email: "other@example.com", role: "god" }), 422, "VALIDATION_ERROR", [
      "role",
    ]);
    expectError(await create({ username: "other", email: "x", password: "short" }), 422, "VALIDATION_ERROR", [
      "email",
      "password",
    ]);
    expect((await t.req("GET", "/users", { token: admin.access })).json.total).toBe(1);
  });
});

describe("GET /users/{id}", () => {
  test("200 with the User; 404 for an unknown id; 422 for a non-uuid", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const ada = await t.signUp("ada", { name: "Ada" });
    const res = await t.req("GET", `/users/${ada.id}`, { token: admin.access });
    expect(res.status).toBe(200);
    expectUser(res.json, { id: ada.id, username: "ada", name: "Ada", role: "user" });
    expectError(await t.req("GET", `/users/${UNKNOWN_ID}`, { token: admin.access }), 404, "NOT_FOUND");
    expectError(await t.req("GET", "/users/not-a-uuid", { token: admin.access }), 422, "VALIDATION_ERROR", ["id"]);
  });
});

describe("PATCH /users/{id}", () => {
  test("changes the given fields; 409 on a taken username; 404 for an unknown id; 422 for a non-uuid", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const ada = await t.signUp("ada", { name: "Ada" });
    const res = await t.req("PATCH", `/users/${ada.id}`, { token: admin.access, body: { bio: "Poet", name: "A. L." } });
    expect(res.status).toBe(200);
    expectUser(res.json, { id: ada.id, username: "ada", email: ada.email, bio: "Poet", name: "A. L.", role: "user" });
    expect(await t.row(ada.id)).toMatchObject({ bio: "Poet", name: "A. L." });
    expect((await t.req("GET", "/users/me", { token: ada.access })).json.bio).toBe("Poet");

    const patch = (id: string, body: unknown) => t.req("PATCH", `/users/${id}`, { token: admin.access, body });
    expectError(await patch(ada.id, { username: "Root" }), 409, "CONFLICT", ["username"]);
    expectError(await patch(UNKNOWN_ID, { bio: "x" }), 404, "NOT_FOUND");
    expectError(await patch("12", { bio: "x" }), 422, "VALIDATION_ERROR", ["id"]);
    expectError(await patch(ada.id, { is_active: "nope" }), 422, "VALIDATION_ERROR", ["is_active"]);
  });

  test("a role change applies to the user's very next request with the token they already hold", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const ada = await t.signUp("ada");
    const setRole = (role: string) => t.req("PATCH", `/users/${ada.id}`, { token: admin.access, body: { role } });

    expectError(await t.req("GET", "/users", { token: ada.access }), 403, "PERMISSION_DENIED");
    expect((await setRole("admin")).json.role).toBe("admin");
    expect((await t.req("GET", "/users", { token: ada.access })).status).toBe(200);
    expect((await t.req("GET", "/users/me", { token: ada.access })).json.role).toBe("admin");
    expect((await setRole("user")).json.role).toBe("user");
    expectError(await t.req("GET", "/users", { token: ada.access }), 403, "PERMISSION_DENIED");
  });

  test("is_active=false ends every token of the user at once and blocks login; true lets them log in again", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const ada = await t.signUp("ada");
    expect((await t.req("GET", "/users/me", { token: ada.access })).status).toBe(200); // warms any user cache
    const off = await t.req("PATCH", `/users/${ada.id}`, { token: admin.access, body: { is_active: false } });
    expect(off.status).toBe(200);
    expect(off.json.is_active).toBe(false);

    expectUnauthorized(await t.req("GET", "/users/me", { token: ada.access }));
    expect(await t.refreshStatus(ada.refresh)).toBe(401);
    expectError(await t.login("ada"), 401, "INVALID_CREDENTIALS");
    expect((await t.row(ada.id))?.isActive).toBe(false);

    await t.req("PATCH", `/users/${ada.id}`, { token: admin.access, body: { is_active: true } });
    const again = await t.session("ada");
    expect((await t.req("GET", "/users/me", { token: again.access })).status).toBe(200);
  });
});

describe("DELETE /users/{id}", () => {
  test("204; the user's token → 401, the user → 404, the row and its files are gone; a second delete → 404", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const ada = await t.signUp("ada");
    const bob = await t.signUp("bob");
    const fileRow = (ownerId: string, key: string) => ({
      ownerId,
      filename: `${key}.txt`,
      contentType: "text/plain",
      fileSize: 1,
      fileHash: "0".repeat(64),
      storageKey: key,
    });
    await t.deps.db.orm.insert(files).values([fileRow(ada.id, "ada-file"), fileRow(bob.id, "bob-file")]);
    expect((await t.req("GET", "/users/me", { token: ada.access })).status).toBe(200); // warms any user cache

    const res = await t.req("DELETE", `/users/${ada.id}`, { token: admin.access });
    expect(res.status).toBe(204);
    expect(res.text).toBe("");
    expectUnauthorized(await t.req("GET", "/users/me", { token: ada.access }));
    expect(await t.refreshStatus(ada.refresh)).toBe(401);
    expectError(await t.req("GET", `/users/${ada.id}`, { token: admin.access }), 404, "NOT_FOUND");
    expect(await t.row(ada.id)).toBeUndefined();
    const remaining = await t.deps.db.orm.select({ key: files.storageKey }).from(files);
    expect(remaining).toEqual([{ key: "bob-file" }]);
    expectError(await t.req("DELETE", `/users/${ada.id}`, { token: admin.access }), 404, "NOT_FOUND");
    expect((await t.req("GET", "/users/me", { token: bob.access })).status).toBe(200);
  });
});

describe("the last active admin", () => {
  test("cannot be demoted, deactivated or deleted, by itself or anyone; with a second admin it can", async () => {
    const t = await usersApp();
    const root = await t.signUp("root", { admin: true });
    for (const [method, path, body] of [
      ["PATCH", `/users/${root.id}`, { role: "user" }],
      ["PATCH", `/users/${root.id}`, { is_active: false }],
      ["DELETE", `/users/${root.id}`, undefined],
      ["DELETE", "/users/me", undefined],
    ] as const) {
      expectError(await t.req(method, path, { token: root.access, body }), 409, "CONFLICT");
    }
    expect((await t.row(root.id))?.role).toBe("admin");
    expect((await t.row(root.id))?.isActive).toBe(true);

    const second = await t.signUp("second", { admin: true });
    expect((await t.req("PATCH", `/users/${root.id}`, { token: second.access, body: { role: "user" } })).status).toBe(
      200,
    );
    // Now `second` is the last one.
    expectError(await t.req("DELETE", `/users/${second.id}`, { token: second.access }), 409, "CONFLICT");
  });
});
