import { describe, expect, test } from "bun:test";
import { expectError, expectUnauthorized, expectUser, FIXED_HASH, PASSWORD, usersApp } from "./fixtures";

describe("GET /users/me", () => {
  test("returns the caller as a User, the same as registration returned, without any secret", async () => {
    const t = await usersApp();
    const register = await t.req("POST", "/auth/register", {
      body: { username: "ada", email: "ada@example.com", password: PASSWORD, name: "Ada Lovelace" },
    });
    const { access } = await t.session("ada");
    const res = await t.req("GET", "/users/me", { token: access });
    expect(res.status).toBe(200);
    expectUser(res.json, {
      username: "ada",
      email: "ada@example.com",
      name: "Ada Lovelace",
      bio: null,
      role: "user",
      is_active: true,
    });
    expect(res.json).toEqual(register.json);
    expect((await t.req("GET", "/auth/me", { token: access })).json).toEqual(res.json);
  });

  test("anonymous → 401 AUTHENTICATION_REQUIRED with a bearer challenge", async () => {
    const t = await usersApp();
    expectUnauthorized(await t.req("GET", "/users/me"), "AUTHENTICATION_REQUIRED");
  });

  test("a garbage token or a refresh token used as access → 401 INVALID_TOKEN", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    for (const token of ["not-a-jwt", ada.refresh]) expectUnauthorized(await t.req("GET", "/users/me", { token }));
  });

  test("every /users/me route refuses an anonymous caller", async () => {
    const t = await usersApp();
    const routes: [string, string, unknown?][] = [
      ["PUT", "/users/me", { bio: "x" }],
      ["PATCH", "/users/me", { bio: "x" }],
      ["POST", "/users/me/password", { current_password: PASSWORD, new_password: "another456" }],
      ["DELETE", "/users/me"],
    ];
    for (const [method, path, body] of routes) {
      expectUnauthorized(await t.req(method, path, { body }), "AUTHENTICATION_REQUIRED");
    }
  });
});

describe.each(["PUT", "PATCH"])("%s /users/me", (method) => {
  test("changes only the given fields, in the response and in the database", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada", { name: "Ada" });
    const before = await t.row(ada.id);
    const res = await t.req(method, "/users/me", { token: ada.access, body: { bio: "Analyst" } });
    expect(res.status).toBe(200);
    expectUser(res.json, { id: ada.id, username: "ada", email: ada.email, name: "Ada", bio: "Analyst" });
    const after = await t.row(ada.id);
    expect(after).toMatchObject({ username: "ada", email: ada.email, name: "Ada", bio: "Analyst", role: "user" });
    expect(after?.passwordHash).toBe(before?.passwordHash as string);
    // The next request sees the change (no stale cached user).
    expect((await t.req("GET", "/users/me", { token: ada.access })).json.bio).toBe("Analyst");
  });

  test("renames the account: the new username and email log in, and name can be cleared with null", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada", { name: "Ada" });
    const res = await t.req(method, "/users/me", {
      token: ada.access,
      body: { username: "countess", email: "countess@example.org", name: null, current_password: PASSWORD },
    });
    expect(res.status).toBe(200);
    expectUser(res.json, { username: "countess", email: "countess@example.org", name: null });
    expect((await t.login("countess")).status).toBe(200);
    expect((await t.login("countess@example.org")).status).toBe(200);
    expect((await t.login("ada")).status).toBe(401);
  });

  test("409 CONFLICT naming the field when another account holds the username or email, ignoring case", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    await t.signUp("bob", { email: "bob@example.com" });
    const cases: [Record<string, string>, string[]][] = [
      [{ username: "bob" }, ["username"]],
      [{ username: "BoB" }, ["username"]],
      [{ email: "BOB@Example.com", current_password: PASSWORD }, ["email"]],
      [{ username: "Bob", email: "bob@example.com", current_password: PASSWORD }, ["email", "username"]],
    ];
    for (const [body, fields] of cases) {
      expectError(await t.req(method, "/users/me", { token: ada.access, body }), 409, "CONFLICT", fields);
    }
    expect(await t.row(ada.id)).toMatchObject({ username: "ada", email: ada.email });
  });

  test("keeping your own username and email (even in another case) is not a conflict", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const same = await t.req(method, "/users/me", { token: ada.access, body: { username: "ada", email: ada.email } });
    expect(same.status).toBe(200);
    const recased = await t.req(method, "/users/me", { token: ada.access, body: { username: "Ada" } });
    expect(recased.status).toBe(200);
    expect(recased.json.username).toBe("Ada");
  });

  test("role, activity, password hash and id cannot be changed through the profile", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const before = await t.row(ada.id);
    const body = {
      bio: "mine",
      role: "admin",
      is_active: false,
      isActive: false,
      password: "hijacked123",
      passwordHash: FIXED_HASH,
      password_hash: FIXED_HASH,
      id: "0196f0a2-7c1e-7000-8000-000000000000",
    };
    const res = await t.req(method, "/users/me", { token: ada.access, body });
    expect([200, 422]).toContain(res.status);
    expect(await t.row(ada.id)).toMatchObject({
      id: ada.id,
      role: "user",
      isActive: true,
      passwordHash: before?.passwordHash as string,
    });
    expectError(await t.req("GET", "/users", { token: ada.access }), 403, "PERMISSION_DENIED");
    expect((await t.login("ada")).status).toBe(200);
  });

  test("422 naming each invalid field; nothing changes", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const cases: [Record<string, unknown>, string[]][] = [
      [{ email: "not-an-email" }, ["email"]],
      [{ username: "ab" }, ["username"]],
      [{ username: "has space" }, ["username"]],
      [{ username: "x".repeat(51) }, ["username"]],
      [{ username: "ok_name", email: "nope" }, ["email"]],
      [{ bio: "x".repeat(5001) }, ["bio"]],
    ];
    for (const [body, fields] of cases) {
      expectError(await t.req(method, "/users/me", { token: ada.access, body }), 422, "VALIDATION_ERROR", fields);
    }
    expect(await t.row(ada.id)).toMatchObject({ username: "ada", email: ada.email, bio: null });
  });
});

describe("POST /users/me/password", () => {
  const change = (t: Awaited<ReturnType<typeof usersApp>>, token: string, current: string, next: string) =>
    t.req("POST", "/users/me/password", { token, body: { current_password: current, new_password: next } });

  test("a wrong current password → 422 on current_password; the old password still works", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    expectError(await change(t, ada.access, "wrong9999", "another456"), 422, "VALIDATION_ERROR", ["current_password"]);
    expect((await t.login("ada")).status).toBe(200);
    expect((await t.login("ada", "another456")).status).toBe(401);
  });

  test("a new password breaking the rule → 422 on new_password", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    for (const weak of ["lettersonly", "12345678", "short1", `a1${"x".repeat(127)}`]) {
      expectError(await change(t, ada.access, PASSWORD, weak), 422, "VALIDATION_ERROR", ["new_password"]);
    }
    expect((await t.login("ada")).status).toBe(200);
  });

  test("success → 204; only the new password logs in; other sessions end, this one keeps working", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const other = await t.session("ada");
    const res = await change(t, ada.access, PASSWORD, "another456");
    expect(res.status).toBe(204);
    expect(res.text).toBe("");

    expectError(await t.login("ada"), 401, "INVALID_CREDENTIALS");
    expect((await t.login("ada", "another456")).status).toBe(200);

    expectUnauthorized(await t.req("GET", "/users/me", { token: other.access }));
    expect(await t.refreshStatus(other.refresh)).toBe(401);

    expect((await t.req("GET", "/users/me", { token: ada.access })).status).toBe(200);
    expect(await t.refreshStatus(ada.refresh)).toBe(200);
  });
});

describe("DELETE /users/me", () => {
  test("204; every token of the account stops at once; login fails; the row stays, inactive", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const other = await t.session("ada");
    expect((await t.req("GET", "/users/me", { token: ada.access })).status).toBe(200); // warms any user cache
    const res = await t.req("DELETE", "/users/me", { token: ada.access });
    expect(res.status).toBe(204);
    expect(res.text).toBe("");

    for (const token of [ada.access, other.access]) expectUnauthorized(await t.req("GET", "/users/me", { token }));
    expect(await t.refreshStatus(ada.refresh)).toBe(401);
    expect(await t.refreshStatus(other.refresh)).toBe(401);
    expectError(await t.login("ada"), 401, "INVALID_CREDENTIALS");
    expect(await t.row(ada.id)).toMatchObject({ username: "ada", isActive: false });
  });
});

describe("secrets", () => {
  test("no response echoes a submitted password or a hash, even when rejecting it", async () => {
    const t = await usersApp();
    const ada = await t.signUp("ada");
    const attempts: [string, string, Record<string, string>, number][] = [
      [
        "/users/me/password",
        "Guessed-wrong-77",
        { current_password: "Guessed-wrong-77", new_password: "Fresh-pw-88" },
        422,
      ],
      ["/users/me/password", "no-digits-here", { current_password: PASSWORD, new_password: "no-digits-here" }, 422],
      ["/auth/register", "Bob-password-99", { username: "bob", email: "broken", password: "Bob-password-99" }, 422],
      ["/auth/login", "Not-her-password-1", { username: "ada", password: "Not-her-password-1" }, 401],
    ];
    for (const [path, secret, body, status] of attempts) {
      const res = await t.req("POST", path, { token: ada.access, body });
      expect(res.status).toBe(status);
      expect(res.text).not.toContain(secret);
      expect(res.text).not.toContain("$2");
    }
  });
});
