/** The files module's entries in the audit log: deletions, downloads by others, malware found. */
import { describe, expect, test } from "bun:test";
import { auditEvents } from "../../../src/db/schema";
import { markerScanner } from "../../../src/platform/antivirus";
import { API, call, makeApp, promote, signUp, type TestContext } from "../../support";
import { SAMPLES, upload } from "./fixtures";

const events = async (ctx: TestContext) =>
  (await ctx.deps.db.orm.select().from(auditEvents).orderBy(auditEvents.at, auditEvents.id)).filter(
    (event) => event.action.startsWith("file.") || event.action === "malware.detected",
  );

describe("audit of files", () => {
  test("a deletion is recorded with the actor, the owner and the request; a download by someone else too", async () => {
    const ctx = await makeApp();
    const [owner, admin] = [await signUp(ctx.app), await signUp(ctx.app)];
    await promote(ctx.deps.db, admin.id);
    const file = (await upload(ctx, SAMPLES.text, { token: owner.access, isPublic: "true" })).json;
    const get = (token?: string) => call(ctx.app, "GET", `${API}/uploads/${file.id}/download`, { token });
    expect((await get(owner.access)).status).toBe(200);
    expect(await events(ctx)).toEqual([]);
    expect((await get()).status).toBe(200);
    expect((await get(admin.access)).status).toBe(200);
    const removed = await call(ctx.app, "DELETE", `${API}/uploads/${file.id}`, {
      token: admin.access,
      headers: { "user-agent": "audit-test/1.0", "x-request-id": "audit-delete-1" },
    });
    expect(removed.status).toBe(204);
    const recorded = await events(ctx);
    expect(recorded.map((event) => [event.action, event.actorId])).toEqual([
      ["file.downloaded", null],
      ["file.downloaded", admin.id],
      ["file.deleted", admin.id],
    ]);
    expect(recorded[2]).toMatchObject({
      targetType: "file",
      targetId: file.id,
      userAgent: "audit-test/1.0",
      requestId: "audit-delete-1",
      details: { owner_id: owner.id, filename: "paper.txt" },
    });
  });

  test("malware found in an upload is recorded against its uploader", async () => {
    const ctx = await makeApp(
      { CLAMAV_URL: "tcp://127.0.0.1:1" },
      { scanner: markerScanner({ "Test.Marker": "EVIL" }) },
    );
    const user = await signUp(ctx.app);
    expect((await upload(ctx, "an EVIL paper", { token: user.access })).status).toBe(422);
    const [event] = await events(ctx);
    expect(event).toMatchObject({
      action: "malware.detected",
      actorId: user.id,
      details: { signature: "Test.Marker" },
    });
  });
});
