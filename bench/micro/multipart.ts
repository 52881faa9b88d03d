/**
 * `bun bench/micro/multipart.ts`: what finding the file part of a multipart body costs, busboy (as
 * src/modules/files/upload.ts uses it: streamsearch, a Boyer-Moore-Horspool search written in JavaScript)
 * against a search with Buffer.indexOf (native), on the same bodies cut in the 64 KiB chunks Bun's request
 * stream delivers. Parsing only: no hashing, no writing. Prints the median of ROUNDS per body size.
 *
 * The splitter below is a measuring stick, not a parser for src/: one part, its headers skipped up to the
 * blank line, no fields, no limits.
 */
import busboy from "busboy";

const MiB = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;
const ROUNDS = 5;
const BOUNDARY = "------------------------reviewpointbench";
const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

/** A body as curl -F builds it (one text part `file` of `size` bytes), cut into CHUNK_BYTES pieces. */
function chunkedBody(size: number): Buffer[] {
  const body = Buffer.concat([
    Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\nContent-Type: text/plain\r\n\r\n`,
    ),
    Buffer.alloc(size, "0123456789abcdef\n"),
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
  const chunks: Buffer[] = [];
  // Copies: each chunk its own allocation, as the request stream hands them over.
  for (let at = 0; at < body.length; at += CHUNK_BYTES) chunks.push(Buffer.from(body.subarray(at, at + CHUNK_BYTES)));
  return chunks;
}

/** The chunks one by one through an async iterator, as `for await (const chunk of request.body)` gets them. */
async function* arriving(chunks: Buffer[]) {
  for (const chunk of chunks) yield chunk;
}

/** Busboy as the upload path drives it: the file part's bytes counted, the writes awaited on `drain`. */
async function withBusboy(chunks: Buffer[]): Promise<number> {
  const parser = busboy({ headers: { "content-type": CONTENT_TYPE }, defParamCharset: "utf8" });
  let bytes = 0;
  parser.on("file", (_name, stream) => {
    stream.on("data", (data: Buffer) => {
      bytes += data.byteLength;
    });
  });
  const closed = new Promise<void>((resolve, reject) => {
    parser.on("close", resolve);
    parser.on("error", reject);
  });
  for await (const chunk of arriving(chunks)) {
    if (!parser.write(chunk)) await new Promise((resolve) => parser.once("drain", resolve));
  }
  parser.end();
  await closed;
  return bytes;
}

/** The file part's bytes found with Buffer.indexOf: a delimiter cut between chunks is found in a small joint. */
async function withIndexOf(chunks: Buffer[]): Promise<number> {
  const delimiter = Buffer.from(`\r\n--${BOUNDARY}`);
  let bytes = 0;
  let inBody = false;
  let done = false;
  let head: Buffer = Buffer.alloc(0);
  let carry: Buffer = Buffer.alloc(0);
  const data = (piece: Buffer) => {
    bytes += piece.byteLength;
  };
  for await (const chunk of arriving(chunks)) {
    if (done) continue;
    let rest = chunk;
    if (!inBody) {
      head = head.length ? Buffer.concat([head, rest]) : rest;
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) continue;
      rest = head.subarray(end + 4);
      inBody = true;
    }
    if (carry.length) {
      const joint = Buffer.concat([carry, rest.subarray(0, delimiter.length - 1)]);
      const at = joint.indexOf(delimiter);
      if (at >= 0) {
        data(joint.subarray(0, at));
        done = true;
        continue;
      }
      // No delimiter starts in the carry: it is all data.
      data(carry);
      carry = Buffer.alloc(0);
    }
    const at = rest.indexOf(delimiter);
    if (at >= 0) {
      data(rest.subarray(0, at));
      done = true;
      continue;
    }
    const keep = Math.min(rest.length, delimiter.length - 1);
    data(rest.subarray(0, rest.length - keep));
    carry = Buffer.from(rest.subarray(rest.length - keep));
  }
  return bytes;
}

const cpuUs = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** `bodies` bodies of `size` bytes through `parse`, ROUNDS times: median CPU µs per body. */
async function measure(parse: (chunks: Buffer[]) => Promise<number>, size: number, bodies: number): Promise<number> {
  const chunks = chunkedBody(size);
  const samples: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const before = cpuUs();
    for (let i = 0; i < bodies; i++) {
      const bytes = await parse(chunks);
      if (bytes !== size) throw new Error(`${parse.name} found ${bytes} bytes of ${size}`);
    }
    samples.push((cpuUs() - before) / bodies);
  }
  return median(samples);
}

for (const [label, size, bodies] of [
  ["10 KiB", 10 * 1024, 5000],
  ["200 MiB", 200 * MiB, 1],
] as const) {
  const results = [];
  for (const parse of [withBusboy, withIndexOf]) {
    const us = await measure(parse, size, bodies);
    results.push({ parser: parse.name, us });
  }
  const [busboyUs, indexOfUs] = results.map((r) => r.us) as [number, number];
  const rate = (us: number) => (size >= MiB ? `, ${(size / MiB / (us / 1e6)).toFixed(0)} MiB/s` : "");
  console.log(
    `${label}: busboy ${busboyUs.toFixed(0)} CPU-µs per body${rate(busboyUs)}; Buffer.indexOf ${indexOfUs.toFixed(0)}${rate(indexOfUs)} (${(busboyUs / indexOfUs).toFixed(1)}x less)`,
  );
}
