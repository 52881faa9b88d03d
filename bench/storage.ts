/** The storage rows: one file downloaded from a server on S3 and from one on the local disk. */
import { median } from "./load";
import type { Service } from "./process";

export const S3_DOWNLOAD_ROUNDS = 7;
const MiB = 1024 * 1024;
const FILE_BYTES = 10 * MiB;

export interface S3Download {
  rounds: number;
  diskMibPerSec: number;
  s3MibPerSec: number;
}

async function uploadTo(server: Service, authorization: string, bytes: Uint8Array): Promise<string> {
  const form = new FormData();
  form.append("file", new File([bytes], "ten.txt", { type: "text/plain" }));
  const response = await fetch(`${server.url}/api/v1/uploads`, {
    method: "POST",
    headers: { authorization },
    body: form,
    signal: AbortSignal.timeout(60_000),
  });
  if (response.status !== 201) throw new Error(`upload to ${server.url} returned ${response.status}`);
  return ((await response.json()) as { id: string }).id;
}

async function timedDownload(server: Service, authorization: string, id: string): Promise<number> {
  const startedAt = performance.now();
  const response = await fetch(`${server.url}/api/v1/uploads/${id}/download`, {
    headers: { authorization },
    signal: AbortSignal.timeout(60_000),
  });
  const received = (await response.arrayBuffer()).byteLength;
  if (response.status !== 200 || received !== FILE_BYTES) {
    throw new Error(`download from ${server.url}: ${response.status}, ${received} bytes`);
  }
  return FILE_BYTES / MiB / ((performance.now() - startedAt) / 1000);
}

/** The same 10 MiB file stored on each, then downloaded from disk and S3 back to back, S3_DOWNLOAD_ROUNDS times. */
export async function pairedDownloads(disk: Service, s3: Service, authorization: string): Promise<S3Download> {
  const bytes = new Uint8Array(FILE_BYTES).map((_, i) => 97 + (i % 26));
  const [diskId, s3Id] = [await uploadTo(disk, authorization, bytes), await uploadTo(s3, authorization, bytes)];
  const diskRates: number[] = [];
  const s3Rates: number[] = [];
  // One unmeasured round each, so neither is measured cold.
  await timedDownload(disk, authorization, diskId);
  await timedDownload(s3, authorization, s3Id);
  for (let i = 0; i < S3_DOWNLOAD_ROUNDS; i++) {
    diskRates.push(await timedDownload(disk, authorization, diskId));
    s3Rates.push(await timedDownload(s3, authorization, s3Id));
  }
  return { rounds: S3_DOWNLOAD_ROUNDS, diskMibPerSec: median(diskRates), s3MibPerSec: median(s3Rates) };
}
