import { toOpenAPISchema } from "@elysiajs/openapi";
import { type AnyElysia, Elysia } from "elysia";

type Operation = {
  requestBody?: { content: Record<string, unknown> };
  responses?: Record<string, { content?: Record<string, unknown> }>;
};
type Document = Record<string, unknown> & { paths: Record<string, Record<string, Operation>> };

const OPENAPI_VERSION = "3.1.0";

/**
 * Our capped body parser is a global function hook, which @elysiajs/openapi would document as a body
 * with no content type at all; hide it from the generator so bodies are documented from their schemas.
 */
function withoutParseHooks(app: AnyElysia): AnyElysia {
  // Both are protected in the types but are what the generator itself calls.
  const source = app as unknown as { getGlobalDefinitions(): unknown; getGlobalRoutes(): AnyElysia["routes"] };
  return {
    getGlobalDefinitions: () => source.getGlobalDefinitions(),
    getGlobalRoutes: () =>
      source.getGlobalRoutes().map((route) => {
        const parse = (route.hooks?.parse as { fn: unknown }[] | undefined)?.filter((p) => typeof p.fn !== "function");
        return { ...route, hooks: { ...route.hooks, parse: parse?.length ? parse : undefined } };
      }),
  } as unknown as AnyElysia;
}

/** Fixes what the generator gets wrong: no-content responses (204) must not carry a `content`. */
function repair(document: Document, formBodies: string[]): Document {
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const operation of Object.values(operations)) {
      for (const response of Object.values(operation.responses ?? {})) {
        if (response.content && "type" in response.content) delete response.content;
      }
      const json = operation.requestBody?.content["application/json"];
      if (json && formBodies.includes(path)) {
        (operation.requestBody as { content: Record<string, unknown> }).content["application/x-www-form-urlencoded"] =
          json;
      }
    }
  }
  return document;
}

/** GET /openapi.json: the document for every route of `app`, built once on first request. */
export function openapiRoute(
  app: AnyElysia,
  documentation: Record<string, unknown>,
  options: { formBodies: string[] },
) {
  let document: Document | undefined;
  return new Elysia({ name: "openapi-document" }).get(
    "/openapi.json",
    () => {
      document ??= (() => {
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
            components: { ...components, ...extra },
          },
          options.formBodies,
        );
      })();
      return document;
    },
    { detail: { hide: true } },
  );
}
