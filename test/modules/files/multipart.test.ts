/** The multipart parser alone: parts however the body is cut into chunks, and what it refuses. */
import { describe, expect, test } from "bun:test";
import {
  createMultipartParser,
  MultipartError,
  multipartBoundary,
  type PartInfo,
  parseHeaderValue,
} from "../../../src/modules/files/multipart";

const encoder = new TextEncoder();

/** Parses `body` fed in the given chunks; returns each part with its bytes. */
function parse(boundary: string, chunks: Uint8Array[]) {
  const parts: (PartInfo & { bytes: string })[] = [];
  const parser = createMultipartParser(boundary, (part) => {
    const pieces: Uint8Array[] = [];
    return {
      data: (bytes) => pieces.push(bytes.slice()),
      end: () => parts.push({ ...part, bytes: Buffer.concat(pieces).toString("latin1") }),
    };
  });
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return parts;
}

const cut = (bytes: Uint8Array, at: number[]) =>
  [0, ...at, bytes.length].slice(1).map((end, i) => bytes.subarray([0, ...at][i] as number, end));

// A body with a preamble, a field, a file whose bytes hold near-delimiters (the full delimiter, CRLF and
// "--boundary", may not occur inside a part: RFC 2046), padding after a boundary, an epilogue.
const file = "line one\r\n--boundar not quite\n--boundaryX nor\r\r\n\r\n-- end\r";
const BODY = encoder.encode(
  "preamble text\r\n" +
    '--boundary\r\nContent-Disposition: form-data; name="is_public"\r\n\r\ntrue\r\n' +
    '--boundary  \t\r\nContent-Disposition: form-data; name="file"; filename="Résumé.txt"\r\nContent-Type: Text/Plain; charset=utf-8\r\n\r\n' +
    `${file}\r\n--boundary--\r\nepilogue`,
);
const EXPECTED = [
  { name: "is_public", filename: undefined, contentType: "text/plain", bytes: "true" },
  { name: "file", filename: "Résumé.txt", contentType: "text/plain", bytes: file },
];

describe("multipart parser", () => {
  test("the same parts whatever the chunks: whole, byte by byte, and cut at every point", () => {
    expect(parse("boundary", [BODY])).toEqual(EXPECTED);
    expect(
      parse(
        "boundary",
        cut(
          BODY,
          Array.from({ length: BODY.length - 1 }, (_, i) => i + 1),
        ),
      ),
    ).toEqual(EXPECTED);
    for (let at = 1; at < BODY.length; at++) expect(parse("boundary", cut(BODY, [at]))).toEqual(EXPECTED);
  });

  test("header values: quoted strings, RFC 5987 names, a Windows path kept as sent", () => {
    expect(parseHeaderValue('form-data; name="a\\"b"; filename*=UTF-8\'\'%E8%AB%96%E6%96%87.pdf').params).toEqual(
      new Map([
        ["name", 'a"b'],
        ["filename", "論文.pdf"],
      ]),
    );
    expect(parseHeaderValue('form-data; filename="C:\\Users\\ada\\x.txt"').params.get("filename")).toBe(
      "C:\\Users\\ada\\x.txt",
    );
    expect(multipartBoundary('multipart/form-data; boundary="quoted b"')).toBe("quoted b");
    expect(multipartBoundary("multipart/form-data")).toBeUndefined();
    expect(multipartBoundary("multipart/mixed; boundary=x")).toBeUndefined();
  });

  test("refused: no closing delimiter, a control character in a header, headers too large, junk after a boundary", () => {
    const part = '--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n';
    const refused = (body: string) => () => parse("b", [encoder.encode(body)]);
    expect(refused(part)).toThrow(MultipartError);
    expect(refused(`--b\r\nContent-Disposition: form-data; name="f\x07"\r\n\r\nx\r\n--b--`)).toThrow(MultipartError);
    expect(refused(`--b\r\nX: ${"y".repeat(20_000)}`)).toThrow("Part headers too large");
    expect(refused(`--bjunk\r\n${part.slice(5)}--b--`)).toThrow(MultipartError);
  });
});
