import { expect, test } from "bun:test";
import { Elysia } from "elysia";
import { createServices } from "../../src/app";
import { authGuard, requireRole } from "../../src/http/auth";
import { COMMAND_LINE } from "../../src/modules/users/service";
import { API, call, login, makeApp, signUp } from "../support";

test("requireRole on a route: anonymous 401, wrong role 403, the role 200", async () => {
  const { app, deps } = await makeApp();
  const { auth, users } = createServices(deps);
  const guarded = app.use(
    new Elysia().use(authGuard(auth.authenticate)).get(`${API}/admin-only`, ({ principal }) => principal.user.role, {
      auth: requireRole("admin"),
    }),
  );
  const account = await signUp(guarded);
  expect((await call(guarded, "GET", `${API}/admin-only`)).status).toBe(401);
  expect((await call(guarded, "GET", `${API}/admin-only`, { token: account.access })).status).toBe(403);
  await users.create(
    { username: "boss", email: "boss@example.com", password: "secret123", role: "admin" },
    COMMAND_LINE,
  );
  const boss = await login(guarded, "boss", "secret123");
  const allowed = await call(guarded, "GET", `${API}/admin-only`, { token: boss.access_token });
  expect(allowed.status).toBe(200);
  expect(allowed.text).toBe("admin");
});
