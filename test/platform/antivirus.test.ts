/** The clamd client against a real clamd (INSTREAM), and its in-process twin. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { clamdScanner, markerScanner, ScannerBusyError, ScannerUnavailableError } from "../../src/platform/antivirus";
import { CLAMD, EICAR, EICAR_SIGNATURE, startClamd, type TestClamd } from "../clamd";
import { freePort } from "../support";

const encoder = new TextEncoder();

/** The chunks as a stream, as storage reads bytes back. */
function bytesOf(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
      controller.close();
    },
  });
}

/** Bytes that stop half way until `finish()`: a scan that holds its connection. */
function heldBytes() {
  let finish = () => {};
  const released = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const bytes = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(encoder.encode("a paper, "));
      await released;
      controller.enqueue(encoder.encode("finished"));
      controller.close();
    },
  });
  return { bytes, finish };
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
    expect(await scanner.scan(bytesOf("just a paper\n"))).toEqual({ infected: false });
    expect(await scanner.scan(bytesOf(EICAR))).toEqual({ infected: true, signature: EICAR_SIGNATURE });
    const cut = 20;
    const split = bytesOf("%PDF-1.4\n", "x".repeat(100_000), EICAR.slice(0, cut), EICAR.slice(cut));
    expect(await scanner.scan(split)).toEqual({ infected: true, signature: EICAR_SIGNATURE });
    expect(await scanner.ping()).toBeGreaterThan(0);
  });

  test("a unix:// socket works as well as TCP", async () => {
    const local = await startClamd({ unixSocket: true });
    try {
      const scanner = clamdScanner({ url: local.url, timeoutMs: 5000, connections: 1 });
      expect(local.url).toStartWith("unix:///");
      expect(await scanner.scan(bytesOf("a clean paper"))).toEqual({ infected: false });
      expect(await scanner.scan(bytesOf(EICAR))).toEqual({ infected: true, signature: EICAR_SIGNATURE });
    } finally {
      await local.dispose();
    }
  });

  test("a stream over clamd's StreamMaxLength is an error, not a verdict", async () => {
    const scanner = clamdScanner({ url: small.url, timeoutMs: 5000, connections: 1 });
    const quarter = new Uint8Array(256 * 1024).fill(97);
    const error = await scanner.scan(bytesOf(...Array(8).fill(quarter))).catch((caught: Error) => caught);
    expect(error).toBeInstanceOf(ScannerUnavailableError);
    // clamd answers and closes at once: the answer is read, or a write meets the closed socket first.
    expect((error as Error).message).toMatch(/size limit exceeded|EPIPE|ECONNRESET/);
  });

  test("connections are bounded: a third scan waits for a free one, or gives up busy after the timeout", async () => {
    const scanner = clamdScanner({ url: clamd.url, timeoutMs: 1000, connections: 2 });
    const [first, second] = [heldBytes(), heldBytes()];
    const scans = [scanner.scan(first.bytes), scanner.scan(second.bytes)];
    await Bun.sleep(100);
    const third = scanner.scan(bytesOf("a third paper"));
    first.finish();
    expect(await third).toEqual({ infected: false });
    second.finish();
    expect(await Promise.all(scans)).toEqual([{ infected: false }, { infected: false }]);

    const held = [heldBytes(), heldBytes()];
    const holding = held.map((h) => scanner.scan(h.bytes));
    await Bun.sleep(100);
    expect(await scanner.scan(bytesOf("too late")).catch((error) => error)).toBeInstanceOf(ScannerBusyError);
    for (const h of held) h.finish();
    await Promise.all(holding);
  });

  test("one owner's scans take at most its own share of connections; another owner's go ahead", async () => {
    const scanner = clamdScanner({ url: clamd.url, timeoutMs: 500, connections: 4, perOwner: 2 });
    const slow = [heldBytes(), heldBytes()];
    const holding = slow.map((h) => scanner.scan(h.bytes, "slowloris"));
    await Bun.sleep(100);
    expect(await scanner.scan(bytesOf("a third"), "slowloris").catch((error) => error)).toBeInstanceOf(
      ScannerBusyError,
    );
    expect(await scanner.scan(bytesOf("a paper"), "someone-else")).toEqual({ infected: false });
    for (const h of slow) h.finish();
    await Promise.all(holding);
    expect(await scanner.scan(bytesOf("again"), "slowloris")).toEqual({ infected: false });
  });

  test("an unreachable scanner is ScannerUnavailableError, at scan and at ping", async () => {
    const scanner = clamdScanner({ url: `tcp://127.0.0.1:${freePort()}`, timeoutMs: 500, connections: 1 });
    expect(await scanner.scan(bytesOf("x")).catch((error) => error)).toBeInstanceOf(ScannerUnavailableError);
    expect(await scanner.ping().catch((error) => error)).toBeInstanceOf(ScannerUnavailableError);
  });
});

test("the twin finds a marker across chunk boundaries", async () => {
  const scanner = markerScanner({ "Test.Marker": "MALWARE-MARKER" });
  expect(await scanner.scan(bytesOf("clean text MALWA", "RE-MARKER more"))).toEqual({
    infected: true,
    signature: "Test.Marker",
  });
  expect(await scanner.scan(bytesOf("nothing here"))).toEqual({ infected: false });
});
