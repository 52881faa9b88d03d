/**
 * Uploads scanned by a real clamd (INSTREAM) while they stream: what is clean is stored, what is not is
 * refused with nothing kept, and a scanner that cannot answer refuses uploads (or, fail-open, lets them in).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { CLAMD, EICAR, EICAR_SIGNATURE, startClamd, type TestClamd } from "../../clamd";
import { API, call, expectError, makeApp, signUp, type TestContext, testBucket } from "../../support";
import { NOTHING, SAMPLES, stored, upload } from "./fixtures";
import { b64, EMPTY, ENDPOINT, holdings } from "./tus";

setDefaultTimeout(30_000);

const pdfWith = (inside: string) =>
  new TextEncoder().encode(`%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n${"%".repeat(2000)}\n${inside}\n%%EOF\n`);

async function scanningApp(clamd: TestClamd, overrides: Record<string, string> = {}) {
  const ctx = await makeApp({ CLAMAV_URL: clamd.url, CLAMAV_TIMEOUT_MS: "3000", ...overrides });
  return { ctx, user: await signUp(ctx.app) };
}

const metric = async (ctx: TestContext, result: string) => {
  const text = (await call(ctx.app, "GET", `${API}/metrics`)).text;
  return Number(text.match(new RegExp(`reviewpoint_upload_scans_total\\{result="${result}"\\} (\\d+)`))?.[1] ?? 0);
};

describe.skipIf(!CLAMD)("antivirus (clamd; .ci/run installs clamav-daemon)", () => {
  let clamd: TestClamd;
  beforeAll(async () => {
    clamd = await startClamd();
  });
  afterAll(async () => {
    await clamd?.dispose();
  });

  test("a clean file is stored; health reports the scanner", async () => {
    const { ctx, user } = await scanningApp(clamd);
    const res = await upload(ctx, SAMPLES.text, { token: user.access });
    expect(res.status).toBe(201);
    expect((await stored(ctx, user.id)).rows).toBe(1);
    expect(await metric(ctx, "clean")).toBe(1);
    const health = await call(ctx.app, "GET", `${API}/health`);
    expect(health.json.checks.antivirus.ok).toBe(true);
    expect(health.json.status).toBe("ok");
    expect((await call(ctx.app, "GET", `${API}/health/ready`)).json.checks.antivirus).toBe(true);
  });

  test("EICAR as text/plain, and inside a PDF: 422 MALWARE_DETECTED naming the signature, nothing stored", async () => {
    const { ctx, user } = await scanningApp(clamd);
    for (const [bytes, type, name] of [
      [EICAR, "text/plain", "eicar.txt"],
      [pdfWith(EICAR), "application/pdf", "paper.pdf"],
    ] as const) {
      const res = await upload(ctx, bytes, { token: user.access, type, name });
      expectError(res, 422, "MALWARE_DETECTED", ["file"]);
      expect(res.json.error.details[0].issue).toBe(EICAR_SIGNATURE);
    }
    expect(await stored(ctx)).toEqual(NOTHING);
    expect(await metric(ctx, "infected")).toBe(2);
    const warnings = ctx.logs.filter((line) => line.includes("malware detected"));
    expect(warnings).toHaveLength(2);
    expect(JSON.parse(warnings[0] as string)).toMatchObject({
      level: "warn",
      user_id: user.id,
      signature: EICAR_SIGNATURE,
    });
    expect(ctx.logs.join("\n")).not.toContain("EICAR-STANDARD-ANTIVIRUS-TEST-FILE");
  });

  test("an EICAR upload to S3 storage leaves no object in the bucket", async () => {
    const bucket = await testBucket();
    const { ctx, user } = await scanningApp(clamd, bucket.env(`antivirus-${crypto.randomUUID()}/`));
    expect(ctx.deps.config.storage.kind).toBe("s3");
    expectError(await upload(ctx, EICAR, { token: user.access }), 422, "MALWARE_DETECTED");
    expect(await stored(ctx)).toEqual(NOTHING);
    expect((await upload(ctx, SAMPLES.text, { token: user.access })).status).toBe(201);
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
  });

  test("a resumable upload is scanned when its last byte arrives: EICAR split over requests is 422, nothing kept", async () => {
    const { ctx, user } = await scanningApp(clamd);
    const headers = (extra: Record<string, string>) => ({ "tus-resumable": "1.0.0", ...extra });
    const meta = `filename ${b64("eicar.txt")},filetype ${b64("text/plain")}`;
    const eicar = new TextEncoder().encode(EICAR);
    const created = await call(ctx.app, "POST", ENDPOINT, {
      token: user.access,
      headers: headers({ "upload-length": String(eicar.byteLength), "upload-metadata": meta }),
    });
    const path = created.headers.get("location") as string;
    const half = Math.floor(eicar.byteLength / 2);
    const send = (from: number, to: number) =>
      call(ctx.app, "PATCH", path, {
        token: user.access,
        body: eicar.subarray(from, to),
        headers: headers({ "upload-offset": String(from), "content-type": "application/offset+octet-stream" }),
      });
    expect((await send(0, half)).status).toBe(204);
    const last = await send(half, eicar.byteLength);
    expectError(last, 422, "MALWARE_DETECTED", ["file"]);
    expect(last.json.error.details[0].issue).toBe(EICAR_SIGNATURE);
    expect(await holdings(ctx)).toEqual(EMPTY);
    expect(await metric(ctx, "infected")).toBe(1);
  });

  test("20 concurrent uploads with the scanner on (4 connections) all succeed", async () => {
    const { ctx, user } = await scanningApp(clamd);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => upload(ctx, `paper number ${i}\n`.repeat(5000), { token: user.access })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(201));
    expect((await stored(ctx, user.id)).rows).toBe(20);
  });

  test("an upload larger than clamd's StreamMaxLength is a 503, nothing stored", async () => {
    const small = await startClamd({ streamMaxLength: "64K" });
    try {
      const { ctx, user } = await scanningApp(small);
      const res = await upload(ctx, "a".repeat(512 * 1024), { token: user.access });
      expectError(res, 503, "SERVICE_UNAVAILABLE");
      expect(await stored(ctx)).toEqual(NOTHING);
    } finally {
      await small.dispose();
    }
  });

  test("a scanner that stops answering: 503 after CLAMAV_TIMEOUT_MS, nothing stored", async () => {
    const own = await startClamd();
    try {
      const { ctx, user } = await scanningApp(own, { CLAMAV_TIMEOUT_MS: "500" });
      expect((await upload(ctx, SAMPLES.text, { token: user.access })).status).toBe(201);
      own.signal("SIGSTOP");
      // Without the timeout this upload would wait for the test's own timeout.
      expectError(await upload(ctx, SAMPLES.text, { token: user.access }), 503, "SERVICE_UNAVAILABLE");
      expect(await stored(ctx, user.id)).toMatchObject({ rows: 1, objects: 1, temporaries: 0 });
    } finally {
      await own.dispose();
    }
  });

  test("the scanner stopped: 503 and nothing stored, readiness fails; fail-open stores, logs and counts", async () => {
    const own = await startClamd();
    try {
      const { ctx, user } = await scanningApp(own);
      const open = await makeApp({ CLAMAV_URL: own.url, CLAMAV_TIMEOUT_MS: "1000", CLAMAV_FAIL_OPEN: "true" });
      const openUser = await signUp(open.app);
      expect((await upload(ctx, SAMPLES.text, { token: user.access })).status).toBe(201);

      await own.stop();
      const refused = await upload(ctx, SAMPLES.text, { token: user.access });
      expectError(refused, 503, "SERVICE_UNAVAILABLE");
      expect(refused.json.error.message).toContain("virus scanner");
      expect(await stored(ctx, user.id)).toMatchObject({ rows: 1, objects: 1, temporaries: 0 });
      const ready = await call(ctx.app, "GET", `${API}/health/ready`);
      expect(ready.status).toBe(503);
      expect(ready.json.checks.antivirus).toBe(false);
      const health = await call(ctx.app, "GET", `${API}/health`);
      expect(health.json).toMatchObject({ status: "degraded", checks: { antivirus: { ok: false } } });

      const unscanned = await upload(open, SAMPLES.text, { token: openUser.access });
      expect(unscanned.status).toBe(201);
      expect(await metric(open, "unscanned")).toBe(1);
      expect(open.logs.some((line) => line.includes("stored unscanned") && line.includes(openUser.id))).toBe(true);
      expect((await call(open.app, "GET", `${API}/health/ready`)).status).toBe(200);

      await own.start();
      expect((await upload(ctx, SAMPLES.text, { token: user.access })).status).toBe(201);
    } finally {
      await own.dispose();
    }
  });
});
