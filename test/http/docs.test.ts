import { describe, expect, test } from "bun:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import pkg from "../../package.json" with { type: "json" };
import { API, call, makeApp } from "../support";

describe("API documentation", () => {
  test("/openapi.json is a valid OpenAPI 3 document titled with the package version", async () => {
    const { app } = await makeApp();
    const res = await call(app, "GET", "/openapi.json");
    expect(res.status).toBe(200);
    expect(res.json.info).toMatchObject({ title: "ReViewPoint API", version: pkg.version });
    expect(Object.keys(res.json.paths)).toContain(`${API}/health`);
    const result = await new Validator().validate(res.json);
    if (!result.valid) console.error(JSON.stringify(result.errors, null, 2).slice(0, 3000));
    expect(result.valid).toBe(true);
  });

  test("Swagger UI and ReDoc are served with their scripts from this server only", async () => {
    const { app } = await makeApp();
    for (const page of ["/docs", "/redoc"]) {
      const res = await call(app, "GET", page);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toContain("text/html");
      const sources = [...res.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string);
      expect(sources.length).toBeGreaterThan(0);
      for (const source of sources) {
        expect(source.startsWith("/")).toBe(true);
        const asset = await call(app, "GET", source);
        expect(asset.status).toBe(200);
        expect(asset.text.length).toBeGreaterThan(source.endsWith("init.js") ? 50 : 100_000);
      }
      expect(res.headers.get("content-security-policy")).toContain("default-src 'self'");
    }
  });
});
