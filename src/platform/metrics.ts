import { Counter, Gauge, type Metric, Registry } from "prom-client";

/** What the metrics need of a finished request; the observability hook's record has these and more. */
export interface RequestSample {
  method: string;
  /** The route template, never the raw path. */
  route: string;
  status: number;
  durationMs: number;
}

export interface Metrics {
  /** RequestObserver for the observability hook */
  observer: ((sample: RequestSample) => void) | undefined;
  uploadStored(bytes: number): void;
  rateLimited(rule: string): void;
  socketOpened(): void;
  socketClosed(): void;
  eventPublished(type: string): void;
  eventDelivered(type: string, sockets: number): void;
  /** An upload's scan: clean, infected, or stored unscanned (the scanner failed and CLAMAV_FAIL_OPEN is on). */
  uploadScanned(result: "clean" | "infected" | "unscanned"): void;
  /** A download the storage could not deliver whole: the client got an error, not the file. */
  downloadFailed(): void;
  render(): Promise<{ body: string; contentType: string }>;
}

/** What the metrics read at scrape time. */
export interface MetricsSources {
  version: string;
  /** The database pool's size and the work in flight on it (src/db/client.ts counts it). */
  pool: { readonly size: number; readonly active: number };
  /** The cache backend; `ping` asks it now. */
  cache: { readonly backend: "redis" | "memory"; ping(): Promise<boolean> };
}

// Finer than prom-client's default at the low end: most requests here take 1–25 ms.
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The process metrics of prom-client's default set that are cheap and true under Bun (CPU, start time,
 * resident and virtual memory, file descriptors). Left out: heap spaces (a scrape takes milliseconds, and
 * Bun reports zero for most spaces), heap size and used (Bun's "used" exceeds its "total" and counts
 * WebAssembly memory, PGlite's gigabyte among it), event-loop lag (Bun's monitorEventLoopDelay records
 * nothing), active handles/requests/resources (always 0 on Bun), GC (no GC performance entries) and the
 * Node version (Bun's claimed one).
 */
const PROCESS_COLLECTORS = [
  require("prom-client/lib/metrics/processCpuTotal"),
  require("prom-client/lib/metrics/processStartTime"),
  require("prom-client/lib/metrics/osMemoryHeap"),
  require("prom-client/lib/metrics/processOpenFileDescriptors"),
  require("prom-client/lib/metrics/processMaxFileDescriptors"),
] as ((registry: Registry, config: object) => void)[];

function entry<K, V>(map: Map<K, V>, key: K, create: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = create();
    map.set(key, value);
  }
  return value;
}

interface Series {
  /** Per bucket, not cumulative; the last one is +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

/**
 * The request histogram. prom-client's own Histogram validates and hashes the label set at every
 * observation (~0.3 µs, a few percent of a light request); here one costs three Map lookups (~0.03 µs).
 * It is rendered by the registry like any metric: something with a name and `get()`.
 */
function requestHistogram(name: string, help: string, buckets: number[]) {
  const series = new Map<string, Map<string, Map<number, Series>>>();
  const newMap = () => new Map();
  const newSeries = (): Series => ({ counts: new Array(buckets.length + 1).fill(0), sum: 0, count: 0 });
  const observe = (method: string, route: string, status: number, seconds: number) => {
    const one = entry(entry(entry(series, route, newMap), method, newMap), status, newSeries);
    let bucket = 0;
    while (bucket < buckets.length && seconds > (buckets[bucket] as number)) bucket++;
    (one.counts[bucket] as number)++;
    one.sum += seconds;
    one.count++;
  };
  const get = async () => {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const [route, byMethod] of series) {
      for (const [method, byStatus] of byMethod) {
        for (const [status, one] of byStatus) {
          const labels = { method, route, status };
          let cumulative = 0;
          one.counts.forEach((count, i) => {
            cumulative += count;
            const le = i < buckets.length ? String(buckets[i]) : "+Inf";
            values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
          });
          values.push({ metricName: `${name}_sum`, labels, value: one.sum });
          values.push({ metricName: `${name}_count`, labels, value: one.count });
        }
      }
    }
    return { name, help, type: "histogram", aggregator: "sum", values };
  };
  return { observe, metric: { name, help, type: "histogram", get } as unknown as Metric };
}

const nothing = () => {};

/** The twin for METRICS_ENABLED=false: every call does nothing, and no hook is added to requests. */
export const noMetrics: Metrics = {
  observer: undefined,
  uploadStored: nothing,
  rateLimited: nothing,
  socketOpened: nothing,
  socketClosed: nothing,
  eventPublished: nothing,
  eventDelivered: nothing,
  uploadScanned: nothing,
  downloadFailed: nothing,
  render: async () => ({ body: "", contentType: Registry.PROMETHEUS_CONTENT_TYPE }),
};

/** Prometheus metrics in a registry of their own (never prom-client's global one: tests build many apps). */
export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  const registers = [registry];
  for (const collect of PROCESS_COLLECTORS) collect(registry, {});

  new Gauge({
    name: "reviewpoint_build_info",
    help: "The running version (always 1)",
    labelNames: ["version", "bun"],
    registers,
  }).set({ version: sources.version, bun: Bun.version }, 1);

  // Its `_count` is the request counter: one observation per request, not two.
  const requests = requestHistogram(
    "reviewpoint_http_request_duration_seconds",
    "HTTP requests by method, route template and status, and how long they took",
    LATENCY_BUCKETS,
  );
  registry.registerMetric(requests.metric);

  const { pool, cache } = sources;
  new Gauge({
    name: "reviewpoint_db_pool_size",
    help: "Connections the database pool may hold (DB_POOL_MAX; 1 for the embedded database)",
    registers,
    collect() {
      this.set(pool.size);
    },
  });
  new Gauge({
    name: "reviewpoint_db_pool_connections",
    help: "Pool connections in use (running a query or holding a transaction) and idle (free for the next one; postgres.js opens them on demand and closes them after 30 s unused)",
    labelNames: ["state"],
    registers,
    collect() {
      const inUse = Math.min(pool.active, pool.size);
      this.set({ state: "in_use" }, inUse);
      this.set({ state: "idle" }, pool.size - inUse);
    },
  });
  new Gauge({
    name: "reviewpoint_db_pool_waiting",
    help: "Queries and transactions waiting for a pool connection",
    registers,
    collect() {
      this.set(Math.max(0, pool.active - pool.size));
    },
  });
  new Gauge({
    name: "reviewpoint_cache_up",
    help: "Whether the cache backend answers (asked at each scrape)",
    labelNames: ["backend"],
    registers,
    async collect() {
      this.set({ backend: cache.backend }, (await cache.ping().catch(() => false)) ? 1 : 0);
    },
  });

  const rateLimited = new Counter({
    name: "reviewpoint_rate_limited_total",
    help: "Requests refused with 429, by rate-limit rule",
    labelNames: ["rule"],
    registers,
  });
  const uploads = new Counter({ name: "reviewpoint_uploads_total", help: "Files stored", registers });
  const uploadBytes = new Counter({
    name: "reviewpoint_upload_bytes_total",
    help: "Bytes of the files stored",
    registers,
  });
  const scans = new Counter({
    name: "reviewpoint_upload_scans_total",
    help: "Uploads scanned for malware, by result (unscanned: stored without a verdict under CLAMAV_FAIL_OPEN)",
    labelNames: ["result"],
    registers,
  });
  const downloadFailures = new Counter({
    name: "reviewpoint_download_failures_total",
    help: "Downloads the storage failed to deliver whole (the bucket erred or went away mid-transfer); the client got an error",
    registers,
  });
  const sockets = new Gauge({ name: "reviewpoint_websocket_connections", help: "Open WebSockets", registers });
  const published = new Counter({
    name: "reviewpoint_events_published_total",
    help: "Events published, by type",
    labelNames: ["type"],
    registers,
  });
  const delivered = new Counter({
    name: "reviewpoint_events_delivered_total",
    help: "Event messages sent to sockets on this instance, by type",
    labelNames: ["type"],
    registers,
  });

  return {
    observer: (sample) => requests.observe(sample.method, sample.route, sample.status, sample.durationMs / 1000),
    uploadStored(bytes) {
      uploads.inc();
      uploadBytes.inc(bytes);
    },
    rateLimited: (rule) => rateLimited.inc({ rule }),
    socketOpened: () => sockets.inc(),
    socketClosed: () => sockets.dec(),
    eventPublished: (type) => published.inc({ type }),
    eventDelivered(type, count) {
      if (count > 0) delivered.inc({ type }, count);
    },
    uploadScanned: (result) => scans.inc({ result }),
    downloadFailed: () => downloadFailures.inc(),
    render: async () => ({ body: await registry.metrics(), contentType: registry.contentType }),
  };
}
