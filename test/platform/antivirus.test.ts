/** The clamd client against a real clamd (INSTREAM), and its in-process twin. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clamdScanner, markerScanner, ScannerUnavailableError } from "../../src/platform/antivirus";
import { CLAMD, EICAR, EICAR_SIGNATURE, startClamd, type TestClamd } from "../clamd";
import { freePort } from "../support";

const encoder = new TextEncoder();

async function scan(scanner: ReturnType<typeof clamdScanner>, chunks: (string | Uint8Array)[]) {
  const session = await scanner.start();
  for (const chunk of chunks) await session.write(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
  return session.verdict();
}

describe.skipIf(!CLAMD)("clamd scanner (needs clamd: .ci/run installs clamav-daemon)", () => {
  let clamd: TestClamd;
  let small: TestClamd;
  beforeAll(async () => {
    [clamd, small] = await Promise.all([startClamd(), startClamd({ streamMaxLength: "1M" })]);
  });
  afterAll(async () => {
    await Promise.all([clamd?.dispose(), small?.dispose()]);
  });

  test("clean bytes are OK; EICAR is found, also split across chunks and deep inside other bytes", async () => {
    const scanner = clamdScanner({ url: clamd.url, timeoutMs: 5000, connections: 2 });
    expect(await scan(scanner, ["just a paper\n"])).toEqual({ infected: false });
    expect(await scan(scanner, [EICAR])).toEqual({ infected: true, signature: EICAR_SIGNATURE });
    const cut = 20;
    expect(await scan(scanner, ["%PDF-1.4\n", "x".repeat(100_000), EICAR.slice(0, cut), EICAR.slice(cut)])).toEqual({
      infected: true,
      signature: EICAR_SIGNATURE,
    });
    expect(await scanner.ping()).toBeGreaterThan(0);
  });

  test("a unix:// socket works as well as TCP", async () => {
    const local = await startClamd({ unixSocket: true });
    try {
      const scanner = clamdScanner({ url: local.url, timeoutMs: 5000, connections: 1 });
      expect(local.url).toStartWith("unix:///");
      expect(await scan(scanner, ["a clean paper"])).toEqual({ infected: false });
      expect(await scan(scanner, [EICAR])).toEqual({ infected: true, signature: EICAR_SIGNATURE });
    } finally {
      await local.dispose();
    }
  });

  test("a stream over clamd's StreamMaxLength is an error, not a verdict", async () => {
    const scanner = clamdScanner({ url: small.url, timeoutMs: 5000, connections: 1 });
    const megabyte = new Uint8Array(256 * 1024).fill(97);
    const session = await scanner.start();
    for (let i = 0; i < 8; i++) await session.write(megabyte);
    const error = await session.verdict().catch((caught: Error) => caught);
    expect(error).toBeInstanceOf(ScannerUnavailableError);
    // clamd answers and closes at once: the answer is read, or a write meets the closed socket first.
    expect((error as Error).message).toMatch(/size limit exceeded|EPIPE|ECONNRESET/);
  });

  test("connections are bounded: a third scan waits for a free one, or gives up after the timeout", async () => {
    const scanner = clamdScanner({ url: clamd.url, timeoutMs: 300, connections: 2 });
    const [first, second] = [await scanner.start(), await scanner.start()];
    const third = scanner.start();
    await first.verdict();
    const session = await third;
    expect(await (await Promise.all([session.verdict(), second.verdict()]))[0]).toEqual({ infected: false });

    const held = [await scanner.start(), await scanner.start()];
    expect(await scanner.start().catch((error: Error) => error.message)).toContain("busy");
    for (const session of held) session.abort();
  });

  test("one owner's scans take at most its own share of connections; another owner's go ahead", async () => {
    const scanner = clamdScanner({ url: clamd.url, timeoutMs: 300, connections: 4, perOwner: 2 });
    const slow = [await scanner.start("slowloris"), await scanner.start("slowloris")];
    expect(await scanner.start("slowloris").catch((error: Error) => error.message)).toContain("busy");
    const other = await scanner.start("someone-else");
    await other.write(encoder.encode("a paper"));
    expect(await other.verdict()).toEqual({ infected: false });
    for (const session of slow) session.abort();
    expect(await (await scanner.start("slowloris")).verdict()).toEqual({ infected: false });
  });

  test("an unreachable scanner is ScannerUnavailableError, at start and at ping", async () => {
    const scanner = clamdScanner({ url: `tcp://127.0.0.1:${freePort()}`, timeoutMs: 500, connections: 1 });
    expect(await scanner.start().catch((error) => error)).toBeInstanceOf(ScannerUnavailableError);
    expect(await scanner.ping().catch((error) => error)).toBeInstanceOf(ScannerUnavailableError);
  });
});

test("the twin finds a marker across chunk boundaries", async () => {
  const scanner = markerScanner({ "Test.Marker": "MALWARE-MARKER" });
  const session = await scanner.start();
  await session.write(encoder.encode("clean text MALWA"));
  await session.write(encoder.encode("RE-MARKER more"));
  expect(await session.verdict()).toEqual({ infected: true, signature: "Test.Marker" });
  const clean = await scanner.start();
  await clean.write(encoder.encode("nothing here"));
  expect(await clean.verdict()).toEqual({ infected: false });
});
