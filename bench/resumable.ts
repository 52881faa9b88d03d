/**
 * The resumable rows: a 20 MiB text file sent with tus in 1 MiB chunks (a POST, then one PATCH after
 * another, as tus-js-client sends them with `chunkSize: 1 MiB`) against one multipart `POST /uploads` of
 * the same file, to the same running server, with the same client (Bun's fetch), rounds alternating.
 *
 *   import { resumableVsMultipart } from "./resumable";
 *   const rows = await resumableVsMultipart({ url: server.url, token });
 *   // { tusMibPerSec, multipartMibPerSec, ratio, rounds, fileBytes, chunkBytes }
 *
 * The server needs MAX_UPLOAD_SIZE ≥ 20 MiB, RATE_LIMIT_UPLOAD and RATE_LIMIT_DEFAULT with room for
 * 2 × rounds uploads and 21 × rounds requests; each file stored is deleted again.
 */
import { median } from "./load";

const MiB = 1024 * 1024;
const TUS = "/api/v1/uploads/resumable";
const UPLOADS = "/api/v1/uploads";

export interface ResumableResults {
  /** Median MiB/s of the tus uploads, first request to last answer. */
  tusMibPerSec: number;
  /** Median MiB/s of the multipart uploads of the same file. */
  multipartMibPerSec: number;
  /** tus over multipart. */
  ratio: number;
  rounds: number;
  fileBytes: number;
  chunkBytes: number;
}

/** ASCII lines (valid UTF-8, so `text/plain` passes the content check). */
function textFile(bytes: number): Uint8Array {
  const line = new TextEncoder().encode(`${crypto.randomUUID()} resumable bench line of text\n`);
  const out = new Uint8Array(bytes);
  for (let at = 0; at < bytes; at += line.length) out.set(line.subarray(0, Math.min(line.length, bytes - at)), at);
  return out;
}

async function expectStatus(response: Response, status: number, what: string): Promise<Response> {
  if (response.status !== status) throw new Error(`${what}: ${response.status} ${await response.text()}`);
  return response;
}

/** One tus upload in `chunkBytes` PATCHes; returns the seconds it took and the file's id. */
async function tusUpload(url: string, authorization: string, file: Uint8Array, chunkBytes: number) {
  const tus = { authorization, "tus-resumable": "1.0.0" };
  const metadata = `filename ${btoa("bench.txt")},filetype ${btoa("text/plain")}`;
  const startedAt = performance.now();
  const created = await expectStatus(
    await fetch(url + TUS, {
      method: "POST",
      headers: { ...tus, "upload-length": String(file.byteLength), "upload-metadata": metadata },
    }),
    201,
    "tus creation",
  );
  const location = url + created.headers.get("location");
  let fileId: string | null = null;
  for (let offset = 0; offset < file.byteLength; offset += chunkBytes) {
    const patched = await expectStatus(
      await fetch(location, {
        method: "PATCH",
        headers: { ...tus, "upload-offset": String(offset), "content-type": "application/offset+octet-stream" },
        body: file.subarray(offset, offset + chunkBytes),
      }),
      204,
      "tus PATCH",
    );
    fileId = patched.headers.get("upload-file-id");
  }
  if (!fileId) throw new Error("tus: the last PATCH named no file");
  return { seconds: (performance.now() - startedAt) / 1000, fileId };
}

async function multipartUpload(url: string, authorization: string, file: Uint8Array) {
  const form = new FormData();
  form.append("file", new File([file], "bench.txt", { type: "text/plain" }));
  const startedAt = performance.now();
  const response = await expectStatus(
    await fetch(url + UPLOADS, { method: "POST", headers: { authorization }, body: form }),
    201,
    "multipart upload",
  );
  const { id } = (await response.json()) as { id: string };
  return { seconds: (performance.now() - startedAt) / 1000, fileId: id };
}

export async function resumableVsMultipart(options: {
  url: string;
  token: string;
  fileBytes?: number;
  chunkBytes?: number;
  rounds?: number;
}): Promise<ResumableResults> {
  const { url, fileBytes = 20 * MiB, chunkBytes = MiB, rounds = 5 } = options;
  const authorization = `Bearer ${options.token}`;
  const file = textFile(fileBytes);
  const rate = (seconds: number) => fileBytes / MiB / seconds;
  const tus: number[] = [];
  const multipart: number[] = [];
  const remove = (fileId: string) =>
    fetch(`${url}${UPLOADS}/${fileId}`, { method: "DELETE", headers: { authorization } });
  // A warm-up of each, then rounds alternating which goes first.
  await remove((await tusUpload(url, authorization, file, chunkBytes)).fileId);
  await remove((await multipartUpload(url, authorization, file)).fileId);
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ["tus", "multipart"] : ["multipart", "tus"];
    for (const kind of order) {
      const done =
        kind === "tus"
          ? await tusUpload(url, authorization, file, chunkBytes)
          : await multipartUpload(url, authorization, file);
      (kind === "tus" ? tus : multipart).push(rate(done.seconds));
      await remove(done.fileId);
    }
  }
  const tusMibPerSec = median(tus);
  const multipartMibPerSec = median(multipart);
  return { tusMibPerSec, multipartMibPerSec, ratio: tusMibPerSec / multipartMibPerSec, rounds, fileBytes, chunkBytes };
}
