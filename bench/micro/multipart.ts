/**
 * `bun bench/micro/multipart.ts`: what finding the file part of a multipart body costs with the uploads'
 * parser (src/modules/files/multipart.ts), against the floor: one Buffer.indexOf per chunk for the
 * delimiter, nothing else. The same bodies, cut in the 64 KiB chunks Bun's request stream delivers and
 * handed over through an async iterator as `for await (const chunk of request.body)` gets them. Parsing
 * only: no hashing, no writing. Prints the median of ROUNDS per body size.
 *
 * Measured here on 2f6daf4, before the parser replaced it: busboy took 31 CPU-µs per 10 KiB body and
 * 70 ms per 200 MiB (2.8 GiB/s), 10x and 3x the floor.
 */
import { createMultipartParser } from "../../src/modules/files/multipart";

const MiB = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;
const ROUNDS = 5;
const BOUNDARY = "------------------------reviewpointbench";

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

async function* arriving(chunks: Buffer[]) {
  for (const chunk of chunks) yield chunk;
}

/** The uploads' parser, its file part's bytes counted. */
async function parser(chunks: Buffer[]): Promise<number> {
  let bytes = 0;
  const parse = createMultipartParser(BOUNDARY, () => ({
    data(piece) {
      bytes += piece.byteLength;
    },
    end() {},
  }));
  for await (const chunk of arriving(chunks)) parse.push(chunk);
  parse.end();
  return bytes;
}

/** The floor: the delimiter searched for once per chunk (a delimiter cut between chunks is not looked for). */
async function floor(chunks: Buffer[]): Promise<number> {
  const delimiter = Buffer.from(`\r\n--${BOUNDARY}`);
  let found = 0;
  for await (const chunk of arriving(chunks)) if (chunk.indexOf(delimiter) >= 0) found++;
  return found;
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
      const result = await parse(chunks);
      if (parse === parser && result !== size) throw new Error(`the parser found ${result} bytes of ${size}`);
    }
    samples.push((cpuUs() - before) / bodies);
  }
  return median(samples);
}

for (const [label, size, bodies] of [
  ["10 KiB", 10 * 1024, 5000],
  ["200 MiB", 200 * MiB, 1],
] as const) {
  const parserUs = await measure(parser, size, bodies);
  const floorUs = await measure(floor, size, bodies);
  const us = (value: number) => value.toFixed(value >= 100 ? 0 : 1);
  const rate = (us: number) => (size >= MiB ? `, ${(size / MiB / (us / 1e6)).toFixed(0)} MiB/s` : "");
  console.log(
    `${label}: the parser ${us(parserUs)} CPU-µs per body${rate(parserUs)}; the floor ${us(floorUs)}${rate(floorUs)}`,
  );
}
