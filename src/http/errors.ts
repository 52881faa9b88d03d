import { Elysia, NotFoundError, ParseError, t, ValidationError } from "elysia";
import { DatabaseUnavailableError, isConnectionFailure } from "../db/admission";
import type { Logger } from "../platform/logger";
import { StorageFullError, StorageUnavailableError } from "../platform/storage";

export type ErrorCode =
  | "BAD_REQUEST"
  | "AUTHENTICATION_REQUIRED"
  | "INVALID_TOKEN"
  | "TOKEN_EXPIRED"
  | "INVALID_CREDENTIALS"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "REQUEST_TIMEOUT"
  | "CONFLICT"
  | "PRECONDITION_FAILED"
  | "LOCKED"
  | "PAYLOAD_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "RANGE_NOT_SATISFIABLE"
  | "VALIDATION_ERROR"
  | "RATE_LIMITED"
  | "EMAIL_NOT_VERIFIED"
  | "MALWARE_DETECTED"
  | "INTERNAL_ERROR"
  | "SERVICE_UNAVAILABLE"
  | "INSUFFICIENT_STORAGE";

export interface ErrorDetail {
  field: string;
  issue: string;
}

/** The one error type services throw; the mapper turns it into the contract's body. */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: ErrorCode,
    message: string,
    readonly details: ErrorDetail[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const BEARER_CHALLENGE = { "www-authenticate": "Bearer" };
/** Seconds a client is asked to wait before retrying a 503. */
export const RETRY_AFTER_SECONDS = 5;
// The client's unread body would otherwise be drained first: close the connection after this answer.
const CLOSE = { connection: "close" };

export const errors = {
  badRequest: (message: string) => new AppError(400, "BAD_REQUEST", message),
  unauthenticated: (code: "AUTHENTICATION_REQUIRED" | "INVALID_TOKEN" | "TOKEN_EXPIRED", message: string) =>
    new AppError(401, code, message, [], BEARER_CHALLENGE),
  invalidCredentials: (message = "Incorrect username or password") =>
    new AppError(401, "INVALID_CREDENTIALS", message, [], BEARER_CHALLENGE),
  forbidden: (message = "You do not have permission to perform this action") =>
    new AppError(403, "PERMISSION_DENIED", message),
  emailNotVerified: () =>
    new AppError(403, "EMAIL_NOT_VERIFIED", "Verify your email address first (see POST /auth/request-verification)"),
  notFound: (what = "Resource") => new AppError(404, "NOT_FOUND", `${what} not found`),
  conflict: (message: string, details: ErrorDetail[] = []) => new AppError(409, "CONFLICT", message, details),
  preconditionFailed: (message: string, headers: Record<string, string> = {}) =>
    new AppError(412, "PRECONDITION_FAILED", message, [], headers),
  locked: (message: string) => new AppError(423, "LOCKED", message, [], { "retry-after": String(RETRY_AFTER_SECONDS) }),
  tooLarge: (limit: number) => new AppError(413, "PAYLOAD_TOO_LARGE", `Request body exceeds ${limit} bytes`),
  overQuota: (quota: number) =>
    new AppError(413, "PAYLOAD_TOO_LARGE", `This upload would exceed your storage quota of ${quota} bytes`),
  unsupportedMediaType: (message: string) => new AppError(415, "UNSUPPORTED_MEDIA_TYPE", message),
  rangeNotSatisfiable: (size: number) =>
    new AppError(416, "RANGE_NOT_SATISFIABLE", "Range not satisfiable", [], { "content-range": `bytes */${size}` }),
  validation: (details: ErrorDetail[]) => new AppError(422, "VALIDATION_ERROR", "Invalid input data", details),
  rateLimited: (retryAfterSeconds: number, headers: Record<string, string>) =>
    new AppError(429, "RATE_LIMITED", "Too many requests; try again later", [], {
      ...headers,
      "retry-after": String(retryAfterSeconds),
    }),
  unavailable: (message = "Service temporarily unavailable") =>
    new AppError(503, "SERVICE_UNAVAILABLE", message, [], { "retry-after": String(RETRY_AFTER_SECONDS) }),
  shuttingDown: () =>
    new AppError(503, "SERVICE_UNAVAILABLE", "The server is shutting down; retry the request", [], {
      "retry-after": String(RETRY_AFTER_SECONDS),
      ...CLOSE,
    }),
  requestTimeout: (message: string) => new AppError(408, "REQUEST_TIMEOUT", message, [], CLOSE),
  storageFull: () =>
    new AppError(507, "INSUFFICIENT_STORAGE", "The upload storage is full; nothing of the upload was kept"),
  malware: (signature: string) =>
    new AppError(422, "MALWARE_DETECTED", "The file contains malware and was not stored", [
      { field: "file", issue: signature },
    ]),
};

/** The contract's error body, for the OpenAPI document. */
export const ErrorBody = t.Object(
  {
    error: t.Object({
      code: t.String({ examples: ["VALIDATION_ERROR"] }),
      message: t.String(),
      details: t.Array(t.Object({ field: t.String(), issue: t.String() })),
      timestamp: t.String({ format: "date-time" }),
      request_id: t.String(),
    }),
  },
  { title: "Error" },
);

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: "Malformed request",
  401: "Missing, invalid or expired credentials",
  403: "Not allowed",
  404: "Not found",
  408: "The body stopped arriving (no data for UPLOAD_IDLE_SECONDS) or took too long",
  409: "Conflicts with an existing resource",
  412: "Precondition failed (a resumable upload request without Tus-Resumable: 1.0.0)",
  413: "Body too large",
  415: "Unsupported media type",
  416: "Range not satisfiable (see Content-Range)",
  422: "Validation failed",
  423: "Locked: another request is writing to this upload",
  429: "Rate limited",
  503: "Database, storage or scanner unavailable, or the server is shutting down (see Retry-After)",
  507: "The upload storage is full; nothing was kept",
};

/** Response schemas for the error statuses a route can return, spread into its `response`. */
export function errorResponses<S extends number>(...statuses: S[]): Record<S, typeof ErrorBody> {
  return Object.fromEntries(
    statuses.map((status) => [status, t.Composite([ErrorBody], { description: ERROR_DESCRIPTIONS[status] })]),
  ) as Record<S, typeof ErrorBody>;
}

/** Drizzle wraps driver errors (`cause`); its own message carries the query's parameters, so never log it. */
function databaseCause(error: unknown): { code?: string; message: string; constraint?: string } | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current && typeof current === "object"; depth++) {
    const candidate = current as {
      code?: unknown;
      message?: unknown;
      cause?: unknown;
      constraint_name?: string;
      constraint?: string;
    };
    if (typeof candidate.code === "string") {
      // postgres.js names it constraint_name, PGlite constraint.
      const constraint = candidate.constraint_name ?? candidate.constraint;
      return { code: candidate.code, message: String(candidate.message), constraint };
    }
    if (candidate.message === "PGlite is closed") return { code: "CONNECTION_ENDED", message: "PGlite is closed" };
    current = candidate.cause;
  }
  return undefined;
}

/** What of an error may be logged: the driver's code and message, never Drizzle's (it carries query parameters). */
export function loggableError(error: unknown) {
  return (
    databaseCause(error) ??
    (error instanceof Error ? { name: error.name, message: error.message, stack: error.stack } : String(error))
  );
}

/** Refused by the pool because the database is known to be down (Drizzle wraps it as the `cause`). */
function refusedWhileDown(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 3 && current; depth++) {
    if (current instanceof DatabaseUnavailableError) return current.down;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

function isDatabaseUnavailable(error: unknown): boolean {
  const code = databaseCause(error)?.code;
  return code !== undefined && (code === DatabaseUnavailableError.code || isConnectionFailure(code));
}

/**
 * Elysia coerces numeric query parameters one by one and, when a coerced value breaks its bounds,
 * reports it without the parameter's name; recover the name from the query string.
 */
function fieldOfCoercedValue(error: ValidationError, request: Request): string {
  const offending = String(error.value);
  for (const [name, value] of new URL(request.url).searchParams) if (value === offending) return name;
  return "query";
}

function toAppError(error: unknown, request: Request): AppError | undefined {
  if (error instanceof AppError) return error;
  if (error instanceof ValidationError) {
    if (error.type === "response") return undefined;
    const details = error.all.map((issue) => {
      const path = "path" in issue && issue.path ? issue.path.replace(/^\//, "").replaceAll("/", ".") : "";
      const custom = "schema" in issue ? (issue.schema as { error?: unknown }).error : undefined;
      const message = typeof custom === "string" ? custom : "message" in issue ? issue.message : undefined;
      const field = path || (error.type === "property" ? fieldOfCoercedValue(error, request) : error.type);
      return { field, issue: message ?? "Invalid value" };
    });
    // One entry per field: TypeBox reports a union's every branch.
    const unique = details.filter((d, i) => details.findIndex((o) => o.field === d.field) === i);
    return errors.validation(unique);
  }
  // Elysia wraps whatever a body parser throws; our own parser throws AppErrors (413, 400).
  if (error instanceof ParseError) {
    return error.cause instanceof AppError ? error.cause : errors.badRequest("Malformed request body");
  }
  if (error instanceof NotFoundError) return errors.notFound();
  if (isDatabaseUnavailable(error) || error instanceof StorageUnavailableError) return errors.unavailable();
  if (error instanceof StorageFullError) return errors.storageFull();
  const cause = databaseCause(error);
  // A row that refers to one deleted meanwhile (a file whose owner was deleted during the upload).
  if (cause?.code === "23503") return errors.conflict("Refers to something that no longer exists");
  if (cause?.code === "23505") {
    // Our unique indexes are named <table>_<column>[_lower]_(idx|key|unique): name the field.
    const field = cause.constraint?.match(/^[a-z]+?_(.+?)(_lower)?_(idx|key|unique)$/)?.[1];
    const details = field ? [{ field, issue: `This ${field} is already taken` }] : [];
    return errors.conflict("A resource with these values already exists", details);
  }
  return undefined;
}

function errorBody(error: AppError, requestId: string) {
  return {
    error: {
      code: error.errorCode,
      message: error.message,
      details: error.details,
      timestamp: new Date().toISOString(),
      request_id: requestId,
    },
  };
}

/** The one error mapper; registered on the root app so it sees every route's errors. */
export function errorMapper(logger: Logger) {
  return new Elysia({ name: "error-mapper" }).onError({ as: "global" }, ({ error, code, set, request, route }) => {
    const requestId = String(set.headers["x-request-id"] ?? "");
    let mapped = toAppError(error, request);
    // Elysia's own 404 carries code NOT_FOUND without a NotFoundError instance in some paths.
    if (!mapped && code === "NOT_FOUND") mapped = errors.notFound();
    if (!mapped) {
      logger.error("unhandled error", {
        request_id: requestId,
        method: request.method,
        route,
        error: loggableError(error),
      });
      mapped = new AppError(500, "INTERNAL_ERROR", "Internal server error");
    } else if (error instanceof StorageUnavailableError) {
      logger.warn("storage unavailable", { request_id: requestId, error: error.message });
    } else if (error instanceof StorageFullError) {
      logger.error("storage full: an upload was refused", { request_id: requestId, error: String(error.cause) });
    } else if (mapped.status === 503 && !(error instanceof AppError) && !refusedWhileDown(error)) {
      // A 503 a service threw (the virus scanner) was logged where it happened, with its cause; the database
      // going down is logged once, by the pool.
      logger.warn("database unavailable", { request_id: requestId, error: databaseCause(error)?.message });
    }
    set.status = mapped.status;
    Object.assign(set.headers, mapped.headers);
    set.headers["content-type"] = "application/json";
    return errorBody(mapped, requestId);
  });
}
