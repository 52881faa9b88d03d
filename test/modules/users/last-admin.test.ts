import { describe, expect, test } from "bun:test";
import { and, count, eq } from "drizzle-orm";
import { users } from "../../../src/db/schema";
import { type Account, API, call, makeApp, promote, signUp, type TestContext, truncateAll } from "../../support";

async function twoAdmins(): Promise<{ ctx: TestContext; a: Account; b: Account }> {
  const ctx = await makeApp();
  await truncateAll(ctx.deps.db);
  const a = await signUp(ctx.app);
  const b = await signUp(ctx.app);
  await promote(ctx.deps.db, a.id);
  await promote(ctx.deps.db, b.id);
  return { ctx, a, b };
}

/** Active admins in the database (each round starts with a and b the only ones). */
async function activeAdmins(ctx: TestContext): Promise<number> {
  const [row] = await ctx.deps.db.orm
    .select({ total: count() })
    .from(users)
    .where(and(eq(users.role, "admin"), eq(users.isActive, true)));
  return row?.total ?? 0;
}

// Each race is run several times: one lucky interleaving proves little.
describe("the last active admin cannot be lost to a race", () => {
  test("mutual demotion: one succeeds; the other is refused (409, or 403 once demoted)", async () => {
    for (let round = 0; round < 5; round++) {
      const { ctx, a, b } = await twoAdmins();
      const results = await Promise.all([
        call(ctx.app, "PATCH", `${API}/users/${b.id}`, { token: a.access, body: { role: "user" } }),
        call(ctx.app, "PATCH", `${API}/users/${a.id}`, { token: b.access, body: { role: "user" } }),
      ]);
      expect(await activeAdmins(ctx)).toBe(1);
      const [first, second] = results.map((r) => r.status).sort();
      expect(first).toBe(200);
      expect([403, 409]).toContain(second as number);
    }
  });

  test("crossed deactivation", async () => {
    for (let round = 0; round < 5; round++) {
      const { ctx, a, b } = await twoAdmins();
      await Promise.all([
        call(ctx.app, "PATCH", `${API}/users/${b.id}`, { token: a.access, body: { is_active: false } }),
        call(ctx.app, "PATCH", `${API}/users/${a.id}`, { token: b.access, body: { is_active: false } }),
      ]);
      expect(await activeAdmins(ctx)).toBe(1);
    }
  });

  test("the last two admins deactivating themselves at once", async () => {
    for (let round = 0; round < 5; round++) {
      const { ctx, a, b } = await twoAdmins();
      const results = await Promise.all([
        call(ctx.app, "DELETE", `${API}/users/me`, { token: a.access }),
        call(ctx.app, "DELETE", `${API}/users/me`, { token: b.access }),
      ]);
      expect(results.map((r) => r.status).sort()).toEqual([204, 409]);
      expect(await activeAdmins(ctx)).toBe(1);
    }
  });

  test("the last two admins deleting each other at once", async () => {
    for (let round = 0; round < 5; round++) {
      const { ctx, a, b } = await twoAdmins();
      await Promise.all([
        call(ctx.app, "DELETE", `${API}/users/${b.id}`, { token: a.access }),
        call(ctx.app, "DELETE", `${API}/users/${a.id}`, { token: b.access }),
      ]);
      expect(await activeAdmins(ctx)).toBe(1);
    }
  });
});
