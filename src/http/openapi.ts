import { toOpenAPISchema } from "@elysiajs/openapi";
import { OptionalKind } from "@sinclair/typebox";
import { type AnyElysia, Elysia } from "elysia";
import { ErrorBody } from "./errors";
import "./formats";
import { isProbePath } from "./rate-limit";

type Operation = {
  "x-response-media-types"?: Record<string, string[]>;
  requestBody?: { content: Record<string, unknown>; required?: boolean };
  responses?: Record<string, { description?: string; content?: Record<string, unknown> }>;
};
type Document = Record<string, unknown> & { paths: Record<string, Record<string, Operation>> };
type Route = AnyElysia["routes"][number];

const OPENAPI_VERSION = "3.1.0";
const ERROR_REF = { $ref: "#/components/schemas/Error" };
/** Statuses any API route can answer with, whatever it declares (probes are never limited). */
const EVERY_API_ROUTE = { "500": "Unexpected server error", "503": "Database unavailable" };
const EVERY_LIMITED_ROUTE = { ...EVERY_API_ROUTE, "429": "Rate limited (see Retry-After)" };
/** What the body parser answers on any route that takes a body. */
const EVERY_BODY_ROUTE = {
  "400": "Malformed JSON body",
  "413": "Body over 1 MiB",
  "415": "Not JSON (or, on the login route, not an HTML form)",
};

export interface OpenApiOptions {
  /** Paths whose body may also come as an HTML form (the OAuth2 password flow of the docs' Authorize button). */
  formBodies: string[];
  /** Prefix of the routes that can be rate limited or hit the database. */
  apiPrefix: string;
}

const templated = (path: string) => path.replace(/:([^/]+)/g, "{$1}");

/** Both are protected in Elysia's types, but they are what the generator itself reads. */
function routesOf(app: AnyElysia): Route[] {
  return (app as unknown as { getGlobalRoutes(): Route[] }).getGlobalRoutes();
}

/**
 * Our capped body parser is a global function hook, which @elysiajs/openapi would document as a body
 * with no content type at all; hide it from the generator so bodies are documented from their schemas.
 */
function withoutParseHooks(app: AnyElysia): AnyElysia {
  const source = app as unknown as { getGlobalDefinitions(): unknown };
  return {
    getGlobalDefinitions: () => source.getGlobalDefinitions(),
    getGlobalRoutes: () =>
      routesOf(app).map((route) => {
        const parse = (route.hooks?.parse as { fn: unknown }[] | undefined)?.filter((p) => typeof p.fn !== "function");
        return { ...route, hooks: { ...route.hooks, parse: parse?.length ? parse : undefined } };
      }),
  } as unknown as AnyElysia;
}

/** Adds the error responses a route can give without declaring them. */
function implyErrors(responses: NonNullable<Operation["responses"]>, statuses: Record<string, string>) {
  for (const [status, description] of Object.entries(statuses)) {
    responses[status] ??= { description, content: { "application/json": { schema: ERROR_REF } } };
  }
}

/** Fixes what the generator gets wrong or cannot know. */
function repair(document: Document, app: AnyElysia, options: OpenApiOptions): Document {
  const optionalBodies = new Set(
    routesOf(app)
      .filter((route) => (route.hooks?.body as Record<symbol, unknown> | undefined)?.[OptionalKind] === "Optional")
      .map((route) => `${route.method.toLowerCase()} ${templated(route.path)}`),
  );
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      operation.responses ??= {};
      const responses = operation.responses;
      // A no-content response (204) must not carry `content`.
      for (const response of Object.values(responses)) {
        if (response.content && "type" in response.content) delete response.content;
      }
      if (path.startsWith(options.apiPrefix)) {
        const implied = isProbePath(path) ? EVERY_API_ROUTE : EVERY_LIMITED_ROUTE;
        implyErrors(responses, implied);
      }
      // A route may name its real media types (a CSV export is not `text/plain`).
      for (const [status, types] of Object.entries(operation["x-response-media-types"] ?? {})) {
        const response = responses[status];
        const schema = Object.values(response?.content ?? {})[0] as { schema?: unknown } | undefined;
        if (response) response.content = Object.fromEntries(types.map((type) => [type, { schema: schema?.schema }]));
      }
      delete operation["x-response-media-types"];
      const body = operation.requestBody;
      if (!body) continue;
      implyErrors(responses, EVERY_BODY_ROUTE);
      if (optionalBodies.has(`${method} ${path}`)) body.required = false;
      // What the body parser accepts: JSON, and an HTML form on the form routes (else 415).
      const json = body.content["application/json"];
      if (json) {
        body.content = { "application/json": json };
        if (options.formBodies.includes(path)) body.content["application/x-www-form-urlencoded"] = json;
      }
    }
  }
  return document;
}

/** GET /openapi.json: the document for every route of `app`, built once on first request. */
export function openapiRoute(app: AnyElysia, documentation: Record<string, unknown>, options: OpenApiOptions) {
  let document: Document | undefined;
  const build = (): Document => {
    const { paths, components } = toOpenAPISchema(
      withoutParseHooks(app),
      { paths: [/^\/docs/, /^\/redoc/, "/openapi.json"] },
      undefined,
      undefined,
      OPENAPI_VERSION,
    );
    const extra = (documentation.components ?? {}) as Record<string, unknown>;
    return repair(
      {
        openapi: OPENAPI_VERSION,
        ...documentation,
        paths: paths as Document["paths"],
        components: { ...extra, schemas: { ...components.schemas, Error: ErrorBody } },
      },
      app,
      options,
    );
  };
  return new Elysia({ name: "openapi-document" }).get(
    "/openapi.json",
    () => {
      document ??= build();
      return document;
    },
    { detail: { hide: true } },
  );
}
