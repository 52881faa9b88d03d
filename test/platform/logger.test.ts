import { describe, expect, test } from "bun:test";
import { createLogger } from "../../src/platform/logger";

function capture(format: "json" | "pretty", level: "debug" | "info" | "warn" = "info") {
  const lines: string[] = [];
  return { lines, logger: createLogger({ level, format, write: (line) => lines.push(line) }) };
}

describe("logger", () => {
  test("JSON: one object per line with time, level and message", () => {
    const { lines, logger } = capture("json");
    logger.info("request", { method: "GET", status: 200 });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ level: "info", msg: "request", method: "GET", status: 200 });
  });

  test("pretty: one readable line", () => {
    const { lines, logger } = capture("pretty");
    logger.warn("redis unreachable", { error: "ECONNREFUSED" });
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z WARN {2}redis unreachable error=ECONNREFUSED$/);
  });

  test("fields naming a secret are redacted at any depth", () => {
    const { lines, logger } = capture("json");
    logger.info("x", { password: "hunter2", nested: { refresh_token: "abc", Authorization: "Bearer t" }, ok: "shown" });
    expect(lines[0]).not.toContain("hunter2");
    expect(lines[0]).not.toContain("abc");
    expect(lines[0]).not.toContain("Bearer t");
    expect(lines[0]).toContain("shown");
  });

  test("levels below the threshold are dropped", () => {
    const { lines, logger } = capture("json", "warn");
    logger.info("quiet");
    logger.error("loud");
    expect(lines.map((line) => JSON.parse(line).msg)).toEqual(["loud"]);
    expect(logger.enabled("info")).toBe(false);
    expect(logger.enabled("error")).toBe(true);
  });
});
