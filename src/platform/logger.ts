export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
type Fields = Record<string, unknown>;

export interface Logger {
  enabled(level: Exclude<LogLevel, "silent">): boolean;
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };
const SECRET_KEY = /pass(word)?|token|secret|authorization|cookie|hash|api[-_]?key/i;

/** Masks values whose key names a secret, at any depth, so a careless field cannot leak one. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 5 || value === null || typeof value !== "object") return value;
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const out: Fields = {};
  for (const [key, inner] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) ? "[redacted]" : redact(inner, depth + 1);
  }
  return out;
}

export function createLogger(options: {
  level: LogLevel;
  format: "json" | "pretty";
  write?: (line: string) => void;
}): Logger {
  const threshold = RANK[options.level];
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const emit = (level: Exclude<LogLevel, "silent">, msg: string, fields?: Fields) => {
    if (RANK[level] < threshold) return;
    const safe = fields ? (redact(fields) as Fields) : {};
    const time = new Date().toISOString();
    if (options.format === "json") {
      write(JSON.stringify({ time, level, msg, ...safe }));
      return;
    }
    const extra = Object.entries(safe)
      .map(([key, val]) => `${key}=${typeof val === "string" ? val : JSON.stringify(val)}`)
      .join(" ");
    write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? ` ${extra}` : ""}`);
  };
  return {
    enabled: (level) => RANK[level] >= threshold,
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
  };
}
