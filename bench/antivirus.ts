/** The antivirus rows: uploads to a server scanning with a real clamd, against one that does not scan. */
import { join } from "node:path";
import { SMALL_FILE_BYTES, SMALL_UPLOAD_SHAPE, writeMultipartBody } from "./files";
import { type Pair, pairedLoad, type Shape } from "./load";
import type { Service } from "./process";

const MiB = 1024 * 1024;
export const SCANNED_FILE_BYTES = 5 * MiB;
/** Few connections: each 5 MiB upload is scanned whole, and CLAMAV_CONNECTIONS (4) bounds the scans. */
const BIG_SHAPE: Shape = { threads: 1, connections: 4, seconds: 5, warmupSeconds: 1, rounds: 3 };

export interface ScanLoads {
  small: Pair;
  big: Pair;
}

/** Small uploads (req/s, p99) and 5 MiB uploads (MiB/s), each paired: scanning server vs one without. */
export async function scanLoads(scanning: Service, plain: Service, token: string, scratch: string): Promise<ScanLoads> {
  const authorization = `Bearer ${token}`;
  const load = async (bytes: number, shape: Shape) => {
    const bodyFile = join(scratch, `scan-${bytes}.body`);
    const contentType = writeMultipartBody(bodyFile, bytes);
    const upload = { method: "POST" as const, bodyFile, contentType, authorization };
    return pairedLoad(
      { ...upload, url: `${scanning.url}/api/v1/uploads`, pid: scanning.child.pid },
      { ...upload, url: `${plain.url}/api/v1/uploads`, pid: plain.child.pid },
      shape,
    );
  };
  return { small: await load(SMALL_FILE_BYTES, SMALL_UPLOAD_SHAPE), big: await load(SCANNED_FILE_BYTES, BIG_SHAPE) };
}
