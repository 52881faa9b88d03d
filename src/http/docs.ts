import { Elysia } from "elysia";
import redocJs from "redoc/bundles/redoc.standalone.js" with { type: "file" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "file" };
import swaggerJs from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import { errors } from "./errors";

const SPEC_URL = "/openapi.json";
// The UIs need inline styles and (ReDoc) a blob: worker; nothing is loaded from elsewhere.
const DOCS_CSP =
  "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; font-src 'self' data:";

const page = (title: string, head: string, body: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>${head}</head><body>${body}</body></html>`;

const swaggerInit = `window.ui = SwaggerUIBundle({
  url: ${JSON.stringify(SPEC_URL)}, dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: true
});`;

const swaggerPage = page(
  "ReViewPoint API — Swagger UI",
  '<link rel="stylesheet" href="/docs/assets/swagger-ui.css">',
  '<div id="swagger-ui"></div><script src="/docs/assets/swagger-ui-bundle.js"></script><script src="/docs/assets/init.js"></script>',
);

const redocPage = page(
  "ReViewPoint API — ReDoc",
  "",
  `<redoc spec-url="${SPEC_URL}"></redoc><script src="/docs/assets/redoc.standalone.js"></script>`,
);

// A Map, not an object literal: `/docs/assets/constructor` must not find Object.prototype's.
const ASSETS = new Map<string, { path?: string; text?: string; type: string }>([
  ["swagger-ui.css", { path: swaggerCss, type: "text/css; charset=utf-8" }],
  ["swagger-ui-bundle.js", { path: swaggerJs, type: "text/javascript; charset=utf-8" }],
  ["redoc.standalone.js", { path: redocJs, type: "text/javascript; charset=utf-8" }],
  ["init.js", { text: swaggerInit, type: "text/javascript; charset=utf-8" }],
]);

/** Swagger UI at /docs and ReDoc at /redoc, with every script and style served from the binary itself. */
export const docsRoutes = new Elysia({ name: "docs", detail: { hide: true } })
  .onBeforeHandle(({ set }) => {
    set.headers["content-security-policy"] = DOCS_CSP;
  })
  .get("/docs", ({ set }) => {
    set.headers["content-type"] = "text/html; charset=utf-8";
    return swaggerPage;
  })
  .get("/redoc", ({ set }) => {
    set.headers["content-type"] = "text/html; charset=utf-8";
    return redocPage;
  })
  .get("/docs/assets/:name", ({ params, set }) => {
    const asset = ASSETS.get(params.name);
    if (!asset) throw errors.notFound("Asset");
    set.headers["content-type"] = asset.type;
    set.headers["cache-control"] = "public, max-age=86400";
    return asset.text ?? Bun.file(asset.path as string);
  });
