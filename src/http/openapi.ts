import { toOpenAPISchema } from "@elysiajs/openapi";
import { OptionalKind } from "@sinclair/typebox";
import { type AnyElysia, Elysia } from "elysia";
import { ErrorBody } from "./errors";
import "./formats";
import { isProbePath } from "./rate-limit";

type Operation = {
  "x-response-media-types"?: Record<string, string[]>;
  "x-header-parameters"?: unknown[];
  parameters?: unknown[];
  requestBody?: { content: Record<string, unknown>; required?: boolean };
  responses?: Record<string, { description?: string; content?: Record<string, unknown> }>;
};
type Document = Record<string, unknown> & { paths: Record<string, Record<string, Operation>> };
type Route = AnyElysia["routes"][number];

const OPENAPI_VERSION = "3.1.0";
const ERROR_REF = { $ref: "#/components/schemas/Error" };
/** Statuses any API route can answer with, whatever it declares (probes are never limited). */
const EVERY_API_ROUTE = {
  "500": "Unexpected server error",
  "503": "Database, storage or scanner unavailable (see Retry-After)",
};
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

/** Elysia's coercing numbers/booleans (`anyOf: [{type:"string",format:"integer"}, {type:"integer"}]`): keep the real type. */
function uncoerce(node: unknown): void {
  if (Array.isArray(node)) {
    for (const item of node) uncoerce(item);
    return;
  }
  if (!node || typeof node !== "object") return;
  const schema = node as Record<string, unknown>;
  const branches = schema.anyOf as Record<string, unknown>[] | undefined;
  const coerced = ["integer", "numeric", "number", "boolean"];
  if (branches?.length === 2) {
    const text = branches.find((b) => b.type === "string" && coerced.includes(String(b.format)));
    const real = branches.find((b) => b !== text && b.type !== "string");
    if (text && real) {
      const { anyOf: _, ...outer } = schema;
      for (const key of Object.keys(schema)) delete schema[key];
      Object.assign(schema, real, outer);
    }
  }
  // `nullable` is OpenAPI 3.0; 3.1 says it with `type: [..., "null"]`, which the schema already has.
  if (Array.isArray(schema.type) && schema.nullable === true) delete schema.nullable;
  // t.File() puts `default: "File"` on a binary field.
  if (schema.format === "binary" && schema.default === "File") delete schema.default;
  for (const value of Object.values(schema)) uncoerce(value);
}

/** Fixes what the generator gets wrong or cannot know. */
function repair(document: Document, app: AnyElysia, options: OpenApiOptions): Document {
  const optionalBodies = new Set(
    routesOf(app)
      .filter((route) => (route.hooks?.body as Record<symbol, unknown> | undefined)?.[OptionalKind] === "Optional")
      .map((route) => `${route.method.toLowerCase()} ${templated(route.path)}`),
  );
  // A query field with a default may be left out: the server fills it in.
  const defaulted = new Map(
    routesOf(app).map((route) => {
      const query = route.hooks?.query as { properties?: Record<string, { default?: unknown }> } | undefined;
      const names = Object.entries(query?.properties ?? {}).filter(([, field]) => field.default !== undefined);
      return [`${route.method.toLowerCase()} ${templated(route.path)}`, new Map(names.map(([n, f]) => [n, f.default]))];
    }),
  );
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const parameters =
        (
          operation as {
            parameters?: { name: string; in: string; required?: boolean; schema?: Record<string, unknown> }[];
          }
        ).parameters ?? [];
      for (const parameter of parameters) {
        const fallback = defaulted.get(`${method} ${path}`)?.get(parameter.name);
        if (parameter.in !== "query" || fallback === undefined) continue;
        parameter.required = false;
        parameter.schema = { ...parameter.schema, default: fallback };
      }
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
      // Headers a route reads itself (tus): the generator keeps only the parameters of its schemas.
      const headers = operation["x-header-parameters"];
      if (headers) operation.parameters = [...(operation.parameters ?? []), ...headers];
      delete operation["x-header-parameters"];
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
  uncoerce(document.paths);
  uncoerce(document.components);
  return document;
}

/** GET /openapi.json: the document for every route of `app`, built once on first request. */
export function openapiRoute(app: AnyElysia, documentation: Record<string, unknown>, options: OpenApiOptions) {
  let document: Document | undefined;
  const build = (): Document => {
    const { paths, components } = toOpenAPISchema(
      withoutParseHooks(app),
      // OPTIONS too: the tus discovery routes are real operations (CORS preflights are answered before routing).
      { paths: [/^\/docs/, /^\/redoc/, "/openapi.json"], methods: [] },
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
