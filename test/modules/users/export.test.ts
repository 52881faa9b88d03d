import { describe, expect, test } from "bun:test";
import type { UsersRepo } from "../../../src/modules/users/repo";
import { createUsersService } from "../../../src/modules/users/service";
import { createPasswordHasher } from "../../../src/platform/passwords";
import { memoryLogger } from "../../support";
import { expectError, expectUser, FIXED_HASH, parseCsv, USER_FIELDS, type UsersApp, usersApp } from "./fixtures";

const HEADER = [
  "id",
  "username",
  "email",
  "name",
  "bio",
  "role",
  "is_active",
  "email_verified",
  "created_at",
  "updated_at",
];

async function exportAs(t: UsersApp, token: string, query = "") {
  return t.req("GET", `/users/export${query}`, { token });
}

/** Parses a CSV export into objects keyed by the header row, after checking the header itself. */
function csvRecords(text: string): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text);
  expect(header).toEqual(HEADER);
  return rows.map((cells) => {
    expect(cells).toHaveLength(HEADER.length);
    return Object.fromEntries(HEADER.map((column, i) => [column, cells[i] as string]));
  });
}

const jsonLines = (text: string) =>
  text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line));

describe("GET /users/export", () => {
  test("CSV download: headers, a header row, then every user once, with no cap", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const inserted = await t.insertUsers(Array.from({ length: 1200 }, () => ({})));
    const res = await exportAs(t, admin.access);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(res.headers.get("content-disposition")).toBe('attachment; filename="users.csv"');
    // A streamed Response still carries the per-request headers.
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");

    const records = csvRecords(res.text);
    expect(records).toHaveLength(1201);
    const ids = records.map((r) => r.id);
    expect(new Set(ids).size).toBe(1201);
    expect(new Set(ids)).toEqual(new Set([admin.id, ...inserted.map((u) => u.id)]));
    const bulk = records.find((r) => r.username === "bulk7");
    expect(bulk).toMatchObject({ email: "bulk7@example.com", name: "", role: "user", is_active: "true" });
    expect(bulk?.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  });

  test("the list's filters apply, across batch boundaries", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    await t.insertUsers(
      Array.from({ length: 1100 }, (_, i) => ({ isActive: i % 11 !== 0, role: i % 2 ? "admin" : "user" })),
    );
    const expectedActiveAdmins = Array.from({ length: 1100 }, (_, i) => i).filter((i) => i % 11 && i % 2).length;
    const activeAdmins = csvRecords((await exportAs(t, admin.access, "?role=admin&is_active=true")).text);
    expect(activeAdmins).toHaveLength(expectedActiveAdmins + 1); // + root
    expect(activeAdmins.every((r) => r.role === "admin" && r.is_active === "true")).toBe(true);

    const searched = csvRecords((await exportAs(t, admin.access, "?q=BULK10")).text).map((r) => r.username);
    const expected = Array.from({ length: 1100 }, (_, i) => `bulk${i}`).filter((name) => name.includes("bulk10"));
    expect(searched.sort()).toEqual(expected.sort());
  });

  test("format=json gives one JSON User per line, filtered like the CSV", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    await t.insertUsers([
      { username: "early", createdAt: new Date("2024-01-01T00:00:00Z"), bio: "line one\nline two" },
      { username: "late", createdAt: new Date("2024-06-01T00:00:00Z") },
    ]);
    const res = await exportAs(t, admin.access, "?format=json&created_before=2025-01-01T00:00:00Z");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/json/);
    const users = jsonLines(res.text);
    expect(users.map((u) => u.username).sort()).toEqual(["early", "late"]);
    for (const user of users) expectUser(user);
    expect(users.find((u) => u.username === "early")).toMatchObject({ bio: "line one\nline two", role: "user" });
    expect(Object.keys(users[0]).sort()).toEqual(USER_FIELDS);
  });

  test("cells that a spreadsheet would run as a formula are exported with a leading '", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    const risky = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)"];
    await t.insertUsers([
      ...risky.map((name, i) => ({ username: `risky${i}`, name, bio: name })),
      { username: "safe", name: 'Plain, "quoted" name', bio: "a=b" },
    ]);
    const records = csvRecords((await exportAs(t, admin.access, "?q=risky")).text);
    expect(records.map((r) => [r.name, r.bio]).sort()).toEqual(risky.map((v) => [`'${v}`, `'${v}`]).sort());
    const safe = csvRecords((await exportAs(t, admin.access, "?q=safe")).text);
    expect(safe.map((r) => [r.name, r.bio])).toEqual([['Plain, "quoted" name', "a=b"]]);
    // JSON lines carry the values untouched.
    const json = jsonLines((await exportAs(t, admin.access, "?q=risky&format=json")).text);
    expect(json.map((u) => u.name).sort()).toEqual([...risky].sort());
  });

  test("no password hash in either format; an unknown format or bad filter → 422", async () => {
    const t = await usersApp();
    const admin = await t.signUp("root", { admin: true });
    await t.insertUsers([{ username: "someone" }]);
    for (const format of ["csv", "json"]) {
      const res = await exportAs(t, admin.access, `?format=${format}`);
      expect(res.status).toBe(200);
      expect(res.text).not.toContain("$2");
      expect(res.text).toContain("someone");
    }
    expectError(await exportAs(t, admin.access, "?format=xml"), 422, "VALIDATION_ERROR", ["format"]);
    expectError(await exportAs(t, admin.access, "?role=owner"), 422, "VALIDATION_ERROR", ["role"]);
  });
});

describe("an export that fails", () => {
  test("mid-stream: the client's read fails and the cause is logged as an error", async () => {
    const logger = memoryLogger();
    const row = {
      id: crypto.randomUUID(),
      username: "first",
      email: "first@example.com",
      name: null,
      bio: null,
      passwordHash: FIXED_HASH,
      role: "user" as const,
      isActive: true,
      createdAt: new Date(),
      updatedAt: new Date(),
    };
    const repo = {
      // The first batch arrives, then the database goes away.
      async *stream() {
        yield row;
        throw Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" });
      },
    } as unknown as UsersRepo;
    const users = createUsersService({
      repo,
      passwords: createPasswordHasher(4),
      hooks: {
        userChanged: async () => {},
        endSessions: async () => {},
        bytesRemover: async () => async () => {},
        verifyEmail: async () => {},
        emailChanged: async () => {},
      },
      passwordAttempts: { take: async () => {} },
      logger,
      audit: async () => {},
    });
    const stream = await users.export({}, "csv");
    await expect(new Response(stream).text()).rejects.toThrow();
    const logged = logger.lines.map((line) => JSON.parse(line)).find((entry) => entry.msg.includes("export failed"));
    expect(logged?.level).toBe("error");
    expect(logged?.error.code).toBe("57P01");
  });
});
